import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import path from "node:path";
import type { DuckDBConnection } from "@duckdb/node-api";
import { ConfigError, datasetRules, type EffectiveDatasetRules } from "../config/config.js";
import { Lake } from "../lake/lake.js";
import type { TypeConflict } from "../relationalize/model.js";
import { safeName } from "../relationalize/naming.js";
import { compareOrder } from "../relationalize/records.js";
import { Relationalizer } from "../relationalize/relationalize.js";
import type { Bookmark } from "../state/relationalize-state.js";
import type { ObjectStore } from "../storage/object-store.js";
import { folderEntries } from "../storage/walk.js";
import type { Workspace } from "../workspace/workspace.js";
import { ChangedFiles } from "./changed-files.js";
import { openDuckDB } from "./duckdb.js";
import { removeMergedFiles, StageRun } from "./stage-run.js";
import { listParquet, runOfFile } from "./writer.js";

export interface TableReport {
  table: string;
  rows: number;
  files: number;
  bytes: number;
}

export interface RelationalizeReport {
  dataset: string;
  /** Null when there was nothing new (no run was made); the last run's when a backlog took several. */
  runId: string | null;
  /** Runs made: more than one when there were more new files than `relationalize.filesPerRun`. */
  runs: number;
  filesRead: number;
  documents: number;
  /** Of those, documents DuckDB read and relationalized itself (the typed way, see typed-batch.ts). */
  typedDocuments: number;
  /** Groups of files DuckDB read for them (at most `relationalize.groupBytes` of JSON each). */
  groups: number;
  /** Records written in this run (in a backlog of several runs, the sum of each run's). */
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
  /** Files of earlier runs merged into fewer, larger ones (see `relationalize.compactAfterFiles`). */
  mergedFiles: number;
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
    return (await this.json.folders(DATASET_PREFIX)).map((folder) => folder.slice(DATASET_PREFIX.length, -1));
  }

  /** Every dataset with a folder in the JSON store or tables already (one whose files were all removed still has a run to do). */
  async knownDatasets(): Promise<string[]> {
    const tables = (await this.ws.state.relationalize.datasets()).map((d) => d.dataset);
    return [...new Set([...(await this.datasets()), ...tables])].sort();
  }

  /**
   * Relationalizes what is new or changed in a dataset. A backlog larger than `relationalize.filesPerRun`
   * files goes in several runs, oldest uploads first, each committed on its own: a run's bookkeeping stays
   * bounded, and a process killed in a long catch-up loses only the run it was in. The report sums them.
   * `onFiles` hears how many of the new or changed files are done, of how many, as the runs go.
   */
  async run(
    dataset: string,
    options: { onFiles?: (done: number, total: number) => void } = {},
  ): Promise<RelationalizeReport> {
    const settings = this.ws.config.relationalize;
    const total = emptyReport(dataset);
    const rules = datasetRules(settings, dataset);
    const previous = await this.ws.state.relationalize.schema(dataset);
    if (previous && previous.recordField !== rules.recordField) {
      throw new ConfigError(
        `dataset ${dataset}: its tables identify records by '${previous.recordField}', the configuration says '${rules.recordField}'; remove its tables and state to change it`,
      );
    }
    const duck = await openDuckDB();
    try {
      await this.cleanUp(dataset, previous?.tables.map((t) => t.name) ?? []);

      const prefix = `${DATASET_PREFIX}${dataset}/`;
      // The deletion export's files are bookmarked with the dataset's own: each run reads only what is new.
      const deletionPrefix = rules.deletedBy === undefined ? undefined : `${DATASET_PREFIX}${rules.deletedBy}/`;
      const isDeletion = (key: string) => deletionPrefix !== undefined && key.startsWith(deletionPrefix);
      const changed = await ChangedFiles.create(duck.connection);
      const removed = await this.changes(dataset, deletionPrefix ? [prefix, deletionPrefix] : [prefix], (key, info) =>
        changed.add(key, info, isDeletion(key)),
      );
      await changed.finish();
      if (changed.size === 0 && removed.length === 0) return total;

      // The first run also takes the deletion export's files and every removed file.
      const { filesPerRun } = settings;
      for (let start = 0; start === 0 || start < changed.dataFiles; start += filesPerRun) {
        const first = start === 0;
        const report = await this.runOnce(duck.connection, dataset, rules, {
          deletions: first ? await changed.deletions() : [],
          data: await changed.slice(start, filesPerRun),
          removed: first ? removed : [],
          isDeletion,
          onFiles: options.onFiles && ((done) => options.onFiles?.(start + done, changed.dataFiles)),
        });
        addReport(total, report);
      }
      return total;
    } finally {
      duck.close();
    }
  }

  /** One run: these files relationalized, staged, published and committed. */
  private async runOnce(
    connection: DuckDBConnection,
    dataset: string,
    rules: EffectiveDatasetRules,
    files: {
      deletions: Array<[string, Bookmark]>;
      data: Array<[string, Bookmark]>;
      removed: string[];
      isDeletion: (key: string) => boolean;
      onFiles: ((done: number) => void) | undefined;
    },
  ): Promise<RelationalizeReport> {
    const report = emptyReport(dataset);
    const run = await this.beginRun(connection, dataset, rules, report, files.onFiles);
    const [removedDeletions, removedKeys] = split(files.removed, files.isDeletion);
    const removedDeletionKeys = await run.prepare(files.deletions, removedDeletions);
    await run.read(files.data);
    const removedRecords = await run.settle(removedKeys);
    await run.compact();
    await run.publish([...files.deletions, ...files.data], files.removed, removedRecords, removedDeletionKeys);
    return report;
  }

  /**
   * Merges the small files of every partition of a dataset's tables, in a run that reads nothing: for the
   * partitions no run writes to any more (a run merges only where it writes, once there are
   * `relationalize.compactAfterFiles`), and for tables written before merging existed. The same rules as a
   * run's merge (same columns and types, under `relationalize.compactBelowBytes`), from two files up.
   * `onPartitions` hears how many of the tables' partitions are done, of how many.
   */
  async compact(
    dataset: string,
    options: { onPartitions?: (done: number, total: number) => void } = {},
  ): Promise<RelationalizeReport> {
    const report = emptyReport(dataset);
    const previous = await this.ws.state.relationalize.schema(dataset);
    if (!previous) return report;
    const duck = await openDuckDB();
    try {
      await this.cleanUp(
        dataset,
        previous.tables.map((t) => t.name),
      );
      report.runs = 1;
      const rules = datasetRules(this.ws.config.relationalize, dataset);
      const run = await this.beginRun(duck.connection, dataset, rules, report, undefined);
      await run.compact({ everywhere: true, ...options });
      await run.publish([], [], [], []);
      return report;
    } finally {
      duck.close();
    }
  }

  /**
   * Starts a run that writes into `report`: the dataset's schema as the last committed run left it (the run
   * before may have grown it), or a new one.
   */
  private async beginRun(
    connection: DuckDBConnection,
    dataset: string,
    rules: EffectiveDatasetRules,
    report: RelationalizeReport,
    onFiles: ((done: number) => void) | undefined,
  ): Promise<StageRun> {
    const state = this.ws.state.relationalize;
    const runId = newRunId();
    report.runId = runId;
    const previous = await state.schema(dataset);
    await state.startRun(runId, dataset);
    const relationalizer = previous
      ? new Relationalizer(previous)
      : Relationalizer.create(safeName(dataset), {
          recordField: rules.recordField,
          inherit: [...new Set([rules.recordField, ...rules.key, ...this.ws.config.relationalize.partitionFields])],
        });
    return new StageRun({
      ws: this.ws,
      json: this.json,
      parquetRoot: this.parquetRoot,
      connection,
      dataset,
      runId,
      report,
      relationalizer,
      previous,
      rules,
      onFiles,
    });
  }

  /**
   * Hands each file under the prefixes that is new or changed since its bookmark to `onChanged`, and returns
   * the bookmarked files that are gone. The listing is compared a page at a time, so neither it nor the
   * bookmarks are held whole: the daily run over a large history costs little memory. Only when fewer files
   * matched a bookmark than there are bookmarks are the bookmarks gone through again, to find those that went.
   */
  private async changes(
    dataset: string,
    prefixes: readonly string[],
    onChanged: (key: string, info: Bookmark) => void,
  ): Promise<string[]> {
    const state = this.ws.state.relationalize;
    let matched = 0;
    for (const prefix of prefixes) {
      for await (const page of this.json.entries(prefix)) {
        const bookmarks = await state.bookmarks(
          dataset,
          page.map(([key]) => key),
        );
        for (const [key, info] of page) {
          const seen = bookmarks.get(key);
          if (seen) matched++;
          if (!seen || seen.sizeBytes !== info.sizeBytes || seen.modifiedMs !== info.modifiedMs) onChanged(key, info);
        }
      }
    }
    const removed: string[] = [];
    if (matched < (await state.bookmarkCount(dataset))) {
      for await (const keys of state.bookmarkedKeys(dataset)) {
        for (const key of keys) {
          if (!prefixes.some((p) => key.startsWith(p)) || !(await this.json.exists(key))) removed.push(key);
        }
      }
    }
    return removed;
  }

  /**
   * Removes what earlier runs' processes left when they died: the files (and lake updates) of runs that
   * started but never committed, and the files a committed run merged but did not get to delete.
   */
  private async cleanUp(dataset: string, tables: readonly string[]): Promise<void> {
    await removeMergedFiles(this.ws, dataset, this.parquetRoot);
    const abandoned = await this.ws.state.relationalize.abandonRuns(dataset);
    if (abandoned.length === 0) return;
    await new Lake(this.ws).abandonRuns(abandoned);
    const rootName = safeName(dataset);
    const dirs = new Set(tables);
    for (const { name } of await folderEntries(this.parquetRoot)) {
      if (name === rootName || name.startsWith(`${rootName}_`)) dirs.add(name);
    }
    for (const dir of dirs) {
      for (const relative of await listParquet(path.join(this.parquetRoot, dir))) {
        if (abandoned.includes(runOfFile(path.basename(relative)))) {
          await rm(path.join(this.parquetRoot, dir, relative), { force: true });
        }
      }
    }
    for (const run of abandoned)
      await rm(path.join(this.parquetRoot, "_staging", run), { recursive: true, force: true });
  }
}

