import { z } from "zod";

/**
 * Where an upload stands.
 * - received: the raw archive is kept and recorded; processing has not finished (or was interrupted).
 * - valid: every file passed; its documents are in the JSON datasets.
 * - quarantined: a file failed validation, is not JSON, or its schema is missing under the `quarantine` policy;
 *   nothing of the record was written; `reprocess` tries again.
 * - rejected: the archive or its metadata is unusable (corrupt, unsafe, too large, empty, missing fields).
 * - superseded: a newer version of the same record id has been processed; its outputs replaced this one's.
 * - withdrawn: the participant has withdrawn; the raw archive is kept, nothing of the record was written.
 */
export const UploadStatus = z.enum(["received", "valid", "quarantined", "rejected", "superseded", "withdrawn"]);
export type UploadStatus = z.infer<typeof UploadStatus>;

/** How one file of an archive was judged. */
/** A relationalize run: its files count once it is committed; a run found dead is abandoned. */
export const RelationalizeRunStatus = z.enum(["running", "committed", "abandoned"]);
export type RelationalizeRunStatus = z.infer<typeof RelationalizeRunStatus>;

export const FileValidation = z.enum([
  /** Passed its JSON Schema. */
  "valid",
  /** Failed its JSON Schema. */
  "invalid",
  /** Has no schema (or its assessment skips validation), so it was not checked. */
  "unvalidated",
  /** Could not be parsed as JSON. */
  "not-json",
  /** Names a schema that has no local copy, under the `quarantine` policy. */
  "schema-missing",
]);
export type FileValidation = z.infer<typeof FileValidation>;

/** Where a file's schema came from (the reference's resolution order). */
export const SchemaSource = z.enum(["archive-metadata", "assessment", "app", "shared"]);
export type SchemaSource = z.infer<typeof SchemaSource>;

export const ValidationMessage = z.object({
  /** JSON pointer into the document. */
  pointer: z.string(),
  message: z.string(),
});
export type ValidationMessage = z.infer<typeof ValidationMessage>;

export const UploadFile = z.object({
  seq: z.number().int().nonnegative(),
  path: z.string(),
  sizeBytes: z.number().int().nonnegative(),
  schemaUrl: z.string().nullable(),
  schemaSource: SchemaSource.nullable(),
  /** True when the schema URL has no local copy. */
  schemaMissing: z.boolean(),
  validation: FileValidation,
  errors: z.array(ValidationMessage),
  datasetId: z.string().nullable(),
  outputKey: z.string().nullable(),
  /** Why the file was not written, or what else is worth knowing. */
  note: z.string().nullable(),
});
export type UploadFile = z.infer<typeof UploadFile>;

export const UploadSummary = z.object({
  files: z.number().int(),
  valid: z.number().int(),
  invalid: z.number().int(),
  unvalidated: z.number().int(),
  skipped: z.number().int(),
  written: z.number().int(),
  missingSchemaUrls: z.array(z.string()),
  warnings: z.array(z.string()),
});
export type UploadSummary = z.infer<typeof UploadSummary>;

export const Upload = z.object({
  uploadId: z.string(),
  /** Null only when the metadata was unusable and the upload was rejected. */
  recordId: z.string().nullable(),
  version: z.number().int().positive().nullable(),
  contentHash: z.string(),
  rawKey: z.string(),
  sizeBytes: z.number().int().nonnegative(),
  sourceName: z.string(),
  /** Upload metadata as received (lower-case keys, string values). */
  metadata: z.record(z.string(), z.string()),
  status: UploadStatus,
  error: z.string().nullable(),
  summary: UploadSummary.nullable(),
  attempts: z.number().int().nonnegative(),
  receivedAt: z.string(),
  processedAt: z.string().nullable(),
});
export type Upload = z.infer<typeof Upload>;
