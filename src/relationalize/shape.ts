import type { Kind } from "./model.js";

/** Tag of a non-string scalar stored as text in a VARCHAR column. */
export type KindTag = "b" | "i" | "d" | "g";
export const TAG_OF: Record<Exclude<Kind, "string">, KindTag> = {
  boolean: "b",
  integer: "i",
  long: "i",
  double: "d",
  bignum: "g",
};

/**
 * What a row's flat columns cannot say, kept in its `_shape` column (NULL for the usual row, which needs none):
 * - n: paths that held `null` (a NULL cell otherwise means the key was missing); `[]` is the element itself
 * - o: paths that held `{}` (an empty object has no columns); `[]` is the element itself
 * - t: kinds of values stored as text in a VARCHAR column (a number or boolean in a column that also holds strings)
 * - p: root fields that were not in the document (taken from the file's partition path or the record key)
 * - e: position of the row's element when the document is a top-level array
 */
export interface Shape {
  n?: string[][];
  o?: string[][];
  t?: Array<[string[], KindTag]>;
  p?: string[];
  e?: number;
}

export function encodeShape(shape: Shape): string | null {
  return shape.n || shape.o || shape.t || shape.p || shape.e !== undefined ? JSON.stringify(shape) : null;
}

export function decodeShape(text: unknown): Shape {
  return typeof text === "string" && text.length > 0 ? (JSON.parse(text) as Shape) : {};
}