/** A run's id: its start time first, so that ids sort by it; never a '_' (file names start with the id and one). */
function newRunId(): string {
  return `r${Date.now().toString(36)}${randomBytes(4).toString("hex")}`;
}

function emptyReport(dataset: string): RelationalizeReport {
  return {
    dataset,
    runId: null,
    runs: 0,
    filesRead: 0,
    documents: 0,
    typedDocuments: 0,
    groups: 0,
    records: 0,
    replaced: 0,
    deleted: 0,
    deletedByExport: 0,
    older: 0,
    mergedFiles: 0,
    counts: [],
    unreadable: [],
    tables: [],
    conflicts: [],
  };
}

/** Adds a run's report to the sum of the runs before it (the sum keeps the last run's id). */
function addReport(total: RelationalizeReport, run: RelationalizeReport): void {
  total.runId = run.runId;
  total.runs++;
  for (const field of SUMMED) total[field] += run[field];
  total.unreadable = total.unreadable.concat(run.unreadable);
  total.conflicts = total.conflicts.concat(run.conflicts);
  for (const table of run.tables) {
    const known = total.tables.find((t) => t.table === table.table);
    if (!known) total.tables.push({ ...table });
    else for (const field of ["rows", "files", "bytes"] as const) known[field] += table[field];
  }
  for (const counts of run.counts) {
    const known = total.counts.find((c) => c.value === counts.value);
    if (!known) total.counts.push({ ...counts });
    else for (const field of ["read", "older", "deletedByExport", "written"] as const) known[field] += counts[field];
  }
  total.counts.sort((a, b) => compareOrder([a.value], [b.value]));
}

const SUMMED = [
  "filesRead",
  "documents",
  "typedDocuments",
  "groups",
  "records",
  "replaced",
  "deleted",
  "deletedByExport",
  "older",
  "mergedFiles",
] as const;

/** The items that pass a test, and those that do not. */
function split<T>(items: readonly T[], test: (item: T) => boolean): [T[], T[]] {
  const yes: T[] = [];
  const no: T[] = [];
  for (const item of items) (test(item) ? yes : no).push(item);
  return [yes, no];
}
