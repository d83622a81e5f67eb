import { createHash, randomUUID } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { DateTime } from "luxon";
import pLimit from "p-limit";
import pino, { type Logger } from "pino";
import { DEFAULT_DESTINATION } from "../config/config.js";
import { isTransient } from "../pipeline/errors.js";
import type { ExportRow, ExportStatus, KnownTable } from "../state/export-state.js";
import type { Workspace } from "../workspace/workspace.js";
import { type Column, type ColumnChanges, mergeColumns } from "./columns.js";
import type { Destination } from "./destinations/destination.js";
import { FolderDestination } from "./destinations/folder.js";
import { PostgresDestination } from "./destinations/postgres.js";
import { inferFields } from "./infer.js";
import type { ExportMetrics } from "./metrics.js";
import { type ExportPlan, type PlannedRecord, planExport, type Selection, selectionOf } from "./plan.js";
import { type ExportRequest, ExportRequestError } from "./request.js";
import { columnsOf, type FieldDefinition, parseExportDocument, serializeField } from "./serialize.js";
import {
  type Cells,
  clientInfo,
  commonCells,
  commonColumns,
  ORIGINAL_TABLE,
  RAW_DATA,
  type RowContext,
  STATUS_COLUMNS,
  studyTable,
  type TableRef,
} from "./tables.js";

export interface TableReport {
  key: string;
  location: string;
  rows: number;
  added: string[];
  changed: string[];
}

export interface ExportReport {
  exportId: string;
  status: ExportStatus;
  /** The same export finished before: nothing was written this time. */
  alreadyDone: boolean;
  destination: string;
  exportDate: string;
  selection: Selection;
  tables: TableReport[];
  errors: string[];
  /** Records queued to be exported again after a transient failure. */
  redrive: { runId: string; records: number; notBefore: string } | null;
  metrics: ReturnType<ExportMetrics["toJSON"]>;
}

export interface ExportOptions {
  now?: Date;
  /** Names the export for exactly-once; by default it follows from what the request selects. */
  idempotencyKey?: string;
  /**
   * Export the selection again although an export of it finished: records already in a table keep their row
   * (a redrive replaces rows), so this adds only what the earlier export left out (for example the records of
   * participants who have agreed to share since).
   */
  again?: boolean;
  /** The caller (a pipeline run) already holds the destination's lease. */
  leaseHeld?: boolean;
  /** Called after each data table is written. */
  onProgress?: (tablesDone: number, tablesTotal: number) => void;
}

/** Document reads kept in flight at once. */
const READ_WINDOW = 32;

/** The lease target that keeps exports to one destination one at a time. */
export function exportTarget(destination: string): string {
  return `export:${destination}`;
}

/** Opens a configured destination; an unknown name is a request error naming the known ones. */
export function openDestination(ws: Workspace, name: string): Destination {
  const config = ws.config.export.destinations[name];
  if (!config) {
    const known = Object.keys(ws.config.export.destinations).join(", ") || "none";
    throw new ExportRequestError(
      `export request: destination: no destination '${name}' is configured (known: ${known})`,
    );
  }
  return config.kind === "folder"
    ? new FolderDestination(path.resolve(ws.root, config.path), config.format)
    : new PostgresDestination(config.url, config.schema);
}

/**
 * The idempotency key of a request: what it selects, not how it is written, so `--date D` and the same day as
 * a window are one export. A list of records (a redrive) is new each time: it replaces rows, so repeating it
 * is harmless and sometimes wanted.
 */
export function exportKey(destination: string, request: ExportRequest, selection: Selection): string {
  if (selection.kind === "records") return `export:${destination}:records:${randomUUID()}`;
  const what = {
    selection,
    sharingMode: request.sharingMode,
    studyWhitelist: request.studyWhitelist ? [...request.studyWhitelist].sort() : null,
    tableWhitelist: request.tableWhitelist
      ? request.tableWhitelist.map((t) => `${t.studyId}-${t.schemaId}-v${t.revision}`).sort()
      : null,
  };
  return `export:${destination}:${createHash("sha256").update(JSON.stringify(what)).digest("hex").slice(0, 32)}`;
}

/** One table's rows for this export, before they are written. */
interface PendingTable {
  table: TableRef;
  /** Each planned record's row, in order; records whose document could not be read have none. */
  items: Array<{ planned: PlannedRecord; documentKey?: string }>;
}

