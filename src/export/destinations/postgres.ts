import { createHash } from "node:crypto";
import pg from "pg";
import type { Column, ColumnType } from "../columns.js";
import type { TableRef } from "../tables.js";
import type { Destination, TableWrite } from "./destination.js";

const SQL_TYPE: Record<ColumnType, (c: Column) => string> = {
  BOOLEAN: () => "boolean",
  INTEGER: () => "bigint",
  DOUBLE: () => "double precision",
  // Epoch milliseconds, as in the text files (the `.timezone` column beside it keeps the offset).
  DATE: () => "bigint",
  STRING: (c) => `varchar(${c.maxLength ?? 100})`,
  LARGETEXT: () => "text",
  FILEHANDLEID: () => "text",
};

function sqlType(column: Column): string {
  return SQL_TYPE[column.type](column);
}

function quote(identifier: string): string {
  return `"${identifier.replace(/"/g, '""')}"`;
}

/** PostgreSQL names are at most 63 bytes: a longer table key is cut and given a short hash to stay unique. */
export function pgTableName(key: string): string {
  if (Buffer.byteLength(key) <= 63) return key;
  const hash = createHash("sha256").update(key).digest("hex").slice(0, 8);
  let cut = key;
  while (Buffer.byteLength(cut) > 54) cut = cut.slice(0, -1);
  return `${cut}-${hash}`;
}

/** Rows per INSERT: each column goes as one array parameter, so the statement size stays small. */
const INSERT_ROWS = 5000;
const MARKERS = "_studylake_exports";
const ATTACHMENTS = "_studylake_attachments";

/**
 * Researcher tables in a PostgreSQL schema, one table per study and schema (named by its table key). Each
 * table's share of an export is one transaction: the table is created or altered, earlier rows of the records
 * written (and of a redrive's records) are deleted, the rows and attachments inserted, and a marker row records that this export wrote the table, so a
 * failed export leaves no partial day and a resumed one never writes a table twice.
 */
export class PostgresDestination implements Destination {
  private readonly pool: pg.Pool;
  private ready: Promise<void> | undefined;

  constructor(
    url: string,
    private readonly schema: string,
  ) {
    this.pool = new pg.Pool({ connectionString: url, max: 2 });
  }

  private qualified(name: string): string {
    return `${quote(this.schema)}.${quote(name)}`;
  }

  locate(table: TableRef): string {
    return `${this.schema}.${pgTableName(table.key)}`;
  }

  private prepare(): Promise<void> {
    this.ready ??= (async () => {
      await this.pool.query(`CREATE SCHEMA IF NOT EXISTS ${quote(this.schema)}`);
      await this.pool.query(
        `CREATE TABLE IF NOT EXISTS ${this.qualified(MARKERS)} (export_id text NOT NULL, table_key text NOT NULL, row_count integer NOT NULL, written_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (export_id, table_key))`,
      );
      await this.pool.query(
        `CREATE TABLE IF NOT EXISTS ${this.qualified(ATTACHMENTS)} (key text PRIMARY KEY, content jsonb NOT NULL)`,
      );
    })().catch((err) => {
      this.ready = undefined;
      throw err;
    });
    return this.ready;
  }

  async written(exportId: string, table: TableRef): Promise<boolean> {
    await this.prepare();
    const { rowCount } = await this.pool.query(
      `SELECT 1 FROM ${this.qualified(MARKERS)} WHERE export_id = $1 AND table_key = $2`,
      [exportId, table.key],
    );
    return (rowCount ?? 0) > 0;
  }

  async writeTable(write: TableWrite): Promise<void> {
    await this.prepare();
    const table = this.qualified(pgTableName(write.table.key));
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      await client.query(
        `CREATE TABLE IF NOT EXISTS ${table} (${write.columns.map((c) => `${quote(c.name)} ${sqlType(c)}`).join(", ")})`,
      );
      const before = new Map((write.previousColumns ?? []).map((c) => [c.name, c]));
      for (const column of write.columns) {
        const old = before.get(column.name);
        if (!old) {
          await client.query(`ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS ${quote(column.name)} ${sqlType(column)}`);
        } else if (sqlType(old) !== sqlType(column)) {
          const type = sqlType(column);
          await client.query(
            `ALTER TABLE ${table} ALTER COLUMN ${quote(column.name)} TYPE ${type} USING ${quote(column.name)}::${type}`,
          );
        }
      }
      if (write.columns.some((c) => c.name === "recordId")) {
        await client.query(
          `CREATE INDEX IF NOT EXISTS ${quote(`${pgTableName(write.table.key)}_recordId`.slice(0, 63))} ON ${table} ("recordId")`,
        );
        // A record's rows are replaced, never added twice: a redrive's records, and any record this export
        // writes that the table already holds (a second workspace, or state restored from a backup).
        const replaced = [
          ...new Set([...write.replace.recordIds, ...write.rows.flatMap((r) => (r.recordId ? [r.recordId] : []))]),
        ];
        if (replaced.length > 0) {
          await client.query(`DELETE FROM ${table} WHERE "recordId" = ANY($1::text[])`, [replaced]);
        }
      }
      await this.insertRows(client, table, write);
      if (write.attachments.size > 0) {
        await client.query(
          `INSERT INTO ${this.qualified(ATTACHMENTS)} (key, content) SELECT k, c::jsonb FROM unnest($1::text[], $2::text[]) AS a(k, c) ON CONFLICT (key) DO NOTHING`,
          [[...write.attachments.keys()], [...write.attachments.values()]],
        );
      }
      await client.query(
        `INSERT INTO ${this.qualified(MARKERS)} (export_id, table_key, row_count) VALUES ($1, $2, $3)`,
        [write.exportId, write.table.key, write.rows.length],
      );
      await client.query("COMMIT");
    } catch (err) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  /** Inserts rows as one text array per column, cast to the column's type. */
  private async insertRows(client: pg.PoolClient, table: string, write: TableWrite): Promise<void> {
    const columns = write.columns;
    const names = columns.map((c) => quote(c.name)).join(", ");
    const casts = columns.map((c, i) => `c${i}::${sqlType(c)}`).join(", ");
    const params = columns.map((_, i) => `$${i + 1}::text[]`).join(", ");
    const aliases = columns.map((_, i) => `c${i}`).join(", ");
    const statement = `INSERT INTO ${table} (${names}) SELECT ${casts} FROM unnest(${params}) AS u(${aliases})`;
    for (let start = 0; start < write.rows.length; start += INSERT_ROWS) {
      const rows = write.rows.slice(start, start + INSERT_ROWS);
      await client.query(
        statement,
        columns.map((c) => rows.map((row) => row[c.name] ?? null)),
      );
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
