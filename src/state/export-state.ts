import { randomUUID } from "node:crypto";
import type { Kysely, Selectable } from "kysely";
import { z } from "zod";
import type { Column } from "../export/columns.js";
import type { FieldDefinition } from "../export/serialize.js";
import { chunks, lookUpInChunks } from "./chunks.js";
import type { ExportsTable, OpenDatabase, StateDatabase } from "./database.js";

export interface ExportableRecord {
  uploadId: string;
  recordId: string;
  studyId: string | null;
  healthCode: string | null;
  uploadedOn: string | null;
  metadata: Record<string, string>;
  /** The raw archive, in the raw store. */
  rawKey: string;
  /** The record's documents: dataset and key in the JSON store, sorted by dataset. */
  documents: Array<{ datasetId: string; key: string }>;
}

/** How an export ended (running: under way, or cut off and to be resumed by the same request). */
export const ExportStatus = z.enum(["running", "succeeded", "completed_with_errors", "failed"]);
export type ExportStatus = z.infer<typeof ExportStatus>;

export interface ExportRow {
  exportId: string;
  idempotencyKey: string;
  destination: string;
  exportDate: string;
  request: unknown;
  status: ExportStatus;
  startedAt: string;
  finishedAt: string | null;
  metrics: unknown;
  error: string | null;
}

/** A researcher table as the bookkeeping knows it. */
export interface KnownTable {
  tableName: string;
  fields: FieldDefinition[];
  columns: Column[];
}

function toExport(row: Selectable<ExportsTable>): ExportRow {
  return {
    exportId: row.export_id,
    idempotencyKey: row.idempotency_key,
    destination: row.destination,
    exportDate: row.export_date,
    request: JSON.parse(row.request),
    status: ExportStatus.parse(row.status),
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    metrics: row.metrics === null ? null : JSON.parse(row.metrics),
    error: row.error,
  };
}

/** Participants' current sharing scopes, export times per study, and the selection of records to export. */
export class ExportState {
  constructor(
    private readonly db: Kysely<StateDatabase>,
    private readonly wrote: OpenDatabase["wrote"],
  ) {}

  async setScopes(entries: ReadonlyArray<{ healthCode: string; scope: string }>): Promise<void> {
    const now = new Date().toISOString();
    for (const part of chunks(entries)) {
      await this.db
        .insertInto("participants")
        .values(part.map((e) => ({ health_code: e.healthCode, sharing_scope: e.scope, updated_at: now })))
        .onConflict((oc) =>
          oc
            .column("health_code")
            .doUpdateSet((eb) => ({ sharing_scope: eb.ref("excluded.sharing_scope"), updated_at: now })),
        )
        .execute();
    }
  }

  /** Current scopes of these participants; a participant the store does not know is absent. */
  async scopes(healthCodes: readonly string[]): Promise<Map<string, string>> {
    const rows = await lookUpInChunks([...new Set(healthCodes)], (part) =>
      this.db
        .selectFrom("participants")
        .select(["health_code", "sharing_scope"])
        .where("health_code", "in", part)
        .execute(),
    );
    return new Map(rows.map((row) => [row.health_code, row.sharing_scope]));
  }

  /** Record ids of these participants' uploads. */
  async recordsOf(healthCodes: readonly string[]): Promise<string[]> {
    const rows = await lookUpInChunks([...new Set(healthCodes)], (part) =>
      this.db
        .selectFrom("uploads")
        .select("record_id")
        .where("health_code", "in", part)
        .where("record_id", "is not", null)
        .execute(),
    );
    return [...new Set(rows.map((row) => row.record_id as string))].sort();
  }

  async participantCount(): Promise<number> {
    const { n } = await this.db
      .selectFrom("participants")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .executeTakeFirstOrThrow();
    return Number(n);
  }

