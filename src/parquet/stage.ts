import { randomBytes } from "node:crypto";
import { mkdir, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import pLimit from "p-limit";
import { Lake } from "../lake/lake.js";
import { type DatasetSchema, rootFieldOf, type TableSchema, type TypeConflict } from "../relationalize/model.js";
import { safeName } from "../relationalize/naming.js";
import { parseDocument } from "../relationalize/parse.js";
import { Relationalizer } from "../relationalize/relationalize.js";
import { fitsSchema, representative, type Structure } from "../relationalize/structure.js";
import type { Bookmark, RecordLocation } from "../state/relationalize-state.js";
import type { ObjectStore } from "../storage/object-store.js";
import type { Workspace } from "../workspace/workspace.js";
import { openDuckDB } from "./duckdb.js";
import { type BatchFile, type LeftDocument, TypedBatch } from "./typed-batch.js";
import { copyToParquet, listParquet, removeRecords, type WrittenFile, writeParquet } from "./writer.js";

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
  /** Records written in this run. */
  records: number;
  /** Records that were already in the tables and were replaced by a newer upload. */
  replaced: number;
  /** Records removed because their JSON file is gone. */
  deleted: number;
  /** JSON lines that could not be read, each with its key and line number. */
  unreadable: Array<{ key: string; line: number; message: string }>;
  tables: TableReport[];
  conflicts: TypeConflict[];
}