/** A record that could not be exported: redriven when the cause may pass. */
class RecordError extends Error {
  constructor(
    readonly recordId: string,
    message: string,
    readonly transient: boolean,
  ) {
    super(`record ${recordId}: ${message}`);
  }
}

/**
 * The exporter: takes a request, selects and filters records (see `planExport`), and appends them to one table
 * per study and schema in the destination, plus each study's appVersion table and a status row; records every
 * table it writes in the state store, so that an export is never applied twice and a redrive replaces rows.
 */
export class Exporter {
  private readonly log: Logger;

  constructor(
    private readonly ws: Workspace,
    options: { log?: Logger } = {},
  ) {
    this.log = options.log ?? pino({ level: "silent" });
  }

  async run(request: ExportRequest, options: ExportOptions = {}): Promise<ExportReport> {
    const now = options.now ?? new Date();
    const config = this.ws.config.export;
    const destinationName = request.destination ?? DEFAULT_DESTINATION;
    const destination = openDestination(this.ws, destinationName);
    try {
      const selection = selectionOf(request, config.timezone, now);
      const exportDate = DateTime.fromJSDate(now, { zone: config.timezone }).toISODate() as string;
      const { export: row, created } = await this.ws.state.exports.begin({
        idempotencyKey:
          (options.idempotencyKey ?? exportKey(destinationName, request, selection)) +
          (options.again ? `:again:${randomUUID()}` : ""),
        destination: destinationName,
        exportDate,
        request,
      });
      if (!created && row.status !== "running") return finishedReport(row, selection);
      const release = options.leaseHeld ? undefined : await this.lease(destinationName, row.exportId);
      try {
        return await this.export(request, row, destination, now, options.onProgress);
      } catch (err) {
        await this.ws.state.exports.finish(row.exportId, "failed", null, (err as Error).message);
        throw err;
      } finally {
        await release?.();
      }
    } finally {
      await destination.close();
    }
  }

  /** Holds the destination's lease while the export runs, so two exports never write one destination at once. */
  private async lease(destination: string, exportId: string): Promise<() => Promise<void>> {
    const state = this.ws.state.pipeline;
    const target = exportTarget(destination);
    const holder = `${os.hostname()}:${process.pid}:export`;
    const leaseMs = this.ws.config.pipeline.leaseSeconds * 1000;
    const take = () => state.takeLease(target, holder, exportId, new Date(Date.now() + leaseMs).toISOString());
    if (!(await take())) {
      throw Object.assign(new Error(`another export to '${destination}' is running; try again when it has finished`), {
        transient: true,
      });
    }
    const heartbeat = setInterval(() => {
      take().catch((err: Error) => this.log.warn({ err: err.message }, "could not renew the export lease"));
    }, leaseMs / 3);
    return async () => {
      clearInterval(heartbeat);
      await state.releaseLease(target, holder, exportId);
    };
  }

