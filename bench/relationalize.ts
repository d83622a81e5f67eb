/**
 * Relationalize benchmark (not a test). Generates documents of two shapes (sensor recordings with arrays of
 * samples; survey-like documents with nested answers) in the two layouts the stage sees (large NDJSON files;
 * one small file per record, as intake writes), then times in one process:
 *   (a) studylake relationalizing them to Parquet (incremental run, all tables, lossless keys, type report)
 *   (b) DuckDB alone: read_json + unnest + COPY … TO Parquet (root and child tables), taking the partition
 *       fields from the documents as studylake does (not from the folder names: hive_partitioning = false)
 *   (b') the same, writing what (a) writes: tables partitioned by assessmentid/year/month/day, child rows
 *        carrying the record id and the partition fields
 *   (c) reading the files and JSON.parse alone over the same bytes
 * and prints MB/s, rows/s, the ratios a/b and a/b', b'/b (the a/b studylake would reach doing only what DuckDB
 * does in (b')), and peak RSS, at two sizes.
 *
 *   npm run bench:relationalize -- [scale] [groupMB]     (default 1, and relationalize.groupBytes' default)
 */
import { readFileSync } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { CONFIG_FILE } from "../src/config/config.js";
import { ident, literal, openDuckDB } from "../src/parquet/duckdb.js";
import { RelationalizeStage } from "../src/parquet/stage.js";
import { LocalObjectStore } from "../src/storage/object-store.js";
import { prng } from "../src/synth/generate.js";
import { initWorkspace } from "../src/workspace/init.js";
import { openWorkspace } from "../src/workspace/workspace.js";

const scale = Number(process.argv[2] ?? 1);
const groupBytes = process.argv[3] === undefined ? undefined : Number(process.argv[3]) * 1024 * 1024;
let peakRss = 0;
const sampler = setInterval(() => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
}, 10);

type Shape = "sensor" | "survey";
type Layout = "ndjson" | "per-record";

function document(shape: Shape, i: number, next: () => number): object {
  const base = { recordid: `rec${i}`, assessmentid: "bench", year: 2022, month: 2, day: 1 + (i % 28) };
  if (shape === "sensor") {
    const samples = Array.from({ length: 1000 }, (_, s) => ({
      timestamp: s * 0.01,
      sensorType: s % 2 ? "gyro" : "accelerometer",
      x: next() - 0.5,
      y: next() - 0.5,
      z: next() - 0.5,
    }));
    return { ...base, stepPath: "MTB Spelling Form 1", timestampDate: "2022-04-08T13:02:48.724-07:00", samples };
  }
  return {
    ...base,
    startDate: "2022-02-15T12:44:13.865-08:00",
    answers: { mood: Math.floor(next() * 5), sleep: { hours: next() * 10, quality: "ok" }, note: "fine" },
    choices: ["a", "b", "c"].filter(() => next() > 0.3),
    steps: Array.from({ length: 5 }, (_, s) => ({ identifier: `step${s}`, value: next() > 0.5, duration: next() * 3 })),
  };
}

async function generate(dir: string, shape: Shape, layout: Layout, records: number): Promise<number> {
  const next = prng(7);
  const folder = path.join(dir, `dataset=${shape}`, "assessmentid=bench", "year=2022", "month=2", "day=1");
  await mkdir(folder, { recursive: true });
  let bytes = 0;
  if (layout === "per-record") {
    for (let i = 0; i < records; i++) {
      const text = `${JSON.stringify(document(shape, i, next))}\n`;
      bytes += text.length;
      await writeFile(path.join(folder, `rec${i}.ndjson`), text);
    }
  } else {
    const perFile = Math.ceil(records / 4);
    for (let f = 0; f < 4; f++) {
      const lines: string[] = [];
      for (let i = f * perFile; i < Math.min(records, (f + 1) * perFile); i++)
        lines.push(JSON.stringify(document(shape, i, next)));
      const text = `${lines.join("\n")}\n`;
      bytes += text.length;
      await writeFile(path.join(folder, `part${f}.ndjson`), text);
    }
  }
  return bytes;
}

async function allFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(path.join(e.parentPath, e.name));
  }
  return out;
}

async function timeIt<T>(work: () => Promise<T>): Promise<[number, T]> {
  const start = performance.now();
  const result = await work();
  return [(performance.now() - start) / 1000, result];
}

