import type { ColumnSchema, ColumnType, DatasetSchema, Kind, TableSchema } from "./model.js";

/**
 * A document's structure as DuckDB's `json_structure` reports it: a type name for a scalar, a one-element
 * array for an array (its elements' structures merged), an object of key → structure. It says which keys a
 * document has and what kind each value is, which is all the typed reader needs to relationalize it exactly
 * as `Relationalizer` would (see candidateProblem for what it cannot say).
 */
export type Structure = string | Structure[] | { [key: string]: Structure };

const KIND_OF: Record<string, Kind> = {
  VARCHAR: "string",
  BOOLEAN: "boolean",
  UBIGINT: "integer",
  BIGINT: "integer",
  DOUBLE: "double",
};

/** The type a kind is read as by `json_transform`. */
const READ_AS: Record<Kind, ColumnType> = {
  string: "VARCHAR",
  boolean: "BOOLEAN",
  integer: "BIGINT",
  long: "BIGINT",
  double: "DOUBLE",
  bignum: "VARCHAR",
};

/** `json_structure` of an empty array: no element type. */
const NO_ELEMENTS = "NULL";

export function parseStructure(text: string): Structure {
  return JSON.parse(text) as Structure;
}

function isObjectNode(node: Structure): node is { [key: string]: Structure } {
  return typeof node === "object" && !Array.isArray(node);
}

export interface Requirements {
  /** Root fields that must be present (the record field as a string; the partition fields of the files). */
  recordField: string;
  rootFields: readonly string[];
}

/**
 * Why documents of this structure cannot take the typed path, or null when they can. The structure alone
 * cannot show a `null` or `{}` value inside an array (merging hides them), so the caller also requires the
 * text to hold neither. Everything the flat tables would need a `_shape` entry for is refused here: nulls,
 * empty objects, values of mixed kinds (DuckDB reports them as JSON), a top-level array, missing root fields.
 */
export function candidateProblem(structure: Structure, required: Requirements): string | null {
  const row = rowStructure(structure);
  if (!row) return "the document is neither an object nor a non-empty array of objects";
  if (row[required.recordField] !== "VARCHAR") return `no string '${required.recordField}'`;
  for (const field of required.rootFields) if (!(field in row)) return `no '${field}'`;
  return nodeProblem(row, false);
}

/**
 * The structure of a document's root rows: the document itself, or the elements of a top-level array (a
 * sensor file), whose rows are one per element. For an array the structure merges the elements, so whether
 * every element has the root fields is for the reader to check per document.
 */
export function rowStructure(structure: Structure): { [key: string]: Structure } | undefined {
  const row = Array.isArray(structure) ? structure[0] : structure;
  return row !== undefined && isObjectNode(row) ? row : undefined;
}

function nodeProblem(node: Structure, inArray: boolean): string | null {
  if (typeof node === "string") {
    if (node === NO_ELEMENTS && inArray) return null;
    return KIND_OF[node] ? null : `a value of type ${node}`;
  }
  if (Array.isArray(node)) return nodeProblem(node[0] ?? NO_ELEMENTS, true);
  const keys = Object.keys(node);
  if (keys.length === 0) return "an empty object";
  const lower = new Set(keys.map((k) => k.toLowerCase()));
  if (lower.size !== keys.length || lower.has("")) return "keys that differ only in case, or an empty key";
  for (const key of keys) {
    const problem = nodeProblem(node[key] as Structure, false);
    if (problem) return problem;
  }
  return null;
}

/**
 * One structure covering both, or null when they disagree on what a value is (object, array or scalar) or on
 * the family of a scalar. Integers and doubles merge to DOUBLE, as the column type rule does.
 */
export function mergeStructures(a: Structure, b: Structure): Structure | null {
  if (typeof a === "string" || typeof b === "string") {
    if (a === b) return a;
    if (a === NO_ELEMENTS && typeof b === "string") return b;
    if (b === NO_ELEMENTS && typeof a === "string") return a;
    if (typeof a !== "string" || typeof b !== "string") return null;
    const kinds = new Set([KIND_OF[a], KIND_OF[b]]);
    if (kinds.size === 1) return READ_AS[KIND_OF[a] as Kind];
    return kinds.has("integer") && kinds.has("double") ? "DOUBLE" : null;
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b)) return null;
    const element = mergeElements(a[0] ?? NO_ELEMENTS, b[0] ?? NO_ELEMENTS);
    return element === null ? null : [element];
  }
  const out: { [key: string]: Structure } = { ...a };
  for (const [key, value] of Object.entries(b)) {
    const mine = out[key];
    if (mine === undefined) {
      out[key] = value;
      continue;
    }
    const merged = mergeStructures(mine, value);
    if (merged === null) return null;
    out[key] = merged;
  }
  return out;
}

function mergeElements(a: Structure, b: Structure): Structure | null {
  if (a === NO_ELEMENTS) return b;
  if (b === NO_ELEMENTS) return a;
  return mergeStructures(a, b);
}

/**
 * A document of this structure with one element per array: relationalizing it gives the columns, child
 * tables and kinds that every document of the structure gives (used to grow the schema without the rows).
 */
