import { isInteger, isSafeNumber, parse, stringify } from "lossless-json";
import sanitizeHtml from "sanitize-html";
import { z } from "zod";
import { fitsInt64 } from "../relationalize/types.js";
import { type Column, MAX_STRING_LENGTH } from "./columns.js";

/** Field types of a study schema, as the reference exporter knows them. */
export const FieldType = z.enum([
  "BOOLEAN",
  "INT",
  "FLOAT",
  "STRING",
  "SINGLE_CHOICE",
  "INLINE_JSON_BLOB",
  "CALENDAR_DATE",
  "DURATION_V2",
  "TIME_V2",
  "MULTI_CHOICE",
  "TIMESTAMP",
  /** A JSON value stored as a file of its own; the cell holds the file's key. */
  "ATTACHMENT_JSON_BLOB",
]);
export type FieldType = z.infer<typeof FieldType>;

export const FieldDefinition = z.object({
  name: z.string().min(1),
  type: FieldType,
  maxLength: z.number().int().positive().optional(),
  unboundedText: z.boolean().default(false),
  multiChoiceAnswerList: z.array(z.string()).default([]),
  allowOtherChoices: z.boolean().default(false),
});
export type FieldDefinition = z.input<typeof FieldDefinition>;

/** Default maximum lengths of string-like columns. */
const DEFAULT_MAX: Partial<Record<FieldType, number>> = { CALENDAR_DATE: 10, DURATION_V2: 24, TIME_V2: 12 };
const STRING_DEFAULT_MAX = 100;

export interface Sanitized {
  value: string;
  truncated: boolean;
}

/**
 * The reference's string cleaning: HTML tags stripped (text HTML-escaped: `&`, `<`, `>`, no-break space),
 * every run of whitespace (newlines, tabs) folded to one space and the ends trimmed, then cut to `maxLength`.
 */
export function sanitize(text: string, maxLength?: number): Sanitized {
  // Text without <, > or & comes out of sanitize-html unchanged, and most values are such text.
  const html = /[<>&]/.test(text) ? sanitizeHtml(text, { allowedTags: [], allowedAttributes: {} }) : text;
  const stripped = html
    .replace(/\u00a0/g, "&nbsp;")
    .replace(/\s+/g, " ")
    .trim();
  if (maxLength === undefined || stripped.length <= maxLength) return { value: stripped, truncated: false };
  return { value: stripped.slice(0, maxLength), truncated: true };
}

export interface SerializedField {
  /** Column name → cell (null: empty). */
  cells: Record<string, string | null>;
  /** Whether a string was cut to its column's maximum length (counted in the export's metrics). */
  truncated: boolean;
  /** Multi-choice selections that are not listed and have no `.other` column to go to. */
  dropped: string[];
}

/** A string field's maximum length; undefined when it is unbounded. */
function maxLengthOf(field: z.output<typeof FieldDefinition>): number | undefined {
  return field.unboundedText ? undefined : (field.maxLength ?? DEFAULT_MAX[field.type] ?? STRING_DEFAULT_MAX);
}

/** The columns a field becomes in a researcher table, in order, with their types (the reference's mapping). */
export function columnsOf(input: FieldDefinition): Column[] {
  const field = FieldDefinition.parse(input);
  const name = field.name;
  switch (field.type) {
    case "MULTI_CHOICE":
      return [
        ...field.multiChoiceAnswerList.map((a): Column => ({ name: `${name}.${a}`, type: "BOOLEAN" })),
        ...(field.allowOtherChoices ? [{ name: `${name}.other`, type: "LARGETEXT" } as const] : []),
      ];
    case "TIMESTAMP":
      return [
        { name, type: "DATE" },
        { name: `${name}.timezone`, type: "STRING", maxLength: 5 },
      ];
    case "BOOLEAN":
      return [{ name, type: "BOOLEAN" }];
    case "INT":
      return [{ name, type: "INTEGER" }];
    case "FLOAT":
      return [{ name, type: "DOUBLE" }];
    case "ATTACHMENT_JSON_BLOB":
      return [{ name, type: "FILEHANDLEID" }];
    default: {
      const max = maxLengthOf(field);
      return [
        max === undefined || max > MAX_STRING_LENGTH
          ? { name, type: "LARGETEXT" }
          : { name, type: "STRING", maxLength: max },
      ];
    }
  }
}

