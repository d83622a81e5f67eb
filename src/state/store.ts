import { randomUUID } from "node:crypto";
import type { Kysely, Selectable } from "kysely";
import type { StateConfig } from "../config/config.js";
import {
  type OpenDatabase,
  openDatabase,
  type StateDatabase,
  type UploadFilesTable,
  type UploadsTable,
} from "./database.js";
import { ExportState } from "./export-state.js";
import { LakeState } from "./lake-state.js";
import { type Upload, type UploadFile, UploadStatus, type UploadSummary } from "./models.js";
import { PipelineState } from "./pipeline-state.js";
import { RelationalizeState } from "./relationalize-state.js";
import { utcInstant } from "./time.js";

export interface NewUpload {
  recordId: string | null;
  contentHash: string;
  rawKey: string;
  sizeBytes: number;
  sourceName: string;
  metadata: Record<string, string>;
  status: UploadStatus;
  error?: string | null;
  /** 1 when the caller starts processing it right away (saves a separate `markAttempt`). */
  attempts?: number;
}

export interface UploadOutcome {
  status: UploadStatus;
  error: string | null;
  summary: UploadSummary | null;
  files: UploadFile[];
}

export interface UploadQuery {
  statuses?: UploadStatus[];
  recordId?: string;
  limit?: number;
}

/**
 * The state of every upload, on SQLite (embedded) or PostgreSQL (shared), through one implementation:
 * Kysely writes the SQL for either dialect.
 */
export class StateStore {
  /** The relationalize stage's tables. */
  readonly relationalize: RelationalizeState;
  /** Pipeline runs, leases and schedules. */
  readonly pipeline: PipelineState;
  /** Participants' sharing scopes and the selection of records to export. */
  readonly exports: ExportState;
  /** Lake datasets and updates, users, roles, grants, tokens, audit log. */
  readonly lake: LakeState;

  private constructor(
    private readonly db: Kysely<StateDatabase>,
    readonly description: string,
    wrote: OpenDatabase["wrote"],
    private readonly lockKey: OpenDatabase["lockKey"],
  ) {
    this.relationalize = new RelationalizeState(db, wrote);
    this.pipeline = new PipelineState(db);
    this.exports = new ExportState(db, wrote);
    this.lake = new LakeState(db);
  }

  static async open(config: StateConfig, root: string): Promise<StateStore> {
    const { db, description, wrote, lockKey } = await openDatabase(config, root);
    return new StateStore(db, description, wrote, lockKey);
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }

  /** The upload of this record with exactly this content, if any (record id null: uploads rejected before one was known). */
  async findUpload(recordId: string | null, contentHash: string): Promise<Upload | undefined> {
    let query = this.db.selectFrom("uploads").selectAll().where("content_hash", "=", contentHash);
    query = recordId === null ? query.where("record_id", "is", null) : query.where("record_id", "=", recordId);
    const row = await query.orderBy("received_at", "desc").executeTakeFirst();
    return row && toUpload(row);
  }

