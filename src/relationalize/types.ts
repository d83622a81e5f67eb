import { isLosslessNumber, type LosslessNumber } from "lossless-json";
import type { ColumnType, Kind } from "./model.js";

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const DOUBLE_EXACT = 2n ** 53n;

/** Whether an integer fits a 64-bit signed column (BIGINT). */
export function fitsInt64(n: bigint): boolean {
  return n >= INT64_MIN && n <= INT64_MAX;
}

/** A JSON scalar: numbers are JS numbers where that loses nothing (see parse.ts), else exact text. */
export type Scalar = string | boolean | number | LosslessNumber;

/**
 * The kind of a JSON scalar (`1.0` is a double and `1` an integer). A number no 64-bit type holds is a bignum,
 * kept as its text: an integer beyond int64, or a decimal beyond a double's range (`1e400` would be Infinity,
 * `1e-400` zero).
 */
export function scalarKind(value: Scalar): Kind {
  if (typeof value === "string") return "string";
  if (typeof value === "boolean") return "boolean";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "double";
  const text = value.value;
  if (/[.eE]/.test(text)) return beyondDouble(text) ? "bignum" : "double";
  const n = BigInt(text);
  if (!fitsInt64(n)) return "bignum";
  return n > DOUBLE_EXACT || n < -DOUBLE_EXACT ? "long" : "integer";
}

function beyondDouble(text: string): boolean {
  const n = Number(text);
  return !Number.isFinite(n) || (n === 0 && /[1-9]/.test(text.split(/[eE]/)[0] as string));
}

export function isScalar(value: unknown): value is Scalar {
  const type = typeof value;
  return type === "string" || type === "number" || type === "boolean" || isLosslessNumber(value);
}

type Family = "text" | "boolean" | "number";
const FAMILY: Record<Kind, Family> = {
  string: "text",
  bignum: "text",
  boolean: "boolean",
  integer: "number",
  long: "number",
  double: "number",
};

/**
 * The type rule, applied to every kind a column has held across the dataset:
 * integers alone → BIGINT; integers and doubles → DOUBLE, unless an integer is beyond ±2^53 (a long, which a
 * double would round) → VARCHAR; booleans alone → BOOLEAN; anything with a string, a number beyond 64 bits
 * (a bignum), or booleans mixed with numbers → VARCHAR. JSON null never changes a type;
 * a column that has only held null is VARCHAR.
 */
export function columnType(kinds: Iterable<Kind>): ColumnType {
  const set = new Set(kinds);
  if (set.size === 0 || set.has("string") || set.has("bignum")) return "VARCHAR";
  if (set.has("boolean")) return set.size === 1 ? "BOOLEAN" : "VARCHAR";
  if (set.has("double")) return set.has("long") ? "VARCHAR" : "DOUBLE";
  return "BIGINT";
}

/**
 * True when the kinds span more than one family (text, boolean, number), or mix longs with doubles (which
 * makes the column text): a conflict to report.
 */
export function isConflict(kinds: Iterable<Kind>): boolean {
  const set = new Set(kinds);
  return new Set([...set].map((k) => FAMILY[k])).size > 1 || (set.has("long") && set.has("double"));
}

/** A scalar's value in a column of the given type. VARCHAR keeps a number's exact text. */
export function toColumnValue(value: Scalar, type: ColumnType): unknown {
  if (typeof value === "string") return value;
  if (typeof value === "boolean") return type === "BOOLEAN" ? value : String(value);
  if (typeof value === "number") return type === "BIGINT" ? BigInt(value) : type === "DOUBLE" ? value : String(value);
  switch (type) {
    case "BIGINT":
      return BigInt(value.value);
    case "DOUBLE":
      return Number(value.value);
    default:
      return value.value;
  }
}
