import { readFileSync } from "node:fs";
import { copyFile, mkdir, rm, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { stringify } from "lossless-json";
import { afterEach, describe, expect, it } from "vitest";
import { Intake } from "../src/intake/intake.js";
import { Lake, type QueryOptions } from "../src/lake/lake.js";
import { Catalog } from "../src/parquet/catalog.js";
import { QueryRefusedError } from "../src/parquet/duckdb.js";
import { RelationalizeStage } from "../src/parquet/stage.js";
import { listParquet } from "../src/parquet/writer.js";
import { LocalObjectStore } from "../src/storage/object-store.js";
import { planBatch, writeBatch } from "../src/synth/generate.js";
import {
  FIXTURE_ARCHIVE,
  FIXTURE_RECORD,
  FIXTURES,
  makeWorkspace,
  tableRows as rows,
  type TestWorkspace,
  tempDir,
} from "./support/workspace.js";

let t: TestWorkspace | undefined;
afterEach(async () => {
  await t?.cleanup();
  t = undefined;
});

async function lakeRows(ws: TestWorkspace["ws"], sql: string, options: QueryOptions = {}): Promise<unknown[][]> {
  const lake = new Lake(ws);
  return (await lake.query(await lake.principal(), sql, options)).rows;
}

describe("relationalize to Parquet", () => {
  it("turns the glue fixture datasets into the reference's tables, read straight from their folder", async () => {
    t = await makeWorkspace();
    const stage = new RelationalizeStage(t.ws, new LocalObjectStore(path.join(FIXTURES, "glue-json-datasets")));
    expect(await stage.datasets()).toEqual(["pytest_flat_table", "pytest_nested_table"]);
    for (const dataset of await stage.datasets()) await stage.run(dataset);
    expect(
      await rows(t.ws, "SELECT recordid, assessmentid, year, month, day FROM pytest_flat_table ORDER BY recordid"),
    ).toEqual([
      ["one", "exampleassessment", "2022", "09", "01"],
      ["three", "exampleassessment", "2022", "09", "02"],
      ["two", "exampleassessment", "2022", "09", "01"],
    ]);
    expect(
      await rows(
        t.ws,
        `SELECT c.filename, c.timestamp, c.assessmentid, c.year, c.month, c.day, c.recordid, p.objectfield_filename
         FROM pytest_nested_table_arrayofobjectsfield c JOIN pytest_nested_table p ON c.id = p.arrayofobjectsfield ORDER BY c.recordid`,
      ),
    ).toEqual([
      ["one", "one", "exampleassessment", "2022", "09", "01", "one", "one"],
      ["three", "three", "exampleassessment", "2022", "09", "02", "three", "three"],
      ["two", "two", "exampleassessment", "2022", "09", "01", "two", "two"],
    ]);
    // Partitioned like the reference: assessmentid=/year=/month=/day= folders.
    const files = await listParquet(path.join(stage.parquetRoot, "pytest_flat_table"));
    expect(files.map((f) => path.dirname(f)).sort()).toEqual([
      "assessmentid=exampleassessment/year=2022/month=09/day=01",
      "assessmentid=exampleassessment/year=2022/month=09/day=02",
    ]);
  });

  it("runs incrementally: a rerun with nothing new writes nothing, new files add only their records", async () => {
    t = await makeWorkspace();
    const dir = await tempDir();
    await writeBatch(dir, planBatch(20, { valid: 1 }, 1), { seed: 1 });
    await new Intake(t.ws).ingest([dir]);
    const stage = new RelationalizeStage(t.ws);
    const heard: Array<[number, number]> = [];
    const first = await stage.run("MotionRecord_v1", { onFiles: (done, total) => heard.push([done, total]) });
    expect(first).toMatchObject({ filesRead: 20, records: 20, replaced: 0 });
    expect(heard.at(-1)).toEqual([20, 20]);
    expect(first.tables).toEqual([expect.objectContaining({ table: "MotionRecord_v1", rows: 80 })]);
    const again = await stage.run("MotionRecord_v1");
    expect(again.runId).toBeNull();

    const more = await tempDir();
    await writeBatch(more, planBatch(5, { valid: 1 }, 2), { seed: 2 });
    await new Intake(t.ws).ingest([more]);
    const second = await stage.run("MotionRecord_v1");
    expect(second).toMatchObject({ filesRead: 5, records: 5, replaced: 0 });
    expect(await rows(t.ws, "SELECT count(*), count(DISTINCT recordid) FROM MotionRecord_v1")).toEqual([[100n, 25n]]);
  });

  it("keeps one version of a record per table: a newer upload replaces the old rows, in parent and child tables", async () => {
    t = await makeWorkspace();
    await new Intake(t.ws).ingest([FIXTURE_ARCHIVE]);
    const stage = new RelationalizeStage(t.ws);
    await stage.run("ArchiveMetadata_v1");
    const original = await lakeRows(t.ws, "SELECT taskRunUUID FROM ArchiveMetadata_v1");
    // The same record id arrives again with other content (a later upload).
    const dir = await tempDir();
    const [upload] = await writeBatch(dir, ["valid"], { seed: 9 });
    const meta = JSON.parse(readFileSync(`${FIXTURE_ARCHIVE}.metadata.json`, "utf8"));
    await writeFile(
      path.join(dir, `${upload!.fileName}.metadata.json`),
      JSON.stringify({ ...meta, recordid: FIXTURE_RECORD }),
    );
    await new Intake(t.ws).ingest([dir]);
    const second = await stage.run("ArchiveMetadata_v1");
    expect(second).toMatchObject({ records: 1, replaced: 1 });
    expect(
      await rows(
        t.ws,
        `SELECT count(*), any_value(taskRunUUID) FROM ArchiveMetadata_v1 WHERE recordid = '${FIXTURE_RECORD}'`,
      ),
    ).toEqual([[1n, upload!.recordId]]);
    expect(await rows(t.ws, "SELECT count(*) FROM ArchiveMetadata_v1_files")).toEqual([[2n]]);
    // Each run is one delta update of the lake's dataset of the same name; the newest update per record wins.
    expect(
      await lakeRows(
        t.ws,
        `SELECT count(*), any_value(taskRunUUID) FROM ArchiveMetadata_v1 WHERE recordid = '${FIXTURE_RECORD}'`,
      ),
    ).toEqual([[1n, upload!.recordId]]);
    expect(await lakeRows(t.ws, "SELECT count(*) FROM ArchiveMetadata_v1_files")).toEqual([[2n]]);
    // The first update is immutable although the stage has since rewritten the files it came from.
    expect(
      await lakeRows(t.ws, "SELECT taskRunUUID FROM ArchiveMetadata_v1", { asOf: { ArchiveMetadata_v1: "u000001" } }),
    ).toEqual(original);
    const updates = await new Lake(t.ws).updates("ArchiveMetadata_v1", await new Lake(t.ws).principal());
    expect(updates.map((u) => [u.update, u.kind, u.manifest?.run])).toEqual([
      ["u000001", "delta", expect.any(String)],
      ["u000002", "delta", second.runId],
    ]);
    expect((await new Lake(t.ws).dataset("ArchiveMetadata_v1", await new Lake(t.ws).principal())).tier).toBe(
      "restricted",
    );
  });

  it("removes a record's rows when its JSON file is gone", async () => {
    t = await makeWorkspace();
    const dir = await tempDir();
    const uploads = await writeBatch(dir, planBatch(3, { valid: 1 }, 4), { seed: 4 });
    await new Intake(t.ws).ingest([dir]);
    const stage = new RelationalizeStage(t.ws);
    await stage.run("WeatherResult_v1");
    const gone = (await t.ws.json.list("dataset=WeatherResult_v1/")).find((k) => k.includes(uploads[0]!.recordId))!;
    await t.ws.json.delete(gone);
    expect(await stage.run("WeatherResult_v1")).toMatchObject({ deleted: 1, records: 0 });
    expect(await rows(t.ws, "SELECT count(*) FROM WeatherResult_v1")).toEqual([[2n]]);
    expect(await lakeRows(t.ws, "SELECT count(*) FROM WeatherResult_v1")).toEqual([[2n]]);
    expect(
      await lakeRows(t.ws, `SELECT count(*) FROM WeatherResult_v1 WHERE recordid = '${uploads[0]!.recordId}'`),
    ).toEqual([[0n]]);
  });

  it("cleans up after a run that died before committing, and then writes every record exactly once", async () => {
    t = await makeWorkspace();
    await new Intake(t.ws).ingest([FIXTURE_ARCHIVE]);
    const stage = new RelationalizeStage(t.ws);
    // What a killed run leaves: a run marked running, and published files under its id.
    await t.ws.state.relationalize.startRun("rdead", "MotionRecord_v1");
    const orphan = path.join(stage.parquetRoot, "MotionRecord_v1", "assessmentid=spelling", "rdead_0.parquet");
    await mkdir(path.dirname(orphan), { recursive: true });
    await writeFile(orphan, "not really parquet");
    const report = await stage.run("MotionRecord_v1");
    expect(report.records).toBe(1);
    expect((await listParquet(path.join(stage.parquetRoot, "MotionRecord_v1"))).some((f) => f.includes("rdead"))).toBe(
      false,
    );
    expect(await rows(t.ws, "SELECT count(*) FROM MotionRecord_v1")).toEqual([[4n]]);
    expect((await t.ws.state.relationalize.runs("MotionRecord_v1")).map((r) => r.status).sort()).toEqual([
      "abandoned",
      "committed",
    ]);

    // A run killed while publishing to the lake (here: its first lake commit fails) leaves an update there
    // being written; the next run abandons it at once, not once its lease runs out (lake.abandonAfterSeconds), so it
    // does not hold back the lake's compaction. Another writer's update is left alone.
    const [json] = await t.ws.json.list("dataset=MotionRecord_v1/");
    const later = new Date(Date.now() + 60_000);
    await utimes(path.join(t.root, t.ws.config.paths.json, json as string), later, later);
    const other = await t.ws.state.lake.beginUpdate("MotionRecord_v1", "delta", "operator", {
      aliveUntil: new Date(Date.now() + 3_600_000).toISOString(),
      run: "elsewhere",
    });
    // The process "dies" at the commit: neither the commit nor the clean-up after a failure happens.
    const lakeState = t.ws.state.lake;
    const [commit, abandon] = [lakeState.commitUpdate, lakeState.abandonUpdate];
    lakeState.commitUpdate = lakeState.abandonUpdate = async () => {
      throw new Error("killed");
    };
    await expect(stage.run("MotionRecord_v1")).rejects.toThrow("killed");
    [lakeState.commitUpdate, lakeState.abandonUpdate] = [commit, abandon];
    const lake = new Lake(t.ws);
    const operator = await lake.principal();
    const writing = (await lake.updates("MotionRecord_v1", operator)).filter((u) => u.status === "writing");
    expect(writing.map((u) => u.update)).toHaveLength(2);
    await stage.run("MotionRecord_v1");
    const statuses = new Map((await lake.updates("MotionRecord_v1", operator)).map((u) => [u.update, u.status]));
    expect(writing.map((u) => statuses.get(u.update))).toEqual(
      writing.map((u) => (u.update === other ? "writing" : "abandoned")),
    );
    expect(await lakeRows(t.ws, "SELECT count(*) FROM MotionRecord_v1")).toEqual([[4n]]);
  });

  it("shows a reader each run whole or not at all: not before it commits, and without the files it replaced after", async () => {
    t = await makeWorkspace();
    const folder = path.join(await tempDir(), "json");
    const day = path.join(folder, "dataset=Visits", "assessmentid=a", "year=2022", "month=2", "day=1");
    await mkdir(day, { recursive: true });
    const write = (id: string, v: number) =>
      writeFile(
        path.join(day, `${id}.ndjson`),
        `${JSON.stringify({ recordid: id, assessmentid: "a", year: 2022, month: 2, day: 1, v, items: [{ k: v }, { k: v + 1 }] })}\n`,
      );
    for (const id of ["r1", "r2", "r3", "r4"]) await write(id, 1);
    const stage = new RelationalizeStage(t.ws, new LocalObjectStore(folder));
    await stage.run("Visits");
    const tables = async (read: typeof rows) => [
      await read(t!.ws, "SELECT recordid, v FROM Visits ORDER BY recordid"),
      await read(t!.ws, "SELECT recordid, k FROM Visits_items ORDER BY recordid, k"),
    ];
    const before = await tables(rows);
    const files = async () => listParquet(path.join(stage.parquetRoot, "Visits"));
    const firstFiles = await files();

    // Newer uploads of two records and a new one; the run dies at its commit, its files already in place.
    for (const id of ["r1", "r2"]) await write(id, 2);
    await write("r5", 2);
    const later = new Date(Date.now() + 60_000);
    for (const id of ["r1", "r2", "r5"]) await utimes(path.join(day, `${id}.ndjson`), later, later);
    const state = t.ws.state.relationalize;
    const commitRun = state.commitRun;
    state.commitRun = async () => {
      throw new Error("killed");
    };
    await expect(stage.run("Visits")).rejects.toThrow("killed");
    expect((await files()).length).toBeGreaterThan(firstFiles.length);
    expect(await files()).toEqual(expect.arrayContaining(firstFiles));
    expect(await tables(rows)).toEqual(before);

    // The next run commits, then dies before deleting the files whose rows it took over.
    const mergedFiles = state.mergedFiles;
    state.commitRun = async (commit) => {
      await commitRun.call(state, commit);
      state.mergedFiles = async () => {
        throw new Error("killed after the commit");
      };
    };
    await expect(stage.run("Visits")).rejects.toThrow("killed after the commit");
    [state.commitRun, state.mergedFiles] = [commitRun, mergedFiles];
    expect(await files()).toEqual(expect.arrayContaining(firstFiles));
    const after = [
      [
        ["r1", 2n],
        ["r2", 2n],
        ["r3", 1n],
        ["r4", 1n],
        ["r5", 2n],
      ],
      [
        ["r1", 2n],
        ["r1", 3n],
        ["r2", 2n],
        ["r2", 3n],
        ["r3", 1n],
        ["r3", 2n],
        ["r4", 1n],
        ["r4", 2n],
        ["r5", 2n],
        ["r5", 3n],
      ],
    ];
    expect(await tables(rows)).toEqual(after);
    expect(await tables(lakeRows)).toEqual(after);

    // The run after deletes them; nothing changes for a reader.
    await stage.run("Visits");
    expect((await files()).some((f) => firstFiles.includes(f))).toBe(false);
    expect(await tables(rows)).toEqual(after);
  });

  it("rebuilds the original documents from Parquet, value for value", async () => {
    t = await makeWorkspace();
    await new Intake(t.ws).ingest([FIXTURE_ARCHIVE]);
    const stage = new RelationalizeStage(t.ws);
    for (const dataset of await stage.datasets()) await stage.run(dataset);
    const catalog = await Catalog.open(t.ws);
    try {
      for (const dataset of ["MotionRecord_v1", "WeatherResult_v1", "ArchiveMetadata_v1", "AudioLevelRecord_v1"]) {
        const key = (await t.ws.json.list(`dataset=${dataset}/`))[0]!;
        const original = JSON.parse((await t.ws.json.get(key)).toString());
        const rebuilt = JSON.parse(stringify(await catalog.rebuild(dataset, FIXTURE_RECORD)) as string);
        expect(rebuilt).toEqual(original);
      }
      const tables = await catalog.tables();
      expect(tables.find((x) => x.table === "ArchiveMetadata_v1_files")).toMatchObject({
        rows: 2,
        parent: "ArchiveMetadata_v1",
      });
    } finally {
      catalog.close();
    }
  });

  it("runs only queries: anything else is refused before it runs", async () => {
    t = await makeWorkspace();
    await new Intake(t.ws).ingest([FIXTURE_ARCHIVE]);
    await new RelationalizeStage(t.ws).run("MotionRecord_v1");
    const catalog = await Catalog.open(t.ws);
    try {
      for (const sql of [
        "DROP VIEW MotionRecord_v1",
        "CREATE TABLE x AS SELECT 1",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "SELECT 1; DROP VIEW MotionRecord_v1",
      ]) {
        // Refused by the statement check, or (COPY to a file) already by DuckDB's file access rule while planning.
        await expect(catalog.query(sql)).rejects.toThrow(
          /only queries \(SELECT\) are allowed|file system operations are disabled/,
        );
      }
      await expect(catalog.query("DROP VIEW MotionRecord_v1")).rejects.toThrow(QueryRefusedError);
      // Queries reach the tables' files and nothing else on the machine.
      for (const sql of ["SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_text('/etc/hostname')"]) {
        await expect(catalog.query(sql)).rejects.toThrow(/file system operations are disabled/);
      }
      await expect(catalog.query("SELECT current_setting('enable_external_access') AS v")).resolves.toEqual({
        columns: ["v"],
        rows: [[false]],
      });
      // A write DuckDB itself cannot even plan fails too, and nothing before it ran.
      await expect(catalog.query("SELECT 1; DELETE FROM MotionRecord_v1")).rejects.toThrow(
        /Can only delete from base table/,
      );
      expect((await catalog.query("SELECT count(*) AS n FROM MotionRecord_v1")).rows).toEqual([[4n]]);
    } finally {
      catalog.close();
    }
  });
});

describe("relationalize in bounded batches", () => {
  it("writes every row of a run that spans many batches, and a record met twice in one run once", async () => {
    t = await makeWorkspace({
      relationalize: {
        recordField: "recordid",
        partitionFields: ["assessmentid", "year", "month", "day"],
        batchRows: 10,
      },
    });
    const folder = path.join(await tempDir(), "json");
    const day = path.join(folder, "dataset=Samples", "assessmentid=a", "year=2022", "month=2", "day=1");
    await mkdir(day, { recursive: true });
    const doc = (id: string, n: number, tag: string) =>
      JSON.stringify({ recordid: id, tag, samples: Array.from({ length: n }, (_, i) => ({ i })) });
    // 30 records of 4 samples: batches of about 10 rows, so a run writes many batches into the same partition.
    await writeFile(
      path.join(day, "part1.ndjson"),
      Array.from({ length: 30 }, (_, i) => doc(`r${i}`, 4, "first")).join("\n"),
    );
    // A later file repeats r3 (written in an early batch) and r29 (still pending): the later copy wins.
    const later = path.join(day, "part2.ndjson");
    await writeFile(later, [doc("r3", 2, "second"), doc("r29", 1, "second")].join("\n"));
    await utimes(later, new Date(Date.now() + 5000), new Date(Date.now() + 5000));

    const stage = new RelationalizeStage(t.ws, new LocalObjectStore(folder));
    const report = await stage.run("Samples");
    expect(report).toMatchObject({ documents: 32, records: 30 });
    expect(await rows(t.ws, "SELECT count(*), count(DISTINCT recordid) FROM Samples")).toEqual([[30n, 30n]]);
    expect(await rows(t.ws, "SELECT recordid, tag FROM Samples WHERE tag = 'second' ORDER BY recordid")).toEqual([
      ["r29", "second"],
      ["r3", "second"],
    ]);
    expect(await rows(t.ws, "SELECT count(*) FROM Samples_samples")).toEqual([[28n * 4n + 2n + 1n]]);
    expect(await rows(t.ws, "SELECT count(*) FROM Samples_samples WHERE recordid = 'r3'")).toEqual([[2n]]);
    // Many files were written (one per batch and partition), none lost to another's name.
    expect((await listParquet(path.join(stage.parquetRoot, "Samples_samples"))).length).toBeGreaterThan(5);
  });

  it("takes a backlog larger than filesPerRun in several committed runs, the same tables as one run, and resumes a cut-off catch-up", async () => {
    const folder = path.join(await tempDir(), "json");
    const doc = (id: string, n: number, tag: string) =>
      JSON.stringify({ recordid: id, tag, samples: Array.from({ length: n }, (_, i) => ({ i })) });
    // Ten one-record files over two days, uploaded one second apart; r3 comes again in the ninth, in a later run.
    const ids = ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r3", "r9"];
    for (const [i, id] of ids.entries()) {
      const day = path.join(folder, "dataset=Samples", "assessmentid=a", "year=2022", "month=2", `day=${1 + (i % 2)}`);
      await mkdir(day, { recursive: true });
      const file = path.join(day, `f${i}.ndjson`);
      await writeFile(file, `${doc(id, 1 + (i % 3), i === 8 ? "second" : "first")}\n`);
      await utimes(file, new Date(1_700_000_000_000 + i * 1000), new Date(1_700_000_000_000 + i * 1000));
    }
    const config = (filesPerRun: number) => ({
      relationalize: {
        recordField: "recordid",
        partitionFields: ["assessmentid", "year", "month", "day"],
        filesPerRun,
      },
    });
    const tables = async (ws: TestWorkspace["ws"]) => [
      await rows(ws, "SELECT recordid, tag, assessmentid, year, month, day FROM Samples ORDER BY recordid"),
      await rows(ws, "SELECT recordid, i, index FROM Samples_samples ORDER BY recordid, index"),
      await lakeRows(ws, "SELECT recordid, tag FROM Samples ORDER BY recordid"),
    ];

    const whole = await makeWorkspace(config(1000));
    const backlog = await makeWorkspace(config(3));
    const cut = await makeWorkspace(config(3));
    try {
      const once = await new RelationalizeStage(whole.ws, new LocalObjectStore(folder)).run("Samples");
      expect(once).toMatchObject({ runs: 1, filesRead: 10, records: 9 });
      const heard: Array<[number, number]> = [];
      const report = await new RelationalizeStage(backlog.ws, new LocalObjectStore(folder)).run("Samples", {
        onFiles: (done, total) => heard.push([done, total]),
      });
      // Runs of 3, 3, 3 and 1 files; r3's second upload, in the third run, replaces the first run's rows.
      expect(report).toMatchObject({ runs: 4, filesRead: 10, records: 10, replaced: 1, runId: expect.any(String) });
      expect(heard.map(([done]) => done)).toEqual([...heard.map(([done]) => done)].sort((a, b) => a - b));
      expect(heard.at(-1)).toEqual([10, 10]);
      expect((await backlog.ws.state.relationalize.runs("Samples")).map((r) => r.status)).toEqual(
        Array(4).fill("committed"),
      );
      const expected = await tables(whole.ws);
      expect(expected[0]).toHaveLength(9);
      expect(expected[0]?.find((r) => r[0] === "r3")?.[1]).toBe("second");
      expect(await tables(backlog.ws)).toEqual(expected);
      expect(report.tables.find((t) => t.table === "Samples_samples")?.rows).toBe(
        ids.reduce((n, _, i) => n + 1 + (i % 3), 0),
      );

      // A catch-up cut off in its second run keeps its first, and a rerun does the rest, without duplicates.
      const failing = new LocalObjectStore(folder);
      const get = failing.get.bind(failing);
      failing.get = async (key: string) => {
        if (key.endsWith("/f4.ndjson")) throw new Error("EIO: i/o error, read");
        return get(key);
      };
      await expect(new RelationalizeStage(cut.ws, failing).run("Samples")).rejects.toThrow(/EIO/);
      expect((await cut.ws.state.relationalize.runs("Samples")).map((r) => r.status)).toEqual(["committed", "running"]);
      const rest = await new RelationalizeStage(cut.ws, new LocalObjectStore(folder)).run("Samples");
      expect(rest).toMatchObject({ runs: 3, filesRead: 7 });
      expect(await tables(cut.ws)).toEqual(expected);
    } finally {
      for (const w of [whole, backlog, cut]) await w.cleanup();
    }
  });
});

describe("compaction of the Parquet tables", () => {
  it("merges a partition's files once there are compactAfterFiles of them, with the same tables, rebuilds and lake as never merging", async () => {
    const folder = path.join(await tempDir(), "json");
    const config = (compactAfterFiles: number, compactBelowBytes = 1 << 20) => ({
      relationalize: {
        recordField: "recordid",
        partitionFields: ["assessmentid", "year", "month", "day"],
        compactAfterFiles,
        compactBelowBytes,
      },
    });
    const merging = await makeWorkspace(config(3));
    const never = await makeWorkspace(config(0));
    // Files of a few hundred bytes are all "large" here: none is merged.
    const large = await makeWorkspace(config(3, 100));
    const tables = async (ws: TestWorkspace["ws"]) => [
      await rows(ws, "SELECT recordid, v, day FROM Samples ORDER BY recordid"),
      await rows(ws, "SELECT recordid, i, index FROM Samples_samples ORDER BY recordid, index"),
      await lakeRows(ws, "SELECT recordid, v FROM Samples ORDER BY recordid"),
    ];
    const fileCount = async (ws: TestWorkspace["ws"], table: string) =>
      (await listParquet(path.join(ws.root, ws.config.paths.parquet, table))).length;
    try {
      let mtime = 1_700_000_000_000;
      const put = async (id: string, day: number, v: number | string, samples: number) => {
        const dir = path.join(folder, "dataset=Samples", "assessmentid=a", "year=2022", "month=2", `day=${day}`);
        await mkdir(dir, { recursive: true });
        const file = path.join(dir, `${id}.ndjson`);
        const text = JSON.stringify({ recordid: id, v, samples: Array.from({ length: samples }, (_, i) => ({ i })) });
        await writeFile(file, `${text}\n`);
        mtime += 1000;
        await utimes(file, new Date(mtime), new Date(mtime));
      };
      const runBoth = async () => {
        const reports = [];
        for (const w of [merging, never, large]) {
          reports.push(await new RelationalizeStage(w.ws, new LocalObjectStore(folder)).run("Samples"));
        }
        expect(reports[2]?.mergedFiles).toBe(0);
        return reports[0];
      };
      let merged = 0;
      // Twelve runs over two days: new records, records uploaded again (replaced), a file removed (deleted),
      // and from the seventh run on a text `v`, which widens the column: files before and after differ in type.
      for (let run = 0; run < 12; run++) {
        await put(`r${run}`, 1 + (run % 2), run < 6 ? run : `t${run}`, 1 + (run % 3));
        await put(`s${run}`, 1, run, 2);
        if (run >= 3) await put(`r${run - 3}`, 1 + ((run - 3) % 2), run < 6 ? run * 10 : `again${run}`, 2);
        if (run === 8)
          await rm(
            path.join(folder, "dataset=Samples", "assessmentid=a", "year=2022", "month=2", "day=1", "s2.ndjson"),
          );
        merged += (await runBoth())?.mergedFiles ?? 0;
        expect(await tables(merging.ws)).toEqual(await tables(never.ws));
      }
      expect(merged).toBeGreaterThan(10);
      const [rootRows] = await tables(merging.ws);
      expect(rootRows).toHaveLength(23);
      expect(await fileCount(merging.ws, "Samples")).toBeLessThan((await fileCount(never.ws, "Samples")) / 2);
      expect(await fileCount(large.ws, "Samples")).toBe(await fileCount(never.ws, "Samples"));
      expect(await tables(large.ws)).toEqual(await tables(never.ws));
      // Files of different column types were kept apart, so each record reads back as it was sent.
      for (const record of ["r0", "r5", "r11", "s0", "s7"]) {
        const rebuilt = [];
        for (const w of [merging, never]) {
          const catalog = await Catalog.open(w.ws);
          rebuilt.push(await catalog.rebuild("Samples", record));
          catalog.close();
        }
        expect(rebuilt[0]).toEqual(rebuilt[1]);
        expect(rebuilt[0]).toMatchObject({ recordid: record });
      }
      expect(await merging.ws.state.relationalize.mergedFiles("Samples")).toEqual([]);

      // Merging every partition on demand, in a workspace that never merged: one file per partition and type
      // group is left, the tables are the same, and later replacements still find their records.
      const before = await fileCount(never.ws, "Samples");
      const neverStage = new RelationalizeStage(never.ws, new LocalObjectStore(folder));
      const heard: Array<[number, number]> = [];
      const compacted = await neverStage.compact("Samples", {
        onPartitions: (done, total) => heard.push([done, total]),
      });
      // Two day partitions of each of the two tables, counted as they go.
      expect(heard).toEqual([0, 1, 2, 3, 4].map((done) => [done, 4]));
      expect(compacted.mergedFiles).toBeGreaterThan(before / 2);
      expect(await fileCount(never.ws, "Samples")).toBeLessThan(before / 2);
      // Nothing is left to merge: what remains are files of different columns or types.
      expect((await neverStage.compact("Samples")).mergedFiles).toBe(0);
      expect(await tables(never.ws)).toEqual(await tables(merging.ws));
      await put("r1", 2, "later", 3);
      await put("s5", 1, 500, 1);
      merged += (await runBoth())?.mergedFiles ?? 0;
      expect(await tables(never.ws)).toEqual(await tables(merging.ws));
      expect(await rows(never.ws, "SELECT v FROM Samples WHERE recordid IN ('r1', 's5') ORDER BY recordid")).toEqual([
        ["later"],
        ["500"],
      ]);

      // A run that committed a merge and died before deleting the merged files: the next run deletes them.
      const table = path.join(merging.ws.root, merging.ws.config.paths.parquet, "Samples");
      const [kept] = await listParquet(table);
      const files = await fileCount(merging.ws, "Samples");
      const leftover = path.join(path.dirname(kept as string), "rdied_b0_0.parquet");
      await copyFile(path.join(table, kept as string), path.join(table, leftover));
      const state = merging.ws.state.relationalize;
      await state.startRun("rfake", "Samples");
      await state.commitRun({
        runId: "rfake",
        dataset: "Samples",
        schema: (await state.schema("Samples"))!,
        bookmarks: new Map(),
        removedKeys: [],
        records: new Map(),
        removedRecords: [],
        deletedRecords: [],
        removedDeletionKeys: [],
        compacted: [{ absorbedRunId: "rdied", file: path.join("Samples", leftover) }],
        summary: {},
      });
      // A reader does not see its rows twice meanwhile: the state says the file is merged away.
      expect(await tables(merging.ws)).toEqual(await tables(never.ws));
      expect(await fileCount(merging.ws, "Samples")).toBe(files + 1);
      expect(await new RelationalizeStage(merging.ws, new LocalObjectStore(folder)).run("Samples")).toMatchObject({
        runId: null,
      });
      expect(await fileCount(merging.ws, "Samples")).toBe(files);
      expect(await tables(merging.ws)).toEqual(await tables(never.ws));
      expect(await state.mergedFiles("Samples")).toEqual([]);
    } finally {
      for (const w of [merging, never, large]) await w.cleanup();
    }
  });
});
