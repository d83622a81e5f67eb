import { LosslessNumber } from "lossless-json";
import { type ColumnSchema, type DatasetSchema, rootFieldOf, type TableRows, type TableSchema } from "./model.js";
import { decodeShape, type KindTag } from "./shape.js";

interface Located {
  schema: TableSchema;
  row: readonly unknown[];
}

/**
 * Rebuilds the original documents from a dataset's tables, value for value: a missing key, `null`, `[]` and
 * `{}` come back as they were, numbers keep their value (integers exactly, beyond 2^53 too), keys keep their
 * original names. Rows may come from several batches whose column types differ (each carries its own schema).
 * Returns record key → document.
 */
export function rebuildDocuments(dataset: DatasetSchema, tables: readonly TableRows[]): Map<string, unknown> {
  const childRows = new Map<string, Array<{ index: number; located: Located }>>();
  const roots: Located[] = [];
  for (const table of tables) {
    const idAt = table.schema.columns.findIndex((c) => c.role === "id");
    const indexAt = table.schema.columns.findIndex((c) => c.role === "index");
    for (const row of table.rows) {
      if (table.schema.parent === null) {
        roots.push({ schema: table.schema, row });
        continue;
      }
      pushTo(childRows, String(row[idAt]), { index: Number(row[indexAt]), located: { schema: table.schema, row } });
    }
  }

  const decode = ({ schema, row }: Located): unknown => {
    const shape = decodeShape(row[schema.columns.findIndex((c) => c.role === "shape")]);
    if (shape.n?.some((p) => p.length === 0)) return null;
    if (shape.o?.some((p) => p.length === 0)) return {};
    const tags = new Map<string, KindTag>((shape.t ?? []).map(([p, tag]) => [JSON.stringify(p), tag]));
    let object: Record<string, unknown> | undefined;
    for (const [i, column] of schema.columns.entries()) {
      if (column.role !== "value" && column.role !== "key") continue;
      const cell = row[i];
      if (cell === null || cell === undefined) continue;
      const value =
        column.role === "key"
          ? (childRows.get(String(cell)) ?? []).sort((a, b) => a.index - b.index).map((c) => decode(c.located))
          : fromColumn(cell, column, tags.get(JSON.stringify(column.path)));
      if (column.path.length === 0) return value;
      object ??= {};
      setPath(object, column.path, value);
    }
    object ??= {};
    for (const path of shape.n ?? []) setPath(object, path, null);
    for (const path of shape.o ?? []) setPath(object, path, {});
    for (const field of shape.p ?? []) delete object[field];
    return object;
  };

  const byRecord = new Map<string, Array<{ element: number | undefined; document: unknown }>>();
  for (const located of roots) {
    const recordAt = located.schema.columns.findIndex((c) => rootFieldOf(c) === dataset.recordField);
    const record = String(located.row[recordAt]);
    const shape = decodeShape(located.row[located.schema.columns.findIndex((c) => c.role === "shape")]);
    pushTo(byRecord, record, { element: shape.e, document: decode(located) });
  }
  const documents = new Map<string, unknown>();
  for (const [record, parts] of byRecord) {
    const first = parts[0];
    if (first && parts.length === 1 && first.element === undefined) documents.set(record, first.document);
    else
      documents.set(
        record,
        parts.sort((a, b) => (a.element ?? 0) - (b.element ?? 0)).map((p) => p.document),
      );
  }
  return documents;
}

function fromColumn(cell: unknown, column: ColumnSchema, tag: KindTag | undefined): unknown {
  switch (column.type) {
    case "BIGINT":
      return new LosslessNumber(String(cell));
    case "DOUBLE":
      return Number(cell);
    case "BOOLEAN":
      return Boolean(cell);
    default:
      if (tag === "b") return cell === "true";
      if (tag) return new LosslessNumber(String(cell));
      return String(cell);
  }
}

function pushTo<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

/** Sets a value at a path, creating objects on the way; keys such as `__proto__` are plain keys here. */
function setPath(object: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let at = object;
  for (let i = 0; i < path.length - 1; i++) {
    const key = path[i] as string;
    const next = Object.hasOwn(at, key) ? at[key] : undefined;
    if (typeof next !== "object" || next === null || Array.isArray(next)) define(at, key, {});
    at = at[key] as Record<string, unknown>;
  }
  define(at, path[path.length - 1] as string, value);
}

function define(object: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(object, key, { value, enumerable: true, writable: true, configurable: true });
}
