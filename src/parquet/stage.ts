import { randomBytes } from "node:crypto";
import { readdir, rm } from "node:fs/promises";
import path from "node:path";
import { ConfigError, datasetRules } from "../config/config.js";
import type { TypeConflict } from "../relationalize/model.js";
import { safeName } from "../relationalize/naming.js";
import { Relationalizer } from "../relationalize/relationalize.js";
import type { Bookmark } from "../state/relationalize-state.js";
import type { ObjectStore } from "../storage/object-store.js";
import type { Workspace } from "../workspace/workspace.js";
import { openDuckDB } from "./duckdb.js";
import { StageRun } from "./stage-run.js";
import { listParquet } from "./writer.js";

export interface TableReport {
  table: string;
  rows: number;
  files: number;
  bytes: number;
}

export interface RelationalizeReport {
  dataset: string;
  /** Null when there was nothing new (no run was made). */
  runId: string | null;
  filesRead: number;
  documents: number;
  /** Of those, documents DuckDB read and relationalized itself (the typed way, see typed-batch.ts). */
  typedDocuments: number;
  /** Groups of files DuckDB read for them (at most `relationalize.groupBytes` of JSON each). */
  groups: number;
  /** Records written in this run. */
  records: number;
  /** Records that were already in the tables and were replaced by a newer upload. */
  replaced: number;
  /** Records removed because their JSON file is gone. */
  deleted: number;
  /** Records removed, or documents kept out, because the dataset's deletion export names them (`deletedBy`). */
  deletedByExport: number;
  /** Documents not written because their record's version in the tables is newer by `newestBy`. */
  older: number;
  /** With the dataset's `countBy` field: the documents of each of its values, by what became of them. */
  counts: CountsByValue[];
  /** JSON lines that could not be read, each with its key and line number. */
  unreadable: Array<{ key: string; line: number; message: string }>;
  tables: TableReport[];
  conflicts: TypeConflict[];
}

export interface CountsByValue {
  /** The `countBy` field's value as text (null where a document has none). */
  value: string | null;
  read: number;
  older: number;
  deletedByExport: number;
  written: number;
}

const DATASET_PREFIX = "dataset=";

/**
 * The JSON-to-Parquet stage: reads the JSON files of a dataset that are new or changed since the last run,
 * relationalizes them and writes each table as partitioned Parquet. A record appears once per table: when it
 * arrives again, the newest upload's rows replace the old ones. Files are written under a run id and only
 * count once the run commits in the state store; a run that dies is cleaned up by the next one.
 */
export class RelationalizeStage {
  readonly parquetRoot: string;

  constructor(
    private readonly ws: Workspace,
    private readonly json: ObjectStore = ws.json,
  ) {
    this.parquetRoot = path.resolve(ws.root, ws.config.paths.parquet);
  }

  /** Dataset ids present in the JSON store. */
  async datasets(): Promise<string[]> {
    const ids = new Set<string>();
    for (const key of await this.json.list(DATASET_PREFIX)) {
      const first = key.split("/")[0] ?? "";
      ids.add(first.slice(DATASET_PREFIX.length));
    }
    return [...ids].sort();
  }

