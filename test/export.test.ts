import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ConfigInput } from "../src/config/config.js";
import { Exporter } from "../src/export/exporter.js";
import { parseExportRequest } from "../src/export/request.js";
import { parseRows } from "../src/export/tsv.js";
import { Pipeline } from "../src/pipeline/pipeline.js";
import { DAY_SCHEMAS, type DayRecord, PARTICIPANT_SCOPES, seedExportDay } from "../src/synth/export-day.js";
import {
  dropSchema,
  makeWorkspace,
  POSTGRES_URL,
  postgresAvailable,
  type TestWorkspace,
  uniqueSchema,
} from "./support/workspace.js";

const pgReady = await postgresAvailable();
const ORDER = ["NO_SHARING", "SPONSORS_AND_PARTNERS", "ALL_QUALIFIED_RESEARCHERS"];
const DAY = "2022-02-15";
/** Noon the next day in the export zone: `yesterday` is DAY. */
const NEXT_DAY = new Date("2022-02-16T20:00:00Z");

/** The rule worked out independently here: a blank or unknown scope is no sharing; the stricter one wins. */
function effective(r: DayRecord): string {
  const upload = ORDER.indexOf(r.uploadScope.toUpperCase().replace(/-/g, "_"));
  const participant = Number(r.healthCode.split("-").pop()) % PARTICIPANT_SCOPES.length;
  const current = ORDER.indexOf(PARTICIPANT_SCOPES[participant] ?? "NO_SHARING");
  return ORDER[Math.min(upload < 0 ? 0 : upload, current)] as string;
}

const shared = (r: DayRecord) => effective(r) !== "NO_SHARING";

function tableKey(r: DayRecord): string {
  if (!r.datasetId) return `${r.studyId}-default`;
  const [schema, revision] = r.datasetId.split("_v");
  return `${r.studyId}-${schema}-v${revision}`;
}

function countBy<T>(items: readonly T[], key: (t: T) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const item of items) out[key(item)] = (out[key(item)] ?? 0) + 1;
  return out;
}

/** Every row of a folder table: header-named cells from each part file. */
async function folderRows(dir: string): Promise<Array<Record<string, string | null>>> {
  const rows: Array<Record<string, string | null>> = [];
  for (const file of (await readdir(dir)).filter((f) => f.endsWith(".tsv"))) {
    const [header, ...body] = parseRows("tsv", await readFile(path.join(dir, file), "utf8"));
    for (const row of body) rows.push(Object.fromEntries((header ?? []).map((h, i) => [h ?? "", row[i] ?? null])));
  }
  return rows;
}

async function pgQuery<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

function destinations(pgSchema: string | undefined): NonNullable<ConfigInput["export"]>["destinations"] {
  return {
    default: { kind: "folder", path: "exports" },
    csv: { kind: "folder", path: "exports-csv", format: "csv" },
    ...(pgSchema ? { pg: { kind: "postgres" as const, url: POSTGRES_URL, schema: pgSchema } } : {}),
    // Nothing listens on port 1: every write fails with a refused connection (a transient error).
    down: { kind: "postgres", url: "postgres://postgres@127.0.0.1:1/postgres", schema: "down" },
  };
}

