import {
  type ColumnRole,
  type ColumnSchema,
  type DatasetSchema,
  type Kind,
  SHAPE_COLUMN,
  type TableRows,
  type TableSchema,
  type TypeConflict,
} from "./model.js";
import { NameRegistry, safeName } from "./naming.js";
import { encodeShape, type Shape, TAG_OF } from "./shape.js";
import { columnType, isConflict, isScalar, type Scalar, scalarKind, toColumnValue } from "./types.js";

/** Separates keys in internal path keys; never shown. */
const SEP = "\u0001";

/** A cell waiting for its column: `v…` value columns, `k…` join-key columns, `i…` inherited columns. */
interface Cell {
  key: string;
  value: Scalar | null;
  kind: Kind | null;
}

interface PendingRow {
  /** The record the row belongs to, and which addition of it (a later one in the same batch replaces it). */
  record: string;
  generation: number;
  id: string | null;
  index: number | null;
  /** The row's cells as parallel arrays (column key, value, kind): no object per value. */
  keys: string[];
  values: Array<Scalar | null>;
  kinds: Array<Kind | null>;
  inherited: Cell[];
  nulls: string[][] | undefined;
  empties: string[][] | undefined;
  synthetic: string[] | undefined;
  element: number | undefined;
}

interface Origin {
  record: string;
  generation: number;
  inherited: Cell[];
}

interface DeferredArray {
  table: TableState;
  columnKey: string;
  items: unknown[];
  joinKey: string;
}

/** Where a column key's values go in an output row. */
interface Slot {
  at: number;
  column: ColumnSchema;
}

/** One step down a path: the child's path key and column keys, computed once per table. */
interface Step {
  pk: string;
  valueKey: string;
  arrayKey: string;
}

class TableState {
  readonly byKey = new Map<string, ColumnSchema>();
  readonly names: NameRegistry;
  /** Path key → original keys, for every path seen in this table. */
  readonly paths = new Map<string, string[]>([["", []]]);
  private readonly steps = new Map<string, Map<string, Step>>();
  readonly conflicted = new Set<string>();
  /** Column keys met since the last flush that are not columns yet, and the kinds met per column key. */
  readonly fresh = new Set<string>();
  readonly seenKinds = new Map<string, Set<Kind>>();
  pending: PendingRow[] = [];

  step(parentKey: string, key: string): Step {
    let children = this.steps.get(parentKey);
    if (!children) {
      children = new Map();
      this.steps.set(parentKey, children);
    }
    let step = children.get(key);
    if (!step) {
      const pk = parentKey + SEP + key;
      if (!this.paths.has(pk)) this.paths.set(pk, [...(this.paths.get(parentKey) ?? []), key]);
      step = { pk, valueKey: `v${pk}`, arrayKey: `k${pk}` };
      children.set(key, step);
    }
    return step;
  }

  /** Records a cell in a row, noting new columns and kinds on the way. */
  push(row: PendingRow, key: string, value: Scalar | null, kind: Kind | null): void {
    row.keys.push(key);
    row.values.push(value);
    row.kinds.push(kind);
    this.note(key, kind);
  }

  note(key: string, kind: Kind | null): void {
    if (!this.byKey.has(key)) this.fresh.add(key);
    if (kind === null) return;
    let kinds = this.seenKinds.get(key);
    if (!kinds) {
      kinds = new Set();
      this.seenKinds.set(key, kinds);
    }
    kinds.add(kind);
  }

  /**
   * `id` names the table by its place (its parent's id and the array's column key), not by its name, which a
   * new child table gets only at the next flush (see `nameNewTables`).
   */
  constructor(
    readonly schema: TableSchema,
    readonly id: string,
    readonly parent: TableState | null,
  ) {
    this.names = new NameRegistry(schema.columns.map((c) => c.name));
    for (const column of schema.columns) {
      this.byKey.set(columnKey(column.role, column.path), column);
      if (isConflict(column.kinds)) this.conflicted.add(column.name);
    }
  }
}

function childId(parent: TableState, columnKey: string): string {
  return `${parent.id}${SEP}${SEP}${columnKey}`;
}

