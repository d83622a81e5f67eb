import { datasetIdFor, legacyFiles } from "../bucket/dataset-id.js";
import { DocumentShapeError, datasetKey, datasetLine } from "../bucket/json-dataset.js";
import type { Config } from "../config/config.js";
import type { ArchiveEntry } from "../intake/archive.js";
import { type UploadMetadata, uploadDateParts } from "../intake/metadata.js";
import { baseName, lookupName, resolveSchemaUrl, selfReferencesOf } from "../resolve/archive-map.js";
import { type CompiledSchema, formatErrors, SchemaUnavailableError } from "../resolve/schema-registry.js";
import type { UploadFile, UploadSummary, ValidationMessage } from "../state/models.js";
import type { ReferenceData } from "../workspace/workspace.js";

export interface RecordEvaluation {
  /** False when any file is invalid, not JSON, or lacks its schema under the `quarantine` policy. */
  valid: boolean;
  files: UploadFile[];
  /** Dataset key → NDJSON line (only meaningful when valid); a later entry with the same key wins. */
  outputs: Map<string, string>;
  summary: UploadSummary;
  /** One line saying why the record is not valid. */
  reason: string | null;
}

type Policy = Pick<Config, "missingSchemaPolicy" | "allowedValidationErrors" | "limits">;

/**
 * Resolves, validates and buckets every file of one upload. Writes nothing: the caller stores the outputs
 * when the record is valid, or a quarantine report when it is not (a record is all or nothing).
 */