describe("export of a generated day: 10,000 records, 3 studies, 5 schemas, every sharing combination", () => {
  let t: TestWorkspace;
  let records: DayRecord[];
  const pgSchema = pgReady ? uniqueSchema() : undefined;

  beforeAll(async () => {
    t = await makeWorkspace({ export: { destinations: destinations(pgSchema) } });
    records = await seedExportDay(t.ws, { records: 10_000, day: DAY });
  }, 120_000);
  afterAll(async () => {
    await t.cleanup();
    if (pgSchema) await dropSchema(pgSchema);
  });

  it("covers every combination of upload-time and current scope in every schema", () => {
    const combos = new Set(records.map((r) => `${r.uploadScope}|${Number(r.healthCode.split("-").pop()) % 4}`));
    expect(combos.size).toBe(5 * 4);
    expect(new Set(records.map((r) => r.datasetId)).size).toBe(DAY_SCHEMAS.length + 1);
  });

  it("writes the shared records to one TSV table per study and schema, with appVersion and status tables", async () => {
    const report = await new Exporter(t.ws).run(parseExportRequest({ date: DAY, sharingMode: "SHARED" }), {
      now: NEXT_DAY,
    });
    expect(report).toMatchObject({ status: "succeeded", errors: [], exportDate: "2022-02-16" });
    const counters = report.metrics.counters;
    expect(counters.numTotal).toBe(10_000);
    for (const [scope, n] of Object.entries(countBy(records, effective))) {
      expect(counters[`${scope === "NO_SHARING" ? "excluded" : "accepted"}[${scope}]`]).toBe(n);
    }
    const exported = records.filter(shared);
    const expected = countBy(exported, tableKey);
    expect(Object.keys(expected).filter((k) => !k.endsWith("-default"))).toHaveLength(3 * DAY_SCHEMAS.length);
    expect(Object.keys(expected).some((k) => k.endsWith("-default"))).toBe(true);
    const exportsDir = path.join(t.root, "exports");
    for (const [key, n] of Object.entries(expected)) {
      expect(counters[`${key}.lineCount`]).toBe(n);
      const [study, ...rest] = [key.slice(0, 7), key.slice(8)];
      const rows = await folderRows(path.join(exportsDir, study as string, rest.join("")));
      expect(rows).toHaveLength(n);
    }
    for (const study of ["study-a", "study-b", "study-c"]) {
      const ofStudy = exported.filter((r) => r.studyId === study);
      const appVersion = await folderRows(path.join(exportsDir, study, "appVersion"));
      expect(appVersion).toHaveLength(ofStudy.length);
      expect(new Set(appVersion.map((r) => r.recordId))).toEqual(new Set(ofStudy.map((r) => r.recordId)));
      const status = await folderRows(path.join(exportsDir, study, "status"));
      expect(status).toEqual([{ uploadDate: "2022-02-16", exportId: report.exportId, status: "complete" }]);
      expect(report.metrics.distinctCounts[`uniqueHealthCodes[${study}]`]).toBe(
        new Set(ofStudy.map((r) => r.healthCode)).size,
      );
    }
    expect(JSON.stringify(report.metrics)).not.toContain("participant-");

    // Values as the reference serializes them: cleaned text, typed cells, nested values as attachments.
    const survey = await folderRows(path.join(exportsDir, "study-a", "Survey-v1"));
    const record = records.find((r) => r.recordId === survey.find((s) => s.comment?.startsWith("great"))?.recordId);
    const row = survey.find((s) => s.recordId === record?.recordId);
    const doc = record?.document as Record<string, unknown>;
    expect(row).toMatchObject({
      comment: `great day "${Number(record?.recordId.slice(-6))}" \\ ok`,
      answered: String(doc.answered),
      score: String(doc.score),
      startDate: String(Date.parse(doc.startDate as string)),
      "startDate.timezone": "+0000",
      healthCode: record?.healthCode,
      dataGroups: "groupA,groupB",
      uploadDate: DAY,
    });
    const attachment = await readFile(path.join(exportsDir, "attachments", row?.choices as string), "utf8");
    expect(JSON.parse(attachment)).toEqual(doc.choices);
    expect(row?.rawData).toMatch(new RegExp(`^json/dataset=Survey_v1/.*/${record?.recordId}\\.ndjson$`));
  }, 120_000);

  it("exports the same day once: a second request writes nothing, and --again only what was left out", async () => {
    const before = (await readdir(path.join(t.root, "exports", "study-b", "Mood-v1"))).length;
    const request = parseExportRequest({ date: DAY, sharingMode: "SHARED" });
    const again = await new Exporter(t.ws).run(request, { now: NEXT_DAY });
    expect(again.alreadyDone).toBe(true);
    // The same day as an explicit window is the same export.
    const window = await new Exporter(t.ws).run(
      parseExportRequest({
        startDateTime: "2022-02-15T08:00:00Z",
        endDateTime: "2022-02-16T08:00:00Z",
        sharingMode: "SHARED",
      }),
      { now: NEXT_DAY },
    );
    expect(window.alreadyDone).toBe(true);
    const forced = await new Exporter(t.ws).run(request, { now: NEXT_DAY, again: true });
    expect(forced.metrics.counters.alreadyExported).toBe(records.filter(shared).length);
    expect(Object.keys(forced.metrics.counters).filter((k) => k.endsWith("-v1.lineCount"))).toEqual([]);
    expect(await readdir(path.join(t.root, "exports", "study-b", "Mood-v1"))).toHaveLength(before);
  }, 60_000);

  it.skipIf(!pgReady)(
    "writes the same tables to PostgreSQL, one transaction per table",
    async () => {
      const report = await new Exporter(t.ws).run(
        parseExportRequest({ date: DAY, sharingMode: "PUBLIC_ONLY", destination: "pg" }),
        { now: NEXT_DAY },
      );
      expect(report.status).toBe("succeeded");
      const exported = records.filter((r) => effective(r) === "ALL_QUALIFIED_RESEARCHERS");
      for (const [key, n] of Object.entries(countBy(exported, tableKey))) {
        const [{ count }] = (await pgQuery<{ count: string }>(`SELECT count(*) FROM "${pgSchema}"."${key}"`)) as [
          { count: string },
        ];
        expect(Number(count)).toBe(n);
      }
      const types = await pgQuery<{ column_name: string; data_type: string }>(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'study-a-Survey-v1'",
        [pgSchema],
      );
      expect(Object.fromEntries(types.map((c) => [c.column_name, c.data_type]))).toMatchObject({
        answered: "boolean",
        score: "bigint",
        startDate: "bigint",
        comment: "character varying",
        choices: "text",
      });
      const sleep = await pgQuery<{ hours: number }>(`SELECT hours FROM "${pgSchema}"."study-c-Sleep-v1" LIMIT 1`);
      expect(typeof sleep[0]?.hours).toBe("number");
      const status = await pgQuery(`SELECT * FROM "${pgSchema}"."study-b-status"`);
      expect(status).toEqual([{ uploadDate: "2022-02-16", exportId: report.exportId, status: "complete" }]);
      const attachments = await pgQuery<{ n: string }>(
        `SELECT count(*) AS n FROM "${pgSchema}"._studylake_attachments`,
      );
      expect(Number(attachments[0]?.n)).toBeGreaterThan(0);
    },
    120_000,
  );
});