  private async export(
    request: ExportRequest,
    row: ExportRow,
    destination: Destination,
    now: Date,
    onProgress: ExportOptions["onProgress"],
  ): Promise<ExportReport> {
    const config = this.ws.config.export;
    const plan = await planExport(this.ws, request, now);
    const { metrics } = plan;
    const context: RowContext = { exportDate: row.exportDate, timezone: config.timezone };
    const job = new ExportJob(this.ws, row, destination, plan, context, request.recordIds !== undefined, this.log);

    const dataTables = new Map<string, PendingTable>();
    const defaultTables = new Map<string, PendingTable>();
    for (const planned of plan.records) {
      for (const doc of planned.documents) {
        const pending = dataTables.get(doc.table.key) ?? { table: doc.table, items: [] };
        pending.items.push({ planned, documentKey: doc.key });
        dataTables.set(doc.table.key, pending);
      }
      if (planned.schemaless) {
        const table = studyTable(planned.record.studyId, "default");
        const pending = defaultTables.get(table.key) ?? { table, items: [] };
        pending.items.push({ planned });
        defaultTables.set(table.key, pending);
      }
    }
    const pendingTables = [...dataTables.values(), ...defaultTables.values()].sort((a, b) =>
      a.table.key < b.table.key ? -1 : 1,
    );
    for (const [i, pending] of pendingTables.entries()) {
      await job.writeRecords(pending);
      onProgress?.(i + 1, pendingTables.length);
    }
    // A redrive also empties the rows of named records that are no longer exported (consent withdrawn since).
    for (const table of await job.replacedTablesNotWritten(new Set([...dataTables.keys(), ...defaultTables.keys()]))) {
      await job.writeRecords({ table, items: [] });
    }
    for (const studyId of new Set(plan.records.map((p) => p.record.studyId))) await job.writeAppVersions(studyId);

    const redrive = await this.redrive(request, job, row);
    const complete = job.errors.length === 0 && job.redriveIds.size === 0;
    for (const studyId of plan.studies) await job.writeStatus(studyId, complete ? "complete" : "incomplete");
    if (plan.selection.kind !== "records") {
      const end = plan.selection.end;
      for (const studyId of plan.studies) await this.ws.state.exports.setLastExport(studyId, end);
    }
    const status: ExportStatus =
      job.errors.length === 0 && job.redriveIds.size === 0 && plan.errors.length === 0
        ? "succeeded"
        : "completed_with_errors";
    const errors = [...plan.errors, ...job.errors];
    await this.ws.state.exports.finish(row.exportId, status, metrics.toJSON(), errors[0] ?? null);
    this.log.info({ exportId: row.exportId, status, metrics: metrics.toJSON().counters }, "export finished");
    return {
      exportId: row.exportId,
      status,
      alreadyDone: false,
      destination: row.destination,
      exportDate: row.exportDate,
      selection: plan.selection,
      tables: job.reports,
      errors,
      redrive,
      metrics: metrics.toJSON(),
    };
  }

  /**
   * Queues the records that failed for a transient reason as a redrive request, delayed, while the request's
   * redrive count is under the configured maximum; past it, they are reported and left.
   */
  private async redrive(request: ExportRequest, job: ExportJob, row: ExportRow): Promise<ExportReport["redrive"]> {
    if (job.redriveIds.size === 0) return null;
    const { maxCount, delaySeconds } = this.ws.config.export.redrive;
    const ids = [...job.redriveIds].sort();
    if (request.redriveCount >= maxCount) {
      job.errors.push(`${ids.length} records failed again after ${request.redriveCount} redrives; not redriven again`);
      return null;
    }
    const notBefore = new Date(Date.now() + delaySeconds * 1000).toISOString();
    const tag = request.tag.startsWith("redrive export; original: ")
      ? request.tag
      : `redrive export; original: ${request.tag}`;
    const redriveRequest: ExportRequest = {
      recordIds: ids,
      sharingMode: request.sharingMode,
      tag,
      redriveCount: request.redriveCount + 1,
      destination: row.destination,
      ...(request.studyWhitelist ? { studyWhitelist: request.studyWhitelist } : {}),
      ...(request.tableWhitelist ? { tableWhitelist: request.tableWhitelist } : {}),
    };
    const { run } = await this.ws.state.pipeline.request(
      {
        kind: "export",
        target: exportTarget(row.destination),
        params: { request: redriveRequest },
        requestedBy: `export:${row.exportId}`,
        idempotencyKey: `redrive:${row.exportId}:${request.redriveCount + 1}`,
        notBefore,
      },
      this.ws.config.pipeline.maxAttempts,
    );
    job.metrics.increment("redriveRecords", ids.length);
    return { runId: run.runId, records: ids.length, notBefore };
  }
}

function finishedReport(row: ExportRow, selection: Selection): ExportReport {
  return {
    exportId: row.exportId,
    status: row.status,
    alreadyDone: true,
    destination: row.destination,
    exportDate: row.exportDate,
    selection,
    tables: [],
    errors: row.error ? [row.error] : [],
    redrive: null,
    metrics: (row.metrics as ExportReport["metrics"]) ?? { counters: {}, distinctCounts: {}, values: {} },
  };
}

/** The keys the bucketing adds to every document (record and partition fields): not schema fields. */
function addedKeys(ws: Workspace): Set<string> {
  const { recordField, partitionFields } = ws.config.relationalize;
  return new Set([recordField, ...partitionFields, "year", "month", "day"]);
}

