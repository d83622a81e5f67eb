import { DateTime } from "luxon";
import type { ExportableRecord } from "../state/export-state.js";
import type { Workspace } from "../workspace/workspace.js";
import { type FilterSettings, filterRecord, tableAllowed } from "./filter.js";
import { ExportMetrics } from "./metrics.js";
import type { ExportRequest } from "./request.js";
import { dataTable, type TableRef } from "./tables.js";

/** The records an export covers: a time window per study, or a list of record ids. */
export type Selection =
  | { kind: "window"; start: string; end: string }
  | { kind: "since-last-export"; end: string }
  | { kind: "records"; recordIds: string[] };

/** Turns a request's record source into a selection; a `date` is a calendar day in the configured zone. */
export function selectionOf(request: ExportRequest, timezone: string, now: Date): Selection {
  if (request.recordIds) return { kind: "records", recordIds: request.recordIds };
  if (request.date) {
    const day = DateTime.fromISO(request.date, { zone: timezone }).startOf("day");
    return {
      kind: "window",
      start: day.toUTC().toISO() as string,
      end: day.plus({ days: 1 }).toUTC().toISO() as string,
    };
  }
  if (request.startDateTime && request.endDateTime) {
    return {
      kind: "window",
      start: new Date(request.startDateTime).toISOString(),
      end: new Date(request.endDateTime).toISOString(),
    };
  }
  const end = request.endDateTime
    ? new Date(request.endDateTime).toISOString()
    : (DateTime.fromJSDate(now, { zone: timezone }).startOf("day").toUTC().toISO() as string);
  return { kind: "since-last-export", end };
}

/** Yesterday in a zone, as YYYY-MM-DD: the daily export's default date. */
export function yesterday(timezone: string, now: Date): string {
  return DateTime.fromJSDate(now, { zone: timezone }).minus({ days: 1 }).toISODate() as string;
}

/** A dataset id's table key: `MotionRecord_v1` is schema `MotionRecord`, revision 1. */
export function schemaOf(datasetId: string): { schemaId: string; revision: number } {
  const match = /^(.*)_v(\d+)$/.exec(datasetId);
  return match ? { schemaId: match[1] as string, revision: Number(match[2]) } : { schemaId: datasetId, revision: 1 };
}

export interface PlannedRecord {
  record: ExportableRecord & { studyId: string };
  /** The record's documents that go to a data table, each with its table. */
  documents: Array<{ table: TableRef; key: string }>;
  /** A record without documents goes to its study's default table. */
  schemaless: boolean;
}

export interface ExportPlan {
  selection: Selection;
  records: PlannedRecord[];
  /** Studies whose records were selected (each gets a status row when the export finishes). */
  studies: string[];
  errors: string[];
  metrics: ExportMetrics;
}

/**
 * Decides what an export contains: selects the records, applies the participant's current sharing scope, the
 * whitelists and the studies configured for export, and counts every outcome. Writes nothing.
 */
export async function planExport(ws: Workspace, request: ExportRequest, now = new Date()): Promise<ExportPlan> {
  const metrics = new ExportMetrics();
  const selection = selectionOf(request, ws.config.export.timezone, now);
  const store = ws.state.exports;
  let candidates: ExportableRecord[];
  if (selection.kind === "records") candidates = await store.records({ recordIds: selection.recordIds });
  else if (selection.kind === "window") candidates = await store.records(selection);
  else {
    candidates = [];
    for (const study of await store.studies()) {
      const start =
        (await store.lastExport(study)) ??
        DateTime.fromISO(selection.end).minus({ days: 1 }).toUTC().toISO() ??
        selection.end;
      const inWindow = await store.records({ start, end: selection.end });
      candidates.push(...inWindow.filter((r) => r.studyId === study));
    }
  }
  const scopes = await store.scopes(candidates.flatMap((r) => (r.healthCode ? [r.healthCode] : [])));
  const settings: FilterSettings = {
    sharingMode: request.sharingMode,
    ...(request.studyWhitelist ? { studyWhitelist: new Set(request.studyWhitelist) } : {}),
    ...(ws.config.export.studies ? { exportableStudies: new Set(ws.config.export.studies) } : {}),
  };
  const plan: ExportPlan = { selection, records: [], studies: [], errors: [], metrics };
  if (selection.kind === "records") {
    const found = new Set(candidates.map((r) => r.recordId));
    for (const id of selection.recordIds.filter((i) => !found.has(i))) {
      metrics.increment("errorCount");
      plan.errors.push(`record ${id}: no valid upload has this record id`);
    }
  }
  // A day's status rows name every study configured for export, even one without records that day.
  const studies = new Set<string>(
    selection.kind === "records"
      ? []
      : (ws.config.export.studies ?? []).filter((s) => !request.studyWhitelist || request.studyWhitelist.includes(s)),
  );
  for (const record of candidates) {
    metrics.increment("numTotal");
    if (!record.studyId) {
      metrics.increment("errorCount");
      plan.errors.push(`record ${record.recordId}: no study id (set defaultStudyId, or send studyid with the upload)`);
      continue;
    }
    const studyId = record.studyId;
    const participantScope = record.healthCode ? scopes.get(record.healthCode) : undefined;
    if (participantScope === undefined) metrics.increment("unknownParticipant");
    const excluded = filterRecord(
      { studyId, schemaId: null, schemaRevision: null, recordScope: record.metadata.sharingscope, participantScope },
      settings,
      metrics,
    );
    const documents: PlannedRecord["documents"] = [];
    for (const doc of record.documents) {
      const schema = schemaOf(doc.datasetId);
      if (request.tableWhitelist && !tableAllowed(studyId, schema, request.tableWhitelist, metrics)) continue;
      documents.push({ table: dataTable(studyId, doc.datasetId, schema.schemaId, schema.revision), key: doc.key });
    }
    const schemaless = record.documents.length === 0;
    if (schemaless && request.tableWhitelist) tableAllowed(studyId, null, request.tableWhitelist, metrics);
    if (!excluded.includes("study-whitelist") && !excluded.includes("study-not-exported")) studies.add(studyId);
    if (excluded.length > 0 || (request.tableWhitelist && documents.length === 0)) continue;
    if (record.healthCode) metrics.addDistinct(`uniqueHealthCodes[${studyId}]`, record.healthCode);
    plan.records.push({ record: { ...record, studyId }, documents, schemaless });
  }
  plan.studies = [...studies].sort();
  return plan;
}