  /** Valid records uploaded in [start, end), or with these record ids. */
  async records(
    selection: { start: string; end: string } | { recordIds: readonly string[] },
  ): Promise<ExportableRecord[]> {
    const valid = this.db
      .selectFrom("uploads")
      .select(["upload_id", "record_id", "study_id", "health_code", "uploaded_on", "metadata", "raw_key"])
      .where("status", "=", "valid");
    // A redrive may name more records than one statement can hold: looked up in chunks, then put in order.
    const rows =
      "recordIds" in selection
        ? (
            await lookUpInChunks([...new Set(selection.recordIds)], (part) =>
              valid.where("record_id", "in", part).execute(),
            )
          ).sort((a, b) => byText(a.uploaded_on, b.uploaded_on) || byText(a.record_id, b.record_id))
        : await valid
            .where("uploaded_on", ">=", selection.start)
            .where("uploaded_on", "<", selection.end)
            .orderBy("uploaded_on")
            .orderBy("record_id")
            .execute();
    const documents = new Map<string, Array<{ datasetId: string; key: string }>>();
    const files = await lookUpInChunks(
      rows.map((r) => r.upload_id),
      (part) =>
        this.db
          .selectFrom("upload_files")
          .select(["upload_id", "dataset_id", "output_key"])
          .where("upload_id", "in", part)
          .where("output_key", "is not", null)
          .execute(),
    );
    for (const f of files) {
      if (!f.dataset_id || !f.output_key) continue;
      const list = documents.get(f.upload_id) ?? [];
      list.push({ datasetId: f.dataset_id, key: f.output_key });
      documents.set(f.upload_id, list);
    }
    return rows.map((r) => ({
      uploadId: r.upload_id,
      recordId: r.record_id ?? "",
      studyId: r.study_id,
      healthCode: r.health_code,
      uploadedOn: r.uploaded_on,
      metadata: JSON.parse(r.metadata),
      rawKey: r.raw_key,
      documents: (documents.get(r.upload_id) ?? []).sort((a, b) =>
        a.datasetId < b.datasetId ? -1 : a.datasetId > b.datasetId ? 1 : 0,
      ),
    }));
  }

  async lastExport(studyId: string): Promise<string | undefined> {
    const row = await this.db
      .selectFrom("export_times")
      .select("last_export_at")
      .where("study_id", "=", studyId)
      .executeTakeFirst();
    return row?.last_export_at;
  }

  /** Moves a study's last export time forward (never back: exporting an old day does not rewind it). */
  async setLastExport(studyId: string, at: string): Promise<void> {
    const current = await this.lastExport(studyId);
    if (current !== undefined && current >= at) return;
    await this.db
      .insertInto("export_times")
      .values({ study_id: studyId, last_export_at: at })
      .onConflict((oc) => oc.column("study_id").doUpdateSet({ last_export_at: at }))
      .execute();
  }

  /**
   * Starts the export with this idempotency key, or returns the one that has it: a finished one (nothing to
   * do), or one that was cut off or failed (resumed under its id, so tables it wrote are not written twice).
   */
  async begin(input: {
    idempotencyKey: string;
    destination: string;
    exportDate: string;
    request: unknown;
  }): Promise<{ export: ExportRow; created: boolean }> {
    const existing = await this.db
      .selectFrom("exports")
      .selectAll()
      .where("idempotency_key", "=", input.idempotencyKey)
      .executeTakeFirst();
    if (existing) {
      if (existing.status === "running" || existing.status === "failed") {
        await this.db
          .updateTable("exports")
          .set({ status: "running", error: null, finished_at: null })
          .where("export_id", "=", existing.export_id)
          .execute();
        return { export: toExport({ ...existing, status: "running", error: null, finished_at: null }), created: false };
      }
      return { export: toExport(existing), created: false };
    }
    const row = {
      export_id: randomUUID(),
      idempotency_key: input.idempotencyKey,
      destination: input.destination,
      export_date: input.exportDate,
      request: JSON.stringify(input.request),
      status: "running",
      started_at: new Date().toISOString(),
      finished_at: null,
      metrics: null,
      error: null,
    };
    await this.db.insertInto("exports").values(row).execute();
    return { export: toExport(row), created: true };
  }

  async finish(exportId: string, status: ExportStatus, metrics: unknown, error: string | null): Promise<void> {
    await this.db
      .updateTable("exports")
      .set({ status, metrics: JSON.stringify(metrics), error, finished_at: new Date().toISOString() })
      .where("export_id", "=", exportId)
      .execute();
  }

  async get(exportId: string): Promise<ExportRow | undefined> {
    const row = await this.db.selectFrom("exports").selectAll().where("export_id", "=", exportId).executeTakeFirst();
    return row && toExport(row);
  }