/** The tables of one export: reads, serializes and writes them, and keeps what happened to each record. */
class ExportJob {
  readonly metrics: ExportMetrics;
  readonly errors: string[] = [];
  readonly redriveIds = new Set<string>();
  readonly reports: TableReport[] = [];
  /** Per record, the data and default tables its rows went to. */
  private readonly written = new Map<string, string[]>();
  private replacedCache: Map<string, Map<string, string>> | undefined;

  constructor(
    private readonly ws: Workspace,
    private readonly row: ExportRow,
    private readonly destination: Destination,
    private readonly plan: ExportPlan,
    private readonly context: RowContext,
    private readonly isRedrive: boolean,
    private readonly log: Logger,
  ) {
    this.metrics = plan.metrics;
  }

  /** For a redrive: table → record → the export that wrote its current row. */
  private async replaced(): Promise<Map<string, Map<string, string>>> {
    if (!this.isRedrive) return new Map();
    if (!this.replacedCache) {
      const ids = this.plan.selection.kind === "records" ? this.plan.selection.recordIds : [];
      this.replacedCache = new Map();
      for (const r of await this.ws.state.exports.exported(this.row.destination, ids)) {
        const table = this.replacedCache.get(r.tableKey) ?? new Map<string, string>();
        table.set(r.recordId, r.exportId);
        this.replacedCache.set(r.tableKey, table);
      }
    }
    return this.replacedCache;
  }

  async replacedTablesNotWritten(written: ReadonlySet<string>): Promise<TableRef[]> {
    const out: TableRef[] = [];
    for (const key of (await this.replaced()).keys()) {
      if (written.has(key)) continue;
      const known = (await this.ws.state.exports.tables(this.row.destination)).find((t) => t.tableKey === key);
      if (!known || key.endsWith("-appVersion")) continue;
      const title = key.slice(known.studyId.length + 1);
      out.push(
        title === "default"
          ? studyTable(known.studyId, "default")
          : { kind: "data", studyId: known.studyId, key, title },
      );
    }
    return out;
  }

  /** A data or default table: one row per record (document), fields inferred or declared, written at once. */
  async writeRecords(pending: PendingTable): Promise<void> {
    const { table } = pending;
    const state = this.ws.state.exports;
    const known = await state.table(this.row.destination, table.key);
    const replacedHere = (await this.replaced()).get(table.key) ?? new Map<string, string>();
    let items = pending.items;
    if (!this.isRedrive && items.length > 0) {
      const before = await state.exported(
        this.row.destination,
        items.map((i) => i.planned.record.recordId),
        table.key,
      );
      const done = new Set(before.filter((b) => b.exportId !== this.row.exportId).map((b) => b.recordId));
      if (done.size > 0) {
        this.metrics.increment("alreadyExported", done.size);
        items = items.filter((i) => !done.has(i.planned.record.recordId));
      }
    }
    if (items.length === 0 && replacedHere.size === 0) return;
    try {
      await this.writeRecordRows(table, items, known, replacedHere);
    } catch (err) {
      this.tableFailed(
        table.key,
        items.map((i) => i.planned.record.recordId),
        err,
      );
    }
  }

