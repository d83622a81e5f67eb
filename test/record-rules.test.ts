import { copyFile, mkdir, readFile, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { parse as parseLossless } from "lossless-json";
import { afterEach, describe, expect, it } from "vitest";
import { CONFIG_FILE, type Config, ConfigError, datasetRules } from "../src/config/config.js";
import { Lake } from "../src/lake/lake.js";
import { RelationalizeStage } from "../src/parquet/stage.js";
import { withDeletionTargets } from "../src/pipeline/pipeline.js";
import { compareOrder, orderOf, recordKeyOf } from "../src/relationalize/records.js";
import { LocalObjectStore } from "../src/storage/object-store.js";
import {
  dropSchema,
  FIXTURES,
  makeWorkspace,
  POSTGRES_URL,
  postgresAvailable,
  tableRows as rows,
  type TestWorkspace,
  tempDir,
  uniqueSchema,
} from "./support/workspace.js";

const pgReady = await postgresAvailable();
const RECOVER = path.join(FIXTURES, "recover-ndjson");
const COHORT = "cohort=adults_v1";

/** recover's rules for its test data types: the index is GlobalKey, the newest InsertedDate, then export_end_date, wins. */
const RECOVER_RULES = {
  partitionFields: ["cohort"],
  datasets: Object.fromEntries(
    ["TestFlatDataType", "TestFlatInsertedDateDataType", "TestNestedDataType"].map((type) => [
      type,
      {
        recordField: "GlobalKey",
        newestBy: ["InsertedDate", "export_end_date"],
        ...(type === "TestFlatDataType" ? { deletedBy: "TestFlatDataType_Deleted" } : {}),
      },
    ]),
  ),
};

describe("record rules (pure)", () => {
  it("reads a record's id from the root or a top-level array's first element, strings and long numbers only", () => {
    expect(recordKeyOf({ k: "a" }, "k")).toBe("a");
    expect(recordKeyOf([{ k: "b" }, { k: "c" }], "k")).toBe("b");
    expect(recordKeyOf(parseLossless('{"k":12345678901234567890}'), "k")).toBe("12345678901234567890");
    expect(recordKeyOf({ k: 3 }, "k")).toBeUndefined();
    expect(recordKeyOf({ k: true }, "k")).toBeUndefined();
    expect(recordKeyOf({ other: "a" }, "k")).toBeUndefined();
    expect(recordKeyOf("text", "k")).toBeUndefined();
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
      typed: true,
      datasets: {
        a: { recordField: "GlobalKey", newestBy: ["x"], deletedBy: "a_Deleted" },
        self: { newestBy: [], deletedBy: "self" },
      },
    } satisfies Config["relationalize"];
    expect(datasetRules(settings, "a")).toEqual({ recordField: "GlobalKey", newestBy: ["x"], deletedBy: "a_Deleted" });
    expect(datasetRules(settings, "b")).toEqual({ recordField: "recordid", newestBy: [], deletedBy: undefined });
    expect(() => datasetRules(settings, "self")).toThrow(ConfigError);
    // New data in a deletion export makes its target dataset due too.
    expect(withDeletionTargets(settings, ["a_Deleted"])).toEqual(["a_Deleted", "a"]);
    expect(withDeletionTargets(settings, ["b"])).toEqual(["b"]);
  });
});

function recoverSuite(name: string, state: () => Config["state"] | undefined) {
  describe(`recover's rules on ${name}`, () => {
    let t: TestWorkspace | undefined;
    let stateConfig: Config["state"] | undefined;
    afterEach(async () => {
      await t?.cleanup();
      if (stateConfig?.kind === "postgres") await dropSchema(stateConfig.schema);
      t = undefined;
    });

    /** A JSON store laid out as intake would (dataset=/cohort=/file), and a way to add an export to it. */
    async function setUp() {
      stateConfig = state();
      t = await makeWorkspace({ ...(stateConfig ? { state: stateConfig } : {}), relationalize: RECOVER_RULES });
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
      return { stage, add, ws: t.ws, dir };
    }

    it("keeps the newest InsertedDate, then export_end_date, per index, and children follow their record", async () => {
      const { stage, add, ws } = await setUp();
      for (const type of ["TestFlatInsertedDateDataType", "TestNestedDataType"]) {
        // The newer export is uploaded first: the export's own dates decide, not the upload order.
        await add(type, `${type}_20230612.ndjson`);
        await add(type, `${type}_20230512.ndjson`);
        const report = await stage.run(type);
        expect(report).toMatchObject({ documents: 2, records: 1, older: 1, typedDocuments: 0 });
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
      const { stage, add, ws, dir } = await setUp();
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
      expect(removal).toMatchObject({ filesRead: 1, documents: 0, deletedByExport: 1 });
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
      expect(await stage.run(type)).toMatchObject({ documents: 2, records: 1, deletedByExport: 1 });
      expect(await rows(ws, `SELECT GlobalKey FROM ${type}`)).toEqual([["987"]]);

      // The deletion dataset is a dataset of its own too.
      await stage.run(`${type}_Deleted`);
      expect(await rows(ws, `SELECT GlobalKey FROM ${type}_Deleted`)).toEqual([["123456789"]]);

      // A dataset's record field cannot change under its tables.
      const configFile = path.join(ws.root, CONFIG_FILE);
      const config = JSON.parse(await readFile(configFile, "utf8"));
      config.relationalize.datasets[type].recordField = "cohort";
      await writeFile(configFile, JSON.stringify(config));
      const reopened = await (t as TestWorkspace).reopen();
      await add(type, `${type}_20230812.ndjson`, again);
      await expect(new RelationalizeStage(reopened, new LocalObjectStore(dir)).run(type)).rejects.toThrow(
        /identify records by 'GlobalKey', the configuration says 'cohort'/,
      );
    });
  });
}

recoverSuite("SQLite", () => undefined);
describe.skipIf(!pgReady)("PostgreSQL", () => {
  recoverSuite("PostgreSQL", () => ({ kind: "postgres", url: POSTGRES_URL, schema: uniqueSchema() }));
});