/** An integer past 2^53 cannot be a JS number without losing digits. */
const LONG_INTEGER = /(?<![.0-9])[0-9]{16,}/;

/**
 * Parses a document for export: numbers are JS numbers, except integers a double cannot hold exactly, which
 * are bigints (a 19-digit sensor timestamp keeps every digit). `JSON.parse` unless the text has such a number.
 */
export function parseExportDocument(text: string): unknown {
  if (!LONG_INTEGER.test(text)) return JSON.parse(text);
  return parse(text, null, (number) => (isInteger(number) && !isSafeNumber(number) ? BigInt(number) : Number(number)));
}

/** JSON text of a parsed document's value, bigints as their digits. */
function jsonText(value: unknown): string {
  return stringify(value) as string;
}

/** Stores a JSON text as an attachment and returns its key. */
export type Attach = (json: string) => string;

/**
 * Serializes one JSON value to its field's columns by the reference's rules; anything that does not fit is
 * empty. Attachments go through `attach`.
 */
export function serializeField(input: FieldDefinition, value: unknown, attach?: Attach): SerializedField {
  const field = FieldDefinition.parse(input);
  const out: SerializedField = { cells: {}, truncated: false, dropped: [] };
  if (value === null || value === undefined) return out;
  const name = field.name;
  switch (field.type) {
    case "ATTACHMENT_JSON_BLOB":
      if (!attach) throw new Error(`field '${name}' is an attachment and no attachment store was given`);
      out.cells[name] = attach(jsonText(value));
      break;
    case "BOOLEAN":
      if (typeof value === "boolean") out.cells[name] = String(value);
      break;
    case "INT":
      if (typeof value === "number" && Number.isFinite(value)) out.cells[name] = String(Math.trunc(value));
      else if (typeof value === "bigint" && fitsInt64(value)) out.cells[name] = String(value);
      break;
    case "FLOAT":
      if ((typeof value === "number" && Number.isFinite(value)) || typeof value === "bigint")
        out.cells[name] = String(value);
      break;
    case "MULTI_CHOICE": {
      if (!Array.isArray(value)) break;
      const selected = new Set(value.map((v) => (typeof v === "string" ? v : jsonText(v))));
      for (const answer of field.multiChoiceAnswerList) {
        out.cells[`${name}.${answer}`] = String(selected.has(answer));
        selected.delete(answer);
      }
      const others = [...selected].sort();
      if (others.length > 0) {
        if (field.allowOtherChoices) out.cells[`${name}.other`] = others.join(", ");
        else out.dropped = others;
      }
      break;
    }
    case "TIMESTAMP": {
      if (typeof value === "number" && Number.isFinite(value)) {
        out.cells[name] = String(Math.trunc(value));
        out.cells[`${name}.timezone`] = "+0000";
      } else if (typeof value === "string") {
        const parsed = parseTimestamp(value);
        if (parsed) {
          out.cells[name] = String(parsed.epochMs);
          out.cells[`${name}.timezone`] = parsed.zone;
        }
      }
      break;
    }
    default: {
      const text = typeof value === "string" ? value : jsonText(value);
      const cleaned = sanitize(text, maxLengthOf(field));
      out.cells[name] = cleaned.value;
      out.truncated = cleaned.truncated;
    }
  }
  return out;
}

const ISO = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/;

/** An ISO-8601 date-time with a zone: epoch milliseconds, and the zone as `±HHMM` (`Z` is `+0000`). */
export function parseTimestamp(text: string): { epochMs: number; zone: string } | null {
  const match = ISO.exec(text.trim());
  if (!match) return null;
  const epochMs = Date.parse(text.trim());
  if (Number.isNaN(epochMs)) return null;
  const zone = match[8] as string;
  return { epochMs, zone: zone === "Z" ? "+0000" : zone.replace(":", "") };
}
