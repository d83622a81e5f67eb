import { type DuckDBConnection, DuckDBInstance } from "@duckdb/node-api";

/**
 * An in-memory DuckDB for Parquet and SQL. Extensions that would be downloaded are never installed or loaded
 * (this runs offline); Parquet is built in.
 */
export async function openDuckDB(): Promise<{ connection: DuckDBConnection; close(): void }> {
  const instance = await DuckDBInstance.create(":memory:", {
    autoinstall_known_extensions: "false",
    autoload_known_extensions: "false",
  });
  const connection = await instance.connect();
  return {
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
