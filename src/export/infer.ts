import { MAX_STRING_LENGTH } from "./columns.js";
import { type FieldDefinition, type FieldType, parseTimestamp } from "./serialize.js";

/** Lengths a string field is given, so that a table's columns change rarely as values grow. */
const LENGTH_STEPS = [100, MAX_STRING_LENGTH] as const;

/** What the values of one top-level key were seen to be. */
interface Seen {
  kinds: Set<"boolean" | "integer" | "float" | "timestamp" | "string" | "structured">;
  longest: number;
}

/**
 * A schema's fields inferred from its documents, for datasets without declared export fields: booleans,
 * integers, floats, ISO timestamps with a zone, strings (100 or 1000 characters, or unbounded), and nested
 * objects and arrays as attachments. Keys in `exclude` (the record and partition fields the bucketing adds)
 * and keys only ever null are left out; a document that is not an object (a list of samples) adds none.
 *
 * A field known from earlier exports keeps its type unless its values now need a wider one (integer to float,
 * anything scalar to text), so a table's columns only ever grow.
 */
export function inferFields(
  documents: Iterable<unknown>,
  previous: readonly FieldDefinition[],
  exclude: ReadonlySet<string>,
): FieldDefinition[] {
  const seen = new Map<string, Seen>();
  for (const doc of documents) {
    if (doc === null || typeof doc !== "object" || Array.isArray(doc)) continue;
    for (const [key, value] of Object.entries(doc)) {
      if (value === null || value === undefined || exclude.has(key)) continue;
      let entry = seen.get(key);
      if (!entry) {
        entry = { kinds: new Set(), longest: 0 };
        seen.set(key, entry);
      }
      if (typeof value === "boolean") entry.kinds.add("boolean");
      else if (typeof value === "number") entry.kinds.add(Number.isInteger(value) ? "integer" : "float");
      else if (typeof value === "bigint") entry.kinds.add("integer");
      else if (typeof value === "string") {
        entry.kinds.add(parseTimestamp(value) ? "timestamp" : "string");
        entry.longest = Math.max(entry.longest, value.length);
      } else entry.kinds.add("structured");
    }
  }
  const fields = previous.map((field) => {
    const now = seen.get(field.name);
    seen.delete(field.name);
    return now ? widenField(field, now) : field;
  });
  for (const [name, now] of seen) fields.push(fieldOf(name, now));
  return fields;
}

function fieldOf(name: string, seen: Seen): FieldDefinition {
  const { kinds } = seen;
  const only = (...allowed: Array<typeof kinds extends Set<infer K> ? K : never>) =>
    [...kinds].every((k) => allowed.includes(k));
  let type: FieldType;
  if (only("structured")) type = "ATTACHMENT_JSON_BLOB";
  else if (only("boolean")) type = "BOOLEAN";
  else if (only("integer")) type = "INT";
  else if (only("integer", "float")) type = "FLOAT";
  else if (only("timestamp")) type = "TIMESTAMP";
  else return stringField(name, Math.max(seen.longest, kinds.has("structured") ? Number.POSITIVE_INFINITY : 0));
  return { name, type };
}

function stringField(name: string, longest: number): FieldDefinition {
  const step = LENGTH_STEPS.find((s) => longest <= s);
  return step === undefined ? { name, type: "STRING", unboundedText: true } : { name, type: "STRING", maxLength: step };
}

/** A known field, widened if today's values do not fit it; timestamps and attachments keep their type. */
function widenField(field: FieldDefinition, seen: Seen): FieldDefinition {
  if (field.type === "TIMESTAMP" || field.type === "ATTACHMENT_JSON_BLOB") return field;
  const today = fieldOf(field.name, seen);
  if (today.type === field.type && today.type !== "STRING") return field;
  if (field.type === "INT" && today.type === "FLOAT") return today;
  if ((field.type === "FLOAT" && today.type === "INT") || (field.type === "STRING" && today.type !== "STRING")) {
    return field;
  }
  if (field.type === "STRING" && today.type === "STRING") {
    if (field.unboundedText) return field;
    if (today.unboundedText || (today.maxLength ?? 0) > (field.maxLength ?? 0)) return today;
    return field;
  }
  // A scalar field whose values changed kind becomes text long enough for them.
  return stringField(field.name, Math.max(seen.longest, 22));
}