  private async writeRecordRows(
    table: TableRef,
    items: PendingTable["items"],
    known: KnownTable | undefined,
    replacedHere: ReadonlyMap<string, string>,
  ): Promise<void> {
    if (await this.destination.written(this.row.exportId, table)) {
      // Cut off after the destination committed and before the state recorded it: record it now.
      const ids = items.map((i) => i.planned.record.recordId);
      await this.commit(table, known?.fields ?? [], known?.columns ?? [], ids, [...replacedHere.keys()]);
      this.done(table, ids, [], [], items.length);
      return;
    }
    const documents = await this.readDocuments(items);
    const readable = items.filter((i) => !i.documentKey || documents.has(i.documentKey));
    let fields: FieldDefinition[] = [];
    if (table.kind === "data" && table.datasetId) {
      fields =
        this.ws.config.export.fields[table.datasetId] ??
        inferFields(documents.values(), known?.fields ?? [], addedKeys(this.ws));
    }
    const wanted: Column[] = [...commonColumns(), ...fields.flatMap((f) => columnsOf(f)), RAW_DATA];
    const merged = mergeColumns(known?.columns ?? [], wanted);
    const attachments = new Map<string, string>();
    const attach = (json: string) => {
      const key = `${createHash("sha256").update(json).digest("hex").slice(0, 40)}.json`;
      attachments.set(key, json);
      this.metrics.increment("numAttachments");
      return key;
    };
    const rows: Cells[] = [];
    for (const item of readable) {
      const record = item.planned.record;
      const { cells, truncated } = commonCells(record, this.context);
      let cut = truncated;
      const doc = item.documentKey ? documents.get(item.documentKey) : undefined;
      if (doc !== null && typeof doc === "object" && !Array.isArray(doc)) {
        for (const field of fields) {
          const out = serializeField(field, (doc as Record<string, unknown>)[field.name], attach);
          Object.assign(cells, out.cells);
          if (out.truncated) cut++;
          if (out.dropped.length > 0) this.metrics.increment(`${table.key}.droppedChoices`, out.dropped.length);
        }
      }
      cells[RAW_DATA.name] = item.documentKey
        ? `${this.ws.config.paths.json}/${item.documentKey}`
        : `${this.ws.config.paths.raw}/${record.rawKey}`;
      if (cut > 0) this.metrics.increment(`${table.key}.truncatedCount`, cut);
      rows.push(cells);
    }
    await this.writeAndCommit(
      table,
      fields,
      merged,
      known,
      rows,
      readable.map((i) => i.planned.record.recordId),
      replacedHere,
      attachments,
    );
  }

  /**
   * Writes a table's rows (replacing a redrive's records), then records it: its fields and columns, the
   * records whose rows it now holds, and the replaced records that no longer have one.
   */
  private async writeAndCommit(
    table: TableRef,
    fields: readonly FieldDefinition[],
    merged: ColumnChanges,
    known: KnownTable | undefined,
    rows: readonly Cells[],
    recordIds: readonly string[],
    replacedHere: ReadonlyMap<string, string>,
    attachments: ReadonlyMap<string, string>,
  ): Promise<void> {
    await this.destination.writeTable({
      exportId: this.row.exportId,
      table,
      columns: merged.columns,
      previousColumns: known?.columns,
      rows,
      replace: { recordIds: [...replacedHere.keys()], fromExports: [...new Set(replacedHere.values())] },
      attachments,
    });
    const kept = new Set(recordIds);
    const removed = [...replacedHere.keys()].filter((id) => !kept.has(id));
    await this.commit(table, fields, merged.columns, recordIds, removed);
    this.done(table, recordIds, merged.added, merged.changed, rows.length);
  }

  /** Reads and parses the documents of a table's records; a record whose document fails is set aside. */
  private async readDocuments(items: PendingTable["items"]): Promise<Map<string, unknown>> {
    // Reads overlap (a disk or object store answers many small reads far faster side by side); the map is
    // filled in item order, so inferred fields come out in the same order every time.
    const limit = pLimit(READ_WINDOW);
    const read = await Promise.all(
      items.map((item) =>
        limit(async () => {
          const key = item.documentKey;
          if (!key) return undefined;
          try {
            return { key, document: await this.readDocument(item.planned.record.recordId, key) };
          } catch (err) {
            this.recordFailed(err as RecordError);
            return undefined;
          }
        }),
      ),
    );
    const out = new Map<string, unknown>();
    for (const entry of read) if (entry) out.set(entry.key, entry.document);
    return out;
  }

  private async readDocument(recordId: string, key: string): Promise<unknown> {
    let text: string;
    try {
      text = (await this.ws.json.get(key)).toString("utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new RecordError(
        recordId,
        code === "ENOENT"
          ? `its document ${key} is missing from the JSON datasets (run 'studylake reprocess' for it)`
          : `its document ${key} could not be read: ${(err as Error).message}`,
        code !== "ENOENT" && isTransient(err),
      );
    }
    const end = text.indexOf("\n");
    try {
      return parseExportDocument(end >= 0 ? text.slice(0, end) : text);
    } catch (err) {
      throw new RecordError(recordId, `its document ${key} is not JSON: ${(err as Error).message}`, false);
    }
  }

  private recordFailed(err: RecordError): void {
    this.metrics.increment("errorCount");
    if (err.transient) this.redriveIds.add(err.recordId);
    else this.errors.push(err.message);
    this.log.warn({ err: err.message }, "record not exported");
  }

