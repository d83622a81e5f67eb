import { z } from "zod";

/** Parquet/SQL types a column can have. */
export const ColumnType = z.enum(["BOOLEAN", "BIGINT", "DOUBLE", "VARCHAR"]);
export type ColumnType = z.infer<typeof ColumnType>;

/**
 * The JSON kinds of value a column has held; they decide its type. `long`: an integer beyond ±2^53, exact in
 * BIGINT, not in DOUBLE. `bignum`: a number no 64-bit type holds.
 */
export const Kind = z.enum(["boolean", "integer", "long", "double", "bignum", "string"]);
export type Kind = z.infer<typeof Kind>;

/**
 * - value: a scalar from the document, at `path` inside the row's object (or the element itself, for arrays of scalars)
 * - key: the join key of the array at `path`; the child table's `id` equals it
 * - id / index: in a child table, the parent's join key and the element's position
 * - inherited: a root field copied into every child row (record id, partition fields), for filtering without joins
 * - shape: what flat columns cannot say, so that documents can be rebuilt exactly (see shape.ts)
 */
export const ColumnRole = z.enum(["value", "key", "id", "index", "inherited", "shape"]);
export type ColumnRole = z.infer<typeof ColumnRole>;

export const ColumnSchema = z.object({
  name: z.string(),
  role: ColumnRole,
  /** Original keys from the row's object to the value; `[]` for the element itself; empty for system columns. */
  path: z.array(z.string()),
  kinds: z.array(Kind),
  type: ColumnType,
});
export type ColumnSchema = z.infer<typeof ColumnSchema>;

export const TableSchema = z.object({
  name: z.string(),
  /** Null for the root table. */
  parent: z.string().nullable(),
  /** Path of the array inside the parent's row object (`[]`: the parent row is an array element that is itself an array). */
  path: z.array(z.string()),
  columns: z.array(ColumnSchema),
});
export type TableSchema = z.infer<typeof TableSchema>;

/** The tables of one dataset and their columns; kept between runs so names and order never change. */
export const DatasetSchema = z.object({
  root: z.string(),
  recordField: z.string(),
  inherit: z.array(z.string()),
  tables: z.array(TableSchema),
});
export type DatasetSchema = z.infer<typeof DatasetSchema>;

/** Two kinds of value met in one column; the column took the wider type. Reported, never silently dropped. */
export interface TypeConflict {
  table: string;
  column: string;
  kinds: Kind[];
  resolvedAs: ColumnType;
}

/** Rows of one table, aligned with its columns; values already in the column's type (BIGINT as bigint). */
export interface TableRows {
  schema: TableSchema;
  rows: unknown[][];
}

export const SHAPE_COLUMN = "_shape";

/**
 * The root field a column carries, if any: a top-level value of the root table, or its copy inherited by a
 * child table (record id, partition fields).
 */
export function rootFieldOf(column: ColumnSchema): string | undefined {
  return (column.role === "value" || column.role === "inherited") && column.path.length === 1
    ? column.path[0]
    : undefined;
}