export async function evaluateRecord(
  entries: readonly ArchiveEntry[],
  metadata: UploadMetadata,
  reference: ReferenceData,
  policy: Policy,
): Promise<RecordEvaluation> {
  const revision = metadata.assessmentrevision;
  const date = uploadDateParts(metadata.uploadedon);
  // Assessment revisions the legacy mapping lists have no schemas: the reference skips their validation.
  const skipValidation = legacyFiles(reference.datasetMapping, metadata.assessmentid, revision) !== undefined;
  const selfReferences = selfReferencesOf(parseQuietly(entries.find((e) => baseName(e.path) === "metadata.json")));

  const files: UploadFile[] = [];
  const outputs = new Map<string, string>();
  const outputOwner = new Map<string, UploadFile>();
  const missingSchemaUrls = new Set<string>();
  const warnings: string[] = [];

  for (const [seq, entry] of entries.entries()) {
    const name = lookupName(baseName(entry.path));
    const file: UploadFile = {
      seq,
      path: entry.path,
      sizeBytes: entry.data.length,
      schemaUrl: null,
      schemaSource: null,
      schemaMissing: false,
      validation: "unvalidated",
      errors: [],
      datasetId: null,
      outputKey: null,
      note: null,
    };
    files.push(file);

    const resolved = resolveSchemaUrl(reference.archiveMap, {
      fileName: baseName(entry.path),
      appId: metadata.appid,
      assessmentId: metadata.assessmentid,
      assessmentRevision: Number(revision),
      selfReferences,
    });
    let schema: CompiledSchema | undefined;
    if (resolved) {
      file.schemaUrl = resolved.url;
      file.schemaSource = resolved.source;
      try {
        schema = await reference.schemas.get(resolved.url);
      } catch (err) {
        if (!(err instanceof SchemaUnavailableError)) throw err;
        file.schemaMissing = true;
        missingSchemaUrls.add(resolved.url);
        if (policy.missingSchemaPolicy === "quarantine") {
          file.validation = "schema-missing";
          file.errors = [{ pointer: "", message: err.message }];
          continue;
        }
        file.note = `${err.message}; handled as a file without a schema`;
      }
    }

    file.datasetId = datasetIdFor(
      reference.schemaMapping,
      reference.datasetMapping,
      schema?.id,
      metadata.assessmentid,
      revision,
      name,
    );
    const mustValidate = schema !== undefined && !skipValidation;
    if (!mustValidate && file.datasetId === null) {
      const why = `no dataset for ${metadata.assessmentid} revision ${revision} file ${name}: skipped`;
      file.note = file.note ? `${file.note}; ${why}` : why;
      warnings.push(`${entry.path}: ${why}`);
      continue;
    }

    const text = decode(entry.data);
    let document: unknown;
    try {
      document = JSON.parse(text);
    } catch (err) {
      file.validation = "not-json";
      file.errors = [{ pointer: "", message: `not JSON: ${(err as Error).message}` }];
      continue;
    }
    if (mustValidate && schema) {
      const ok = schema.validate(document);
      const errors = ok
        ? []
        : dropAllowed(
            formatErrors(schema.validate.errors, policy.limits.maxErrorsPerFile),
            file.path,
            metadata,
            policy,
          );
      file.validation = errors.length === 0 ? "valid" : "invalid";
      file.errors = errors;
      if (errors.length > 0) continue;
    }
    if (file.datasetId === null) {
      const why = `no dataset for schema ${schema?.id ?? file.schemaUrl}: not written`;
      file.note = why;
      warnings.push(`${entry.path}: ${why}`);
      continue;
    }

    const key = datasetKey(file.datasetId, metadata.assessmentid, date, metadata.recordid);
    try {
      outputs.set(
        key,
        datasetLine(text, {
          datasetId: file.datasetId,
          recordId: metadata.recordid,
          assessmentId: metadata.assessmentid,
          date,
          uploadMetadata: metadata as Record<string, string>,
        }),
      );
    } catch (err) {
      file.validation = "invalid";
      const shape = err instanceof DocumentShapeError;
      file.errors = [{ pointer: "", message: shape ? err.message : `cannot be written: ${(err as Error).message}` }];
      continue;
    }
    const previous = outputOwner.get(key);
    if (previous) {
      previous.note = `replaced by ${entry.path}, which writes the same output (the later entry wins)`;
    }
    outputOwner.set(key, file);
    file.outputKey = key;
  }

  const failed = files.filter(
    (f) => f.validation === "invalid" || f.validation === "not-json" || f.validation === "schema-missing",
  );
  const summary: UploadSummary = {
    files: files.length,
    valid: files.filter((f) => f.validation === "valid").length,
    invalid: failed.length,
    unvalidated: files.filter((f) => f.validation === "unvalidated").length,
    skipped: files.filter((f) => f.outputKey === null && !failed.includes(f)).length,
    written: failed.length === 0 ? outputs.size : 0,
    missingSchemaUrls: [...missingSchemaUrls],
    warnings,
  };
  return {
    valid: failed.length === 0,
    files,
    outputs,
    summary,
    reason: failed.length === 0 ? null : describeFailures(failed),
  };
}

function describeFailures(failed: UploadFile[]): string {
  const parts = failed.map((f) => {
    const first = f.errors[0];
    const detail = first ? `${first.pointer ? `${first.pointer}: ` : ""}${first.message}` : f.validation;
    const more = f.errors.length > 1 ? ` (+${f.errors.length - 1} more)` : "";
    return `${f.path}: ${detail}${more}`;
  });
  return `${failed.length} file${failed.length === 1 ? "" : "s"} failed: ${parts.join("; ")}`;
}

function dropAllowed(
  errors: ValidationMessage[],
  filePath: string,
  metadata: UploadMetadata,
  policy: Policy,
): ValidationMessage[] {
  if (policy.allowedValidationErrors.length === 0) return errors;
  const name = baseName(filePath);
  const allowed = policy.allowedValidationErrors.filter(
    (a) =>
      a.file === name &&
      (a.clientInfoContains === undefined || (metadata.clientinfo ?? "").includes(a.clientInfoContains)),
  );
  return errors.filter((e) => !allowed.some((a) => a.message === e.message));
}

function decode(data: Buffer): string {
  const text = data.toString("utf8");
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

function parseQuietly(entry: ArchiveEntry | undefined): unknown {
  if (!entry) return undefined;
  try {
    return JSON.parse(decode(entry.data));
  } catch {
    return undefined;
  }
}
