/**
 * Governed-query benchmark (not a test): latency of SQL run through the lake (as a user with a tier grant:
 * parse-tree check, a fresh locked-down session with the caller's views, audit) against the same SQL run by
 * DuckDB directly on the same Parquet files. The ratio is the cost of governance; peak RSS at the end.
 *
 *   npm run bench:query -- [rows]      (default 10000000)
 */
import { rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Lake } from "../src/lake/lake.js";
import { literal, openDuckDB } from "../src/parquet/duckdb.js";
import { initWorkspace } from "../src/workspace/init.js";
import { openWorkspace } from "../src/workspace/workspace.js";

const rows = Number(process.argv[2] ?? 10_000_000);
const RUNS = 5;

const QUERIES: Array<[string, string]> = [
  ["count", "SELECT count(*) FROM events"],
  [
    "group by",
    "SELECT participant % 100 AS g, avg(value) AS mean, count(*) AS n FROM events GROUP BY 1 ORDER BY 1 LIMIT 10",
  ],
  ["point lookup", "SELECT * FROM events WHERE id = 4242424"],
  ["filter + sort", "SELECT id, value FROM events WHERE kind = 'c' AND value > 0.99 ORDER BY value DESC LIMIT 20"],
];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

async function main(): Promise<void> {
  const dir = path.join(os.tmpdir(), `studylake-bench-query-${process.pid}`);
  await rm(dir, { recursive: true, force: true });
  await initWorkspace(dir);
  const ws = await openWorkspace(dir);
  const lake = new Lake(ws);
  const operator = await lake.principal();
  const source = path.join(dir, "events.parquet");
  console.log(`generating ${rows.toLocaleString()} rows…`);
  const gen = await openDuckDB();
  await gen.connection.run(
    `COPY (SELECT i AS id, i % 5000 AS participant, ['a','b','c','d'][1 + i % 4] AS kind, hash(i) / 18446744073709551615.0 AS value, TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND AS at FROM range(${rows}) t(i)) TO ${literal(source)} (FORMAT parquet, COMPRESSION zstd)`,
  );
  gen.close();
  await lake.createDataset(
    {
      name: "events",
      description: "generated",
      owner: "operator",
      tier: "restricted",
      updateKind: "snapshot",
      keyColumns: [],
    },
    operator,
  );
  const manifest = await lake.importFile("events", source, operator);
  await ws.state.lake.createUser("analyst");
  await ws.state.lake.grant({
    principalKind: "user",
    principal: "analyst",
    permission: "read",
    targetKind: "tier",
    target: "restricted",
  });
  const analyst = await lake.principal("analyst");
  const lakeFile = path.join(lake.root, manifest.files[0]?.path as string);

  const direct = await openDuckDB();
  const results: Array<[string, number, number]> = [];
  for (const [name, sql] of QUERIES) {
    const governed: number[] = [];
    const raw: number[] = [];
    const directSql = sql.replace(/\bevents\b/, `read_parquet(${literal(lakeFile)})`);
    for (let i = 0; i < RUNS; i++) {
      let start = performance.now();
      await lake.query(analyst, sql);
      governed.push(performance.now() - start);
      start = performance.now();
      await direct.connection.runAndReadAll(directSql);
      raw.push(performance.now() - start);
    }
    results.push([name, median(governed), median(raw)]);
  }
  direct.close();
  await lake.close();
  await ws.close();

  console.log(
    `\n${manifest.rows.toLocaleString()} rows in the lake, node ${process.version}, ${os.cpus().length} cores, median of ${RUNS}`,
  );
  for (const [name, governed, raw] of results) {
    console.log(
      `${name.padEnd(14)} governed ${governed.toFixed(0).padStart(6)} ms   DuckDB direct ${raw.toFixed(0).padStart(6)} ms   ratio ${(governed / raw).toFixed(2)}`,
    );
  }
  console.log(`peak RSS       ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB`);
  await rm(dir, { recursive: true, force: true });
}

await main();