describe("export over several days", () => {
  let t: TestWorkspace | undefined;
  let pgSchema: string | undefined;
  afterEach(async () => {
    await t?.cleanup();
    if (pgSchema) await dropSchema(pgSchema);
    t = undefined;
  });

  async function open(extra: Partial<NonNullable<ConfigInput["export"]>> = {}) {
    pgSchema = pgReady ? uniqueSchema() : undefined;
    t = await makeWorkspace({ export: { destinations: destinations(pgSchema), ...extra } });
    return t;
  }

  it("grows a table when its schema gains fields or wider values; earlier rows keep theirs", async () => {
    const { ws, root } = await open();
    await seedExportDay(ws, { records: 60, day: DAY });
    const run = (destination: string, date: string) =>
      new Exporter(ws).run(parseExportRequest({ date, sharingMode: "ALL", destination }), {
        now: new Date(`${date}T23:00:00Z`),
      });
    const first = await run("default", DAY);
    expect(first.status).toBe("succeeded");
    if (pgSchema) expect((await run("pg", DAY)).status).toBe("succeeded");

    // The next day, Survey documents carry a new field and a fractional score.
    const day2 = await seedExportDay(ws, { records: 60, day: "2022-02-16", seed: 5 });
    for (const r of day2.filter((d) => d.datasetId === "Survey_v1")) {
      const key = `dataset=Survey_v1/assessmentid=daily/year=2022/month=2/day=16/${r.recordId}.ndjson`;
      const doc = JSON.parse((await ws.json.get(key)).toString());
      await ws.json.put(key, `${JSON.stringify({ ...doc, score: 2.5, device: "watch" })}\n`);
    }
    const second = await run("default", "2022-02-16");
    const grown = second.tables.find((tb) => tb.key === "study-a-Survey-v1");
    expect(grown).toMatchObject({ added: ["device"], changed: ["score"] });
    const known = await ws.state.exports.table("default", "study-a-Survey-v1");
    const names = known?.columns.map((c) => c.name) ?? [];
    expect(names.slice(-2)).toEqual(["rawData", "device"]);
    expect(known?.columns.find((c) => c.name === "score")?.type).toBe("DOUBLE");
    const dir = path.join(root, "exports", "study-a", "Survey-v1");
    const parts = (await readdir(dir)).sort();
    const headers = await Promise.all(
      parts.map(async (p) => parseRows("tsv", await readFile(path.join(dir, p), "utf8"))[0]),
    );
    expect(headers.filter((h) => h?.includes("device"))).toHaveLength(1);
    expect(headers.filter((h) => !h?.includes("device"))).toHaveLength(1);

    if (pgSchema) {
      expect((await run("pg", "2022-02-16")).status).toBe("succeeded");
      const rows = await pgQuery<{ uploadDate: string; device: string | null; score: number }>(
        `SELECT "uploadDate", device, score FROM "${pgSchema}"."study-a-Survey-v1"`,
      );
      expect(rows.filter((r) => r.uploadDate === DAY).every((r) => r.device === null)).toBe(true);
      const newer = rows.filter((r) => r.uploadDate === "2022-02-16");
      expect(newer.length).toBeGreaterThan(0);
      expect(newer.every((r) => r.device === "watch" && r.score === 2.5)).toBe(true);
    }
  }, 60_000);

  it("redrives named records: replaces their rows, and removes those of a participant who withdrew", async () => {
    const { ws, root } = await open();
    const records = await seedExportDay(ws, { records: 90, day: DAY });
    const dests = pgSchema ? ["default", "pg"] : ["default"];
    for (const destination of dests) {
      await new Exporter(ws).run(parseExportRequest({ date: DAY, sharingMode: "SHARED", destination }), {
        now: NEXT_DAY,
      });
    }
    const survey = records.filter((r) => r.studyId === "study-a" && r.datasetId === "Survey_v1");
    expect(survey.filter(shared).length).toBeGreaterThan(2);
    const withdrawn = survey[0] as DayRecord;
    const kept = survey.find((r) => r.healthCode !== withdrawn.healthCode) as DayRecord;
    await ws.state.exports.setScopes([{ healthCode: withdrawn.healthCode, scope: "NO_SHARING" }]);
    const withdrawnIds = records.filter((r) => r.healthCode === withdrawn.healthCode).map((r) => r.recordId);
    for (const destination of dests) {
      const report = await new Exporter(ws).run(
        parseExportRequest({ recordIds: [...withdrawnIds, kept.recordId], sharingMode: "SHARED", destination }),
        { now: NEXT_DAY },
      );
      expect(report.status).toBe("succeeded");
      expect(report.metrics.counters["study-a-Survey-v1.lineCount"]).toBe(1);
    }
    const rows = await folderRows(path.join(root, "exports", "study-a", "Survey-v1"));
    expect(rows.filter((r) => r.recordId === kept.recordId)).toHaveLength(1);
    expect(rows.filter((r) => r.healthCode === withdrawn.healthCode)).toEqual([]);
    expect(rows).toHaveLength(survey.filter((r) => shared(r) && r.healthCode !== withdrawn.healthCode).length);
    const appVersion = await folderRows(path.join(root, "exports", "study-a", "appVersion"));
    expect(appVersion.filter((r) => r.healthCode === withdrawn.healthCode)).toEqual([]);
    if (pgSchema) {
      const inPg = await pgQuery<{ recordId: string; healthCode: string }>(
        `SELECT "recordId", "healthCode" FROM "${pgSchema}"."study-a-Survey-v1"`,
      );
      expect(inPg.filter((r) => r.recordId === kept.recordId)).toHaveLength(1);
      expect(inPg.filter((r) => r.healthCode === withdrawn.healthCode)).toEqual([]);
      expect(inPg).toHaveLength(rows.length);
    }
  }, 60_000);

  it("queues a delayed redrive of records that failed for a transient reason, a bounded number of times", async () => {
    const { ws } = await open({ redrive: { maxCount: 1, delaySeconds: 900 } });
    const records = await seedExportDay(ws, { records: 30, day: DAY });
    const report = await new Exporter(ws).run(
      parseExportRequest({ date: DAY, sharingMode: "ALL", destination: "down" }),
      {
        now: NEXT_DAY,
      },
    );
    expect(report.status).toBe("completed_with_errors");
    expect(report.redrive?.records).toBe(records.length);
    const run = await ws.state.pipeline.get(report.redrive?.runId as string);
    expect(run).toMatchObject({ kind: "export", target: "export:down", status: "pending" });
    expect(Date.parse(run?.nextAttemptAt as string)).toBeGreaterThan(Date.now() + 800_000);
    const redrive = parseExportRequest(run?.params.request);
    expect(redrive).toMatchObject({ redriveCount: 1, tag: "redrive export; original: (no tag)" });
    expect(redrive.recordIds?.length).toBe(records.length);

    // The redrive fails again: the maximum is reached, so it is reported, not queued.
    const last = await new Exporter(ws).run(redrive, { now: NEXT_DAY });
    expect(last.redrive).toBeNull();
    expect(last.errors.at(-1)).toMatch(/failed again after 1 redrives/);
  }, 60_000);

  it("reports a permanent failure with the record ids, and exports the other tables", async () => {
    const { ws } = await open({
      fields: { Mood_v1: [{ name: "mood", type: "INT" }] },
    });
    await seedExportDay(ws, { records: 30, day: DAY });
    // Declared types that the table cannot take: mood was exported as text before.
    await ws.state.exports.commitTable({
      destination: "default",
      tableKey: "study-a-Mood-v1",
      studyId: "study-a",
      tableName: "x",
      fields: [],
      columns: [{ name: "mood", type: "FILEHANDLEID" }],
      exportId: "earlier",
      recordIds: [],
      removedRecordIds: [],
    });
    const report = await new Exporter(ws).run(parseExportRequest({ date: DAY, sharingMode: "ALL" }), { now: NEXT_DAY });
    expect(report.status).toBe("completed_with_errors");
    expect(report.errors.join("\n")).toMatch(/table study-a-Mood-v1: column 'mood' is FILEHANDLEID .*records: rec-/);
    expect(report.redrive).toBeNull();
    expect(report.metrics.counters["study-a-Survey-v1.lineCount"]).toBeGreaterThan(0);
    const status = await ws.state.exports.get(report.exportId);
    expect(status?.status).toBe("completed_with_errors");
  }, 60_000);

  it("resumes an export cut off after a table was written and before it was recorded, without duplicates", async () => {
    const { ws, root } = await open();
    await seedExportDay(ws, { records: 45, day: DAY });
    const request = parseExportRequest({ date: DAY, sharingMode: "ALL" });
    const first = await new Exporter(ws).run(request, { now: NEXT_DAY });
    const rowsBefore = await folderRows(path.join(root, "exports", "study-b", "Sleep-v1"));
    // What a kill leaves: the destination has the files, the state has neither the rows nor a finished export.
    const db = new Database(path.join(root, "state.db"));
    db.prepare("DELETE FROM export_records WHERE table_key = ?").run("study-b-Sleep-v1");
    db.prepare("UPDATE exports SET status = 'running' WHERE export_id = ?").run(first.exportId);
    db.close();
    const resumed = await new Exporter(ws).run(request, { now: NEXT_DAY });
    expect(resumed).toMatchObject({ exportId: first.exportId, status: "succeeded", alreadyDone: false });
    expect(await folderRows(path.join(root, "exports", "study-b", "Sleep-v1"))).toEqual(rowsBefore);
    const recorded = await ws.state.exports.exported(
      "default",
      rowsBefore.map((r) => r.recordId as string),
      "study-b-Sleep-v1",
    );
    expect(recorded).toHaveLength(rowsBefore.length);
    expect(await folderRows(path.join(root, "exports", "study-b", "status"))).toHaveLength(1);
  }, 60_000);

  it("writes CSV too", async () => {
    const { ws, root } = await open();
    await seedExportDay(ws, { records: 15, day: DAY });
    await new Exporter(ws).run(parseExportRequest({ date: DAY, sharingMode: "ALL", destination: "csv" }), {
      now: NEXT_DAY,
    });
    const dir = path.join(root, "exports-csv", "study-a", "Notes-v1");
    const [file] = await readdir(dir);
    const [header, ...rows] = parseRows("csv", await readFile(path.join(dir, file as string), "utf8"));
    expect(header?.slice(0, 3)).toEqual(["recordId", "appVersion", "phoneInfo"]);
    expect(rows.length).toBeGreaterThan(0);
  });

  it("runs the daily export from the pipeline's schedule, for the day before the tick", async () => {
    pgSchema = undefined;
    t = await makeWorkspace({
      export: { destinations: destinations(undefined) },
      pipeline: {
        schedules: [
          {
            name: "daily-export",
            cron: "0 2 * * *",
            timezone: "America/Los_Angeles",
            kind: "export",
            target: "default",
            request: { sharingMode: "ALL", tag: "nightly" },
          },
        ],
      },
    });
    const records = await seedExportDay(t.ws, { records: 30, day: DAY });
    const pipeline = new Pipeline(t.ws);
    // A new schedule owes nothing for ticks before it existed; the next tick is due.
    expect(await pipeline.requestDue(new Date("2022-02-15T11:00:00Z"))).toEqual([]);
    const [run] = await pipeline.requestDue(new Date("2022-02-16T11:00:00Z"));
    expect(run).toMatchObject({ kind: "export", target: "export:default" });
    expect(run?.params.request).toMatchObject({
      date: DAY,
      sharingMode: "ALL",
      tag: "nightly",
    });
    const summary = await pipeline.drain();
    expect(summary.runs).toMatchObject([{ status: "succeeded" }]);
    const [row] = await t.ws.state.exports.list(5);
    expect(row).toMatchObject({ status: "succeeded", destination: "default" });
    expect(row?.metrics).toMatchObject({ counters: { numTotal: records.length } });
  }, 60_000);
});

