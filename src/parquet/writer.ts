import { mkdir, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import {
  BIGINT,
  BOOLEAN,
  DOUBLE,
  type DuckDBConnection,
  DuckDBDataChunk,
  type DuckDBValue,
  VARCHAR,
} from "@duckdb/node-api";
import type { TableRows } from "../relationalize/model.js";
import { listFiles } from "../storage/walk.js";
import { ident, literal } from "./duckdb.js";

export interface WrittenFile {
  /** Path relative to the table's folder, with its partition folders. */
  relative: string;
  bytes: number;
}

let tableCounter = 0;

const VECTOR_SIZE = 2048;
const DUCK_TYPE = { BOOLEAN, BIGINT, DOUBLE, VARCHAR } as const;

/** Writes one batch of a table's rows as Parquet (see copyToParquet). */
export async function writeParquet(
  connection: DuckDBConnection,
  table: TableRows,
  dir: string,
  filePrefix: string,
  partitionColumns: readonly string[],
): Promise<WrittenFile[]> {
  const columns = table.schema.columns;
  const name = `batch_${process.pid}_${++tableCounter}`;
  await connection.run(`CREATE TABLE ${ident(name)} (${columns.map((c) => `${ident(c.name)} ${c.type}`).join(", ")})`);
  try {
    // Rows go in a column at a time, a vector (2,048 rows) per chunk: far fewer native calls than value by value.
    const appender = await connection.createAppender(name);
    const types = columns.map((c) => DUCK_TYPE[c.type]);
    for (let start = 0; start < table.rows.length; start += VECTOR_SIZE) {
      const end = Math.min(table.rows.length, start + VECTOR_SIZE);
      const chunk = DuckDBDataChunk.create(types, end - start);
      for (let c = 0; c < columns.length; c++) {
        const values = new Array<DuckDBValue>(end - start);
        for (let r = start; r < end; r++) values[r - start] = ((table.rows[r] as unknown[])[c] ?? null) as DuckDBValue;
        chunk.setColumnValues(c, values);
      }
      appender.appendDataChunk(chunk);
    }
    appender.closeSync();
    return (await copyToParquet(connection, ident(name), dir, filePrefix, partitionColumns)).files;
  } finally {
    await connection.run(`DROP TABLE IF EXISTS ${ident(name)}`);
  }
}

/**
 * Writes what a table or a parenthesised query gives as zstd Parquet under `dir`, split into Hive-style
 * partition folders by those of the given columns it has (kept in the files too, so a file says everything
 * about its rows). File names start with `filePrefix`, which is how an unfinished run's files are found.
 */
export async function copyToParquet(
  connection: DuckDBConnection,
  source: string,
  dir: string,
  filePrefix: string,
  partitionColumns: readonly string[],
): Promise<{ files: WrittenFile[]; rows: number }> {
  await mkdir(dir, { recursive: true });
  const options = ["FORMAT parquet", "COMPRESSION zstd", "ROW_GROUP_SIZE 122880"];
  if (partitionColumns.length > 0) {
    options.push(
      `PARTITION_BY (${partitionColumns.map(ident).join(", ")})`,
      "WRITE_PARTITION_COLUMNS true",
      `FILENAME_PATTERN ${literal(`${filePrefix}_{i}`)}`,
      "OVERWRITE_OR_IGNORE true",
    );
  }
  const target = partitionColumns.length > 0 ? dir : path.join(dir, `${filePrefix}_0.parquet`);
  const result = await connection.run(`COPY ${source} TO ${literal(target)} (${options.join(", ")})`);
  const files: WrittenFile[] = [];
  for (const relative of await listParquet(dir)) {
    if (!path.basename(relative).startsWith(`${filePrefix}_`)) continue;
    files.push({ relative, bytes: (await stat(path.join(dir, relative))).size });
  }
  return { files, rows: Number(result.rowsChanged) };
}

/** Every `.parquet` file below a folder, as paths relative to it, sorted. */
export function listParquet(dir: string): Promise<string[]> {
  return listFiles(dir, { keep: (name) => name.endsWith(".parquet") });
}

/**
 * Copies a Parquet file without the rows of some records to `into`, or, when `into` is the file itself,
 * rewrites it atomically (removed when no row is left). Returns how many rows went, and whether `into` holds
 * the rest (nothing is written when no row goes, or none is left).
 */
export async function removeRecords(
  connection: DuckDBConnection,
  file: string,
  recordColumn: string,
  records: readonly string[],
  into: string = file,
): Promise<{ removed: number; written: boolean }> {
  // Record ids are text; a column of numeric ids compares by its digits.
  const keep = `CAST(${ident(recordColumn)} AS VARCHAR) NOT IN (${records.map(literal).join(", ")})`;
  const source = `read_parquet(${literal(file)})`;
  const counts = await connection.runAndReadAll(`SELECT count(*) FILTER (WHERE ${keep}), count(*) FROM ${source}`);
  const [kept, total] = (counts.getRows()[0] ?? [0, 0]).map(Number) as [number, number];
  const removed = total - kept;
  if (removed === 0) return { removed, written: false };
  if (kept === 0) {
    if (into === file) await rm(file, { force: true });
    return { removed, written: false };
  }
  await mkdir(path.dirname(into), { recursive: true });
  const temp = `${into}.rewrite`;
  await connection.run(
    `COPY (SELECT * FROM ${source} WHERE ${keep}) TO ${literal(temp)} (FORMAT parquet, COMPRESSION zstd)`,
  );
  await rename(temp, into);
  return { removed, written: true };
}

/** The run that wrote a Parquet file: its name starts with the run's id and a `_` (run ids hold none). */
export function runOfFile(name: string): string {
  const end = name.indexOf("_");
  return end === -1 ? "" : name.slice(0, end);
}