  private tableFailed(key: string, recordIds: readonly string[], err: unknown): void {
    const message = (err as Error).message;
    const transient = isTransient(err);
    this.metrics.increment(`${key}.errorCount`, recordIds.length);
    this.metrics.increment("errorCount", recordIds.length);
    if (transient) for (const id of recordIds) this.redriveIds.add(id);
    else {
      const sample = recordIds.slice(0, 5).join(", ");
      this.errors.push(
        `table ${key}: ${message} (records: ${sample}${recordIds.length > 5 ? `, and ${recordIds.length - 5} more` : ""})`,
      );
    }
    this.log.error({ table: key, err: message, transient }, "table not written");
  }

  private async commit(
    table: TableRef,
    fields: readonly FieldDefinition[],
    columns: readonly Column[],
    recordIds: readonly string[],
    removed: readonly string[],
  ): Promise<void> {
    await this.ws.state.exports.commitTable({
      destination: this.row.destination,
      tableKey: table.key,
      studyId: table.studyId,
      tableName: this.destination.locate(table),
      fields,
      columns,
      exportId: this.row.exportId,
      recordIds,
      removedRecordIds: removed,
    });
  }

  private done(table: TableRef, recordIds: readonly string[], added: string[], changed: string[], rows: number): void {
    this.metrics.increment(`${table.key}.lineCount`, rows);
    if (table.kind === "data" || table.kind === "default") {
      for (const id of recordIds) {
        const list = this.written.get(id) ?? [];
        list.push(table.kind === "default" ? "Default Health Data Record Table" : table.key);
        this.written.set(id, list);
      }
    }
    this.reports.push({ key: table.key, location: this.destination.locate(table), rows, added, changed });
  }

  /** The study's appVersion table: a row per record exported now, naming the tables its data went to. */
  async writeAppVersions(studyId: string): Promise<void> {
    const table = studyTable(studyId, "appVersion");
    const records = this.plan.records.filter(
      (p) => p.record.studyId === studyId && this.written.has(p.record.recordId),
    );
    const known = await this.ws.state.exports.table(this.row.destination, table.key);
    const replacedHere = (await this.replaced()).get(table.key) ?? new Map<string, string>();
    if (records.length === 0 && replacedHere.size === 0) return;
    try {
      if (await this.destination.written(this.row.exportId, table)) {
        const ids = records.map((p) => p.record.recordId);
        await this.commit(table, [], known?.columns ?? [], ids, []);
        this.done(table, ids, [], [], ids.length);
        return;
      }
      const merged = mergeColumns(known?.columns ?? [], [...commonColumns(), ORIGINAL_TABLE]);
      const rows = records.map((p) => {
        const { cells } = commonCells(p.record, this.context);
        cells[ORIGINAL_TABLE.name] = (this.written.get(p.record.recordId) ?? []).join(", ");
        const appVersion = clientInfo(p.record.metadata.clientinfo).appVersion;
        if (appVersion) this.metrics.addValue(`uniqueAppVersions[${studyId}]`, appVersion);
        return cells;
      });
      await this.writeAndCommit(
        table,
        [],
        merged,
        known,
        rows,
        records.map((p) => p.record.recordId),
        replacedHere,
        new Map(),
      );
    } catch (err) {
      // As the reference: the summary table is not worth a redrive; its failure is reported.
      this.tableFailed(
        table.key,
        records.map((p) => p.record.recordId),
        err,
      );
    }
  }

  /** One row in the study's status table: this export finished, complete or not. */
  async writeStatus(studyId: string, status: "complete" | "incomplete"): Promise<void> {
    const table = studyTable(studyId, "status");
    const known = await this.ws.state.exports.table(this.row.destination, table.key);
    try {
      const merged = mergeColumns(known?.columns ?? [], STATUS_COLUMNS);
      if (!(await this.destination.written(this.row.exportId, table))) {
        await this.destination.writeTable({
          exportId: this.row.exportId,
          table,
          columns: merged.columns,
          previousColumns: known?.columns,
          rows: [{ uploadDate: this.row.exportDate, exportId: this.row.exportId, status }],
          replace: { recordIds: [], fromExports: [] },
          attachments: new Map(),
        });
      }
      await this.commit(table, [], merged.columns, [], []);
      this.done(table, [], merged.added, merged.changed, 1);
    } catch (err) {
      this.tableFailed(table.key, [], err);
    }
  }
}
