/**
 * Which record a document is, and which of two documents of a record is newer: pure rules over parsed
 * documents (lossless numbers included), shared by every way a document is read.
 */

/** The fields a record is read from: a document's root object, or the first element of a top-level array. */
function rootOf(document: unknown): Record<string, unknown> | undefined {
  const source = Array.isArray(document) ? document[0] : document;
  return typeof source === "object" && source !== null ? (source as Record<string, unknown>) : undefined;
}

/** A scalar as text: strings as they are, lossless numbers by their digits. */
function textOf(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (value !== null && typeof value === "object" && "value" in value) return String(value.value);
  return undefined;
}

/**
 * The record id a document carries in its key fields: the value of a single field as text (a string, or a
 * number by its digits), or for several fields their values as a JSON array of text. Undefined when a field
 * is missing or holds something else: such a document is a record of its own, named by file and line.
 */
export function recordKeyOf(document: unknown, key: readonly string[]): string | undefined {
  const root = rootOf(document);
  const values: string[] = [];
  for (const field of key) {
    const value = root?.[field];
    const text = typeof value === "boolean" ? undefined : textOf(value);
    if (text === undefined) return undefined;
    values.push(text);
  }
  return values.length === 1 ? values[0] : JSON.stringify(values);
}

/**
 * What orders the versions of a record: the values of the `newestBy` fields, as text, null where missing.
 * Kept with the record's location, so a later run compares against it without reading the tables.
 */
export type RecordOrder = Array<string | null>;

export function orderOf(document: unknown, fields: readonly string[]): RecordOrder {
  const root = rootOf(document);
  return fields.map((field) => textOf(root?.[field]) ?? null);
}

const NUMBER = /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/;

/**
 * Compares two orders field by field: a missing value is older than any value, two numbers compare as
 * numbers, anything else as text (ISO-8601 dates and times of one offset sort as they read). Negative when
 * `a` is older, 0 on a tie.
 */
export function compareOrder(a: RecordOrder, b: RecordOrder): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i] ?? null;
    const y = b[i] ?? null;
    if (x === y) continue;
    if (x === null) return -1;
    if (y === null) return 1;
    if (NUMBER.test(x) && NUMBER.test(y) && Number(x) !== Number(y)) return Number(x) < Number(y) ? -1 : 1;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}