describe.skipIf(!pgReady)("a PostgreSQL destination written from two workspaces", () => {
  it("replaces a record's rows rather than adding them twice, whatever the state store remembers", async () => {
    const destSchema = uniqueSchema();
    const open = () => makeWorkspace({ export: { destinations: destinations(destSchema) } });
    const first = await open();
    const second = await open();
    try {
      const request = parseExportRequest({ date: DAY, sharingMode: "ALL", destination: "pg" });
      const records = await seedExportDay(first.ws, { records: 30, day: DAY });
      await seedExportDay(second.ws, { records: 30, day: DAY });
      await new Exporter(first.ws).run(request, { now: NEXT_DAY });
      const report = await new Exporter(second.ws).run(request, { now: NEXT_DAY });
      expect(report.status).toBe("succeeded");
      const survey = records.filter((r) => r.studyId === "study-a" && r.datasetId === "Survey_v1");
      const rows = await pgQuery<{ recordId: string }>(`SELECT "recordId" FROM "${destSchema}"."study-a-Survey-v1"`);
      expect(rows.map((r) => r.recordId).sort()).toEqual(survey.map((r) => r.recordId).sort());
    } finally {
      await first.cleanup();
      await second.cleanup();
      await dropSchema(destSchema);
    }
  }, 60_000);
});

