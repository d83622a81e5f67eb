import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import pLimit from "p-limit";
import { z } from "zod";
import type { Upload, UploadFile, UploadStatus } from "../state/models.js";
import { SafeId } from "../storage/safe-id.js";
import { evaluateRecord } from "../validate/evaluate-record.js";
import type { Workspace } from "../workspace/workspace.js";
import { ArchiveError, readArchive } from "./archive.js";
import { type ArchiveSource, discoverArchives } from "./discover.js";
import { KeyedLock } from "./keyed-lock.js";
import { MetadataError, mergeMetadata, metadataFromFileName, parseMetadata } from "./metadata.js";

/** What ingesting one archive did. */
export const IngestAction = z.enum([
  /** First upload of this record id. */
  "ingested",
  /** Same record id, different content: kept as the next version. */
  "new-version",
  /** Same record id and content as an upload already recorded: nothing to do. */
  "unchanged",
  /** Recorded before but never finished (for example the process was killed): processed now. */
  "resumed",
  /** Could not be recorded at all (unreadable file, state store down); nothing changed. */
  "failed",
]);
export type IngestAction = z.infer<typeof IngestAction>;

export interface IngestItem {
  source: string;
  action: IngestAction;
  uploadId: string | null;
  recordId: string | null;
  version: number | null;
  status: UploadStatus | null;
  /** Why it is not valid, or what went wrong; one line. */
  message: string | null;
}

export interface IngestReport {
  items: IngestItem[];
  actions: Record<IngestAction, number>;
  statuses: Record<UploadStatus, number>;
  filesWritten: number;
  /** Datasets that received documents. */
  datasets: string[];
  /** Files skipped or not written, per upload (for example a file no dataset mapping names). */
  warnings: Array<{ upload: string; message: string }>;
}

export interface IngestOptions {
  /** Metadata given on the command line; wins over the sidecar and the file name. */
  metadata?: Record<string, string>;
  onProgress?: (done: number, total: number, item: IngestItem) => void;
}

export interface ReprocessOptions {
  statuses?: UploadStatus[];
  recordId?: string;
  onProgress?: (done: number, total: number, item: IngestItem) => void;
}

export interface ReprocessReport extends IngestReport {
  /** `from→to` status changes, for example `quarantined→valid`. */
  moves: Record<string, number>;
}

/** An archive read from disk, with what ingest worked out about it before touching the state store. */
interface Arrival {
  bytes: Buffer;
  recordId: string | null;
  contentHash: string;
  rawKey: string;
  metadata: Record<string, string>;
}

interface IngestOneResult {
  item: IngestItem;
  written: number;
  warnings: string[];
  datasets?: string[];
}

interface ProcessResult {
  status: UploadStatus;
  message: string | null;
  written: number;
  warnings: string[];
  datasets?: string[];
}

/**
 * The intake stage: keeps each raw archive under its content hash, records it, then resolves, validates and
 * buckets its files. Every step can be repeated: a rerun after a crash picks up unfinished uploads and
 * rewrites the same keys, so nothing is lost or duplicated.
 */
export class Intake {
  private readonly records = new KeyedLock();

  /** Participants who have withdrawn, read once per Intake (a withdrawal during a long batch applies to the next). */
  private withdrawnParticipants: Promise<Set<string>> | undefined;

  constructor(private readonly ws: Workspace) {}

  private withdrawn(): Promise<Set<string>> {
    this.withdrawnParticipants ??= this.ws.state.lake.withdrawn().then((list) => new Set(list));
    return this.withdrawnParticipants;
  }

  async ingest(paths: readonly string[], options: IngestOptions = {}): Promise<IngestReport> {
    const { sources, problems } = await discoverArchives(paths);
    const report = emptyReport();
    for (const problem of problems) {
      record(report, failedItem(problem.path, problem.message), { written: 0, warnings: [] });
    }
    // Archives are processed several at a time (file I/O dominates); Promise.all keeps the order they were given in.
    const limit = pLimit(this.ws.config.concurrency);
    let done = 0;
    const results = await Promise.all(
      sources.map((source) =>
        limit(async () => {
          const result = await this.ingestOne(source, options.metadata ?? {});
          options.onProgress?.(++done, sources.length, result.item);
          return result;
        }),
      ),
    );
    for (const result of results) record(report, result.item, result);
    return report;
  }

  /** Runs kept raw archives through resolution and validation again (after a schema or mapping fix). */
  async reprocess(options: ReprocessOptions = {}): Promise<ReprocessReport> {
    const statuses = options.statuses ?? (options.recordId ? undefined : ["quarantined", "received"]);
    const uploads = await this.ws.state.listUploads({
      ...(statuses ? { statuses } : {}),
      ...(options.recordId !== undefined ? { recordId: options.recordId } : {}),
    });
    const report: ReprocessReport = { ...emptyReport(), moves: {} };
    const limit = pLimit(this.ws.config.concurrency);
    let done = 0;
    const results = await Promise.all(
      uploads.map((upload) =>
        limit(async () => {
          let result: ProcessResult = { status: upload.status, message: null, written: 0, warnings: [] };
          let item: IngestItem;
          try {
            result = await this.records.run(upload.recordId ?? upload.contentHash, () => this.process(upload));
            item = itemFor(upload.sourceName, "resumed", upload, result);
          } catch (err) {
            item = { ...itemFor(upload.sourceName, "failed", upload, result), message: (err as Error).message };
          }
          options.onProgress?.(++done, uploads.length, item);
          return { before: upload.status, item, result };
        }),
      ),
    );
    for (const { before, item, result } of results) {
      record(report, item, result);
      const move = `${before}→${result.status}`;
      if (item.action !== "failed") report.moves[move] = (report.moves[move] ?? 0) + 1;
    }
    return report;
  }

