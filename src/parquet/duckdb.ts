import { type DuckDBConnection, DuckDBInstance, StatementType } from "@duckdb/node-api";

/**
 * An in-memory DuckDB for Parquet and SQL. Extensions that would be downloaded are never installed or loaded
 * (this runs offline); Parquet is built in.
 */
export async function openDuckDB(): Promise<{
  instance: DuckDBInstance;
  connection: DuckDBConnection;
  close(): void;
}> {
  const instance = await DuckDBInstance.create(":memory:", {
    autoinstall_known_extensions: "false",
    autoload_known_extensions: "false",
  });
  const connection = await instance.connect();
  return {
    instance,
    connection,
    close() {
      connection.closeSync();
      instance.closeSync();
    },
  };
}

/** A double-quoted SQL identifier. */
export function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** A single-quoted SQL string literal. */
export function literal(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

export class QueryRefusedError extends Error {
  override name = "QueryRefusedError";
}

export interface QueryRows {
  columns: string[];
  rows: unknown[][];
}

/**
 * Runs read-only SQL: every statement is prepared and must be a query (SELECT) before any runs; the last
 * statement's rows are the result.
 */
export async function runSelect(connection: DuckDBConnection, sql: string): Promise<QueryRows> {
  const extracted = await connection.extractStatements(sql);
  if (extracted.count === 0) throw new QueryRefusedError("no SQL statement given");
  const prepared = [];
  for (let i = 0; i < extracted.count; i++) {
    const statement = await extracted.prepare(i);
    if (statement.statementType !== StatementType.SELECT) {
      throw new QueryRefusedError(
        `only queries (SELECT) are allowed; statement ${i + 1} is ${StatementType[statement.statementType]}`,
      );
    }
    prepared.push(statement);
  }
  let result: QueryRows = { columns: [], rows: [] };
  for (const statement of prepared) {
    const reader = await statement.runAndReadAll();
    result = { columns: reader.columnNames(), rows: reader.getRowsJS() };
  }
  return result;
}
