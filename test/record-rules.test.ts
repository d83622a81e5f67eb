import { copyFile, mkdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { parse as parseLossless, stringify } from "lossless-json";
import { afterEach, describe, expect, it } from "vitest";
import { CONFIG_FILE, type Config, ConfigError, datasetRules } from "../src/config/config.js";
import { Lake } from "../src/lake/lake.js";
import { Catalog } from "../src/parquet/catalog.js";
import { RelationalizeStage } from "../src/parquet/stage.js";
import { withDeletionTargets } from "../src/pipeline/pipeline.js";
import { compareOrder, orderOf, recordKeyOf } from "../src/relationalize/records.js";
import { LocalObjectStore } from "../src/storage/object-store.js";
import { prng } from "../src/synth/generate.js";
import {
  FIXTURES,
  makeWorkspace,
  POSTGRES_URL,
  postgresAvailable,
  tableRows as rows,
  type TestWorkspace,
  tempDir,
  uniqueSchema,
  workspacePerTest,
} from "./support/workspace.js";

const pgReady = await postgresAvailable();
const RECOVER = path.join(FIXTURES, "recover-ndjson");
const COHORT = "cohort=adults_v1";

/** recover's rules for its test data types: the index is GlobalKey, the newest InsertedDate, then export_end_date, wins. */
const RECOVER_RULES = {
  partitionFields: ["cohort"],
  datasets: {
    ...Object.fromEntries(
      ["TestFlatDataType", "TestFlatInsertedDateDataType", "TestNestedDataType"].map((type) => [
        type,
        {
          key: ["GlobalKey"],
          newestBy: ["InsertedDate", "export_end_date"],
          countBy: "export_end_date",
          ...(type === "TestFlatDataType" ? { deletedBy: "TestFlatDataType_Deleted" } : {}),
        },
      ]),
    ),
    // Like recover's Fitbit sleep logs (a numeric index) and daily data (an index of two fields).
    sleeplogs: { key: ["LogId"], newestBy: ["export_end_date"], deletedBy: "sleeplogs_deleted" },
    dailydata: { key: ["ParticipantIdentifier", "Date"], newestBy: ["export_end_date"] },
    // Without newest-by rules a run looks up only the records it meets.
    steplogs: { key: ["LogId"], deletedBy: "steplogs_deleted" },
  },
};

/** The tables `studylake tables` lists, with their row counts. */
async function tables(ws: TestWorkspace["ws"]): Promise<Array<[string, number]>> {
  const catalog = await Catalog.open(ws);
  try {
    return (await catalog.tables()).map((t) => [t.table, t.rows]);
  } finally {
    catalog.close();
  }
}

describe("record rules (pure)", () => {
  it("reads a record's id from the root or a top-level array's first element: text, numbers by their digits", () => {
    expect(recordKeyOf({ k: "a" }, ["k"])).toBe("a");
    expect(recordKeyOf([{ k: "b" }, { k: "c" }], ["k"])).toBe("b");
    expect(recordKeyOf(parseLossless('{"k":12345678901234567890}'), ["k"])).toBe("12345678901234567890");
    expect(recordKeyOf({ k: 3 }, ["k"])).toBe("3");
    expect(recordKeyOf({ k: true }, ["k"])).toBeUndefined();
    expect(recordKeyOf({ k: { v: 1 } }, ["k"])).toBeUndefined();
    expect(recordKeyOf({ other: "a" }, ["k"])).toBeUndefined();
    expect(recordKeyOf("text", ["k"])).toBeUndefined();
    // Several fields: their values as a JSON array of text; all must be there.
    expect(recordKeyOf({ p: "P1", d: "2023-01-01", n: 5 }, ["p", "d", "n"])).toBe('["P1","2023-01-01","5"]');
    expect(recordKeyOf({ p: "P1" }, ["p", "d"])).toBeUndefined();
  });

  it("orders versions field by field: missing is oldest, numbers as numbers, text as text", () => {
    expect(orderOf({ a: "2023-06-12", b: 2 }, ["a", "b", "c"])).toEqual(["2023-06-12", "2", null]);
    expect(compareOrder(["2023-05-12T00:00:00"], ["2023-06-12T00:00:00"])).toBeLessThan(0);
    expect(compareOrder([null, "2023-06-12"], ["2023-01-01", "2023-01-01"])).toBeLessThan(0);
    expect(compareOrder(["x", "2023-06-12"], ["x", "2023-05-12"])).toBeGreaterThan(0);
    expect(compareOrder(["9"], ["10"])).toBeLessThan(0);
    expect(compareOrder(["1.5e1"], ["14"])).toBeGreaterThan(0);
    expect(compareOrder(["b"], ["a"])).toBeGreaterThan(0);
    expect(compareOrder(["a", null], ["a", null])).toBe(0);
  });

  it("takes a dataset's own rules over the workspace's, and refuses a dataset deleted by itself", () => {
    const settings = {
      recordField: "recordid",
      partitionFields: [],
      batchRows: 10,
      groupBytes: 1024,
      filesPerRun: 100,
      compactAfterFiles: 32,
      compactBelowBytes: 1024,
      typed: true,
      datasets: {
        a: { key: ["GlobalKey"], newestBy: ["x"], deletedBy: "a_Deleted" },
        pair: { key: ["p", "d"], newestBy: [] },
        self: { newestBy: [], deletedBy: "self" },
      },
    } satisfies Config["relationalize"];
    expect(datasetRules(settings, "a")).toEqual({
      key: ["GlobalKey"],
      recordField: "GlobalKey",
      newestBy: ["x"],
      deletedBy: "a_Deleted",
    });
    expect(datasetRules(settings, "b")).toEqual({
      key: ["recordid"],
      recordField: "recordid",
      newestBy: [],
      deletedBy: undefined,
    });
    expect(datasetRules(settings, "pair")).toMatchObject({ key: ["p", "d"], recordField: "_record" });
    expect(() => datasetRules(settings, "self")).toThrow(ConfigError);
    // New data in a deletion export makes its target dataset due too.
    expect(withDeletionTargets(settings, ["a_Deleted"])).toEqual(["a_Deleted", "a"]);
    expect(withDeletionTargets(settings, ["b"])).toEqual(["b"]);
  });
});

function recoverSuite(name: string, state: () => Config["state"] | undefined) {
  describe(`recover's rules on ${name}`, () => {
    const workspace = workspacePerTest(state);

    /** A JSON store laid out as intake would (dataset=/cohort=/file), and a way to add an export to it. */
    async function setUp() {
      const t = await workspace({ relationalize: RECOVER_RULES });
      const dir = await tempDir();
      const stage = new RelationalizeStage(t.ws, new LocalObjectStore(dir));
      let clock = Date.now() / 1000 - 3600;
      const add = async (dataset: string, file: string, content?: string) => {
        const target = path.join(dir, `dataset=${dataset}`, COHORT, file);
        await mkdir(path.dirname(target), { recursive: true });
        if (content === undefined) await copyFile(path.join(RECOVER, file), target);
        else await writeFile(target, content);
        // Uploads arrive in the order added, whatever their export dates say.
        clock += 60;
        await utimes(target, clock, clock);
      };
      return { stage, add, ws: t.ws, dir, t };
    }

    it("keeps the newest InsertedDate, then export_end_date, per index, and children follow their record", async () => {
      const { stage, add, ws } = await setUp();
      for (const type of ["TestFlatInsertedDateDataType", "TestNestedDataType"]) {
        // The newer export is uploaded first: the export's own dates decide, not the upload order.
        await add(type, `${type}_20230612.ndjson`);
        await add(type, `${type}_20230512.ndjson`);
        const report = await stage.run(type);
        expect(report).toMatchObject({ documents: 2, records: 1, older: 1, typedDocuments: 0 });
        // Per export, as recover stores its counts: the older export was read and not written.
        expect(report.counts).toEqual([
          { value: "2023-05-12T00:00:00", read: 1, older: 1, deletedByExport: 0, written: 0 },
          { value: "2023-06-12T00:00:00", read: 1, older: 0, deletedByExport: 0, written: 1 },
        ]);
      }
      expect(
        await rows(ws, "SELECT GlobalKey, export_end_date, InsertedDate, cohort FROM TestFlatInsertedDateDataType"),
      ).toEqual([["123456789", "2023-06-12T00:00:00", "2023-06-12T00:00:00", "adults_v1"]]);
      expect(
        await rows(
          ws,
          `SELECT p.GlobalKey, p.export_end_date, p.ObjectField_filename, c.filename, c.timestamp, c.GlobalKey, c.cohort
           FROM TestNestedDataType p JOIN TestNestedDataType_ArrayOfObjectsField c ON c.id = p.ArrayOfObjectsField`,
        ),
      ).toEqual([["123456789", "2023-06-12T00:00:00", "test.json", "test.json", "999", "123456789", "adults_v1"]]);
      expect(await rows(ws, "SELECT count(*) FROM TestNestedDataType_ArrayOfObjectsField")).toEqual([[1n]]);

      // Later runs compare with the version in the tables: an older export changes nothing, a newer one replaces it.
      const type = "TestFlatInsertedDateDataType";
      const line = (date: string) =>
        `${JSON.stringify({ GlobalKey: "123456789", export_end_date: date, InsertedDate: date, cohort: "adults_v1" })}\n`;
      await add(type, `${type}_20230501.ndjson`, line("2023-05-01T00:00:00"));
      expect(await stage.run(type)).toMatchObject({ records: 0, older: 1, replaced: 0 });
      await add(type, `${type}_20230712.ndjson`, line("2023-07-12T00:00:00"));
      expect(await stage.run(type)).toMatchObject({ records: 1, older: 0, replaced: 1 });
      expect(await rows(ws, `SELECT InsertedDate FROM ${type}`)).toEqual([["2023-07-12T00:00:00"]]);
    });

    it("removes the records a deletion export names, ignoring dates, and keeps them out when they come again", async () => {
      const { stage, add, ws, dir, t } = await setUp();
      const type = "TestFlatDataType";
      await add(type, `${type}_20230512.ndjson`);
      await add(type, `${type}_20230612.ndjson`);
      expect(await stage.run(type)).toMatchObject({ records: 1, older: 0, replaced: 0 });
      expect(await rows(ws, `SELECT GlobalKey, export_end_date, cohort FROM ${type}`)).toEqual([
        ["123456789", "2023-06-12T00:00:00", "adults_v1"],
      ]);
      const lake = new Lake(ws);
      const principal = await lake.principal();
      expect((await lake.query(principal, `SELECT count(*) FROM ${type}`)).rows).toEqual([[1n]]);

      // The deletion export alone makes the dataset due: its record leaves the tables and the lake.
      await add(`${type}_Deleted`, `${type}_Deleted_20230514.ndjson`);
      const removal = await stage.run(type);
      expect(removal).toMatchObject({ filesRead: 1, documents: 0, deletedByExport: 1, counts: [] });
      expect(await rows(ws, `SELECT count(*) FROM ${type}`)).toEqual([[0n]]);
      expect((await lake.query(principal, `SELECT count(*) FROM ${type}`)).rows).toEqual([[0n]]);
      expect(await stage.run(type)).toMatchObject({ runId: null });

      // Exported again later, the deleted record stays out; another record goes in.
      const again = await readFile(path.join(RECOVER, `${type}_20230612.ndjson`), "utf8");
      await add(
        type,
        `${type}_20230712.ndjson`,
        `${again.replace("2023-06-12", "2023-07-12")}${again.replace("123456789", "987")}`,
      );
      expect((await stage.run(type)).counts).toEqual([
        { value: "2023-06-12T00:00:00", read: 1, older: 0, deletedByExport: 0, written: 1 },
        { value: "2023-07-12T00:00:00", read: 1, older: 0, deletedByExport: 1, written: 0 },
      ]);
      expect(await rows(ws, `SELECT GlobalKey FROM ${type}`)).toEqual([["987"]]);

      // The deletion dataset is a dataset of its own too.
      await stage.run(`${type}_Deleted`);
      expect(await rows(ws, `SELECT GlobalKey FROM ${type}_Deleted`)).toEqual([["123456789"]]);

      // A record stays out while any deletion file names it, and may come back once none does.
      const deletion = (file: string) => path.join(dir, `dataset=${type}_Deleted`, COHORT, file);
      await add(`${type}_Deleted`, `${type}_Deleted_20230714.ndjson`, again);
      await rm(deletion(`${type}_Deleted_20230514.ndjson`));
      await add(type, `${type}_20230801.ndjson`, again.replace("2023-06-12", "2023-08-01"));
      expect(await stage.run(type)).toMatchObject({ records: 0, deletedByExport: 1 });
      await rm(deletion(`${type}_Deleted_20230714.ndjson`));
      await add(type, `${type}_20230802.ndjson`, again.replace("2023-06-12", "2023-08-02"));
      expect(await stage.run(type)).toMatchObject({ records: 1, deletedByExport: 0 });
      expect(await rows(ws, `SELECT GlobalKey, export_end_date FROM ${type} ORDER BY 1`)).toEqual([
        ["123456789", "2023-08-02T00:00:00"],
        ["987", "2023-06-12T00:00:00"],
      ]);

      // A dataset's record field cannot change under its tables.
      const configFile = path.join(ws.root, CONFIG_FILE);
      const config = JSON.parse(await readFile(configFile, "utf8"));
      config.relationalize.datasets[type].key = ["cohort"];
      await writeFile(configFile, JSON.stringify(config));
      const reopened = await t.reopen();
      await add(type, `${type}_20230812.ndjson`, again);
      await expect(new RelationalizeStage(reopened, new LocalObjectStore(dir)).run(type)).rejects.toThrow(
        /identify records by 'GlobalKey', the configuration says 'cohort'/,
      );
    });

    it("removes records of earlier runs that a later deletion export names or whose file is gone, without newest-by rules", async () => {
      const { stage, add, ws, dir } = await setUp();
      const ndjson = (docs: object[]) => `${docs.map((d) => JSON.stringify(d)).join("\n")}\n`;
      const log = (id: number) => ({ LogId: id, Levels: [{ level: "deep", minutes: id }] });
      await add("steplogs", "a.ndjson", ndjson([log(1), log(2)]));
      await add("steplogs", "b.ndjson", ndjson([log(3)]));
      expect(await stage.run("steplogs")).toMatchObject({ records: 3, deletedByExport: 0 });
      await add("steplogs_deleted", "d.ndjson", ndjson([{ LogId: 2 }]));
      expect(await stage.run("steplogs")).toMatchObject({ filesRead: 1, records: 0, deletedByExport: 1 });
      expect(await rows(ws, "SELECT LogId FROM steplogs ORDER BY 1")).toEqual([[1n], [3n]]);
      expect(await rows(ws, "SELECT minutes FROM steplogs_Levels ORDER BY 1")).toEqual([[1n], [3n]]);
      await add("steplogs", "c.ndjson", ndjson([log(1), log(4)]));
      await rm(path.join(dir, "dataset=steplogs", COHORT, "b.ndjson"));
      expect(await stage.run("steplogs")).toMatchObject({ records: 2, replaced: 1, deleted: 1 });
      expect(await rows(ws, "SELECT LogId FROM steplogs ORDER BY 1")).toEqual([[1n], [4n]]);
      expect(await rows(ws, "SELECT minutes FROM steplogs_Levels ORDER BY 1")).toEqual([[1n], [4n]]);
    });

    it("keeps a record out from the start when its deletion export arrives before the dataset", async () => {
      const { stage, add, ws } = await setUp();
      const type = "TestFlatDataType";
      await add(`${type}_Deleted`, `${type}_Deleted_20230514.ndjson`);
      expect(await stage.run(type)).toMatchObject({ filesRead: 1, records: 0, deletedByExport: 0 });
      expect(await tables(ws)).toEqual([[type, 0]]);
      await add(type, `${type}_20230512.ndjson`);
      expect(await stage.run(type)).toMatchObject({ documents: 1, records: 0, deletedByExport: 1 });
      expect(await tables(ws)).toEqual([[type, 0]]);
    });

    it("identifies records by a numeric field or by several fields, and rebuilds them as sent", async () => {
      const { stage, add, ws } = await setUp();
      const ndjson = (docs: object[]) => `${docs.map((d) => JSON.stringify(d)).join("\n")}\n`;
      const sleep = (id: number, exported: string, minutes: number) => ({
        ParticipantIdentifier: `P${id}`,
        LogId: id,
        export_end_date: exported,
        Levels: [{ level: "deep", minutes }],
      });
      await add("sleeplogs", "a.ndjson", ndjson([sleep(101, "2023-05-01", 30), sleep(102, "2023-05-01", 40)]));
      await add("sleeplogs", "b.ndjson", ndjson([sleep(101, "2023-06-01", 35)]));
      await add("sleeplogs_deleted", "d.ndjson", ndjson([{ LogId: 102, export_end_date: "2023-06-02" }]));
      const day = (date: string, steps: number, exported: string) => ({
        ParticipantIdentifier: "P1",
        Date: date,
        Steps: steps,
        export_end_date: exported,
      });
      const newest = day("2023-05-01", 150, "2023-05-10");
      await add(
        "dailydata",
        "a.ndjson",
        ndjson([day("2023-05-01", 100, "2023-05-02"), day("2023-05-02", 200, "2023-05-03")]),
      );
      await add("dailydata", "b.ndjson", ndjson([newest]));
      await add("dailydata", "c.ndjson", ndjson([{ ...day("2023-05-03", 1, "2023-05-04"), _record: "mine" }]));

      expect(await stage.run("sleeplogs")).toMatchObject({ records: 1, deletedByExport: 1 });
      expect(await rows(ws, "SELECT LogId, typeof(LogId), export_end_date FROM sleeplogs")).toEqual([
        [101n, "BIGINT", "2023-06-01"],
      ]);
      expect(await rows(ws, "SELECT LogId, minutes FROM sleeplogs_Levels")).toEqual([[101n, 35n]]);
      const daily = await stage.run("dailydata");
      expect(daily).toMatchObject({ documents: 3, records: 2 });
      // A document holding the column the composite id goes in is refused with a reason, not mixed up.
      expect(daily.unreadable).toEqual([
        {
          key: "dataset=dailydata/cohort=adults_v1/c.ndjson",
          line: 1,
          message:
            "has a field '_record', the column that holds this dataset's record id (ParticipantIdentifier + Date)",
        },
      ]);
      expect(await rows(ws, "SELECT Date, Steps, _record FROM dailydata ORDER BY Date")).toEqual([
        ["2023-05-01", 150n, '["P1","2023-05-01"]'],
        ["2023-05-02", 200n, '["P1","2023-05-02"]'],
      ]);

      const lake = new Lake(ws);
      const principal = await lake.principal();
      expect((await lake.query(principal, "SELECT LogId FROM sleeplogs")).rows).toEqual([[101n]]);
      expect((await lake.query(principal, "SELECT count(*) FROM dailydata")).rows).toEqual([[2n]]);
      const catalog = await Catalog.open(ws);
      try {
        // Rebuilt value for value (numbers as exact text, read back here), without the added partition field.
        const rebuilt = async (dataset: string, record: string) =>
          JSON.parse(stringify(await catalog.rebuild(dataset, record)) as string);
        expect(await rebuilt("sleeplogs", "101")).toEqual(sleep(101, "2023-06-01", 35));
        expect(await rebuilt("dailydata", '["P1","2023-05-01"]')).toEqual(newest);
      } finally {
        catalog.close();
      }
    });
  });
}

recoverSuite("SQLite", () => undefined);
describe.skipIf(!pgReady)("PostgreSQL", () => {
  recoverSuite("PostgreSQL", () => ({ kind: "postgres", url: POSTGRES_URL, schema: uniqueSchema() }));
});

describe("record rules, the typed way and the JavaScript way", () => {
  const workspaces: TestWorkspace[] = [];
  afterEach(async () => {
    for (const w of workspaces.splice(0)) await w.cleanup();
  });

  it.each([
    ["text", false],
    ["numbers", true],
  ])("give the same tables and counts, newest by %s", async (_, numeric) => {
    // Three exports of sensor-like records, overlapping, with dates out of upload order; a deletion export;
    // newer versions arriving in a later run, some older than what the tables hold.
    const next = prng(11);
    const rules = { key: ["LogId"], newestBy: ["InsertedDate"], deletedBy: "logs_deleted", countBy: "export" };
    const exportFile = (name: string, ids: number[]) =>
      ids
        .map((id) => {
          const day = 10 + Math.floor(next() * 20);
          return JSON.stringify({
            LogId: `L${id}`,
            InsertedDate: numeric ? day : `2023-05-${day}T00:00:00`,
            export: name,
            cohort: "adults_v1",
            value: Math.round(next() * 1000) / 10,
            samples: Array.from({ length: 1 + (id % 3) }, (_, i) => ({ i, v: id * 10 + i })),
          });
        })
        .join("\n");
    const first = [
      ["e1.ndjson", exportFile("e1", [1, 2, 3, 4, 5, 6, 7, 8])],
      ["e2.ndjson", exportFile("e2", [5, 6, 7, 8, 9, 10])],
      ["e3.ndjson", exportFile("e3", [11, 12, 2])],
    ];
    const second = [["e4.ndjson", exportFile("e4", [1, 3, 9, 11, 13, 14])]];
    const deletions = JSON.stringify({ LogId: "L4" });
    const outcomes = [];
    const typedCounts: number[][] = [];
    for (const typed of [true, false]) {
      const w = await makeWorkspace({
        relationalize: { partitionFields: ["cohort"], typed, datasets: { logs: rules } },
      });
      workspaces.push(w);
      const dir = await tempDir();
      const write = async (dataset: string, file: string, text: string, minute: number) => {
        const target = path.join(dir, `dataset=${dataset}`, COHORT, file);
        await mkdir(path.dirname(target), { recursive: true });
        await writeFile(target, `${text}\n`);
        const at = 1_700_000_000 + minute * 60;
        await utimes(target, at, at);
      };
      const stage = new RelationalizeStage(w.ws, new LocalObjectStore(dir));
      const reports = [];
      for (const [i, [file, text]] of first.entries()) await write("logs", file as string, text as string, i);
      await write("logs_deleted", "d.ndjson", deletions, 5);
      reports.push(await stage.run("logs"));
      for (const [i, [file, text]] of second.entries()) await write("logs", file as string, text as string, 10 + i);
      reports.push(await stage.run("logs"));
      typedCounts.push(reports.map((r) => r.typedDocuments));
      outcomes.push({
        reports: reports.map(({ documents, records, replaced, older, deletedByExport, counts }) => ({
          documents,
          records,
          replaced,
          older,
          deletedByExport,
          counts,
        })),
        logs: await rows(w.ws, "SELECT * EXCLUDE (_shape) FROM logs ORDER BY LogId"),
        samples: await rows(w.ws, "SELECT * EXCLUDE (_shape) FROM logs_samples ORDER BY id, index"),
      });
    }
    expect(outcomes[0]).toEqual(outcomes[1]);
    // With text dates, both runs had documents DuckDB took (new records of one document) besides those
    // weighed one by one; a number DuckDB would write otherwise, so then all go the JavaScript way.
    expect((typedCounts[0] ?? []).map((n) => n > 0)).toEqual(numeric ? [false, false] : [true, true]);
    const [run1, run2] = outcomes[0]?.reports ?? [];
    expect(run1?.older).toBeGreaterThan(0);
    expect(run1?.deletedByExport).toBeGreaterThan(0);
    expect(run2?.replaced).toBeGreaterThan(0);
    expect(run2?.older).toBeGreaterThan(0);
    // And the rules held: one row per id, L4 deleted, each the newest InsertedDate seen for it.
    const logs = outcomes[0]?.logs as unknown[][];
    expect(logs.map((r) => r[0])).toEqual([...new Set(logs.map((r) => r[0]))]);
    expect(logs.map((r) => r[0])).not.toContain("L4");
  });
});
