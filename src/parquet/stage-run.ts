import { mkdir, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type { DuckDBConnection } from "@duckdb/node-api";
import type { EffectiveDatasetRules } from "../config/config.js";
import { Lake } from "../lake/lake.js";
import { type ColumnSchema, type DatasetSchema, rootFieldOf, type TableSchema } from "../relationalize/model.js";
import { parseDocument } from "../relationalize/parse.js";
import { compareOrder, orderOf, type RecordOrder, recordKeyOf } from "../relationalize/records.js";
import { documentProblem, type Relationalizer } from "../relationalize/relationalize.js";
import { fitsSchema, representative, type Structure } from "../relationalize/structure.js";
import type { Bookmark, RecordLocation, RunCommit } from "../state/relationalize-state.js";
import type { ObjectStore } from "../storage/object-store.js";
import { folderEntries } from "../storage/walk.js";
import type { Workspace } from "../workspace/workspace.js";
import { literal } from "./duckdb.js";
import type { CountsByValue, RelationalizeReport, TableReport } from "./stage.js";
import { type BatchFile, DUCKDB_READS_FROM, type LeftDocument, TypedBatch } from "./typed-batch.js";
import { copyToParquet, listParquet, removeRecords, runOfFile, type WrittenFile, writeParquet } from "./writer.js";

/** Files at least this large are read line by line (the JavaScript way) or by DuckDB, not whole by Node. */
const STREAM_FROM_BYTES = 4 * 1024 * 1024;
/** Files DuckDB reads and relationalizes at once, at most (their bytes are bounded by `relationalize.groupBytes`). */
const GROUP_FILES = 20_000;
/** The record key under which a typed structure's representative is observed (never a real record: NUL). */
const OBSERVED = "\u0000observed";
/** File reads kept in flight at once: a local disk or object store answers many small reads far faster side by side. */
const IO_WINDOW = 32;

export interface StageRunOptions {
  ws: Workspace;
  json: ObjectStore;
  parquetRoot: string;
  connection: DuckDBConnection;
  dataset: string;
  runId: string;
  report: RelationalizeReport;
  relationalizer: Relationalizer;
  previous: DatasetSchema | undefined;
  rules: EffectiveDatasetRules;
  onFiles?: ((done: number, total: number) => void) | undefined;
}

/**
 * One relationalize run of a dataset, in its steps: `read` the new files into staged Parquet (the typed way
 * for the groups DuckDB can take, the JavaScript way for the rest), `settle` which records this run replaces
 * or deletes, `publish` the staged files, the manifest and the lake updates, then commit.
 */
export class StageRun {
  private readonly settings: Workspace["config"]["relationalize"];
  private readonly staging: string;
  private readonly tableReports = new Map<string, TableReport>();
  private readonly staged = new Map<string, { table: string; relative: string }>();
  private batch = 0;
  private schema: DatasetSchema | undefined;
  /** The Parquet write in flight (at most one; DuckDB writes while the next batch is relationalized). */
  private writing: Promise<void> = Promise.resolve();
  /** Records written in this run, the batch that last wrote each, and records to take out of earlier batches. */
  private readonly records = new Map<string, RecordLocation>();
  private readonly batchOf = new Map<string, number>();
  private readonly rewrittenInRun = new Map<number, string[]>();
  /**
   * Files of earlier runs merged by this run, or left without some of their records (deleted once it
   * commits), and the files their rows went into.
   */
  private readonly merged: RunCommit["compacted"] = [];
  private readonly mergedInto: Array<{ table: string; relative: string }> = [];
  /** Rests of earlier runs' files staged so far: numbers their files. */
  private rests = 0;
  /** The typed way's read plan, carried from one group to the next. */
  private plan: Structure | null = null;
  private groups = 0;
  /** With newest-by rules: where every record already in the tables is, as the last committed run left them. */
  private locations = new Map<string, RecordLocation>();
  /** Records the deletion export names (all in force after this run), and the files naming them since this run. */
  private readonly deleted = new Set<string>();
  private readonly newlyDeleted: Array<{ record: string; jsonKey: string }> = [];
  /** Whether DuckDB may read documents itself: not for a key of several fields (it reads one string field). */
  private readonly typed: boolean;
  /** With `countBy`: each value's counts, and the value of the document each record was written from. */
  private readonly counts = new Map<string | null, CountsByValue>();
  private readonly countedValueOf = new Map<string, string | null>();

  constructor(private readonly o: StageRunOptions) {
    this.settings = o.ws.config.relationalize;
    this.staging = path.join(o.parquetRoot, "_staging", o.runId);
    this.schema = o.previous;
    this.typed = this.settings.typed && o.rules.key.length === 1;
  }

  /**
   * Loads the record locations (with newest-by rules), and the records the deletion export names: those of
   * its files that are gone or changed no longer count, changed and new files are read (each document's
   * record id is all that matters). Returns the deletion files whose earlier records are to be dropped from
   * the state.
   */
  async prepare(changedDeletions: ReadonlyArray<readonly [string, Bookmark]>, removedDeletionKeys: string[]) {
    const { ws, dataset, json, report } = this.o;
    // Newest-by rules weigh each document against the version in the tables as it is read; otherwise `settle`
    // asks only about the records the run met.
    if (this.o.rules.newestBy.length > 0) this.locations = await ws.state.relationalize.records(dataset);
    const stale = new Set([...removedDeletionKeys, ...changedDeletions.map(([key]) => key)]);
    for (const { record, jsonKey } of await ws.state.relationalize.deletedRecords(dataset)) {
      if (!stale.has(jsonKey)) this.deleted.add(record);
    }
    for (const [key] of changedDeletions) {
      report.filesRead++;
      let line = 0;
      for await (const text of json.lines(key)) {
        const parsed = parse(text);
        line++;
        if (parsed instanceof Error) report.unreadable.push({ key, line, message: parsed.message });
        if (parsed === BLANK || parsed instanceof Error) continue;
        const record = recordKeyOf(parsed.document, this.o.rules.key);
        if (record === undefined) continue;
        this.deleted.add(record);
        this.newlyDeleted.push({ record, jsonKey: key });
      }
    }
    return [...stale];
  }

  /**
   * Relationalizes the files in upload order (oldest first). A record met again later in the run replaces
   * its earlier rows: still pending ones in the relationalizer, already written ones are taken out of that
   * batch's files by `settle`. Small files (one record each, as intake writes) are read whole, several ahead
   * of the one being processed; large ones are read by DuckDB, and those larger than a group (or in a store
   * DuckDB cannot read) line by line when their turn comes, in pieces of a group each.
   */
  async read(ordered: ReadonlyArray<readonly [string, Bookmark]>): Promise<void> {
    const { json } = this.o;
    // Files DuckDB opens itself are not read here first.
    const readWhole = this.typed && json.localPath ? DUCKDB_READS_FROM : STREAM_FROM_BYTES;
    const contents = readAhead(
      ordered,
      ([key, info]) => (info.sizeBytes < readWhole ? json.get(key) : Promise.resolve(null)),
      IO_WINDOW,
    );
    const { groupBytes } = this.settings;
    let done = 0;
    const finished = (files: number) => {
      done += files;
      this.o.onFiles?.(done, ordered.length);
    };
    const groups = new Grouping<BatchFile>({ bytes: groupBytes, items: GROUP_FILES }, async (files) => {
      await this.relationalizeGroup(files);
      finished(files.length);
    });
    for await (const [[key, info], content] of contents) {
      this.o.report.filesRead++;
      if (!this.typed) {
        await this.relationalizeFile(key, content);
        finished(1);
        continue;
      }
      if (!content && (info.sizeBytes > groupBytes || !json.localPath)) {
        await groups.flush();
        await this.relationalizeInPieces(key);
        finished(1);
        continue;
      }
      await groups.add({ key, content, localPath: json.localPath?.(key) }, content?.length ?? info.sizeBytes);
    }
    await groups.flush();
    await this.writeBatch();
    await this.writing;
    this.o.report.records = this.records.size;
    for (const record of this.records.keys()) {
      const value = this.countedValueOf.get(record);
      if (value !== undefined) this.countsOf(value).written++;
    }
    this.o.report.counts = [...this.counts.values()].sort((a, b) => compareOrder([a.value], [b.value]));
  }

  /**
   * Takes records written twice in this run out of their earlier batches' files, and replaced or deleted
   * records (their JSON file is gone) out of the files of the runs that wrote them. Returns the deleted ones.
   */
  async settle(removedKeys: readonly string[]): Promise<string[]> {
    const schema = this.finalSchema();
    const { report, runId, connection } = this.o;
    // Each table folder is listed once, whatever the number of batches or runs whose files lose records.
    const batchPrefix = `${runId}_b`;
    for (const table of this.rewrittenInRun.size > 0 ? schema.tables : []) {
      const column = this.recordColumnOf(table)?.name;
      if (!column) continue;
      const emptied = await removeFromFolder(connection, path.join(this.staging, table.name), column, (name) =>
        name.startsWith(batchPrefix)
          ? this.rewrittenInRun.get(Number(name.slice(batchPrefix.length).split("_")[0]))
          : undefined,
      );
      for (const { relative, rest } of emptied) if (rest === undefined) this.staged.delete(`${table.name}/${relative}`);
    }
    const removedKeySet = new Set(removedKeys);
    const locations =
      this.o.rules.newestBy.length > 0
        ? this.locations
        : await this.o.ws.state.relationalize.records(this.o.dataset, {
            records: [...this.records.keys(), ...this.deleted],
            jsonKeys: removedKeys,
          });
    const stale = new Map<string, string[]>();
    const addStale = (record: string, location: RecordLocation) => {
      stale.set(location.runId, [...(stale.get(location.runId) ?? []), record]);
    };
    const removedRecords: string[] = [];
    for (const [record, location] of locations) {
      if (this.records.has(record)) {
        report.replaced++;
        addStale(record, location);
      } else if (this.deleted.has(record)) {
        report.deletedByExport++;
        addStale(record, location);
        removedRecords.push(record);
      } else if (removedKeySet.has(location.jsonKey)) {
        report.deleted++;
        addStale(record, location);
        removedRecords.push(record);
      }
    }
    // A record is in the files of the run that wrote it, or of the runs that merged those (compaction).
    const into =
      stale.size > 0 ? await this.o.ws.state.relationalize.mergedInto(this.o.dataset, [...stale.keys()]) : null;
    const idsByRun = new Map<string, string[]>();
    for (const [oldRun, ids] of stale) {
      for (const run of [oldRun, ...(into?.get(oldRun) ?? [])])
        idsByRun.set(run, [...(idsByRun.get(run) ?? []), ...ids]);
    }
    for (const table of stale.size > 0 ? schema.tables : []) {
      const column = this.recordColumnOf(table)?.name;
      if (column) await this.supersede(table.name, column, (name) => idsByRun.get(runOfFile(name)));
    }
    return removedRecords;
  }

  /**
   * Takes records out of earlier runs' files without changing them: the rest of such a file is staged as
   * this run's (`<run>_r<n>`), and the file goes once the run commits, as a merged one does. Until then the
   * tables read as before the run; a run that dies leaves them as they were.
   */
  private async supersede(
    table: string,
    column: string,
    idsOf: (name: string) => readonly string[] | undefined,
  ): Promise<void> {
    const { parquetRoot, runId, connection } = this.o;
    const staged = path.join(this.staging, table);
    const lost = await removeFromFolder(connection, path.join(parquetRoot, table), column, idsOf, (relative) =>
      path.join(staged, path.dirname(relative), `${runId}_r${this.rests++}_0.parquet`),
    );
    for (const { relative, rest } of lost) {
      this.merged.push({ absorbedRunId: runOfFile(path.basename(relative)), file: path.join(table, relative) });
      if (rest !== undefined) this.mergedInto.push({ table, relative: path.relative(staged, rest) });
    }
  }

  /**
   * Merges, in each partition this run writes to, the files earlier runs left there once a table has
   * `relationalize.compactAfterFiles` of them smaller than `relationalize.compactBelowBytes`: every run adds
   * a file per partition it touches, and a reader opens them all. Files are merged only with files of the
   * same columns and types (a later run may have widened a type; merging would change how such a file's
   * values read back). The merged file is staged as this run's; the files it replaces are deleted once the
   * run commits (`removeMergedFiles`), and a record written by a merged file's run is looked for in this
   * run's files too (`mergedInto`). `everywhere`: in every partition of the tables, from two files up.
   */
  async compact(
    options: { everywhere?: boolean; onPartitions?: (done: number, total: number) => void } = {},
  ): Promise<void> {
    const { parquetRoot, runId, connection, report } = this.o;
    const after = options.everywhere ? 2 : this.settings.compactAfterFiles;
    if (after === 0) return;
    const files = options.everywhere
      ? (
          await Promise.all(
            this.finalSchema().tables.map(async (t) =>
              (await listParquet(path.join(parquetRoot, t.name))).map((relative) => ({ table: t.name, relative })),
            ),
          )
        ).flat()
      : [...this.staged.values()];
    const partitions = new Set(files.map((f) => `${f.table}/${path.dirname(f.relative)}`));
    // A file this run left without some records goes once it commits; the rest it staged may merge instead.
    const gone = new Set(this.merged.map((m) => m.file));
    let done = 0;
    for (const at of partitions) {
      options.onPartitions?.(done++, partitions.size);
      const [table, partition] = [at.slice(0, at.indexOf("/")), at.slice(at.indexOf("/") + 1)];
      const dir = path.join(parquetRoot, table, partition);
      const candidates: Array<{ name: string; file: string; rest: boolean }> = [];
      for (const { name } of await folderEntries(dir)) {
        if (name.endsWith(".parquet") && !gone.has(path.join(table, partition, name)))
          candidates.push({ name, file: path.join(dir, name), rest: false });
      }
      for (const { table: t, relative } of this.mergedInto) {
        if (t === table && path.dirname(relative) === partition)
          candidates.push({
            name: path.basename(relative),
            file: path.join(this.staging, table, relative),
            rest: true,
          });
      }
      const small: typeof candidates = [];
      for (const c of candidates) if ((await stat(c.file)).size < this.settings.compactBelowBytes) small.push(c);
      small.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      if (small.length < after) continue;
      const groups = new Map<string, typeof small>();
      for (const c of small) {
        const columns = await connection.runAndReadAll(
          `DESCRIBE SELECT * FROM read_parquet(${literal(c.file)}, hive_partitioning = false)`,
        );
        const signature = JSON.stringify(columns.getRowsJS().map(([column, type]) => [column, type]));
        groups.set(signature, [...(groups.get(signature) ?? []), c]);
      }
      let group = 0;
      for (const same of groups.values()) {
        if (same.length < 2) continue;
        const sources = same.map((c) => literal(c.file)).join(", ");
        const written = await copyToParquet(
          connection,
          `(SELECT * FROM read_parquet([${sources}], hive_partitioning = false))`,
          path.join(this.staging, table, partition),
          `${runId}_c${group++}`,
          [],
        );
        for (const c of same) {
          if (!c.rest) {
            this.merged.push({ absorbedRunId: runOfFile(c.name), file: path.join(table, partition, c.name) });
            continue;
          }
          // A rest this run staged is never published: the merged file holds its rows.
          await rm(c.file);
          const at = this.mergedInto.findIndex((f) => f.table === table && f.relative === path.join(partition, c.name));
          this.mergedInto.splice(at, 1);
        }
        for (const file of written.files)
          this.mergedInto.push({ table, relative: path.join(partition, file.relative) });
        report.mergedFiles += same.length;
      }
    }
    options.onPartitions?.(done, partitions.size);
  }

  /**
   * Moves the staged files into place, writes the manifest and the lake updates, then commits the run in
   * the state store (until then its files do not count), and deletes the files it merged.
   */
  async publish(
    changed: ReadonlyArray<readonly [string, Bookmark]>,
    removedKeys: string[],
    removedRecords: string[],
    removedDeletionKeys: string[],
  ) {
    const { report, runId, parquetRoot, ws, dataset } = this.o;
    const schema = this.finalSchema();
    await this.moveIntoPlace(this.staged.values());
    report.tables = [...this.tableReports.values()];
    const manifest = { ...report, finishedAt: new Date().toISOString(), files: [...this.staged.keys()] };
    await mkdir(path.join(parquetRoot, "_manifests"), { recursive: true });
    await writeFile(path.join(parquetRoot, "_manifests", `${runId}.json`), `${JSON.stringify(manifest, null, 2)}\n`);
    // The lake gets the run as one update per table before it counts here: a run cut off after publishing is
    // redone and published again, which changes nothing (the newest update per record wins).
    if (ws.config.lake.publishRelationalized) {
      await new Lake(ws).publishRelationalized({
        runId,
        source: dataset,
        tables: schema.tables.flatMap((table) => {
          const recordColumn = this.recordColumnOf(table);
          if (!recordColumn) return [];
          const files = [...this.staged.values()]
            .filter((f) => f.table === table.name)
            .map((f) => path.join(parquetRoot, f.table, f.relative));
          return [{ name: table.name, recordColumn: recordColumn.name, recordType: recordColumn.type, files }];
        }),
        deletedRecords: removedRecords,
      });
    }
    // Merged files go in last: until the merged-away files are deleted just after the commit, a reader of the
    // folder sees their rows twice. A process that dies before the commit leaves them to the next run's clean-up.
    await this.moveIntoPlace(this.mergedInto);
    await rm(this.staging, { recursive: true, force: true });
    await ws.state.relationalize.commitRun({
      runId,
      dataset,
      schema,
      bookmarks: new Map(changed),
      removedKeys,
      records: this.records,
      removedRecords,
      deletedRecords: this.newlyDeleted,
      removedDeletionKeys,
      compacted: this.merged,
      summary: { ...report, tables: report.tables },
    });
    await removeMergedFiles(ws, dataset, parquetRoot);
  }

  private async moveIntoPlace(files: Iterable<{ table: string; relative: string }>): Promise<void> {
    for (const { table, relative } of files) {
      const target = path.join(this.o.parquetRoot, table, relative);
      await mkdir(path.dirname(target), { recursive: true });
      await rename(path.join(this.staging, table, relative), target);
    }
  }

  private finalSchema(): DatasetSchema {
    if (!this.schema) throw new Error(`dataset ${this.o.dataset}: no schema after relationalizing`);
    return this.schema;
  }

  private recordColumnOf(table: TableSchema): ColumnSchema | undefined {
    return table.columns.find((c) => rootFieldOf(c) === this.o.rules.recordField);
  }

  private partitionColumns(table: TableSchema): string[] {
    const fields = new Set(this.settings.partitionFields);
    return table.columns.filter((c) => fields.has(rootFieldOf(c) ?? "")).map((c) => c.name);
  }

  private noteWritten(table: string, files: readonly WrittenFile[], rows: number): void {
    const entry = this.tableReports.get(table) ?? { table, rows: 0, files: 0, bytes: 0 };
    for (const file of files) {
      this.staged.set(`${table}/${file.relative}`, { table, relative: file.relative });
      entry.files++;
      entry.bytes += file.bytes;
    }
    entry.rows += rows;
    this.tableReports.set(table, entry);
  }

  /** `counted`: the record's `countBy` value (undefined without `countBy`). */
  private noteRecord(
    recordKey: string,
    key: string,
    order: RecordOrder | null = null,
    counted: string | null | undefined = undefined,
  ): void {
    if (counted !== undefined) this.countedValueOf.set(recordKey, counted);
    const earlier = this.batchOf.get(recordKey);
    if (earlier !== undefined && earlier < this.batch)
      this.rewrittenInRun.set(earlier, [...(this.rewrittenInRun.get(earlier) ?? []), recordKey]);
    this.batchOf.set(recordKey, this.batch);
    this.records.set(recordKey, { runId: this.o.runId, jsonKey: key, order });
  }

  /**
   * Whether a document is to be written: not when the deletion export names its record, nor when the
   * record's version in the tables (or met earlier in this run) is newer by the dataset's newest-by fields.
   */
  private admits(recordKey: string, order: RecordOrder | null, counted: CountsByValue | undefined): boolean {
    if (this.deleted.has(recordKey)) {
      this.o.report.deletedByExport++;
      if (counted) counted.deletedByExport++;
      return false;
    }
    const known = (this.records.get(recordKey) ?? this.locations.get(recordKey))?.order;
    if (order && known && compareOrder(order, known) < 0) {
      this.o.report.older++;
      if (counted) counted.older++;
      return false;
    }
    return true;
  }

  private countsOf(value: string | null): CountsByValue {
    let counts = this.counts.get(value);
    if (!counts) {
      counts = { value, read: 0, older: 0, deletedByExport: 0, written: 0 };
      this.counts.set(value, counts);
    }
    return counts;
  }

  /**
   * Flushes the relationalizer's rows as a batch; DuckDB writes them on its own threads while the next batch
   * is relationalized: at most one write is in flight, and its failure surfaces at the next batch or the end.
   */
  private async writeBatch(): Promise<void> {
    const flushed = this.o.relationalizer.flush();
    this.schema = flushed.schema;
    this.o.report.conflicts.push(...flushed.conflicts);
    const prefix = `${this.o.runId}_b${this.batch}`;
    this.batch++;
    await this.writing;
    this.writing = (async () => {
      for (const table of flushed.tables) {
        const dir = path.join(this.staging, table.schema.name);
        const files = await writeParquet(this.o.connection, table, dir, prefix, this.partitionColumns(table.schema));
        this.noteWritten(table.schema.name, files, table.rows.length);
      }
    })();
    this.writing.catch(() => {});
  }

  /**
   * The JavaScript way: a parsed line relationalized here, whatever it holds (or reported, if unreadable).
   * `line` is a function when the line number must be looked up (only needed for a report or a missing id).
   */
  private async relationalizeDocument(key: string, line: number | (() => Promise<number>), parsed: Parsed) {
    if (parsed === BLANK) return;
    const { report, relationalizer } = this.o;
    const lineNumber = async () => (typeof line === "number" ? line : line());
    const refused = parsed instanceof Error ? parsed.message : this.refusal(parsed.document);
    if (refused !== undefined || parsed instanceof Error) {
      report.unreadable.push({ key, line: await lineNumber(), message: String(refused) });
      return;
    }
    report.documents++;
    const { key: fields, newestBy, countBy } = this.o.rules;
    const recordKey = recordKeyOf(parsed.document, fields) ?? `${key}#${await lineNumber()}`;
    const order = newestBy.length > 0 ? orderOf(parsed.document, newestBy) : null;
    const countedValue = countBy === undefined ? undefined : (orderOf(parsed.document, [countBy])[0] ?? null);
    const counted = countedValue === undefined ? undefined : this.countsOf(countedValue);
    if (counted) counted.read++;
    if (!this.admits(recordKey, order, counted)) return;
    relationalizer.add(parsed.document, { recordKey, partition: partitionOf(key) });
    this.noteRecord(recordKey, key, order, countedValue);
    if (relationalizer.pendingRows >= this.settings.batchRows) await this.writeBatch();
  }

  /** The root fields the dataset's rules read from each document: `newestBy`'s, then `countBy`. */
  private ruleFields(): string[] {
    const { newestBy, countBy } = this.o.rules;
    return [...newestBy, ...(countBy === undefined ? [] : [countBy])];
  }

  /**
   * The typed documents the dataset's rules must weigh one by one, taken off the typed way for JavaScript:
   * all of them when a field the rules read is not text in this batch; else those of records with several
   * documents here, named by the deletion export, or (with `newestBy`) already written. The rest are new
   * records of one document each, which the rules let through as they are.
   */
  private async weighed(typed: TypedBatch): Promise<LeftDocument[]> {
    const { newestBy, deletedBy, countBy } = this.o.rules;
    if (newestBy.length === 0 && deletedBy === undefined && countBy === undefined) return [];
    const records = await typed.records(this.ruleFields());
    if (records === undefined) return typed.move(((await typed.records()) ?? []).map((r) => r.record));
    const known = (record: string) => this.records.has(record) || this.locations.has(record);
    const weigh = records
      .map((r) => r.record)
      .filter((record) => this.deleted.has(record) || (newestBy.length > 0 && known(record)));
    return typed.move([...new Set([...(await typed.repeatedRecords()), ...weigh])]);
  }

  /**
   * Why a document cannot be taken although it is JSON: neither an object nor an array of objects, or one that
   * holds the column a composite record id goes in.
   */
  private refusal(document: unknown): string | undefined {
    const problem = documentProblem(document);
    if (problem !== undefined) return problem;
    const { key, recordField } = this.o.rules;
    if (key.length === 1) return undefined;
    const root = Array.isArray(document) ? document[0] : document;
    return typeof root === "object" && root !== null && Object.hasOwn(root, recordField)
      ? `has a field '${recordField}', the column that holds this dataset's record id (${key.join(" + ")})`
      : undefined;
  }

  /** The JavaScript way for a whole file, or for a piece of its lines. */
  private async relationalizeFile(key: string, content: Buffer | null, piece?: BatchFile["piece"]): Promise<void> {
    const lines: AsyncIterable<string> | string[] =
      piece?.lines ?? (content ? content.toString("utf8").split("\n") : this.o.json.lines(key));
    let i = (piece?.firstLine ?? 1) - 1;
    for await (const line of lines) await this.relationalizeDocument(key, ++i, parse(line));
  }

  /**
   * A file larger than a group (or in a store DuckDB cannot read): its lines are read here and go the typed
   * way a group at a time, so memory stays bounded whatever the file's size.
   */
  private async relationalizeInPieces(key: string): Promise<void> {
    let before = 0;
    const pieces = new Grouping<string>(
      { bytes: this.settings.groupBytes, items: Number.POSITIVE_INFINITY },
      (lines) => {
        const piece = { lines, firstLine: before + 1 };
        before += lines.length;
        return this.relationalizeGroup([{ key, content: null, localPath: undefined, piece }]);
      },
    );
    // Characters stand for bytes: as near as the bound needs, and without encoding every line.
    for await (const line of this.o.json.lines(key)) await pieces.add(line, line.length + 1);
    await pieces.flush();
  }

  /** The typed way (typed-batch.ts) for a group of files: what it cannot take goes the JavaScript way. */
  private async relationalizeGroup(files: readonly BatchFile[]): Promise<void> {
    if (files.length === 0) return;
    const { report, relationalizer, connection, runId, json } = this.o;
    await this.writing;
    const typed = new TypedBatch(connection, `typed_${runId}_${this.groups++}`, this.o.rules.recordField);
    try {
      const required = {
        recordField: this.o.rules.recordField,
        rootFields: [...new Set(files.flatMap((f) => Object.keys(partitionOf(f.key))))],
      };
      if (!(await typed.load(files)) || !(await typed.classify(required, relationalizer.currentSchema, this.plan))) {
        for (const file of files) await this.relationalizeFile(file.key, file.content, file.piece);
        return;
      }
      report.groups++;
      this.plan = typed.readWith ?? this.plan;
      const viaJs = async (documents: readonly LeftDocument[]) => {
        for (const document of documents) {
          const file = files[document.file] as BatchFile;
          const line = document.line ?? (() => lineOf(json, file.key, document.ordinal));
          await this.relationalizeDocument(file.key, line, parse(document.text));
        }
      };
      // Parsed here to learn the record, and again when relationalized: holding a whole group's parsed
      // documents in between would cost more memory than the second parse costs time.
      const recordOf = (text: string) => {
        const result = parse(text);
        return result === BLANK || result instanceof Error ? undefined : recordKeyOf(result.document, this.o.rules.key);
      };
      await viaJs(await typed.leftDocuments(recordOf));
      await viaJs(await this.weighed(typed));
      const classes = typed.typedClasses;
      for (const c of classes) relationalizer.observe(representative(c), { recordKey: OBSERVED });
      await this.writeBatch();
      // One connection: the typed batch's queries wait for the write in flight.
      await this.writing;
      // A document of the JavaScript way may have made a column text: documents with a number there go that way too.
      const late = classes.filter((c) => !fitsSchema(c, this.finalSchema()));
      if (late.length > 0) {
        await viaJs(await typed.demote(late));
        await this.writeBatch();
        await this.writing;
      }
      const typedDocuments = await typed.documents();
      report.documents += typedDocuments;
      report.typedDocuments += typedDocuments;
      const { newestBy, countBy } = this.o.rules;
      for (const { record, file, values } of (await typed.records(this.ruleFields())) ?? []) {
        const counted = countBy === undefined ? undefined : (values[newestBy.length] ?? null);
        if (counted !== undefined) this.countsOf(counted).read++;
        const order = newestBy.length > 0 ? values.slice(0, newestBy.length) : null;
        this.noteRecord(record, (files[file] as BatchFile).key, order, counted);
      }
      const schema = this.finalSchema();
      const selects = await typed.selects(schema);
      const prefix = `${runId}_b${this.batch}`;
      this.batch++;
      for (const table of schema.tables) {
        const select = selects.get(table.name);
        if (!select) continue;
        const dir = path.join(this.staging, table.name);
        const written = await copyToParquet(connection, `(${select})`, dir, prefix, this.partitionColumns(table));
        if (written.rows > 0) this.noteWritten(table.name, written.files, written.rows);
      }
    } finally {
      await typed.close();
    }
  }
}

/**
 * Gathers items into the groups the typed way reads at once: a group is handed on before an item would take
 * it over `bytes` (an item larger than that makes a group of its own) or past `items`.
 */
class Grouping<T> {
  private pending: T[] = [];
  private bytes = 0;

  constructor(
    private readonly limits: { bytes: number; items: number },
    private readonly take: (items: T[]) => Promise<void>,
  ) {}

  async add(item: T, bytes: number): Promise<void> {
    const full = this.bytes + bytes > this.limits.bytes || this.pending.length >= this.limits.items;
    if (this.pending.length > 0 && full) await this.flush();
    this.pending.push(item);
    this.bytes += bytes;
  }

  async flush(): Promise<void> {
    const items = this.pending;
    this.pending = [];
    this.bytes = 0;
    if (items.length > 0) await this.take(items);
  }
}

/** Fetches items ahead of the consumer, at most `window` at a time, and yields them in order. */
async function* readAhead<T, R>(
  items: readonly T[],
  fetch: (item: T) => Promise<R>,
  window: number,
): AsyncGenerator<[T, R]> {
  const queue: Array<Promise<R>> = [];
  let next = 0;
  const enqueue = () => {
    const promise = fetch(items[next++] as T);
    // Awaited below in order; this only keeps an early failure from being reported as unhandled.
    promise.catch(() => {});
    queue.push(promise);
  };
  while (next < items.length && queue.length < window) enqueue();
  for (const item of items) {
    const result = await (queue.shift() as Promise<R>);
    if (next < items.length) enqueue();
    yield [item, result];
  }
}

/** The line number of a file's nth non-blank line (0-based): for a document DuckDB read, whose line it does not say. */
async function lineOf(store: ObjectStore, key: string, ordinal: number): Promise<number> {
  let line = 0;
  let seen = -1;
  for await (const text of store.lines(key)) {
    line++;
    if (text.trim() !== "" && ++seen === ordinal) return line;
  }
  return line;
}

/**
 * Deletes the files that committed runs merged into files of their own, or left without some records, and
 * that are still there (just after the run commits, or its process died before it deleted them).
 */
export async function removeMergedFiles(ws: Workspace, dataset: string, parquetRoot: string): Promise<void> {
  const files = await ws.state.relationalize.mergedFiles(dataset);
  for (const file of files) await rm(path.join(parquetRoot, file), { force: true });
  await ws.state.relationalize.mergedFilesRemoved(dataset, files);
}

/**
 * Removes records from the Parquet files below a table's folder, listed once: `idsOf` gives, from a file's
 * name, the records to remove from it (if any), and `restOf` where the rest of such a file goes (without it,
 * the file is rewritten in place). Returns the files that lost rows, each with where its rest is (undefined:
 * no row was left, and a file rewritten in place is gone).
 */
async function removeFromFolder(
  connection: DuckDBConnection,
  dir: string,
  column: string,
  idsOf: (name: string) => readonly string[] | undefined,
  restOf?: (relative: string) => string,
): Promise<Array<{ relative: string; rest: string | undefined }>> {
  const lost: Array<{ relative: string; rest: string | undefined }> = [];
  for (const relative of await listParquet(dir)) {
    const ids = idsOf(path.basename(relative));
    if (!ids) continue;
    const file = path.join(dir, relative);
    const into = restOf?.(relative) ?? file;
    const { removed, written } = await removeRecords(connection, file, column, ids, into);
    if (removed > 0) lost.push({ relative, rest: written ? into : undefined });
  }
  return lost;
}

/** Partition values from a key's `name=value` folders (the dataset folder excepted). */
export function partitionOf(key: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of key.split("/").slice(1, -1)) {
    const eq = part.indexOf("=");
    if (eq > 0) out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return out;
}

/** A line of a JSON file: blank, a document, or why it could not be read. */
const BLANK = Symbol("blank line");
type Parsed = typeof BLANK | { document: unknown } | Error;

function parse(text: string): Parsed {
  if (text.trim() === "") return BLANK;
  try {
    return { document: parseDocument(text) };
  } catch (err) {
    return err as Error;
  }
}
