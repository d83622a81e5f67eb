/**
 * Pipeline benchmark (not a test): uploads/s end to end (archive in the drop folder → JSON datasets → Parquet
 * tables) for one worker, and for two worker processes sharing a PostgreSQL state store; prints the ratio.
 *
 *   npm run bench:pipeline -- [count]      (default 600; needs PostgreSQL at STUDYLAKE_TEST_POSTGRES_URL)
 */
import { spawn } from "node:child_process";
import { cp, mkdir, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { CONFIG_FILE } from "../src/config/config.js";
import { Pipeline } from "../src/pipeline/pipeline.js";
import { planBatch, writeBatch } from "../src/synth/generate.js";
import { initWorkspace } from "../src/workspace/init.js";
import { openWorkspace, type Workspace } from "../src/workspace/workspace.js";

const count = Number(process.argv[2] ?? 600);
const url = process.env.STUDYLAKE_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const REPO = fileURLToPath(new URL("..", import.meta.url));

async function makeWorkspace(dir: string, schema: string): Promise<void> {
  await initWorkspace(dir);
  const config = {
    state: { kind: "postgres", url, schema },
    fsyncRaw: false,
    pipeline: {
      dropFolder: "incoming",
      leaseSeconds: 30,
      maxAttempts: 3,
      retryBaseSeconds: 1,
      pollSeconds: 0.2,
      schedules: [],
    },
  };
  const { readFile } = await import("node:fs/promises");
  const base = JSON.parse(await readFile(path.join(dir, CONFIG_FILE), "utf8"));
  await writeFile(path.join(dir, CONFIG_FILE), JSON.stringify({ ...base, ...config }));
}

async function settled(ws: Workspace): Promise<boolean> {
  const runs = await ws.state.pipeline.list({ limit: 1000 });
  const intake = runs.find((r) => r.kind === "intake");
  return (
    !!intake && intake.status === "succeeded" && runs.every((r) => r.status !== "pending" && r.status !== "in_progress")
  );
}

async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query(`drop schema if exists "${schema}" cascade`);
  await client.end();
}

async function main(): Promise<void> {
  const base = path.join(os.tmpdir(), `studylake-bench-pipeline-${process.pid}`);
  await rm(base, { recursive: true, force: true });
  const uploads = path.join(base, "uploads");
  console.log(`generating ${count} fixture-like uploads…`);
  await writeBatch(uploads, planBatch(count, { valid: 9, "invalid-schema": 1 }, 1), { seed: 1 });

  // One worker, in this process.
  const one = path.join(base, "one");
  const schemaOne = `bench_one_${process.pid}`;
  await makeWorkspace(one, schemaOne);
  let ws = await openWorkspace(one);
  await mkdir(path.join(one, "incoming"), { recursive: true });
  await cp(uploads, path.join(one, "incoming"), { recursive: true });
  let start = performance.now();
  const pipeline = new Pipeline(ws);
  await pipeline.requestDue();
  await pipeline.drain();
  const oneSeconds = (performance.now() - start) / 1000;
  if (!(await settled(ws))) throw new Error("one worker did not finish");
  await ws.close();

  // Two worker processes, started first; the clock runs from the moment the archives are dropped.
  const two = path.join(base, "two");
  const schemaTwo = `bench_two_${process.pid}`;
  await makeWorkspace(two, schemaTwo);
  ws = await openWorkspace(two);
  const workers = ["w1", "w2"].map((id) =>
    spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        path.join(REPO, "src/cli/bin.ts"),
        "-w",
        two,
        "worker",
        "--worker-id",
        id,
        "--log-level",
        "silent",
      ],
      {
        cwd: REPO,
        stdio: "ignore",
      },
    ),
  );
  await new Promise((r) => setTimeout(r, 3000));
  const staged = path.join(two, "staging");
  await cp(uploads, staged, { recursive: true });
  start = performance.now();
  await rename(staged, path.join(two, "incoming"));
  while (!(await settled(ws))) await new Promise((r) => setTimeout(r, 50));
  const twoSeconds = (performance.now() - start) / 1000;
  // Stopped and gone before their workspace is removed.
  await Promise.all(
    workers.map((w) => {
      if (w.exitCode !== null || w.signalCode !== null) return undefined;
      const exited = new Promise((resolve) => w.once("exit", resolve));
      w.kill("SIGTERM");
      return exited;
    }),
  );
  await ws.close();

  console.log(`\n${count} uploads, PostgreSQL state, node ${process.version}, ${os.cpus().length} cores`);
  console.log(`one worker   ${(count / oneSeconds).toFixed(0).padStart(6)} uploads/s  (${oneSeconds.toFixed(1)} s)`);
  console.log(`two workers  ${(count / twoSeconds).toFixed(0).padStart(6)} uploads/s  (${twoSeconds.toFixed(1)} s)`);
  console.log(`ratio two/one ${(oneSeconds / twoSeconds).toFixed(2)}`);
  await dropSchema(schemaOne);
  await dropSchema(schemaTwo);
  await rm(base, { recursive: true, force: true });
}

await main();