  private async ingestOne(source: ArchiveSource, flags: Record<string, string>): Promise<IngestOneResult> {
    const name = path.basename(source.file);
    let bytes: Buffer;
    let sidecar: Record<string, unknown> | undefined;
    try {
      bytes = await readFile(source.file);
      if (source.sidecar) sidecar = await readSidecar(source.sidecar);
    } catch (err) {
      return { item: failedItem(source.file, (err as Error).message), written: 0, warnings: [] };
    }
    const { config, raw } = this.ws;
    const metadata = mergeMetadata(
      metadataFromFileName(name),
      { appid: config.defaultAppId, studyid: config.defaultStudyId },
      sidecar,
      flags,
    );
    const contentHash = createHash("sha256").update(bytes).digest("hex");
    const recordId = SafeId.safeParse(metadata.recordid).success ? (metadata.recordid as string) : null;
    const rawKey = `sha256/${contentHash.slice(0, 2)}/${contentHash}.zip`;
    try {
      if (!(await raw.exists(rawKey))) await raw.put(rawKey, bytes, { durable: config.fsyncRaw });
      const arrival = { bytes, recordId, contentHash, rawKey, metadata };
      return await this.records.run(recordId ?? contentHash, () => this.recordAndProcess(source, arrival));
    } catch (err) {
      return { item: { ...failedItem(source.file, (err as Error).message), recordId }, written: 0, warnings: [] };
    }
  }

  /** Under the record's lock: decides whether this archive is new, a new version, a resumption or a repeat. */
  private async recordAndProcess(source: ArchiveSource, arrival: Arrival): Promise<IngestOneResult> {
    const { state } = this.ws;
    const existing = await state.findUpload(arrival.recordId, arrival.contentHash);
    if (existing?.status === "received") {
      const result = await this.process(existing, arrival.bytes);
      return { item: itemFor(source.file, "resumed", existing, result), ...result };
    }
    // A rejected upload whose metadata has since been corrected is tried again as a new version.
    const metadataChanged = existing && JSON.stringify(existing.metadata) !== JSON.stringify(arrival.metadata);
    if (existing && !(existing.status === "rejected" && metadataChanged)) {
      const message = existing.status === "valid" ? null : existing.error;
      return {
        item: itemFor(source.file, "unchanged", existing, { status: existing.status, message }),
        written: 0,
        warnings: [],
      };
    }
    const upload = await state.recordUpload({
      recordId: arrival.recordId,
      contentHash: arrival.contentHash,
      rawKey: arrival.rawKey,
      sizeBytes: arrival.bytes.length,
      sourceName: path.basename(source.file),
      metadata: arrival.metadata,
      status: "received",
      attempts: 1,
    });
    const result = await this.process(upload, arrival.bytes, { attemptCounted: true });
    const action = (upload.version ?? 1) > 1 ? "new-version" : "ingested";
    return { item: itemFor(source.file, action, upload, result), ...result };
  }

