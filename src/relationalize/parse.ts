import { parse } from "lossless-json";

/**
 * A number literal whose kind or value `JSON.parse` would lose: an integral double (`1.0`, `-0.0`), an exponent
 * (`1e3` reads as the integer 1000, `1e400` as Infinity), an integer of 16 or more digits (beyond 2^53), or a
 * fraction beginning with 200 zeros (it may read as 0). Text inside strings can match too; that only costs speed.
 */
const AMBIGUOUS_NUMBER = /[0-9][eE]|[0-9]\.0+(?![0-9])|(?<![.0-9])[0-9]{16,}|\.0{200}/;

/**
 * Parses one JSON document for relationalizing. `JSON.parse` is several times faster than a lossless parser,
 * and gives the same kinds and values unless the text holds an ambiguous number; only then is the lossless
 * parser used (numbers as exact text).
 */
export function parseDocument(text: string): unknown {
  return AMBIGUOUS_NUMBER.test(text) ? parse(text) : JSON.parse(text);
}