  /** Records a new upload; an upload with a record id gets the next version of that record. */
  async recordUpload(input: NewUpload): Promise<Upload> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.db.transaction().execute(async (trx) => {
          let version: number | null = null;
          if (input.recordId !== null) {
            // Writers of one record take their versions in turn (SQLite's write transactions already do): with
            // only the unique constraint to go by, one of many concurrent writers could lose every retry.
            await this.lockKey(trx, input.recordId);
            const { max } = await trx
              .selectFrom("uploads")
              .select((eb) => eb.fn.max<number | null>("version").as("max"))
              .where("record_id", "=", input.recordId)
              .executeTakeFirstOrThrow();
            version = (max === null ? 0 : Number(max)) + 1;
          }
          const row: UploadsTable = {
            upload_id: randomUUID(),
            record_id: input.recordId,
            version,
            content_hash: input.contentHash,
            raw_key: input.rawKey,
            size_bytes: input.sizeBytes,
            source_name: input.sourceName,
            metadata: JSON.stringify(input.metadata),
            status: input.status,
            error: input.error ?? null,
            summary: null,
            attempts: input.attempts ?? 0,
            received_at: new Date().toISOString(),
            processed_at: null,
            uploaded_on: utcInstant(input.metadata.uploadedon),
            study_id: input.metadata.studyid ?? null,
            health_code: input.metadata.healthcode ?? null,
          };
          await trx.insertInto("uploads").values(row).execute();
          return toUpload(row);
        });
      } catch (err) {
        // Two writers took the same version number: the unique constraint refused one; it takes the next.
        if (attempt < 5 && /unique|duplicate/i.test((err as Error).message)) continue;
        throw err;
      }
    }
  }

  async markAttempt(uploadId: string): Promise<void> {
    await this.db
      .updateTable("uploads")
      .set((eb) => ({ attempts: eb("attempts", "+", 1), status: "received", error: null }))
      .where("upload_id", "=", uploadId)
      .execute();
  }

  /** Stores the result of processing an upload: its status and every file's outcome, in one transaction. */
  async finishUpload(uploadId: string, outcome: UploadOutcome): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      await trx.deleteFrom("upload_files").where("upload_id", "=", uploadId).execute();
      if (outcome.files.length > 0) {
        await trx
          .insertInto("upload_files")
          .values(outcome.files.map((f) => fromFile(uploadId, f)))
          .execute();
      }
      await trx
        .updateTable("uploads")
        .set({
          status: outcome.status,
          error: outcome.error,
          summary: outcome.summary && JSON.stringify(outcome.summary),
          processed_at: new Date().toISOString(),
        })
        .where("upload_id", "=", uploadId)
        .execute();
    });
  }

  async setStatus(uploadId: string, status: UploadStatus): Promise<void> {
    await this.db.updateTable("uploads").set({ status }).where("upload_id", "=", uploadId).execute();
  }

  async getUpload(uploadId: string): Promise<Upload | undefined> {
    const row = await this.db.selectFrom("uploads").selectAll().where("upload_id", "=", uploadId).executeTakeFirst();
    return row && toUpload(row);
  }

  /** Every version of a record, oldest first. */
  async uploadsOfRecord(recordId: string): Promise<Upload[]> {
    const rows = await this.db
      .selectFrom("uploads")
      .selectAll()
      .where("record_id", "=", recordId)
      .orderBy("version", "asc")
      .execute();
    return rows.map(toUpload);
  }

  async listUploads(query: UploadQuery = {}): Promise<Upload[]> {
    let q = this.db.selectFrom("uploads").selectAll();
    if (query.statuses?.length) q = q.where("status", "in", query.statuses);
    if (query.recordId !== undefined) q = q.where("record_id", "=", query.recordId);
    q = q.orderBy("received_at", "asc").orderBy("upload_id", "asc");
    if (query.limit !== undefined) q = q.limit(query.limit);
    return (await q.execute()).map(toUpload);
  }

  async countByStatus(): Promise<Record<UploadStatus, number>> {
    const rows = await this.db
      .selectFrom("uploads")
      .select(["status", (eb) => eb.fn.countAll<number>().as("n")])
      .groupBy("status")
      .execute();
    const counts = Object.fromEntries(UploadStatus.options.map((s) => [s, 0])) as Record<UploadStatus, number>;
    for (const row of rows) counts[UploadStatus.parse(row.status)] = Number(row.n);
    return counts;
  }

  async getFiles(uploadId: string): Promise<UploadFile[]> {
    const rows = await this.db
      .selectFrom("upload_files")
      .selectAll()
      .where("upload_id", "=", uploadId)
      .orderBy("seq", "asc")
      .execute();
    return rows.map(toFile);
  }
}

function toUpload(row: Selectable<UploadsTable>): Upload {
  return {
    uploadId: row.upload_id,
    recordId: row.record_id,
    version: row.version === null ? null : Number(row.version),
    contentHash: row.content_hash,
    rawKey: row.raw_key,
    sizeBytes: Number(row.size_bytes),
    sourceName: row.source_name,
    metadata: JSON.parse(row.metadata),
    status: UploadStatus.parse(row.status),
    error: row.error,
    summary: row.summary === null ? null : JSON.parse(row.summary),
    attempts: Number(row.attempts),
    receivedAt: row.received_at,
    processedAt: row.processed_at,
  };
}

function fromFile(uploadId: string, f: UploadFile): UploadFilesTable {
  return {
    upload_id: uploadId,
    seq: f.seq,
    path: f.path,
    size_bytes: f.sizeBytes,
    schema_url: f.schemaUrl,
    schema_source: f.schemaSource,
    schema_missing: f.schemaMissing ? 1 : 0,
    validation: f.validation,
    errors: JSON.stringify(f.errors),
    dataset_id: f.datasetId,
    output_key: f.outputKey,
    note: f.note,
  };
}

function toFile(row: Selectable<UploadFilesTable>): UploadFile {
  return {
    seq: Number(row.seq),
    path: row.path,
    sizeBytes: Number(row.size_bytes),
    schemaUrl: row.schema_url,
    schemaSource: row.schema_source as UploadFile["schemaSource"],
    schemaMissing: Number(row.schema_missing) === 1,
    validation: row.validation as UploadFile["validation"],
    errors: JSON.parse(row.errors),
    datasetId: row.dataset_id,
    outputKey: row.output_key,
    note: row.note,
  };
}