async function main(): Promise<void> {
  const base = path.join(os.tmpdir(), `studylake-bench-rel-${process.pid}`);
  const cases: Array<[Shape, Layout, number]> = [];
  for (const size of [1, 4]) {
    cases.push(["sensor", "ndjson", 100 * size * scale], ["sensor", "per-record", 100 * size * scale]);
    cases.push(["survey", "ndjson", 5000 * size * scale], ["survey", "per-record", 5000 * size * scale]);
  }
  console.log(
    "shape   layout      records    MB   rows(a)    a MB/s   a rows/s   b MB/s  a/b   b' MB/s  a/b'  b'/b  c JSON.parse MB/s  a peak RSS MB",
  );
  for (const [shape, layout, records] of cases) {
    await rm(base, { recursive: true, force: true });
    const input = path.join(base, "json");
    const bytes = await generate(input, shape, layout, records);
    const mb = bytes / 1e6;
    const files = await allFiles(input);

    // (c) JSON.parse alone.
    const [parseSeconds] = await timeIt(async () => {
      // Read synchronously: the fastest way Node reads many small files (see LocalObjectStore).
      for (const f of files) for (const line of readFileSync(f, "utf8").split("\n")) if (line) JSON.parse(line);
    });

    // (a) studylake.
    const ws = path.join(base, "ws");
    await initWorkspace(ws);
    const config = JSON.parse(await readFile(path.join(ws, CONFIG_FILE), "utf8"));
    const relationalize = { ...config.relationalize, ...(groupBytes === undefined ? {} : { groupBytes }) };
    await writeFile(path.join(ws, CONFIG_FILE), JSON.stringify({ ...config, fsyncRaw: false, relationalize }));
    const workspace = await openWorkspace(ws);
    const stage = new RelationalizeStage(workspace, new LocalObjectStore(input));
    global.gc?.();
    peakRss = process.memoryUsage().rss;
    const [ours, report] = await timeIt(() => stage.run(shape));
    const oursPeak = peakRss;
    await workspace.close();
    const rows = report.tables.reduce((a, t) => a + t.rows, 0);
    if (report.typedDocuments !== report.documents)
      console.log(
        `  (${report.documents - report.typedDocuments} of ${report.documents} documents took the JavaScript way)`,
      );

    // (b) DuckDB: read_json → root table and unnested child tables → Parquet.
    const out = path.join(base, "duck");
    await mkdir(out, { recursive: true });
    const source = `read_json(${literal(path.join(input, "**", "*.ndjson"))}, format = 'newline_delimited', hive_partitioning = false)`;
    // Each in a fresh DuckDB, so neither reads what the other left in DuckDB's caches.
    const duckdbAlone = async (partitioned: boolean) => {
      const duck = await openDuckDB();
      const timed = await timeIt(async () => {
        const copy = (sql: string, name: string) =>
          duck.connection.run(
            partitioned
              ? `COPY (${sql}) TO ${literal(path.join(out, name))} (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (assessmentid, year, month, day), WRITE_PARTITION_COLUMNS true, OVERWRITE_OR_IGNORE true)`
              : `COPY (${sql}) TO ${literal(path.join(out, `${name}.parquet`))} (FORMAT parquet, COMPRESSION zstd)`,
          );
        const carried = partitioned ? "recordid, assessmentid, year, month, day" : "recordid";
        if (shape === "sensor") {
          await copy(`SELECT * EXCLUDE (samples) FROM ${source}`, "root");
          await copy(`SELECT ${carried}, unnest(samples, recursive := true) FROM ${source}`, "samples");
        } else {
          await copy(`SELECT * EXCLUDE (choices, steps) FROM ${source}`, "root");
          await copy(`SELECT ${carried}, unnest(choices) AS ${ident("val")} FROM ${source}`, "choices");
          await copy(`SELECT ${carried}, unnest(steps, recursive := true) FROM ${source}`, "steps");
        }
      });
      duck.close();
      return timed;
    };
    const [theirs] = await duckdbAlone(false);
    const [theirsLikeOurs] = await duckdbAlone(true);

    console.log(
      [
        shape.padEnd(7),
        layout.padEnd(11),
        String(records).padStart(7),
        mb.toFixed(1).padStart(5),
        String(rows).padStart(9),
        (mb / ours).toFixed(1).padStart(9),
        Math.round(rows / ours)
          .toString()
          .padStart(10),
        (mb / theirs).toFixed(1).padStart(8),
        (theirs / ours).toFixed(2).padStart(5),
        (mb / theirsLikeOurs).toFixed(1).padStart(9),
        (theirsLikeOurs / ours).toFixed(2).padStart(5),
        (theirs / theirsLikeOurs).toFixed(2).padStart(5),
        (mb / parseSeconds).toFixed(1).padStart(10),
        (oursPeak / 1e6).toFixed(0).padStart(15),
      ].join(" "),
    );
  }
  clearInterval(sampler);
  console.log("peak RSS: the process's highest resident memory while (a) ran (node + DuckDB + the run)");
  await rm(base, { recursive: true, force: true });
}

await main();