export function representative(node: Structure): unknown {
  if (typeof node === "string") {
    switch (KIND_OF[node]) {
      case "string":
        return "";
      case "boolean":
        return true;
      case "integer":
        return 0;
      default:
        return 0.5;
    }
  }
  if (Array.isArray(node)) {
    const element = node[0] ?? NO_ELEMENTS;
    return element === NO_ELEMENTS ? [] : [representative(element)];
  }
  return Object.fromEntries(Object.entries(node).map(([key, value]) => [key, representative(value)]));
}

/** The structure `json_transform` reads documents with: each scalar as the type of its kind. */
export function readPlan(node: Structure): Structure {
  if (typeof node === "string") {
    const kind = KIND_OF[node];
    return kind ? READ_AS[kind] : "VARCHAR";
  }
  if (Array.isArray(node)) return [readPlan(node[0] ?? NO_ELEMENTS)];
  return Object.fromEntries(Object.entries(node).map(([key, value]) => [key, readPlan(value)]));
}

/** Whether a column of this type holds a value of this kind as is: no `_shape` tag, no text for a number. */
function holds(type: ColumnType, kind: Kind): boolean {
  return kind === "integer" ? type === "BIGINT" || type === "DOUBLE" : type === READ_AS[kind];
}

/**
 * Whether the dataset's tables hold every value of documents of this structure as is, so the typed reader
 * writes the same cells and `_shape` (none) as `Relationalizer` would. False when a column the structure
 * needs is missing or has become text for a number (a kind conflict): such documents take the JavaScript path.
 * `lenient`: a column or table not there yet is fine (it will be made for these documents).
 */
export function fitsSchema(structure: Structure, schema: DatasetSchema, options: { lenient?: boolean } = {}): boolean {
  const root = schema.tables.find((t) => t.name === schema.root);
  const row = rowStructure(structure);
  if (!root || !row) return false;
  const lenient = options.lenient ?? false;
  const inherited = schema.inherit.flatMap((field) => {
    const node = row[field];
    const kind = typeof node === "string" ? KIND_OF[node] : undefined;
    return kind ? [{ field, kind }] : [];
  });
  return fitsTable(row, root, [], schema, inherited, lenient);
}

function fitsTable(
  node: Structure,
  table: TableSchema,
  path: string[],
  schema: DatasetSchema,
  inherited: ReadonlyArray<{ field: string; kind: Kind }>,
  lenient: boolean,
): boolean {
  const fits = (column: ColumnSchema | undefined, kind: Kind | undefined) =>
    kind !== undefined && (column === undefined ? lenient : holds(column.type, kind));
  if (typeof node === "string") return fits(columnOf(table, "value", path), KIND_OF[node]);
  if (Array.isArray(node)) {
    if (!columnOf(table, "key", path) && !lenient) return false;
    const child = childTableAt(schema, table, path);
    if (!child) return lenient;
    for (const { field, kind } of inherited) {
      if (
        !fits(
          child.columns.find((c) => c.role === "inherited" && c.path[0] === field),
          kind,
        )
      )
        return false;
    }
    const element = node[0] ?? NO_ELEMENTS;
    return element === NO_ELEMENTS || fitsTable(element, child, [], schema, inherited, lenient);
  }
  return Object.entries(node).every(([key, value]) =>
    fitsTable(value, table, [...path, key], schema, inherited, lenient),
  );
}

function columnOf(table: TableSchema, role: "value" | "key", path: readonly string[]): ColumnSchema | undefined {
  return table.columns.find((c) => c.role === role && samePath(c.path, path));
}

/** The child table holding the array at `path` of a table's rows. */
export function childTableAt(
  schema: DatasetSchema,
  table: TableSchema,
  path: readonly string[],
): TableSchema | undefined {
  return schema.tables.find((t) => t.parent === table.name && samePath(t.path, path));
}

function samePath(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((s, i) => s === b[i]);
}

/** The structure at a path inside a node, if the node has one there. */
export function structureAt(node: Structure, path: readonly string[]): Structure | undefined {
  let at: Structure | undefined = node;
  for (const key of path) {
    if (at === undefined || !isObjectNode(at)) return undefined;
    at = at[key];
  }
  return at;
}

/**
 * Whether reading with `plan` reads every value of documents of `structure` as the type of its own kind, and
 * the tables written from `plan` hold them: a plan that has only seen empty arrays somewhere (no element
 * type) covers no elements there, though it reads them as text.
 */
export function covers(plan: Structure, structure: Structure): boolean {
  if (typeof structure === "string") {
    if (structure === NO_ELEMENTS) return true;
    const kind = KIND_OF[structure];
    return typeof plan === "string" && plan !== NO_ELEMENTS && kind !== undefined && readPlan(plan) === READ_AS[kind];
  }
  if (Array.isArray(structure))
    return Array.isArray(plan) && covers(plan[0] ?? NO_ELEMENTS, structure[0] ?? NO_ELEMENTS);
  if (!isObjectNode(plan)) return false;
  return Object.entries(structure).every(
    ([key, value]) => plan[key] !== undefined && covers(plan[key] as Structure, value),
  );
}
