import type { Kysely } from "kysely";
import { DatasetSchema } from "../relationalize/model.js";
import type { RecordOrder } from "../relationalize/records.js";
import { chunks, lookUpInChunks } from "./chunks.js";
import type { OpenDatabase, StateDatabase } from "./database.js";
import { RelationalizeRunStatus } from "./models.js";

export interface Bookmark {
  sizeBytes: number;
  modifiedMs: number;
}

export interface RecordLocation {
  runId: string;
  jsonKey: string;
  /** The version's newest-by values, for datasets ordered by them. */
  order: RecordOrder | null;
}

export interface RunCommit {
  runId: string;
  dataset: string;
  schema: DatasetSchema;
  bookmarks: Map<string, Bookmark>;
  removedKeys: string[];
  records: Map<string, RecordLocation>;
  removedRecords: string[];
  /** Records the dataset's deletion export now names, each with an export file naming it. */
  deletedRecords: Array<{ record: string; jsonKey: string }>;
  /** Deletion export files that are gone: the records they named may come back. */
  removedDeletionKeys: string[];
  /**
   * Files of earlier runs whose rows this run put in files of its own, merged or less some records (relative
   * to the Parquet folder): they are deleted once it commits.
   */
  compacted: Array<{ absorbedRunId: string; file: string }>;
  summary: unknown;
}

/** What the relationalize stage keeps: each dataset's table schema, bookmarks, record locations and runs. */
export class RelationalizeState {
  constructor(
    private readonly db: Kysely<StateDatabase>,
    private readonly wrote: OpenDatabase["wrote"],
  ) {}

  async schema(dataset: string): Promise<DatasetSchema | undefined> {
    const row = await this.db
      .selectFrom("dataset_schemas")
      .select("schema")
      .where("dataset", "=", dataset)
      .executeTakeFirst();
    return row && DatasetSchema.parse(JSON.parse(row.schema));
  }

  async datasets(): Promise<Array<{ dataset: string; schema: DatasetSchema; updatedAt: string }>> {
    const rows = await this.db.selectFrom("dataset_schemas").selectAll().orderBy("dataset").execute();
    return rows.map((r) => ({
      dataset: r.dataset,
      schema: DatasetSchema.parse(JSON.parse(r.schema)),
      updatedAt: r.updated_at,
    }));
  }

  /** The bookmarks of these JSON files (those that have one). */
  async bookmarks(dataset: string, keys: readonly string[]): Promise<Map<string, Bookmark>> {
    const rows = await lookUpInChunks(keys, (part) =>
      this.db
        .selectFrom("json_bookmarks")
        .select(["key", "size_bytes", "modified_ms"])
        .where("dataset", "=", dataset)
        .where("key", "in", part)
        .execute(),
    );
    return new Map(rows.map((r) => [r.key, { sizeBytes: Number(r.size_bytes), modifiedMs: Number(r.modified_ms) }]));
  }

