import sanitizeHtml from "sanitize-html";
import { z } from "zod";

/** Field types of a study schema, as the reference exporter knows them (attachments are not handled here). */
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
  const stripped = sanitizeHtml(text, { allowedTags: [], allowedAttributes: {} })
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

/** The columns a field becomes in a researcher table, in order. */
export function columnsOf(input: FieldDefinition): string[] {
  const field = FieldDefinition.parse(input);
  if (field.type === "MULTI_CHOICE") {
    return [
      ...field.multiChoiceAnswerList.map((a) => `${field.name}.${a}`),
      ...(field.allowOtherChoices ? [`${field.name}.other`] : []),
    ];
  }
  if (field.type === "TIMESTAMP") return [field.name, `${field.name}.timezone`];
  return [field.name];
}

/** Serializes one JSON value to its field's columns by the reference's rules; anything that does not fit is empty. */
export function serializeField(input: FieldDefinition, value: unknown): SerializedField {
  const field = FieldDefinition.parse(input);
  const out: SerializedField = { cells: {}, truncated: false, dropped: [] };
  if (value === null || value === undefined) return out;
  const name = field.name;
  switch (field.type) {
    case "BOOLEAN":
      if (typeof value === "boolean") out.cells[name] = String(value);
      break;
    case "INT":
      if (typeof value === "number" && Number.isFinite(value)) out.cells[name] = String(Math.trunc(value));
      break;
    case "FLOAT":
      if (typeof value === "number" && Number.isFinite(value)) out.cells[name] = String(value);
      break;
    case "MULTI_CHOICE": {
      if (!Array.isArray(value)) break;
      const selected = new Set(value.map((v) => (typeof v === "string" ? v : JSON.stringify(v))));
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
      const text = typeof value === "string" ? value : JSON.stringify(value);
      const max = field.unboundedText ? undefined : (field.maxLength ?? DEFAULT_MAX[field.type] ?? STRING_DEFAULT_MAX);
      const cleaned = sanitize(text, max);
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
