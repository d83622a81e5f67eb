import type { Column } from "./columns.js";
import { strictScope } from "./filter.js";
import { parseTimestamp, sanitize } from "./serialize.js";

/** A row as written: column name → cell text (null or absent: empty). */
export type Cells = Record<string, string | null>;

/** The kinds of researcher table, per study. */
export type TableKind = "data" | "default" | "appVersion" | "status";

export interface TableRef {
  kind: TableKind;
  studyId: string;
  /** `{study}-{schema}-v{revision}`, `{study}-default`, `{study}-appVersion`, `{study}-status`. */
  key: string;
  /** The table's name within its study: `{schema}-v{revision}`, `default`, `appVersion`, `status`. */
  title: string;
  /** The dataset a data table is built from. */
  datasetId?: string;
}

export function dataTable(studyId: string, datasetId: string, schemaId: string, revision: number): TableRef {
  const title = `${schemaId}-v${revision}`;
  return { kind: "data", studyId, key: `${studyId}-${title}`, title, datasetId };
}

export function studyTable(studyId: string, kind: Exclude<TableKind, "data">): TableRef {
  return { kind, studyId, key: `${studyId}-${kind}`, title: kind };
}

/** The record facts every row of a data, default or appVersion table starts with. */
export interface RecordFacts {
  recordId: string;
  healthCode: string | null;
  uploadedOn: string | null;
  metadata: Readonly<Record<string, string>>;
}

interface CommonColumn extends Column {
  /** Cleaned of HTML and whitespace runs, as free text from a participant or an app. */
  sanitize?: boolean;
  value(record: RecordFacts, context: RowContext): string | null | undefined;
}

export interface RowContext {
  /** The export's date (YYYY-MM-DD). */
  exportDate: string;
  /** The zone whose calendar day is a record's upload date. */
  timezone: string;
}

/**
 * Per zone, the format of its calendar days (making one costs far more than using it; luxon took ~0.1 ms a
 * record) and the days already worked out, by quarter hour. Since 1980 every zone's offset is a whole number of
 * quarter hours, so local midnights fall on quarter hours; a quarter hour whose two ends fall on the same day
 * lies within that day (an offset change inside it, such as Newfoundland's at 00:01 until 2011, makes the ends
 * differ, and such a quarter hour is not kept). A day's uploads fall in a few dozen quarter hours, and
 * formatting costs ~25 us.
 */
const zones = new Map<string, { format: Intl.DateTimeFormat; days: Map<number, string> }>();
const QUARTER_HOUR_MS = 15 * 60 * 1000;
const QUARTERS_FROM = Date.UTC(1980, 0, 1);
const QUARTERS_KEPT = 10_000;

/** The calendar day (YYYY-MM-DD) an instant falls on in a zone; null when the text is not a time. */
export function calendarDay(instant: string, zone: string): string | null {
  const ms = Date.parse(instant);
  if (Number.isNaN(ms)) return null;
  let known = zones.get(zone);
  if (!known) {
    const format = new Intl.DateTimeFormat("en-US", {
      timeZone: zone,
      calendar: "gregory",
      numberingSystem: "latn",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
    });
    known = { format, days: new Map() };
    zones.set(zone, known);
  }
  const { format, days } = known;
  if (ms < QUARTERS_FROM) return formatDay(format, ms);
  const quarter = Math.floor(ms / QUARTER_HOUR_MS);
  const cached = days.get(quarter);
  if (cached !== undefined) return cached;
  const start = quarter * QUARTER_HOUR_MS;
  const day = formatDay(format, start);
  if (day !== formatDay(format, start + QUARTER_HOUR_MS - 1)) return formatDay(format, ms);
  if (days.size >= QUARTERS_KEPT) days.clear();
  days.set(quarter, day);
  return day;
}

function formatDay(format: Intl.DateTimeFormat, ms: number): string {
  const parts = format.formatToParts(ms);
  const part = (type: string) => parts.find((p) => p.type === type)?.value ?? "";
  return `${part("year").padStart(4, "0")}-${part("month")}-${part("day")}`;
}

