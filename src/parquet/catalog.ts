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
import { listParquet, runOfFile } from "./writer.js";

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
 * Read access to the Parquet tables: each table is a view over the files of the runs committed when it was
 * opened, whatever batch wrote them. Only the Parquet folder is readable; other files, and changing that
 * setting, are refused by DuckDB itself.
 */
export class Catalog {
  private constructor(
    private readonly connection: DuckDBConnection,
    private readonly closeDb: () => void,
    private readonly datasets: Array<{ dataset: string; schema: DatasetSchema }>,
    readonly root: string,
    /** Each table's files (relative to its folder) that the views read. */
    private readonly files: ReadonlyMap<string, readonly string[]>,
  ) {}

  static async open(ws: Workspace): Promise<Catalog> {
    const datasets = await ws.state.relationalize.datasets();
    const root = path.resolve(ws.root, ws.config.paths.parquet);
    const files = await committedFiles(
      ws,
      root,
      datasets.flatMap((d) => d.schema.tables.map((t) => t.name)),
    );
    const duck = await openDuckDB();
    const catalog = new Catalog(duck.connection, duck.close, datasets, root, files);
    for (const { schema } of datasets) {
      for (const table of schema.tables) {
        const paths = (files.get(table.name) ?? []).map((relative) => literal(path.join(root, table.name, relative)));
        // A table whose rows were all replaced away or deleted is still there, empty, with its columns.
        const source =
          paths.length === 0
            ? `(SELECT ${table.columns.map((c) => `CAST(NULL AS ${c.type}) AS ${ident(c.name)}`).join(", ")} WHERE false)`
            : `read_parquet([${paths.join(", ")}], union_by_name = true, hive_partitioning = false)`;
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

  async tables(): Promise<TableInfo[]> {
    const out: TableInfo[] = [];
    for (const { dataset, schema } of this.datasets) {
      for (const table of schema.tables) {
        const result = await this.connection.runAndReadAll(`SELECT count(*) FROM ${ident(table.name)}`);
        const rows = Number(result.getRows()[0]?.[0] ?? 0);
        out.push({
          dataset,
          table: table.name,
          parent: table.parent,
          rows,
          files: this.files.get(table.name)?.length ?? 0,
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
      for (const relative of this.files.get(table.name) ?? []) {
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

/**
 * The tables' files as the state store says they are: those of committed runs, less those committed runs
 * merged or superseded (deleted just after). A run that commits, starts or cleans up while the folders are
 * listed changes what the state says, so the listing is taken again; a run moving its files in meanwhile
 * changes nothing, as its files do not count until it commits.
 */
async function committedFiles(ws: Workspace, root: string, tables: readonly string[]): Promise<Map<string, string[]>> {
  const state = ws.state.relationalize;
  let before = await state.unpublished();
  for (let attempt = 1; ; attempt++) {
    const listed = new Map<string, string[]>();
    for (const table of tables) listed.set(table, await listParquet(path.join(root, table)));
    const after = await state.unpublished();
    if (attempt === 5 || (sameSets(before.runs, after.runs) && sameSets(before.files, after.files))) {
      for (const [table, files] of listed) {
        listed.set(
          table,
          files.filter((f) => !after.runs.has(runOfFile(path.basename(f))) && !after.files.has(path.join(table, f))),
        );
      }
      return listed;
    }
    before = after;
  }
}

function sameSets(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  return a.size === b.size && [...a].every((x) => b.has(x));
}
