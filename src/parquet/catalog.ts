import path from "node:path";
import type { DuckDBConnection } from "@duckdb/node-api";
import { stringify } from "lossless-json";
import {
  type ColumnType,
  type DatasetSchema,
  rootFieldOf,
  type TableRows,
  type TableSchema,
} from "../relationalize/model.js";
import { rebuildDocuments } from "../relationalize/rebuild.js";
import type { Workspace } from "../workspace/workspace.js";
import { ident, literal, openDuckDB, type QueryRows, runSelect } from "./duckdb.js";
import { listParquet } from "./writer.js";

export interface TableInfo {
  dataset: string;
  table: string;
  parent: string | null;
  rows: number;
  files: number;
  columns: Array<{ name: string; type: ColumnType; role: string }>;
}

export type QueryResult = QueryRows;

/**
 * Read access to the Parquet tables: each table is a view over its files, whatever batch wrote them. Only the
 * Parquet folder is readable; other files, and changing that setting, are refused by DuckDB itself.
 */
export class Catalog {
  private constructor(
    private readonly connection: DuckDBConnection,
    private readonly closeDb: () => void,
    private readonly datasets: Array<{ dataset: string; schema: DatasetSchema }>,
    readonly root: string,
  ) {}

  static async open(ws: Workspace): Promise<Catalog> {
    const duck = await openDuckDB();
    const datasets = await ws.state.relationalize.datasets();
    const root = path.resolve(ws.root, ws.config.paths.parquet);
    const catalog = new Catalog(duck.connection, duck.close, datasets, root);
    for (const { schema } of datasets) {
      for (const table of schema.tables) {
        // A table whose rows were all replaced away or deleted is still there, empty, with its columns.
        const source =
          (await listParquet(path.join(root, table.name))).length === 0
            ? `(SELECT ${table.columns.map((c) => `CAST(NULL AS ${c.type}) AS ${ident(c.name)}`).join(", ")} WHERE false)`
            : catalog.source(table.name);
        await duck.connection.run(`CREATE VIEW ${ident(table.name)} AS SELECT * FROM ${source}`);
      }
    }
    // Queries may read the tables' files and nothing else on this machine, and cannot change that.
    await duck.connection.run(`SET allowed_directories = [${literal(root)}]`);
    await duck.connection.run("SET enable_external_access = false");
    await duck.connection.run("SET lock_configuration = true");
    return catalog;
  }

  close(): void {
    this.closeDb();
  }

  private source(table: string): string {
    const glob = path.join(this.root, table, "**", "*.parquet");
    return `read_parquet(${literal(glob)}, union_by_name = true, hive_partitioning = false)`;
  }

  async tables(): Promise<TableInfo[]> {
    const out: TableInfo[] = [];
    for (const { dataset, schema } of this.datasets) {
      for (const table of schema.tables) {
        const files = await listParquet(path.join(this.root, table.name));
        const result = await this.connection.runAndReadAll(`SELECT count(*) FROM ${ident(table.name)}`);
        const rows = Number(result.getRows()[0]?.[0] ?? 0);
        out.push({
          dataset,
          table: table.name,
          parent: table.parent,
          rows,
          files: files.length,
          columns: table.columns.map((c) => ({ name: c.name, type: c.type, role: c.role })),
        });
      }
    }
    return out;
  }

  /** Runs read-only SQL: every statement must be a query; anything else is refused before it runs. */
  query(sql: string): Promise<QueryResult> {
    return runSelect(this.connection, sql);
  }

  /** The documents of one record, rebuilt from every table of its dataset. */
  async rebuild(dataset: string, recordId: string): Promise<unknown | undefined> {
    const entry = this.datasets.find((d) => d.dataset === dataset);
    if (!entry) throw new Error(`no relationalized dataset '${dataset}'`);
    const { schema } = entry;
    const tables: TableRows[] = [];
    for (const table of schema.tables) {
      const recordColumn = table.columns.find((c) => rootFieldOf(c) === schema.recordField);
      if (!recordColumn) continue;
      // Each file is read on its own, with its own column types (a later batch may have widened a type).
      for (const relative of await listParquet(path.join(this.root, table.name))) {
        const file = path.join(this.root, table.name, relative);
        const reader = await this.connection.runAndReadAll(
          `SELECT * FROM read_parquet(${literal(file)}) WHERE CAST(${ident(recordColumn.name)} AS VARCHAR) = $record`,
          { record: recordId },
        );
        const rows = reader.getRows();
        if (rows.length === 0) continue;
        tables.push({
          schema: withFileTypes(table, reader.columnNames(), reader.columnTypes().map(String)),
          rows: rows.map((r) => reorder(r, table, reader.columnNames())),
        });
      }
    }
    return rebuildDocuments(schema, tables).get(recordId);
  }
}

function withFileTypes(table: TableSchema, names: string[], types: string[]): TableSchema {
  return {
    ...table,
    columns: table.columns.map((c) => {
      const at = names.indexOf(c.name);
      const type = at === -1 ? c.type : (types[at] as ColumnType);
      return {
        ...c,
        type: (["BOOLEAN", "BIGINT", "DOUBLE", "VARCHAR"].includes(type) ? type : "VARCHAR") as ColumnType,
      };
    }),
  };
}

function reorder(row: readonly unknown[], table: TableSchema, names: string[]): unknown[] {
  return table.columns.map((c) => {
    const at = names.indexOf(c.name);
    return at === -1 ? null : row[at];
  });
}

/** A rebuilt document as JSON text, numbers exactly as stored. */
export function documentText(document: unknown): string {
  return stringify(document, undefined, 2) as string;
}