/** `ClientInfo [appName=…, appVersion=73, deviceName=iPhone 7 Plus, …]` as a map. */
export function clientInfo(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  const body = /\[(.*)\]/s.exec(text ?? "")?.[1] ?? "";
  for (const part of body.split(",")) {
    const at = part.indexOf("=");
    if (at > 0) out[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  return out;
}

function phoneInfo(metadata: Readonly<Record<string, string>>): string | undefined {
  const info = clientInfo(metadata.clientinfo);
  const os = [info.osName, info.osVersion].filter(Boolean).join(" ");
  return [info.deviceName, os].filter(Boolean).join("; ") || undefined;
}

/**
 * The columns every data, default and appVersion table starts with, in order (the reference's common columns,
 * with our metadata's names). Lengths are generous where the reference's are not enforced, because a
 * database refuses a longer value rather than cutting it.
 */
export const COMMON_COLUMNS: readonly CommonColumn[] = [
  { name: "recordId", type: "STRING", maxLength: 128, value: (r) => r.recordId },
  {
    name: "appVersion",
    type: "STRING",
    maxLength: 48,
    sanitize: true,
    value: (r) => clientInfo(r.metadata.clientinfo).appVersion,
  },
  { name: "phoneInfo", type: "STRING", maxLength: 48, sanitize: true, value: (r) => phoneInfo(r.metadata) },
  {
    name: "uploadDate",
    type: "STRING",
    maxLength: 10,
    value: (r, c) => (r.uploadedOn ? calendarDay(r.uploadedOn, c.timezone) : null),
  },
  { name: "exportDate", type: "STRING", maxLength: 10, value: (_, c) => c.exportDate },
  { name: "healthCode", type: "STRING", maxLength: 128, value: (r) => r.healthCode },
  { name: "externalId", type: "STRING", maxLength: 128, sanitize: true, value: (r) => r.metadata.externalid },
  {
    name: "dataGroups",
    type: "STRING",
    maxLength: 250,
    value: (r) =>
      r.metadata.datagroups
        ?.split(",")
        .map((g) => g.trim())
        .filter(Boolean)
        .sort()
        .join(","),
  },
  {
    name: "createdOn",
    type: "DATE",
    value: (r) => (r.uploadedOn ? String(parseTimestamp(r.uploadedOn)?.epochMs ?? "") || null : null),
  },
  {
    name: "createdOnTimeZone",
    type: "STRING",
    maxLength: 5,
    value: (r) => (r.uploadedOn ? (parseTimestamp(r.uploadedOn)?.zone ?? null) : null),
  },
  {
    name: "userSharingScope",
    type: "STRING",
    maxLength: 48,
    value: (r) => strictScope(r.metadata.sharingscope) ?? r.metadata.sharingscope,
  },
  { name: "assessmentId", type: "STRING", maxLength: 100, value: (r) => r.metadata.assessmentid },
  {
    name: "assessmentRevision",
    type: "INTEGER",
    value: (r) => (/^-?\d+$/.test(r.metadata.assessmentrevision ?? "") ? r.metadata.assessmentrevision : null),
  },
  {
    name: "dayInStudy",
    type: "INTEGER",
    value: (r) => (/^-?\d+$/.test(r.metadata.dayinstudy ?? "") ? r.metadata.dayinstudy : null),
  },
];

/** The key of the stored document (data tables) or raw archive (default table) the row came from. */
export const RAW_DATA: Column = { name: "rawData", type: "FILEHANDLEID" };
/** The tables a record's data went to (appVersion table). */
export const ORIGINAL_TABLE: Column = { name: "originalTable", type: "STRING", maxLength: 1000 };
/** One row per finished export and study, so consumers know the day's drop is complete. */
export const STATUS_COLUMNS: readonly Column[] = [
  { name: "uploadDate", type: "STRING", maxLength: 10 },
  { name: "exportId", type: "STRING", maxLength: 36 },
  { name: "status", type: "STRING", maxLength: 32 },
];

export function commonColumns(): Column[] {
  return COMMON_COLUMNS.map(({ name, type, maxLength }) => (maxLength ? { name, type, maxLength } : { name, type }));
}

/** The common cells of a record's row; a string longer than its column is cut (and counted by the caller). */
export function commonCells(record: RecordFacts, context: RowContext): { cells: Cells; truncated: number } {
  const cells: Cells = {};
  let truncated = 0;
  for (const column of COMMON_COLUMNS) {
    const value = column.value(record, context);
    if (value === null || value === undefined) continue;
    const max = column.type === "STRING" ? column.maxLength : undefined;
    if (column.sanitize) {
      const cleaned = sanitize(value, max);
      cells[column.name] = cleaned.value;
      if (cleaned.truncated) truncated++;
    } else if (max !== undefined && value.length > max) {
      cells[column.name] = value.slice(0, max);
      truncated++;
    } else cells[column.name] = value;
  }
  return { cells, truncated };
}
