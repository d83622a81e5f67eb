import { z } from "zod";

/**
 * Column types of researcher tables, as the reference's table service knows them. DATE holds epoch
 * milliseconds; FILEHANDLEID holds the key of a stored file (an attachment, or the record's document).
 */
export const ColumnType = z.enum(["BOOLEAN", "INTEGER", "DOUBLE", "DATE", "STRING", "LARGETEXT", "FILEHANDLEID"]);
export type ColumnType = z.infer<typeof ColumnType>;

export const Column = z.object({
  name: z.string().min(1),
  type: ColumnType,
  /** STRING only. */
  maxLength: z.number().int().positive().optional(),
});
export type Column = z.infer<typeof Column>;

/** Longest text a STRING column holds; a longer field is LARGETEXT. */
export const MAX_STRING_LENGTH = 1000;

/**
 * Type changes an existing column may take, as the reference allows them (numbers widen, anything widens to
 * text), plus BOOLEAN to text, which inferred schemas need when a field's values change kind.
 */
const ALLOWED: Record<ColumnType, readonly ColumnType[]> = {
  BOOLEAN: ["STRING", "LARGETEXT"],
  INTEGER: ["DOUBLE", "DATE", "STRING", "LARGETEXT"],
  DOUBLE: ["STRING", "LARGETEXT"],
  DATE: ["INTEGER", "DOUBLE"],
  STRING: ["LARGETEXT"],
  LARGETEXT: [],
  FILEHANDLEID: [],
};

/** Text length a non-text column's values need when it becomes STRING. */
const TEXT_LENGTH: Partial<Record<ColumnType, number>> = { BOOLEAN: 5, INTEGER: 20, DOUBLE: 22 };

/** Whether a column of type `from` may become `to` without losing values (the reference's rules). */
export function canChange(from: Column, to: Column): boolean {
  if (from.type === to.type) return from.type !== "STRING" || (to.maxLength ?? 0) >= (from.maxLength ?? 0);
  if (!ALLOWED[from.type].includes(to.type)) return false;
  if (to.type !== "STRING") return true;
  return (to.maxLength ?? 0) >= (from.maxLength ?? TEXT_LENGTH[from.type] ?? Number.POSITIVE_INFINITY);
}

export class IncompatibleColumnError extends Error {
  override name = "IncompatibleColumnError";
}

/**
 * The narrowest column that holds the values of both: the existing one when it already does, the wanted one
 * when the existing may become it, else text wide enough for both.
 */
export function widen(existing: Column, wanted: Column): Column {
  if (canChange(wanted, existing)) return existing;
  if (canChange(existing, wanted)) return wanted;
  const length = Math.max(
    existing.maxLength ?? TEXT_LENGTH[existing.type] ?? Number.POSITIVE_INFINITY,
    wanted.maxLength ?? TEXT_LENGTH[wanted.type] ?? Number.POSITIVE_INFINITY,
  );
  const text: Column =
    length <= MAX_STRING_LENGTH
      ? { name: existing.name, type: "STRING", maxLength: length }
      : { name: existing.name, type: "LARGETEXT" };
  if (canChange(existing, text) && canChange(wanted, text)) return text;
  throw new IncompatibleColumnError(
    `column '${existing.name}' is ${describe(existing)} and cannot hold ${describe(wanted)} values`,
  );
}

function describe(column: Column): string {
  return column.type === "STRING" ? `STRING(${column.maxLength})` : column.type;
}

export interface ColumnChanges {
  columns: Column[];
  added: string[];
  changed: string[];
}

/**
 * A table's columns after a day's data: existing columns keep their place (and their rows), new ones are
 * appended in the order wanted, and a column whose values need more room is widened. Columns are never
 * dropped, so a field missing from a day leaves its cells empty.
 */
export function mergeColumns(existing: readonly Column[], wanted: readonly Column[]): ColumnChanges {
  const byName = new Map(existing.map((c) => [c.name, c]));
  const out: ColumnChanges = { columns: [...existing], added: [], changed: [] };
  for (const column of wanted) {
    const current = byName.get(column.name);
    if (!current) {
      out.columns.push(column);
      out.added.push(column.name);
      byName.set(column.name, column);
      continue;
    }
    const merged = widen(current, column);
    if (merged !== current) {
      out.columns[out.columns.indexOf(current)] = merged;
      out.changed.push(column.name);
      byName.set(column.name, merged);
    }
  }
  return out;
}