function compareTuples(a: readonly (number | string)[], b: readonly (number | string)[]): number {
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as number | string;
    const y = b[i] as number | string;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

function pathKey(path: readonly string[]): string {
  let key = "";
  for (const segment of path) key += SEP + segment;
  return key;
}

function columnKey(role: ColumnRole, path: readonly string[]): string {
  switch (role) {
    case "value":
      return `v${pathKey(path)}`;
    case "key":
      return `k${pathKey(path)}`;
    case "inherited":
      return `i${path[0] ?? ""}`;
    default:
      return role;
  }
}

/** Join keys are derived from the record key and the path, so every run computes the same ones. */
export function encodePath(path: readonly string[]): string {
  return path.map((s) => encodeURIComponent(s).replace(/\./g, "%2E")).join(".");
}

export interface RelationalizeOptions {
  /** The root field that identifies a record (added from the record key when a document lacks it). */
  recordField: string;
  /** Root fields copied into every child row. */
  inherit: readonly string[];
}

export interface DocumentContext {
  /** Identifies the record; join keys start with it. */
  recordKey: string;
  /** Partition values from the file's path; added to root rows whose document lacks them. */
  partition?: Readonly<Record<string, string>>;
}

export class RelationalizeError extends Error {
  override name = "RelationalizeError";
}

export interface FlushResult {
  tables: TableRows[];
  schema: DatasetSchema;
  /** Conflicts first met in this flush. */
  conflicts: TypeConflict[];
}

/**
 * Turns documents into flat tables (pure: no I/O). Objects flatten into `parent_child` columns; every array
 * becomes a child table `<table>_<field>` with `id` (the parent's join key), `index` and the element's
 * fields (or `val` for scalars); root fields named in `inherit` are copied into every child row. Types are
 * inferred over every document the dataset has seen (see types.ts). Documents go in with `add`; `flush`
 * returns the rows gathered so far and the updated schema, so a large dataset is processed in bounded batches.
 */
export class Relationalizer {
  /** Every table by its id (TableState.id). */
  private readonly tables = new Map<string, TableState>();
  /** Child tables first met since the last flush, named by it. */
  private unnamed: TableState[] = [];
  private readonly tableNames: NameRegistry;
  private readonly root: TableState;
  /** How many times each record was added since the last flush: only its last addition is kept. */
  private readonly generations = new Map<string, number>();

  constructor(private readonly schema: DatasetSchema) {
    this.tableNames = new NameRegistry(schema.tables.map((t) => t.name));
    // A parent always comes before its children in the schema's tables.
    const byName = new Map<string, TableState>();
    for (const table of schema.tables) {
      const parent = table.parent === null ? null : byName.get(table.parent);
      if (parent === undefined) continue;
      const state = new TableState(table, parent ? childId(parent, `k${pathKey(table.path)}`) : "", parent);
      byName.set(table.name, state);
      this.tables.set(state.id, state);
    }
    const root = byName.get(schema.root);
    if (!root) throw new RelationalizeError(`dataset schema has no root table '${schema.root}'`);
    this.root = root;
  }

  static create(rootName: string, options: RelationalizeOptions): Relationalizer {
    const shape: ColumnSchema = { name: SHAPE_COLUMN, role: "shape", path: [], kinds: [], type: "VARCHAR" };
    return new Relationalizer({
      root: rootName,
      recordField: options.recordField,
      inherit: [...options.inherit],
      tables: [{ name: rootName, parent: null, path: [], columns: [shape] }],
    });
  }

  /** Adds a record's document; adding the same record again before `flush` replaces it. */
  add(document: unknown, context: DocumentContext): void {
    // Checked before anything is added, so a refused document leaves no rows behind.
    const problem = documentProblem(document);
    if (problem !== undefined) throw new RelationalizeError(problem);
    this.generations.set(context.recordKey, (this.generations.get(context.recordKey) ?? 0) + 1);
    if (Array.isArray(document)) {
      for (const [i, element] of document.entries()) this.addRoot(element as Record<string, unknown>, context, i);
    } else {
      this.addRoot(document as Record<string, unknown>, context, undefined);
    }
  }

  /**
   * Grows the schema as adding the document would (columns, child tables, kinds) without keeping its rows:
   * how documents relationalized elsewhere (by DuckDB, see structure.ts) take part in naming and typing.
   */
  observe(document: unknown, context: DocumentContext): void {
    const pending = new Map([...this.tables].map(([id, table]) => [id, table.pending.length]));
    const generation = this.generations.get(context.recordKey);
    this.add(document, context);
    for (const [id, table] of this.tables) table.pending.length = pending.get(id) ?? 0;
    if (generation === undefined) this.generations.delete(context.recordKey);
    else this.generations.set(context.recordKey, generation);
  }

  /** The schema as of the last flush. */
  get currentSchema(): DatasetSchema {
    return structuredClone(this.schema);
  }

  private addRoot(object: Record<string, unknown>, context: DocumentContext, element: number | undefined): void {
    const base = element === undefined ? context.recordKey : `${context.recordKey}#${element}`;
    const generation = this.generations.get(context.recordKey) ?? 1;
    const row = newRow(context.recordKey, generation, null, null);
    row.element = element;
    const deferred: DeferredArray[] = [];
    this.walk(this.root, row, object, "", base, deferred);
    const { recordField } = this.schema;
    const added: Array<[string, string]> = [];
    if (!Object.hasOwn(object, recordField)) added.push([recordField, context.recordKey]);
    for (const [field, value] of Object.entries(context.partition ?? {})) {
      if (!Object.hasOwn(object, field) && field !== recordField) added.push([field, value]);
    }
    for (const [field, value] of added) {
      this.root.push(row, this.root.step("", field).valueKey, value, "string");
      row.synthetic = [...(row.synthetic ?? []), field];
    }
    const inherited: Cell[] = [];
    for (const field of this.schema.inherit) {
      const at = row.keys.indexOf(this.root.step("", field).valueKey);
      const value = at === -1 ? null : (row.values[at] ?? null);
      if (value !== null) inherited.push({ key: `i${field}`, value, kind: row.kinds[at] ?? null });
    }
    this.root.pending.push(row);
    this.emitDeferred(deferred, { record: context.recordKey, generation, inherited });
  }

  private walk(
    table: TableState,
    row: PendingRow,
    object: Record<string, unknown>,
    parentKey: string,
    base: string,
    deferred: DeferredArray[],
  ): void {
    for (const key of Object.keys(object)) {
      const value = object[key];
      const step = table.step(parentKey, key);
      if (value === null) {
        table.push(row, step.valueKey, null, null);
        row.nulls = [...(row.nulls ?? []), table.paths.get(step.pk)!];
      } else if (isScalar(value)) {
        table.push(row, step.valueKey, value, scalarKind(value));
      } else if (Array.isArray(value)) {
        const joinKey = `${base}/${encodePath(table.paths.get(step.pk)!)}`;
        table.push(row, step.arrayKey, joinKey, null);
        deferred.push({ table, columnKey: step.arrayKey, items: value, joinKey });
      } else if (isObject(value)) {
        if (Object.keys(value).length === 0) row.empties = [...(row.empties ?? []), table.paths.get(step.pk)!];
        else this.walk(table, row, value, step.pk, base, deferred);
      } else {
        throw new RelationalizeError(`unsupported value at ${table.paths.get(step.pk)!.join(".")}`);
      }
    }
  }

  private emitDeferred(deferred: DeferredArray[], origin: Origin): void {
    for (const { table, columnKey, items, joinKey } of deferred) {
      const child = this.childTable(table, columnKey);
      for (let i = 0; i < items.length; i++) {
        const item = items[i];
        const row = newRow(origin.record, origin.generation, joinKey, i);
        row.inherited = origin.inherited;
        for (const cell of origin.inherited) child.note(cell.key, cell.kind);
        const nested: DeferredArray[] = [];
        const base = `${joinKey}[${i}]`;
        if (item === null) {
          row.nulls = [[]];
        } else if (isScalar(item)) {
          child.push(row, "v", item, scalarKind(item));
        } else if (Array.isArray(item)) {
          child.push(row, "k", base, null);
          nested.push({ table: child, columnKey: "k", items: item, joinKey: base });
        } else if (isObject(item)) {
          if (Object.keys(item).length === 0) row.empties = [[]];
          else this.walk(child, row, item, "", base, nested);
        }
        child.pending.push(row);
        this.emitDeferred(nested, origin);
      }
    }
  }

  private childTable(parent: TableState, columnKey: string): TableState {
    const id = childId(parent, columnKey);
    let child = this.tables.get(id);
    if (!child) {
      const schema: TableSchema = {
        name: "",
        parent: null,
        path: parent.paths.get(columnKey.slice(1))!,
        columns: [
          { name: "id", role: "id", path: [], kinds: [], type: "VARCHAR" },
          { name: "index", role: "index", path: [], kinds: [], type: "BIGINT" },
          { name: SHAPE_COLUMN, role: "shape", path: [], kinds: [], type: "VARCHAR" },
        ],
      };
      child = new TableState(schema, id, parent);
      this.tables.set(id, child);
      this.unnamed.push(child);
    }
    return child;
  }

  /**
   * Names the child tables met since the last flush, in an order that does not depend on the documents' order,
   * as columns are named: parents before children; then an array under a key that is already a safe name
   * before a nested one (`a_b` keeps `t_a_b`, `a.b` gets `t_a_b_2`); then by parent name and path.
   */
  private nameNewTables(): void {
    const depth = (table: TableState): number => (table.parent ? depth(table.parent) + 1 : 0);
    const rank = (table: TableState) =>
      table.schema.path.length === 1 && safeName(table.schema.path[0] as string) === table.schema.path[0] ? 1 : 2;
    const order = (table: TableState) => [rank(table), table.parent?.schema.name ?? "", pathKey(table.schema.path)];
    const unnamed = this.unnamed.splice(0);
    const depths = unnamed.map(depth);
    for (const level of [...new Set(depths)].sort((a, b) => a - b)) {
      const tables = unnamed.filter((_, i) => depths[i] === level).sort((a, b) => compareTuples(order(a), order(b)));
      for (const table of tables) {
        const parent = table.parent as TableState;
        const path = table.schema.path;
        table.schema.name = this.tableNames.claim(`${parent.schema.name}_${path.length > 0 ? path.join("_") : "val"}`);
        table.schema.parent = parent.schema.name;
        this.schema.tables.push(table.schema);
      }
    }
  }

  /** Rows waiting for `flush`, across all tables. */
  get pendingRows(): number {
    let n = 0;
    for (const table of this.tables.values()) n += table.pending.length;
    return n;
  }

  flush(): FlushResult {
    const tables: TableRows[] = [];
    const conflicts: TypeConflict[] = [];
    this.nameNewTables();
    for (const table of this.tables.values()) {
      if (this.generations.size > 0) {
        table.pending = table.pending.filter((row) => this.generations.get(row.record) === row.generation);
      }
      // Columns and kinds met by observed documents count too, though they leave no rows.
      this.addNewColumns(table);
      conflicts.push(...this.updateKinds(table));
      if (table.pending.length === 0) continue;
      const at = new Map(table.schema.columns.map((c, i) => [c, i]));
      const slots = new Map<string, Slot>(
        [...table.byKey].map(([key, column]) => [key, { at: at.get(column)!, column }]),
      );
      tables.push({
        schema: structuredClone(table.schema),
        rows: table.pending.map((row) => this.toRow(table, slots, row)),
      });
      table.pending = [];
    }
    this.generations.clear();
    return { tables, schema: structuredClone(this.schema), conflicts };
  }

  /**
   * Adds the columns first seen in this batch, in order of first appearance. Names are given in a fixed order
   * that does not depend on the documents' order: inherited columns first, then keys that are already safe
   * names, then the rest by path; so `a_b` keeps its name and a flattened `a.b` becomes `a_b_2`.
   */
  private addNewColumns(table: TableState): void {
    const fresh = new Set([...table.fresh].filter((key) => !table.byKey.has(key)));
    table.fresh.clear();
    if (fresh.size === 0) return;
    const pathOf = (key: string) => (key[0] === "i" ? [key.slice(1)] : table.paths.get(key.slice(1))!);
    const rawName = (path: string[]) => (path.length > 0 ? path.join("_") : "val");
    const rank = (key: string) => {
      if (key[0] === "i") return 0;
      const path = pathOf(key);
      return path.length === 1 && safeName(rawName(path)) === path[0] ? 1 : 2;
    };
    const names = new Map<string, string>();
    const byNamingOrder = [...fresh].sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
    for (const key of byNamingOrder) names.set(key, table.names.claim(rawName(pathOf(key))));

    const columns = table.schema.columns;
    for (const key of fresh) {
      const role: ColumnRole = key[0] === "i" ? "inherited" : key[0] === "k" ? "key" : "value";
      const column: ColumnSchema = { name: names.get(key)!, role, path: pathOf(key), kinds: [], type: "VARCHAR" };
      // Data columns go before inherited ones, inherited ones before `_shape`: existing columns never move.
      const before = columns.findIndex((c) =>
        role === "inherited" ? c.role === "shape" : c.role === "inherited" || c.role === "shape",
      );
      columns.splice(before === -1 ? columns.length : before, 0, column);
      table.byKey.set(key, column);
    }
  }

  private updateKinds(table: TableState): TypeConflict[] {
    const conflicts: TypeConflict[] = [];
    for (const [key, seen] of table.seenKinds) {
      const column = table.byKey.get(key);
      if (!column) continue;
      const kinds = new Set([...column.kinds, ...seen]);
      column.kinds = [...kinds].sort();
      column.type = columnType(kinds);
      if (isConflict(kinds) && !table.conflicted.has(column.name)) {
        table.conflicted.add(column.name);
        conflicts.push({ table: table.schema.name, column: column.name, kinds: column.kinds, resolvedAs: column.type });
      }
    }
    table.seenKinds.clear();
    return conflicts;
  }

  private toRow(table: TableState, slots: Map<string, Slot>, row: PendingRow): unknown[] {
    const out = new Array<unknown>(table.schema.columns.length).fill(null);
    const shape: Shape = {};
    if (row.id !== null) out[slots.get("id")!.at] = row.id;
    if (row.index !== null) out[slots.get("index")!.at] = BigInt(row.index);
    const { keys, values, kinds } = row;
    for (let i = 0; i < keys.length; i++) {
      const value = values[i];
      if (value === null || value === undefined) continue;
      const { at, column } = slots.get(keys[i] as string)!;
      const kind = kinds[i];
      if (kind === null || kind === undefined) {
        out[at] = value;
        continue;
      }
      out[at] = toColumnValue(value, column.type);
      if (column.type === "VARCHAR" && kind !== "string") {
        shape.t = [...(shape.t ?? []), [column.path, TAG_OF[kind]]];
      }
    }
    for (const cell of row.inherited) {
      const { at, column } = slots.get(cell.key)!;
      out[at] = cell.value === null ? null : toColumnValue(cell.value, column.type);
    }
    if (row.nulls) shape.n = row.nulls;
    if (row.empties) shape.o = row.empties;
    if (row.synthetic) shape.p = row.synthetic;
    if (row.element !== undefined) shape.e = row.element;
    out[slots.get("shape")!.at] = encodeShape(shape);
    return out;
  }
}

function newRow(record: string, generation: number, id: string | null, index: number | null): PendingRow {
  return {
    record,
    generation,
    id,
    index,
    keys: [],
    values: [],
    kinds: [],
    inherited: [],
    nulls: undefined,
    empties: undefined,
    synthetic: undefined,
    element: undefined,
  };
}

/** Why a document cannot be relationalized (it must be an object or an array of objects), or undefined. */
export function documentProblem(document: unknown): string | undefined {
  if (Array.isArray(document)) {
    const i = document.findIndex((element) => !isObject(element));
    return i === -1 ? undefined : `element ${i} of the top-level array is not an object`;
  }
  return isObject(document) ? undefined : "the document is neither an object nor an array of objects";
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !isScalar(value);
}
