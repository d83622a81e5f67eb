import type { ColumnSchema, DatasetSchema, TableSchema } from "../relationalize/model.js";
import { encodePath } from "../relationalize/relationalize.js";
import { childTableAt, rowStructure, type Structure, structureAt } from "../relationalize/structure.js";
import { ident, literal } from "./duckdb.js";

interface Relation {
  sql: string;
  /** The structure of the relation's row value `e`. */
  node: Structure;
  /** Column of the relation holding the join key of each child table's array, by child table name. */
  keys: Map<string, string>;
  /** The rows' `_shape`: the element's position for rows of a top-level array, else nothing. */
  shape: string;
}

/**
 * SQL that builds a dataset's tables from documents DuckDB has read with `json_transform` (`source` gives
 * `seq`, `rec` (the record key) and `j`, the document as a STRUCT of the plan's shape), giving the same rows
 * `Relationalizer` gives for them: the same join keys (record key and path), `index`, inherited root fields
 * and column types. Only for documents that need no `_shape` (see structure.ts), so `_shape` is NULL.
 *
 * Each table's rows come from a relation with the row's value `e`, the inherited values `inh_0…` and, for
 * each of its child tables, the join key of that array (computed once per row, not per element); a child
 * table's relation unnests its parent's.
 */
export function typedTableSelects(schema: DatasetSchema, plan: Structure, source: string): Map<string, string> {
  // A top-level array (a sensor file) gives a root row per element, keyed `record#element`.
  const elements = Array.isArray(plan);
  const row = rowStructure(plan) ?? {};
  const inherits = schema.inherit.map((field, i) => {
    const node = structureAt(row, [field]);
    return `${typeof node === "string" ? `struct_extract(e, ${literal(field)})` : "NULL"} AS inh_${i}`;
  });
  const carried = schema.inherit.map((_, i) => `p.inh_${i}`);
  const relations = new Map<string, Relation>();
  // Parents come before their children in the schema's table list.
  for (const table of schema.tables) {
    let base: string;
    let from: string;
    let node: Structure;
    let shape = "NULL::VARCHAR";
    if (table.parent === null) {
      node = row;
      base = elements ? "rec || '#' || CAST(el AS VARCHAR)" : "rec";
      const rows = elements
        ? `SELECT seq, rec, unnest(j) AS e, generate_subscripts(j, 1) - 1 AS el FROM ${source}`
        : `SELECT seq, rec, j AS e FROM ${source}`;
      from = `SELECT *${inherits.map((c) => `, ${c}`).join("")} FROM (${rows})`;
      if (elements) shape = `'{"e":' || CAST(r.el AS VARCHAR) || '}'`;
    } else {
      const parent = relations.get(table.parent);
      const array = parent ? structureAt(parent.node, table.path) : undefined;
      const key = parent?.keys.get(table.name);
      if (!parent || !Array.isArray(array) || !key) continue;
      node = array[0] ?? "NULL";
      const list = access("p.e", table.path);
      base = "id || '[' || CAST(idx AS VARCHAR) || ']'";
      from = `SELECT p.seq, p.rec, ${carried.map((c) => `${c}, `).join("")}p.${key} AS id, unnest(${list}) AS e, generate_subscripts(${list}, 1) - 1 AS idx FROM (${parent.sql}) p`;
    }
    const keys = new Map<string, string>();
    const keyColumns: string[] = [];
    for (const child of schema.tables) {
      if (child.parent !== table.name || !Array.isArray(structureAt(node, child.path))) continue;
      const name = `key_${keys.size}`;
      keys.set(child.name, name);
      const key =
        child.path.length === 0
          ? base
          : `CASE WHEN ${access("e", child.path)} IS NULL THEN NULL ELSE ${base} || ${literal(`/${encodePath(child.path)}`)} END`;
      keyColumns.push(`${key} AS ${name}`);
    }
    const sql = keyColumns.length > 0 ? `SELECT *, ${keyColumns.join(", ")} FROM (${from})` : from;
    relations.set(table.name, { sql, node, keys, shape });
  }
  const out = new Map<string, string>();
  for (const table of schema.tables) {
    const relation = relations.get(table.name);
    if (!relation) continue;
    const columns = table.columns.map((column) => `${cell(column, table, relation, schema)} AS ${ident(column.name)}`);
    out.set(table.name, `SELECT ${columns.join(", ")} FROM (${relation.sql}) r`);
  }
  return out;
}

function cell(column: ColumnSchema, table: TableSchema, relation: Relation, schema: DatasetSchema): string {
  const nothing = `NULL::${column.type}`;
  switch (column.role) {
    case "id":
      return "r.id";
    case "index":
      return "CAST(r.idx AS BIGINT)";
    case "shape":
      return relation.shape;
    case "inherited": {
      const i = schema.inherit.indexOf(column.path[0] ?? "");
      return i === -1 || table.parent === null ? nothing : `CAST(r.inh_${i} AS ${column.type})`;
    }
    case "value": {
      const at = structureAt(relation.node, column.path);
      return typeof at === "string" && at !== "NULL"
        ? `CAST(${access("r.e", column.path)} AS ${column.type})`
        : nothing;
    }
    case "key": {
      const child = childTableAt(schema, table, column.path);
      const key = child ? relation.keys.get(child.name) : undefined;
      return key ? `r.${key}` : nothing;
    }
  }
}

function access(expression: string, path: readonly string[]): string {
  return path.reduce((at, key) => `struct_extract(${at}, ${literal(key)})`, expression);
}