  /** `onFiles` hears how many of the run's new or changed files are done, of how many, as the run goes. */
  async run(
    dataset: string,
    options: { onFiles?: (done: number, total: number) => void } = {},
  ): Promise<RelationalizeReport> {
    const state = this.ws.state.relationalize;
    const settings = this.ws.config.relationalize;
    const report: RelationalizeReport = {
      dataset,
      runId: null,
      filesRead: 0,
      documents: 0,
      typedDocuments: 0,
      groups: 0,
      records: 0,
      replaced: 0,
      deleted: 0,
      deletedByExport: 0,
      older: 0,
      counts: [],
      unreadable: [],
      tables: [],
      conflicts: [],
    };
    const rules = datasetRules(settings, dataset);
    const previous = await state.schema(dataset);
    if (previous && previous.recordField !== rules.recordField) {
      throw new ConfigError(
        `dataset ${dataset}: its tables identify records by '${previous.recordField}', the configuration says '${rules.recordField}'; remove its tables and state to change it`,
      );
    }
    const duck = await openDuckDB();
    try {
      await this.cleanAbandoned(dataset, previous?.tables.map((t) => t.name) ?? []);

      const prefix = `${DATASET_PREFIX}${dataset}/`;
      // The deletion export's files are bookmarked with the dataset's own: each run reads only what is new.
      const deletionPrefix = rules.deletedBy === undefined ? undefined : `${DATASET_PREFIX}${rules.deletedBy}/`;
      const isDeletion = (key: string) => deletionPrefix !== undefined && key.startsWith(deletionPrefix);
      const { changed, removed } = await this.changes(dataset, deletionPrefix ? [prefix, deletionPrefix] : [prefix]);
      if (changed.length === 0 && removed.length === 0) return report;

      const runId = `r${Date.now().toString(36)}${randomBytes(4).toString("hex")}`;
      report.runId = runId;
      await state.startRun(runId, dataset);

      const rootName = safeName(dataset);
      const relationalizer = previous
        ? new Relationalizer(previous)
        : Relationalizer.create(rootName, {
            recordField: rules.recordField,
            inherit: [...new Set([rules.recordField, ...rules.key, ...settings.partitionFields])],
          });
      const run = new StageRun({
        ws: this.ws,
        json: this.json,
        parquetRoot: this.parquetRoot,
        connection: duck.connection,
        dataset,
        runId,
        report,
        relationalizer,
        previous,
        rules,
        onFiles: options.onFiles,
      });
      const [changedDeletions, changedData] = split(changed, ([key]) => isDeletion(key));
      const [removedDeletions, removedKeys] = split(removed, isDeletion);
      const removedDeletionKeys = await run.prepare(changedDeletions, removedDeletions);
      await run.read(changedData.sort((a, b) => a[1].modifiedMs - b[1].modifiedMs || (a[0] < b[0] ? -1 : 1)));
      const removedRecords = await run.settle(removedKeys);
      await run.publish(changed, removed, removedRecords, removedDeletionKeys);
      return report;
    } finally {
      duck.close();
    }
  }

  /**
   * The files under the prefixes that are new or changed since their bookmarks, and the bookmarked files that
   * are gone. A method of its own so that the whole listing and bookmarks are not kept while the run goes.
   */
  private async changes(
    dataset: string,
    prefixes: readonly string[],
  ): Promise<{ changed: Array<[string, Bookmark]>; removed: string[] }> {
    const bookmarks = await this.ws.state.relationalize.bookmarks(dataset);
    const changed: Array<[string, Bookmark]> = [];
    for (const prefix of prefixes) {
      for (const [key, info] of await this.json.entries(prefix)) {
        const seen = bookmarks.get(key);
        if (!seen || seen.sizeBytes !== info.sizeBytes || seen.modifiedMs !== info.modifiedMs)
          changed.push([key, info]);
        bookmarks.delete(key);
      }
    }
    return { changed, removed: [...bookmarks.keys()] };
  }

  /** Removes the files of runs that started but never committed (their process died). */
  private async cleanAbandoned(dataset: string, tables: readonly string[]): Promise<void> {
    const abandoned = await this.ws.state.relationalize.abandonRuns(dataset);
    if (abandoned.length === 0) return;
    const rootName = safeName(dataset);
    const dirs = new Set(tables);
    for (const entry of await readdir(this.parquetRoot).catch(() => [] as string[])) {
      if (entry === rootName || entry.startsWith(`${rootName}_`)) dirs.add(entry);
    }
    for (const dir of dirs) {
      for (const relative of await listParquet(path.join(this.parquetRoot, dir))) {
        if (abandoned.some((run) => path.basename(relative).startsWith(`${run}_`))) {
          await rm(path.join(this.parquetRoot, dir, relative), { force: true });
        }
      }
    }
    for (const run of abandoned)
      await rm(path.join(this.parquetRoot, "_staging", run), { recursive: true, force: true });
  }
}

/** The items that pass a test, and those that do not. */
function split<T>(items: readonly T[], test: (item: T) => boolean): [T[], T[]] {
  const yes: T[] = [];
  const no: T[] = [];
  for (const item of items) (test(item) ? yes : no).push(item);
  return [yes, no];
}