  /** The newest exports first. */
  async list(limit: number): Promise<ExportRow[]> {
    const rows = await this.db.selectFrom("exports").selectAll().orderBy("started_at", "desc").limit(limit).execute();
    return rows.map(toExport);
  }

  async table(destination: string, tableKey: string): Promise<KnownTable | undefined> {
    const row = await this.db
      .selectFrom("export_tables")
      .selectAll()
      .where("destination", "=", destination)
      .where("table_key", "=", tableKey)
      .executeTakeFirst();
    return row && { tableName: row.table_name, fields: JSON.parse(row.fields), columns: JSON.parse(row.columns) };
  }

  async tables(destination: string): Promise<Array<KnownTable & { tableKey: string; studyId: string }>> {
    const rows = await this.db
      .selectFrom("export_tables")
      .selectAll()
      .where("destination", "=", destination)
      .orderBy("table_key")
      .execute();
    return rows.map((row) => ({
      tableKey: row.table_key,
      studyId: row.study_id,
      tableName: row.table_name,
      fields: JSON.parse(row.fields),
      columns: JSON.parse(row.columns),
    }));
  }

  /** Which export wrote each of these records' rows, per table (all tables when `tableKey` is undefined). */
  async exported(
    destination: string,
    recordIds: readonly string[],
    tableKey?: string,
  ): Promise<Array<{ tableKey: string; recordId: string; exportId: string }>> {
    const rows = await lookUpInChunks([...new Set(recordIds)], (part) => {
      const query = this.db
        .selectFrom("export_records")
        .select(["table_key", "record_id", "export_id"])
        .where("destination", "=", destination)
        .where("record_id", "in", part);
      return (tableKey === undefined ? query : query.where("table_key", "=", tableKey)).execute();
    });
    return rows.map((row) => ({ tableKey: row.table_key, recordId: row.record_id, exportId: row.export_id }));
  }

  /**
   * Records that an export wrote a table: its columns and fields, the records whose rows it holds now, and
   * the replaced records that have no row any more. One transaction, after the destination committed.
   */
  async commitTable(input: {
    destination: string;
    tableKey: string;
    studyId: string;
    tableName: string;
    fields: readonly FieldDefinition[];
    columns: readonly Column[];
    exportId: string;
    recordIds: readonly string[];
    removedRecordIds: readonly string[];
  }): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      const now = new Date().toISOString();
      await trx
        .insertInto("export_tables")
        .values({
          destination: input.destination,
          table_key: input.tableKey,
          study_id: input.studyId,
          table_name: input.tableName,
          fields: JSON.stringify(input.fields),
          columns: JSON.stringify(input.columns),
          updated_at: now,
        })
        .onConflict((oc) =>
          oc.columns(["destination", "table_key"]).doUpdateSet({
            table_name: input.tableName,
            fields: JSON.stringify(input.fields),
            columns: JSON.stringify(input.columns),
            updated_at: now,
          }),
        )
        .execute();
      for (const part of chunks(input.removedRecordIds)) {
        await trx
          .deleteFrom("export_records")
          .where("destination", "=", input.destination)
          .where("table_key", "=", input.tableKey)
          .where("record_id", "in", part)
          .execute();
      }
      // A record with several documents in one table has several rows there, and one bookkeeping row.
      for (const part of chunks([...new Set(input.recordIds)])) {
        await trx
          .insertInto("export_records")
          .values(
            part.map((recordId) => ({
              destination: input.destination,
              table_key: input.tableKey,
              record_id: recordId,
              export_id: input.exportId,
            })),
          )
          .onConflict((oc) =>
            oc.columns(["destination", "table_key", "record_id"]).doUpdateSet({ export_id: input.exportId }),
          )
          .execute();
      }
    });
    // Exports look records up by id in this table: after a large one, with statistics that know of it.
    await this.wrote("export_records", input.recordIds.length);
  }

  async studies(): Promise<string[]> {
    const rows = await this.db
      .selectFrom("uploads")
      .select("study_id")
      .distinct()
      .where("study_id", "is not", null)
      .execute();
    return rows.map((r) => r.study_id as string).sort();
  }
}

/** Orders text as the databases' ORDER BY does for these ASCII values, NULL first (as SQLite does). */
function byText(a: string | null, b: string | null): number {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  return a < b ? -1 : 1;
}
