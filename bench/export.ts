/**
 * Export benchmark (not a test): records/s of a generated day exported to a TSV folder and to PostgreSQL,
 * each as a ratio against DuckDB reading the same documents and writing one TSV per dataset in the same
 * process (the reference: the same rows out, without sharing rules, common columns or bookkeeping); peak RSS.
 *
 *   npm run bench:export -- [records]      (default 20000; PostgreSQL at STUDYLAKE_TEST_POSTGRES_URL, if up)
 */
import { readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { CONFIG_FILE } from "../src/config/config.js";
import { Exporter } from "../src/export/exporter.js";
import { parseExportRequest } from "../src/export/request.js";
import { literal, openDuckDB } from "../src/parquet/duckdb.js";
import { DAY_SCHEMAS, seedExportDay } from "../src/synth/export-day.js";
import { initWorkspace } from "../src/workspace/init.js";
import { openWorkspace } from "../src/workspace/workspace.js";

const count = Number(process.argv[2] ?? 20_000);
const url = process.env.STUDYLAKE_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const DAY = "2022-02-15";
const schema = `bench_export_${process.pid}`;

async function postgresUp(): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function seconds(work: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await work();
  return (performance.now() - start) / 1000;
}

async function main(): Promise<void> {
  const dir = path.join(os.tmpdir(), `studylake-bench-export-${process.pid}`);
  await rm(dir, { recursive: true, force: true });
  await initWorkspace(dir);
  const withPg = await postgresUp();
  const config = JSON.parse(await readFile(path.join(dir, CONFIG_FILE), "utf8"));
  config.fsyncRaw = false;
  config.export.destinations = {
    default: { kind: "folder", path: "exports" },
    ...(withPg ? { pg: { kind: "postgres", url, schema } } : {}),
  };
  await writeFile(path.join(dir, CONFIG_FILE), JSON.stringify(config));
  const ws = await openWorkspace(dir);
  console.log(`generating a day of ${count} records…`);
  await seedExportDay(ws, { records: count, day: DAY });
  const now = new Date(`${DAY}T23:00:00Z`);

  // DuckDB keeps rows in file order unless told not to, and then reads many small files one by one; the
  // second reference lets it read them in parallel (a researcher's table has no order to keep).
  const duckdbAlone = (keepOrder: boolean) =>
    seconds(async () => {
      const duck = await openDuckDB();
      try {
        if (!keepOrder) await duck.connection.run("SET preserve_insertion_order = false");
        for (const dataset of DAY_SCHEMAS) {
          const glob = path.join(dir, "json", `dataset=${dataset}`, "**", "*.ndjson");
          const out = path.join(dir, `duckdb-${dataset}.tsv`);
          await duck.connection.run(
            `COPY (SELECT * FROM read_json(${literal(glob)}, format = 'newline_delimited', union_by_name = true)) TO ${literal(out)} (HEADER, DELIMITER '\t', QUOTE '"', FORCE_QUOTE *)`,
          );
        }
      } finally {
        duck.close();
      }
    });
  const reference = await duckdbAlone(true);
  const unordered = await duckdbAlone(false);

  const results: Array<[string, number]> = [];
  const run = async (destination: string) => {
    const request = parseExportRequest({ date: DAY, sharingMode: "ALL", destination });
    const took = await seconds(async () => {
      const report = await new Exporter(ws).run(request, { now });
      if (report.status !== "succeeded" || report.metrics.counters.numTotal !== count) {
        throw new Error(`export to ${destination} did not finish cleanly: ${report.errors[0] ?? report.status}`);
      }
    });
    results.push([destination === "default" ? "TSV folder" : "PostgreSQL", took]);
  };
  await run("default");
  if (withPg) await run("pg");
  await ws.close();

  console.log(`\n${count} records (3 studies, 5 schemas), node ${process.version}, ${os.cpus().length} cores`);
  console.log(
    `reference    ${(count / reference).toFixed(0).padStart(7)} records/s  (DuckDB: same documents to one TSV per dataset, ${reference.toFixed(1)} s)`,
  );
  console.log(
    `reference′   ${(count / unordered).toFixed(0).padStart(7)} records/s  (the same, rows in any order, ${unordered.toFixed(1)} s)`,
  );
  for (const [name, took] of results) {
    console.log(
      `${name.padEnd(12)} ${(count / took).toFixed(0).padStart(7)} records/s  ratio ${(reference / took).toFixed(2)}, ′ ${(unordered / took).toFixed(2)}  (${took.toFixed(1)} s)`,
    );
  }
  if (!withPg) console.log(`PostgreSQL   not measured: no server at ${url}`);
  console.log(`peak RSS     ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB`);
  if (withPg) {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query(`drop schema if exists "${schema}" cascade`);
    await client.end();
  }
  await rm(dir, { recursive: true, force: true });
}

await main();
