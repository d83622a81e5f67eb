import { createHash } from "node:crypto";
import type { Workspace } from "../workspace/workspace.js";
import { prng } from "./generate.js";

/** Scopes a record may carry at upload, including the blank and garbled ones a real app sends. */
export const UPLOAD_SCOPES = ["SPONSORS_AND_PARTNERS", "all_qualified_researchers", "NO_SHARING", "", "sharing?"];
/** Participants' current scopes; `null` is a participant the participants store does not know. */
export const PARTICIPANT_SCOPES = ["SPONSORS_AND_PARTNERS", "ALL_QUALIFIED_RESEARCHERS", "NO_SHARING", null] as const;

/** The five schemas of the generated day, with documents of every value kind the exporter serializes. */
export const DAY_SCHEMAS = ["Survey_v1", "Sleep_v1", "Steps_v2", "Mood_v1", "Notes_v1"] as const;

export interface DayRecord {
  recordId: string;
  studyId: string;
  healthCode: string;
  uploadScope: string;
  /** The dataset of the record's one document; null for a record without documents (a default-table row). */
  datasetId: string | null;
  document: Record<string, unknown> | null;
  uploadedOn: string;
}

export interface DayOptions {
  records: number;
  studies?: string[];
  /** Participants per study. */
  participants?: number;
  seed?: number;
  /** Upload times fall on this UTC day (YYYY-MM-DD), from 10:00 to 22:00 UTC (one Pacific day). */
  day: string;
  /** Every n-th record has no documents (default 50). */
  schemalessEvery?: number;
}

function documentOf(datasetId: string, next: () => number, i: number): Record<string, unknown> {
  const at = new Date(Date.UTC(2022, 1, 15, 12, 0, 0) + Math.floor(next() * 3_600_000)).toISOString();
  switch (datasetId) {
    case "Survey_v1":
      return {
        answered: next() < 0.5,
        score: Math.floor(next() * 100) - 20,
        comment: i % 7 === 0 ? `<b>great</b>\n\tday "${i}" \\ ok` : `plain ${i}`,
        choices: ["a", "b", "c"].filter(() => next() < 0.5),
        startDate: at,
      };
    case "Sleep_v1":
      return { hours: Math.round(next() * 1000) / 100, quality: Math.floor(next() * 5), wokeAt: at };
    case "Steps_v2":
      return {
        steps: Math.floor(next() * 20_000),
        samples: [
          { t: 0, n: 3 },
          { t: 60, n: Math.floor(next() * 9) },
        ],
      };
    case "Mood_v1":
      return { mood: ["happy", "sad", "ok"][i % 3], energy: next() * 10, tags: { morning: next() < 0.5 } };
    default:
      return { text: `note ${i} `.repeat(1 + (i % 30)), pinned: i % 2 === 0 };
  }
}

/**
 * A generated day of records, recorded as intake records them (an upload row per record, its document in the
 * JSON datasets), across studies, the five schemas and every combination of upload-time and current sharing
 * scope: for the export tests and `bench:export`. Returns the records and sets participants' scopes.
 */
export async function seedExportDay(ws: Workspace, options: DayOptions): Promise<DayRecord[]> {
  const studies = options.studies ?? ["study-a", "study-b", "study-c"];
  const participants = options.participants ?? 40;
  const next = prng(options.seed ?? 11);
  const dayStart = Date.parse(`${options.day}T10:00:00.000Z`);
  const scopes: Array<{ healthCode: string; scope: string }> = [];
  for (const studyId of studies) {
    for (let p = 0; p < participants; p++) {
      const scope = PARTICIPANT_SCOPES[p % PARTICIPANT_SCOPES.length];
      if (scope) scopes.push({ healthCode: `${studyId}-participant-${p}`, scope });
    }
  }
  await ws.state.exports.setScopes(scopes);
  const records: DayRecord[] = [];
  for (let i = 0; i < options.records; i++) {
    const studyId = studies[i % studies.length] as string;
    const schemaless = i % (options.schemalessEvery ?? 50) === 49;
    const datasetId = schemaless ? null : (DAY_SCHEMAS[Math.floor(i / studies.length) % DAY_SCHEMAS.length] as string);
    const uploadedOn = new Date(dayStart + Math.floor((i / options.records) * 12 * 3_600_000)).toISOString();
    records.push({
      recordId: `rec-${options.day}-${String(i).padStart(6, "0")}`,
      studyId,
      healthCode: `${studyId}-participant-${Math.floor(i / studies.length) % participants}`,
      uploadScope: UPLOAD_SCOPES[
        Math.floor(i / (studies.length * DAY_SCHEMAS.length)) % UPLOAD_SCOPES.length
      ] as string,
      datasetId,
      document: datasetId ? documentOf(datasetId, next, i) : null,
      uploadedOn,
    });
  }
  const [year, month, day] = options.day.split("-").map(Number);
  for (const r of records) {
    const metadata: Record<string, string> = {
      recordid: r.recordId,
      healthcode: r.healthCode,
      studyid: r.studyId,
      appid: "synthetic",
      assessmentid: "daily",
      assessmentrevision: "1",
      uploadedon: r.uploadedOn,
      sharingscope: r.uploadScope,
      clientinfo: `ClientInfo [appName=Synth, appVersion=${10 + (r.recordId.length % 3)}, deviceName=Pixel 7, osName=Android, osVersion=14]`,
      datagroups: "groupB,groupA",
    };
    const body = JSON.stringify(r);
    const upload = await ws.state.recordUpload({
      recordId: r.recordId,
      contentHash: createHash("sha256").update(body).digest("hex"),
      rawKey: `${r.recordId}/v1.zip`,
      sizeBytes: body.length,
      sourceName: `${r.recordId}.zip`,
      metadata,
      status: "received",
      attempts: 1,
    });
    const key = r.datasetId
      ? `dataset=${r.datasetId}/assessmentid=daily/year=${year}/month=${month}/day=${day}/${r.recordId}.ndjson`
      : null;
    if (key && r.document) {
      const line = { ...r.document, assessmentid: "daily", year, month, day, recordid: r.recordId };
      await ws.json.put(key, `${JSON.stringify(line)}\n`);
    }
    await ws.state.finishUpload(upload.uploadId, {
      status: "valid",
      error: null,
      summary: null,
      files: key
        ? [
            {
              seq: 0,
              path: `${r.datasetId}.json`,
              sizeBytes: body.length,
              schemaUrl: null,
              schemaSource: null,
              schemaMissing: false,
              validation: "unvalidated",
              errors: [],
              datasetId: r.datasetId,
              outputKey: key,
              note: null,
            },
          ]
        : [],
    });
  }
  return records;
}