  async bookmarkCount(dataset: string): Promise<number> {
    const row = await this.db
      .selectFrom("json_bookmarks")
      .select((eb) => eb.fn.countAll().as("n"))
      .where("dataset", "=", dataset)
      .executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  /** Every bookmarked JSON file of the dataset, a page at a time (in the database's key order). */
  async *bookmarkedKeys(dataset: string, pageSize = 5000): AsyncGenerator<string[]> {
    let after: string | undefined;
    for (;;) {
      let q = this.db.selectFrom("json_bookmarks").select("key").where("dataset", "=", dataset);
      if (after !== undefined) q = q.where("key", ">", after);
      const keys = (await q.orderBy("key").limit(pageSize).execute()).map((r) => r.key);
      if (keys.length === 0) return;
      yield keys;
      after = keys[keys.length - 1];
    }
  }

  /**
   * Where records are in the tables: every record of the dataset, or only those with these ids or written
   * from these JSON files (a run asks about what it meets, not about the dataset's whole history).
   */
  async records(
    dataset: string,
    among?: { records: readonly string[]; jsonKeys: readonly string[] },
  ): Promise<Map<string, RecordLocation>> {
    const select = () => this.db.selectFrom("parquet_records").selectAll().where("dataset", "=", dataset);
    const rows = among
      ? [
          ...(await lookUpInChunks(among.records, (ids) => select().where("record_id", "in", ids).execute())),
          ...(await lookUpInChunks(among.jsonKeys, (keys) => select().where("json_key", "in", keys).execute())),
        ]
      : await select().execute();
    return new Map(
      rows.map((r) => [
        r.record_id,
        { runId: r.run_id, jsonKey: r.json_key, order: r.record_order === null ? null : JSON.parse(r.record_order) },
      ]),
    );
  }

  /** Records the dataset's deletion export names, each with every export file naming it. */
  async deletedRecords(dataset: string): Promise<Array<{ record: string; jsonKey: string }>> {
    const rows = await this.db.selectFrom("deleted_records").selectAll().where("dataset", "=", dataset).execute();
    return rows.map((r) => ({ record: r.record_id, jsonKey: r.json_key }));
  }

  /** Runs that started but never committed (the process died): their files are to be removed. */
  async abandonRuns(dataset: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom("relationalize_runs")
      .select("run_id")
      .where("dataset", "=", dataset)
      .where("status", "=", "running")
      .execute();
    if (rows.length > 0) {
      await this.db
        .updateTable("relationalize_runs")
        .set({ status: "abandoned", finished_at: new Date().toISOString() })
        .where(
          "run_id",
          "in",
          rows.map((r) => r.run_id),
        )
        .execute();
    }
    return rows.map((r) => r.run_id);
  }

  async startRun(runId: string, dataset: string): Promise<void> {
    await this.db
      .insertInto("relationalize_runs")
      .values({
        run_id: runId,
        dataset,
        status: "running",
        started_at: new Date().toISOString(),
        finished_at: null,
        summary: null,
      })
      .execute();
  }

  async runs(dataset?: string): Promise<
    Array<{
      runId: string;
      dataset: string;
      status: RelationalizeRunStatus;
      startedAt: string;
      finishedAt: string | null;
      summary: unknown;
    }>
  > {
    let q = this.db.selectFrom("relationalize_runs").selectAll();
    if (dataset) q = q.where("dataset", "=", dataset);
    const rows = await q.orderBy("started_at").execute();
    return rows.map((r) => ({
      runId: r.run_id,
      dataset: r.dataset,
      status: RelationalizeRunStatus.parse(r.status),
      startedAt: r.started_at,
      finishedAt: r.finished_at,
      summary: r.summary === null ? null : JSON.parse(r.summary),
    }));
  }

  /** Everything a run changed, in one transaction: until it commits, the run's files do not count. */
  async commitRun(commit: RunCommit): Promise<void> {
    const { dataset, runId } = commit;
    await this.db.transaction().execute(async (trx) => {
      const now = new Date().toISOString();
      await trx
        .insertInto("dataset_schemas")
        .values({ dataset, schema: JSON.stringify(commit.schema), updated_at: now })
        .onConflict((oc) =>
          oc.column("dataset").doUpdateSet({ schema: JSON.stringify(commit.schema), updated_at: now }),
        )
        .execute();
      for (const keys of chunks(commit.removedKeys)) {
        await trx.deleteFrom("json_bookmarks").where("dataset", "=", dataset).where("key", "in", keys).execute();
      }
      for (const part of chunks([...commit.bookmarks])) {
        await trx
          .insertInto("json_bookmarks")
          .values(
            part.map(([key, b]) => ({
              dataset,
              key,
              size_bytes: b.sizeBytes,
              modified_ms: b.modifiedMs,
              run_id: runId,
            })),
          )
          .onConflict((oc) =>
            oc.columns(["dataset", "key"]).doUpdateSet((eb) => ({
              size_bytes: eb.ref("excluded.size_bytes"),
              modified_ms: eb.ref("excluded.modified_ms"),
              run_id: eb.ref("excluded.run_id"),
            })),
          )
          .execute();
      }
      for (const ids of chunks(commit.removedRecords)) {
        await trx.deleteFrom("parquet_records").where("dataset", "=", dataset).where("record_id", "in", ids).execute();
      }
      for (const part of chunks([...commit.records])) {
        await trx
          .insertInto("parquet_records")
          .values(
            part.map(([record, loc]) => ({
              dataset,
              record_id: record,
              run_id: loc.runId,
              json_key: loc.jsonKey,
              record_order: loc.order === null ? null : JSON.stringify(loc.order),
            })),
          )
          .onConflict((oc) =>
            oc.columns(["dataset", "record_id"]).doUpdateSet((eb) => ({
              run_id: eb.ref("excluded.run_id"),
              json_key: eb.ref("excluded.json_key"),
              record_order: eb.ref("excluded.record_order"),
            })),
          )
          .execute();
      }
      for (const keys of chunks(commit.removedDeletionKeys)) {
        await trx.deleteFrom("deleted_records").where("dataset", "=", dataset).where("json_key", "in", keys).execute();
      }
      for (const part of chunks(commit.deletedRecords)) {
        await trx
          .insertInto("deleted_records")
          .values(part.map((d) => ({ dataset, record_id: d.record, json_key: d.jsonKey })))
          .onConflict((oc) => oc.doNothing())
          .execute();
      }
      for (const part of chunks(commit.compacted)) {
        await trx
          .insertInto("parquet_compactions")
          .values(
            part.map((c) => ({ dataset, run_id: runId, absorbed_run_id: c.absorbedRunId, file: c.file, removed: 0 })),
          )
          .execute();
      }
      await trx
        .updateTable("relationalize_runs")
        .set({ status: "committed", finished_at: now, summary: JSON.stringify(commit.summary) })
        .where("run_id", "=", runId)
        .execute();
    });
    // The next run looks bookmarks and records up by key: after a large run, with statistics that know of it.
    await this.wrote("json_bookmarks", commit.bookmarks.size);
    await this.wrote("parquet_records", commit.records.size);
  }

  /**
   * The runs whose files now hold records these runs wrote: those that merged their files, and so on (a
   * merged file can be merged again). Each run maps to every such run.
   */
  async mergedInto(dataset: string, runs: readonly string[]): Promise<Map<string, string[]>> {
    const into = new Map<string, Set<string>>();
    for (let next = [...new Set(runs)]; next.length > 0; ) {
      const rows = await lookUpInChunks(next, (part) =>
        this.db
          .selectFrom("parquet_compactions")
          .select(["absorbed_run_id", "run_id"])
          .distinct()
          .where("dataset", "=", dataset)
          .where("absorbed_run_id", "in", part)
          .execute(),
      );
      next = [];
      for (const { absorbed_run_id: from, run_id: to } of rows) {
        if (!into.has(from)) into.set(from, new Set());
        into.get(from)?.add(to);
        if (!into.has(to)) next.push(to);
      }
    }
    const closure = (run: string, seen = new Set<string>()): string[] => {
      for (const to of into.get(run) ?? []) if (!seen.has(to)) closure(to, seen.add(to));
      return [...seen];
    };
    return new Map(runs.map((run) => [run, closure(run)]));
  }

  /**
   * Files that committed runs merged or superseded and that are not yet deleted: a run's own, just after it
   * commits, or a run's whose process died before it deleted them. (A run's merges are recorded when it commits.)
   */
  async mergedFiles(dataset: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom("parquet_compactions")
      .select("file")
      .where("dataset", "=", dataset)
      .where("removed", "=", 0)
      .execute();
    return rows.map((r) => r.file);
  }

  /**
   * What a reader of the Parquet folders leaves out: the files of runs not committed (running, or dead and
   * not yet cleaned up), by run, and the files committed runs merged or superseded that are not yet deleted
   * (`<table>/<partition folders>/<file>`).
   */
  async unpublished(): Promise<{ runs: Set<string>; files: Set<string> }> {
    const runs = await this.db
      .selectFrom("relationalize_runs")
      .select("run_id")
      .where("status", "in", ["running", "abandoned"])
      .execute();
    const files = await this.db.selectFrom("parquet_compactions").select("file").where("removed", "=", 0).execute();
    return { runs: new Set(runs.map((r) => r.run_id)), files: new Set(files.map((f) => f.file)) };
  }

  async mergedFilesRemoved(dataset: string, files: readonly string[]): Promise<void> {
    for (const part of chunks(files)) {
      await this.db
        .updateTable("parquet_compactions")
        .set({ removed: 1 })
        .where("dataset", "=", dataset)
        .where("file", "in", part)
        .execute();
    }
  }
}
