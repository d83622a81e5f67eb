import type { Kysely } from "kysely";
import { chunks } from "./chunks.js";
import type { StateDatabase } from "./database.js";

export interface ExportableRecord {
  uploadId: string;
  recordId: string;
  studyId: string | null;
  healthCode: string | null;
  uploadedOn: string | null;
  metadata: Record<string, string>;
  /** Datasets the record's documents went to. */
  datasets: string[];
}

/** Participants' current sharing scopes, export times per study, and the selection of records to export. */
export class ExportState {
  constructor(private readonly db: Kysely<StateDatabase>) {}

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
    const out = new Map<string, string>();
    const unique = [...new Set(healthCodes)];
    for (const part of chunks(unique)) {
      const rows = await this.db
        .selectFrom("participants")
        .select(["health_code", "sharing_scope"])
        .where("health_code", "in", part)
        .execute();
      for (const row of rows) out.set(row.health_code, row.sharing_scope);
    }
    return out;
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
    let query = this.db
      .selectFrom("uploads")
      .select(["upload_id", "record_id", "study_id", "health_code", "uploaded_on", "metadata"])
      .where("status", "=", "valid");
    query =
      "recordIds" in selection
        ? query.where("record_id", "in", selection.recordIds.length > 0 ? [...selection.recordIds] : [""])
        : query.where("uploaded_on", ">=", selection.start).where("uploaded_on", "<", selection.end);
    const rows = await query.orderBy("uploaded_on").orderBy("record_id").execute();
    const datasets = new Map<string, string[]>();
    const ids = rows.map((r) => r.upload_id);
    for (const part of chunks(ids)) {
      const files = await this.db
        .selectFrom("upload_files")
        .select(["upload_id", "dataset_id"])
        .where("upload_id", "in", part)
        .where("output_key", "is not", null)
        .execute();
      for (const f of files) {
        const list = datasets.get(f.upload_id) ?? [];
        if (f.dataset_id && !list.includes(f.dataset_id)) list.push(f.dataset_id);
        datasets.set(f.upload_id, list);
      }
    }
    return rows.map((r) => ({
      uploadId: r.upload_id,
      recordId: r.record_id ?? "",
      studyId: r.study_id,
      healthCode: r.health_code,
      uploadedOn: r.uploaded_on,
      metadata: JSON.parse(r.metadata),
      datasets: (datasets.get(r.upload_id) ?? []).sort(),
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