describe.skipIf(!pgReady)("export with the state store on PostgreSQL", () => {
  it("keeps the same bookkeeping: exactly once, and a redrive replaces rows", async () => {
    const stateSchema = uniqueSchema();
    const destSchema = uniqueSchema();
    const t = await makeWorkspace({
      state: { kind: "postgres", url: POSTGRES_URL, schema: stateSchema },
      export: { destinations: destinations(destSchema) },
    });
    try {
      const records = await seedExportDay(t.ws, { records: 45, day: DAY });
      const request = parseExportRequest({ date: DAY, sharingMode: "SHARED", destination: "pg" });
      const first = await new Exporter(t.ws).run(request, { now: NEXT_DAY });
      expect(first.status).toBe("succeeded");
      expect((await new Exporter(t.ws).run(request, { now: NEXT_DAY })).alreadyDone).toBe(true);
      const sleep = records.filter((r) => r.studyId === "study-b" && r.datasetId === "Sleep_v1" && shared(r));
      expect(sleep.length).toBeGreaterThan(0);
      const redrive = await new Exporter(t.ws).run(
        parseExportRequest({ recordIds: sleep.map((r) => r.recordId), sharingMode: "SHARED", destination: "pg" }),
        { now: NEXT_DAY },
      );
      expect(redrive.metrics.counters["study-b-Sleep-v1.lineCount"]).toBe(sleep.length);
      const rows = await pgQuery<{ recordId: string }>(`SELECT "recordId" FROM "${destSchema}"."study-b-Sleep-v1"`);
      expect(rows.map((r) => r.recordId).sort()).toEqual(sleep.map((r) => r.recordId).sort());
      const exported = await t.ws.state.exports.exported(
        "pg",
        sleep.map((r) => r.recordId),
        "study-b-Sleep-v1",
      );
      expect(new Set(exported.map((e) => e.exportId))).toEqual(new Set([redrive.exportId]));
    } finally {
      await t.cleanup();
      await dropSchema(stateSchema);
      await dropSchema(destSchema);
    }
  }, 60_000);
});