const DATASET_PREFIX = "dataset=";
const STREAM_FROM_BYTES = 4 * 1024 * 1024;
/** Documents DuckDB reads and relationalizes at once: bounds memory whatever the input size. */
const GROUP_BYTES = 64 * 1024 * 1024;
const GROUP_FILES = 20_000;
/** The record key under which a typed structure's representative is observed (never a real record: NUL). */
const OBSERVED = "\u0000observed";
/** File reads kept in flight at once: a local disk or object store answers many small reads far faster side by side. */
const IO_WINDOW = 32;

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

  async run(dataset: string): Promise<RelationalizeReport> {
    const state = this.ws.state.relationalize;
    const settings = this.ws.config.relationalize;
    const report: RelationalizeReport = {
      dataset,
      runId: null,
      filesRead: 0,
      documents: 0,
      typedDocuments: 0,
      records: 0,
      replaced: 0,
      deleted: 0,
      unreadable: [],
      tables: [],
      conflicts: [],
    };
    const previous = await state.schema(dataset);
    const duck = await openDuckDB();
    try {
      await this.cleanAbandoned(dataset, previous?.tables.map((t) => t.name) ?? []);

      const prefix = `${DATASET_PREFIX}${dataset}/`;
      const bookmarks = await state.bookmarks(dataset);
      const current = new Map<string, Bookmark>();
      const keys = await this.json.list(prefix);
      const limit = pLimit(IO_WINDOW);
      const infos = await Promise.all(keys.map((key) => limit(() => this.json.head(key))));
      keys.forEach((key, i) => {
        const info = infos[i];
        if (info) current.set(key, info);
      });
      const changed = [...current].filter(([key, info]) => {
        const seen = bookmarks.get(key);
        return !seen || seen.sizeBytes !== info.sizeBytes || seen.modifiedMs !== info.modifiedMs;
      });
      const removedKeys = [...bookmarks.keys()].filter((key) => !current.has(key));
      if (changed.length === 0 && removedKeys.length === 0) return report;

      const runId = `r${Date.now().toString(36)}${randomBytes(4).toString("hex")}`;
      report.runId = runId;
      await state.startRun(runId, dataset);

      const rootName = safeName(dataset);
      const relationalizer = previous
        ? new Relationalizer(previous)
        : Relationalizer.create(rootName, {
            recordField: settings.recordField,
            inherit: [settings.recordField, ...settings.partitionFields.filter((f) => f !== settings.recordField)],
          });
      const staging = path.join(this.parquetRoot, "_staging", runId);
      const tableReports = new Map<string, TableReport>();
      const staged = new Map<string, { table: string; relative: string }>();
      const noteWritten = (table: string, files: readonly WrittenFile[], rows: number) => {
        const entry = tableReports.get(table) ?? { table, rows: 0, files: 0, bytes: 0 };
        for (const file of files) {
          staged.set(`${table}/${file.relative}`, { table, relative: file.relative });
          entry.files++;
          entry.bytes += file.bytes;
        }
        entry.rows += rows;
        tableReports.set(table, entry);
      };
      let batch = 0;
      let schema = previous;
      // A batch is converted here, then written by DuckDB on its own threads while the next batch is
      // relationalized: at most one write is in flight, and its failure surfaces at the next batch or the end.
      let writing: Promise<void> = Promise.resolve();
      const writeBatch = async () => {
        const flushed = relationalizer.flush();
        schema = flushed.schema;
        report.conflicts.push(...flushed.conflicts);
        const prefix = `${runId}_b${batch}`;
        batch++;
        await writing;
        writing = (async () => {
          for (const table of flushed.tables) {
            const dir = path.join(staging, table.schema.name);
            const files = await writeParquet(duck.connection, table, dir, prefix, this.partitionColumns(table.schema));
            noteWritten(table.schema.name, files, table.rows.length);
          }
        })();
        writing.catch(() => {});
      };

      // Documents go in upload order (oldest file first). A record met again later in the run replaces its
      // earlier rows: still pending ones in the relationalizer, already written ones are taken out of that
      // batch's files at the end.
      const records = new Map<string, RecordLocation>();
      const batchOf = new Map<string, number>();
      const rewrittenInRun = new Map<number, string[]>();
      const noteRecord = (recordKey: string, key: string) => {
        const earlier = batchOf.get(recordKey);
        if (earlier !== undefined && earlier < batch)
          rewrittenInRun.set(earlier, [...(rewrittenInRun.get(earlier) ?? []), recordKey]);
        batchOf.set(recordKey, batch);
        records.set(recordKey, { runId, jsonKey: key });
      };
      // The JavaScript way: every document parsed and relationalized here, whatever it holds.
      const relationalizeDocument = async (key: string, line: number | (() => Promise<number>), text: string) => {
        if (text.trim() === "") return;
        let document: unknown;
        try {
          document = parseDocument(text);
        } catch (err) {
          report.unreadable.push({
            key,
            line: typeof line === "number" ? line : await line(),
            message: (err as Error).message,
          });
          return;
        }
        report.documents++;
        const recordKey =
          recordKeyOf(document, settings.recordField) ?? `${key}#${typeof line === "number" ? line : await line()}`;
        relationalizer.add(document, { recordKey, partition: partitionOf(key) });
        noteRecord(recordKey, key);
        if (relationalizer.pendingRows >= settings.batchRows) await writeBatch();
      };
      const relationalizeFile = async (key: string, content: Buffer | null) => {
        report.filesRead++;
        const lines: AsyncIterable<string> | string[] = content
          ? content.toString("utf8").split("\n")
          : this.json.lines(key);
        let i = 0;
        for await (const line of lines) await relationalizeDocument(key, ++i, line);
      };

      const ordered = changed.sort((a, b) => a[1].modifiedMs - b[1].modifiedMs || (a[0] < b[0] ? -1 : 1));
      // Small files (one record each, as intake writes) are read whole, several ahead of the one being
      // processed; large ones are read by DuckDB, or line by line when their turn comes.
      const small = (info: Bookmark) => info.sizeBytes < STREAM_FROM_BYTES;
      const contents = readAhead(
        ordered,
        ([key, info]) => (small(info) ? this.json.get(key) : Promise.resolve(null)),
        IO_WINDOW,
      );
      let group: BatchFile[] = [];
      let groupBytes = 0;
      let groups = 0;
      let plan: Structure | null = null;
      // The typed way (typed-batch.ts) for a group of files: what it cannot take goes the JavaScript way.
      const relationalizeGroup = async () => {
        const files = group;
        group = [];
        groupBytes = 0;
        if (files.length === 0) return;
        await writing;
        const typed = new TypedBatch(duck.connection, `typed_${runId}_${groups++}`, settings.recordField);
        try {
          if (!(await typed.load(files))) {
            for (const file of files) await relationalizeFile(file.key, file.content);
            return;
          }
          const required = {
            recordField: settings.recordField,
            rootFields: [...new Set(files.flatMap((f) => Object.keys(partitionOf(f.key))))],
          };
          if (!(await typed.classify(required, relationalizer.currentSchema, plan))) {
            for (const file of files) await relationalizeFile(file.key, file.content);
            return;
          }
          report.filesRead += files.length;
          plan = typed.readWith ?? plan;
          const viaJs = async (documents: readonly LeftDocument[]) => {
            for (const document of documents) {
              const file = files[document.file] as BatchFile;
              const line = document.line ?? (() => lineOf(this.json, file.key, document.ordinal));
              await relationalizeDocument(file.key, line, document.text);
            }
          };
          await viaJs(await typed.leftDocuments((text) => textRecordKey(text, settings.recordField)));
          const classes = typed.typedClasses;
          for (const c of classes) relationalizer.observe(representative(c), { recordKey: OBSERVED });
          await writeBatch();
          // A document of the JavaScript way may have made a column text: documents with a number there go that way too.
          const late = classes.filter((c) => !fitsSchema(c, schema as DatasetSchema));
          // One connection: the typed batch's queries wait for the write in flight.
          await writing;
          if (late.length > 0) {
            await viaJs(await typed.demote(late));
            await writeBatch();
          }
          await writing;
          const typedDocuments = await typed.documents();
          report.documents += typedDocuments;
          report.typedDocuments += typedDocuments;
          for (const { record, file } of await typed.records()) noteRecord(record, (files[file] as BatchFile).key);
          const final = schema as DatasetSchema;
          const selects = typed.selects(final);
          const prefix = `${runId}_b${batch}`;
          batch++;
          for (const table of final.tables) {
            const select = selects.get(table.name);
            if (!select) continue;
            const dir = path.join(staging, table.name);
            const written = await copyToParquet(
              duck.connection,
              `(${select})`,
              dir,
              prefix,
              this.partitionColumns(table),
            );
            if (written.rows > 0) noteWritten(table.name, written.files, written.rows);
          }
        } finally {
          await typed.close();
        }
      };
      for await (const [[key, info], content] of contents) {
        const bytes = content?.length ?? info.sizeBytes;
        if (!settings.typed || (!content && (info.sizeBytes > GROUP_BYTES || !this.json.localPath))) {
          await relationalizeGroup();
          await relationalizeFile(key, null);
          continue;
        }
        group.push({ key, content, localPath: this.json.localPath?.(key) });
        groupBytes += bytes;
        if (groupBytes >= GROUP_BYTES || group.length >= GROUP_FILES) await relationalizeGroup();
      }
      await relationalizeGroup();
      await writeBatch();
      await writing;
      report.records = records.size;
      if (!schema) throw new Error(`dataset ${dataset}: no schema after relationalizing`);
      const finalSchema = schema;
      const recordColumnOf = (table: (typeof finalSchema.tables)[number]) =>
        table.columns.find((c) => rootFieldOf(c) === settings.recordField);
      for (const [oldBatch, ids] of rewrittenInRun) {
        for (const table of finalSchema.tables) {
          const column = recordColumnOf(table);
          if (!column) continue;
          for (const relative of await listParquet(path.join(staging, table.name))) {
            if (!path.basename(relative).startsWith(`${runId}_b${oldBatch}_`)) continue;
            const file = path.join(staging, table.name, relative);
            await removeRecords(duck.connection, file, column.name, ids);
            if (!(await exists(file))) staged.delete(`${table.name}/${relative}`);
          }
        }
      }

      const locations = await state.records(dataset);
      const removedKeySet = new Set(removedKeys);
      const stale = new Map<string, string[]>();
      const addStale = (record: string, location: RecordLocation) => {
        stale.set(location.runId, [...(stale.get(location.runId) ?? []), record]);
      };
      const removedRecords: string[] = [];
      for (const [record, location] of locations) {
        if (records.has(record)) {
          report.replaced++;
          addStale(record, location);
        } else if (removedKeySet.has(location.jsonKey)) {
          report.deleted++;
          addStale(record, location);
          removedRecords.push(record);
        }
      }

      // Take replaced and deleted records out of the files of the runs that wrote them.
      for (const [oldRun, ids] of stale) {
        for (const table of finalSchema.tables) {
          const recordColumn = recordColumnOf(table);
          if (!recordColumn) continue;
          const dir = path.join(this.parquetRoot, table.name);
          for (const relative of await listParquet(dir)) {
            if (path.basename(relative).startsWith(`${oldRun}_`)) {
              await removeRecords(duck.connection, path.join(dir, relative), recordColumn.name, ids);
            }
          }
        }
      }

      // Publish: move staged files into place, write the manifest, then commit (until then they do not count).
      for (const { table, relative } of staged.values()) {
        const target = path.join(this.parquetRoot, table, relative);
        await mkdir(path.dirname(target), { recursive: true });
        await rename(path.join(staging, table, relative), target);
      }
      await rm(staging, { recursive: true, force: true });
      report.tables = [...tableReports.values()];
      const manifest = {
        ...report,
        finishedAt: new Date().toISOString(),
        files: [...staged.keys()],
      };
      await mkdir(path.join(this.parquetRoot, "_manifests"), { recursive: true });
      await writeFile(
        path.join(this.parquetRoot, "_manifests", `${runId}.json`),
        `${JSON.stringify(manifest, null, 2)}\n`,
      );
      // The lake gets the run as one update per table before it counts here: a run cut off after publishing is
      // redone and published again, which changes nothing (the newest update per record wins).
      if (this.ws.config.lake.publishRelationalized) {
        await new Lake(this.ws).publishRelationalized({
          runId,
          source: dataset,
          tables: finalSchema.tables.flatMap((table) => {
            const recordColumn = recordColumnOf(table)?.name;
            if (!recordColumn) return [];
            const files = [...staged.values()]
              .filter((f) => f.table === table.name)
              .map((f) => path.join(this.parquetRoot, f.table, f.relative));
            return [{ name: table.name, recordColumn, files }];
          }),
          deletedRecords: removedRecords,
        });
      }
      await state.commitRun({
        runId,
        dataset,
        schema: finalSchema,
        bookmarks: new Map(changed),
        removedKeys,
        records,
        removedRecords,
        summary: { ...report, tables: report.tables },
      });
      return report;
    } finally {
      duck.close();
    }
  }

  private partitionColumns(table: TableSchema): string[] {
    const fields = new Set(this.ws.config.relationalize.partitionFields);
    return table.columns.filter((c) => fields.has(rootFieldOf(c) ?? "")).map((c) => c.name);
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

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
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

/** A document's record key from its text (undefined when it has none, or is not JSON). */
function textRecordKey(text: string, field: string): string | undefined {
  try {
    return recordKeyOf(parseDocument(text), field);
  } catch {
    return undefined;
  }
}

function recordKeyOf(document: unknown, field: string): string | undefined {
  const source = Array.isArray(document) ? document[0] : document;
  if (typeof source !== "object" || source === null) return undefined;
  const value = (source as Record<string, unknown>)[field];
  if (typeof value === "string") return value;
  if (value !== null && value !== undefined && typeof value === "object" && "value" in value)
    return String(value.value);
  return undefined;
}