  /** Reads, resolves, validates and buckets one recorded upload, and stores the outcome. */
  private async process(
    upload: Upload,
    bytes?: Buffer,
    options: { attemptCounted?: boolean } = {},
  ): Promise<ProcessResult> {
    const { state, quarantine } = this.ws;
    // Attempts are counted before the work, so an archive that crashes the process shows how often it did.
    const reprocessing = upload.attempts > (options.attemptCounted ? 1 : 0);
    if (!options.attemptCounted) await state.markAttempt(upload.uploadId);
    const data = bytes ?? (await this.ws.raw.get(upload.rawKey));
    try {
      const metadata = parseMetadata(upload.metadata);
      const entries = await readArchive(data, this.ws.config.limits);
      const evaluation = await evaluateRecord(entries, metadata, this.ws.reference, this.ws.config);
      const { summary, files } = evaluation;
      if (!evaluation.valid) {
        await quarantine.put(reportKey(upload), report(upload, "quarantined", evaluation.reason, files));
        await state.finishUpload(upload.uploadId, { status: "quarantined", error: evaluation.reason, summary, files });
        return { status: "quarantined", message: evaluation.reason, written: 0, warnings: summary.warnings };
      }
      if ((await this.withdrawn()).has(metadata.healthcode)) {
        const message = "the participant has withdrawn: nothing of this record is written (the raw archive is kept)";
        const unwritten = files.map((f) => ({ ...f, outputKey: null, note: "participant withdrawn" }));
        await state.finishUpload(upload.uploadId, { status: "withdrawn", error: message, summary, files: unwritten });
        return { status: "withdrawn", message, written: 0, warnings: summary.warnings };
      }
      const versions = upload.version === 1 && !reprocessing ? [] : await state.uploadsOfRecord(metadata.recordid);
      const newer = versions.find((v) => (v.version ?? 0) > (upload.version ?? 0) && v.status === "valid");
      if (newer) {
        const message = `version ${newer.version} of this record is newer and already valid`;
        await state.finishUpload(upload.uploadId, { status: "superseded", error: message, summary, files });
        return { status: "superseded", message, written: 0, warnings: summary.warnings };
      }
      await Promise.all([...evaluation.outputs].map(([key, line]) => this.ws.json.put(key, `${line}\n`)));
      for (const older of versions) {
        if ((older.version ?? 0) >= (upload.version ?? 0) || older.status === "superseded") continue;
        await this.retire(older, evaluation.outputs);
      }
      if (reprocessing) await quarantine.delete(reportKey(upload));
      await state.finishUpload(upload.uploadId, { status: "valid", error: null, summary, files });
      const datasets = [...new Set(files.flatMap((f) => (f.outputKey && f.datasetId ? [f.datasetId] : [])))];
      return { status: "valid", message: null, written: summary.written, warnings: summary.warnings, datasets };
    } catch (err) {
      if (!(err instanceof ArchiveError || err instanceof MetadataError)) throw err;
      await quarantine.put(reportKey(upload), report(upload, "rejected", err.message, []));
      await state.finishUpload(upload.uploadId, { status: "rejected", error: err.message, summary: null, files: [] });
      return { status: "rejected", message: err.message, written: 0, warnings: [] };
    }
  }

  /** Marks an older version superseded and removes what it wrote that the new version did not overwrite. */
  private async retire(older: Upload, kept: ReadonlyMap<string, string>): Promise<void> {
    for (const file of await this.ws.state.getFiles(older.uploadId)) {
      if (file.outputKey && !kept.has(file.outputKey)) await this.ws.json.delete(file.outputKey);
    }
    await this.ws.quarantine.delete(reportKey(older));
    await this.ws.state.setStatus(older.uploadId, "superseded");
  }
}

/** Where an upload's quarantine report lives. */
export function reportKey(upload: Pick<Upload, "recordId" | "version" | "contentHash">): string {
  return upload.recordId ? `${upload.recordId}/v${upload.version}.json` : `unidentified/${upload.contentHash}.json`;
}

function report(upload: Upload, status: UploadStatus, reason: string | null, files: UploadFile[]): string {
  const failed = Object.fromEntries(files.filter((f) => f.errors.length > 0).map((f) => [f.path, f.errors]));
  const body = {
    uploadId: upload.uploadId,
    recordId: upload.recordId,
    version: upload.version,
    status,
    reason,
    assessmentId: upload.metadata.assessmentid ?? null,
    assessmentRevision: upload.metadata.assessmentrevision ?? null,
    appId: upload.metadata.appid ?? null,
    sourceName: upload.sourceName,
    contentHash: upload.contentHash,
    rawKey: upload.rawKey,
    errors: failed,
    missingSchemaUrls: [...new Set(files.filter((f) => f.schemaMissing).map((f) => f.schemaUrl))],
    metadata: upload.metadata,
    reportedAt: new Date().toISOString(),
  };
  return `${JSON.stringify(body, null, 2)}\n`;
}

async function readSidecar(file: string): Promise<Record<string, unknown>> {
  const text = await readFile(file, "utf8");
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`metadata sidecar ${file} is not JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new Error(`metadata sidecar ${file} must hold a JSON object`);
  }
  return parsed as Record<string, unknown>;
}

function itemFor(
  source: string,
  action: IngestAction,
  upload: Upload,
  result: { status: UploadStatus; message: string | null },
): IngestItem {
  return {
    source,
    action,
    uploadId: upload.uploadId,
    recordId: upload.recordId,
    version: upload.version,
    status: result.status,
    message: result.message,
  };
}

function failedItem(source: string, message: string): IngestItem {
  return { source, action: "failed", uploadId: null, recordId: null, version: null, status: null, message };
}

function emptyReport(): IngestReport {
  return {
    items: [],
    actions: Object.fromEntries(IngestAction.options.map((a) => [a, 0])) as Record<IngestAction, number>,
    statuses: { received: 0, valid: 0, quarantined: 0, rejected: 0, superseded: 0, withdrawn: 0 },
    filesWritten: 0,
    datasets: [],
    warnings: [],
  };
}

function record(
  report: IngestReport,
  item: IngestItem,
  result: { written: number; warnings: string[]; datasets?: string[] },
): void {
  for (const dataset of result.datasets ?? []) if (!report.datasets.includes(dataset)) report.datasets.push(dataset);
  report.items.push(item);
  report.actions[item.action] += 1;
  if (item.status) report.statuses[item.status] += 1;
  report.filesWritten += result.written;
  for (const message of result.warnings) report.warnings.push({ upload: item.recordId ?? item.source, message });
}
