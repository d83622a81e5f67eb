/**
 * The checks a governed query passes before anything runs, on DuckDB's parse tree (`json_serialize_sql`):
 * only SELECT statements; tables only by name (no file paths, no other catalogs or schemas, no AT clauses);
 * table functions only from a short list that reads no files; no functions that reveal the environment.
 * What the user may read is then decided by which views exist in the query's own session.
 */
import { QueryRefusedError } from "../parquet/duckdb.js";

/** Table functions that compute rows and read nothing. */
const ALLOWED_TABLE_FUNCTIONS = new Set(["range", "generate_series", "unnest"]);
/** Scalar functions that would show the machine or the session rather than the data. */
const DENIED_FUNCTIONS = new Set([
  "getenv",
  "current_setting",
  "current_database",
  "current_schema",
  "current_schemas",
]);
/** Table references a query may use; anything else (DESCRIBE, SHOW, …) is refused. */
const ALLOWED_REFS = new Set(["BASE_TABLE", "JOIN", "SUBQUERY", "TABLE_FUNCTION", "EMPTY", "EXPRESSION_LIST", "PIVOT"]);

/** The message DuckDB gives for a missing table: an unreadable dataset gets exactly the same one. */
export function missingTable(name: string): string {
  return `Catalog Error: Table with name ${name} does not exist!`;
}

export interface ParsedQuery {
  /** Tables the query names, other than its own CTEs. */
  tables: string[];
}

/** Checks a `json_serialize_sql` result; returns the tables the query reads, or throws why it is refused. */
export function checkParsedQuery(serialized: unknown): ParsedQuery {
  const root = serialized as { error?: boolean; error_type?: string; error_message?: string; statements?: unknown[] };
  if (root.error) {
    if (root.error_type === "parser") throw new QueryRefusedError(`Parser Error: ${root.error_message}`);
    throw new QueryRefusedError(
      "only queries (SELECT) are allowed: no writes, COPY, ATTACH, INSTALL, LOAD, SET or PRAGMA",
    );
  }
  if (!root.statements || root.statements.length === 0) throw new QueryRefusedError("no SQL statement given");
  const ctes = new Set<string>();
  const tables = new Set<string>();
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const child of node) visit(child);
      return;
    }
    if (node === null || typeof node !== "object") return;
    const obj = node as Record<string, unknown>;
    if ("cte_map" in obj) {
      for (const entry of (obj.cte_map as { map?: Array<{ key: string }> }).map ?? [])
        ctes.add(entry.key.toLowerCase());
    }
    // Table references carry a sample clause and an alias (query nodes have a sample clause only).
    if ("sample" in obj && "alias" in obj && typeof obj.type === "string") checkRef(obj, tables);
    if (obj.class === "FUNCTION" && typeof obj.function_name === "string") {
      if (DENIED_FUNCTIONS.has(obj.function_name.toLowerCase())) {
        throw new QueryRefusedError(`function ${obj.function_name}() is not allowed`);
      }
    }
    for (const value of Object.values(obj)) visit(value);
  };
  visit(root.statements);
  return { tables: [...tables].filter((t) => !ctes.has(t.toLowerCase())) };
}

function checkRef(ref: Record<string, unknown>, tables: Set<string>): void {
  const type = ref.type as string;
  if (!ALLOWED_REFS.has(type)) {
    throw new QueryRefusedError(
      type === "SHOW_REF"
        ? "DESCRIBE, SHOW and SUMMARIZE are not allowed; query the dataset"
        : `${type} is not allowed`,
    );
  }
  if (type === "BASE_TABLE") {
    const name = String(ref.table_name);
    if (ref.at_clause) throw new QueryRefusedError("AT clauses are not supported: use --as-of or --at for time travel");
    const qualified = [ref.catalog_name, ref.schema_name, name].filter((p) => typeof p === "string" && p !== "");
    // A path or a qualified name is never a dataset: it gets the same answer as a dataset that does not exist.
    if (qualified.length > 1 || /[/\\.:]/.test(name)) throw new QueryRefusedError(missingTable(qualified.join(".")));
    tables.add(name);
  }
  if (type === "TABLE_FUNCTION") {
    const fn = (ref.function as { function_name?: string } | undefined)?.function_name ?? "";
    if (!ALLOWED_TABLE_FUNCTIONS.has(fn.toLowerCase())) {
      throw new QueryRefusedError(`table function ${fn}() is not allowed: read datasets by name`);
    }
  }
}
