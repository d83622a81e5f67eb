import { type ChildProcess, execFile, spawn } from "node:child_process";
import { cp, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { CONFIG_FILE, type Config } from "../src/config/config.js";
import { Catalog } from "../src/parquet/catalog.js";
import { planBatch, writeBatch } from "../src/synth/generate.js";
import { openWorkspace, type Workspace } from "../src/workspace/workspace.js";
import {
  CLI,
  dropSchema,
  fixtureConfig,
  POSTGRES_URL,
  postgresAvailable,
  tempDir,
  uniqueSchema,
} from "./support/workspace.js";

const pgReady = await postgresAvailable();
const REPO = fileURLToPath(new URL("..", import.meta.url));
const run = promisify(execFile);

function studylake(root: string, ...args: string[]): ChildProcess {
  return spawn(process.execPath, [CLI, "-w", root, ...args], { cwd: REPO, stdio: "ignore" });
}

async function workspace(state: Config["state"] | undefined, incoming: string): Promise<string> {
  const root = await tempDir();
  const config = {
    ...fixtureConfig(),
    ...(state ? { state } : {}),
    pipeline: {
      dropFolder: "incoming",
      leaseSeconds: 1,
      maxAttempts: 5,
      retryBaseSeconds: 0,
      pollSeconds: 0.2,
      schedules: [],
    },
  };
  await writeFile(path.join(root, CONFIG_FILE), JSON.stringify(config));
  await cp(incoming, path.join(root, "incoming"), { recursive: true });
  return root;
}

/** Everything a run produces that a researcher sees: upload statuses, dataset files, table contents. */
async function outputs(ws: Workspace): Promise<unknown> {
  const json = new Map<string, string>();
  for (const key of await ws.json.list()) json.set(key, (await ws.json.get(key)).toString());
  const catalog = await Catalog.open(ws);
  const tables: Record<string, unknown> = {};
  try {
    for (const t of await catalog.tables()) {
      const rows = await catalog.query(`SELECT count(*), count(DISTINCT recordid) FROM "${t.table}"`);
      tables[t.table] = rows.rows[0];
    }
  } finally {
    catalog.close();
  }
  return { statuses: await ws.state.countByStatus(), json, tables };
}

async function waitFor(check: () => Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 50));
  }
}

function twoWorkerSuite(name: string, state: () => Config["state"] | undefined) {
  it(`${name}: two worker processes share the work and never run one dataset at the same time`, async () => {
    const incoming = await tempDir();
    await writeBatch(incoming, planBatch(60, { valid: 1 }, 5), { seed: 5 });
    const stateConfig = state();
    const root = await workspace(stateConfig, incoming);
    const ws = await openWorkspace(root);
    const workers = [
      studylake(root, "worker", "--worker-id", "w1", "--log-level", "silent"),
      studylake(root, "worker", "--worker-id", "w2", "--log-level", "silent"),
    ];
    try {
      // Intake, then a relationalize run per dataset; meanwhile more relationalize requests pile up per dataset.
      await waitFor(async () =>
        (await ws.state.pipeline.list({ statuses: ["succeeded"] })).some((r) => r.kind === "intake"),
      );
      for (let i = 0; i < 5; i++) {
        for (const dataset of ["ArchiveMetadata_v1", "AudioLevelRecord_v1", "MotionRecord_v1", "WeatherResult_v1"]) {
          await ws.state.pipeline.request({ kind: "relationalize", target: dataset, requestedBy: "test" }, 3);
        }
      }
      await waitFor(async () => (await ws.state.pipeline.list({ statuses: ["pending", "in_progress"] })).length === 0);
      const runs = await ws.state.pipeline.list({ limit: 500 });
      expect(runs.every((r) => r.status === "succeeded" || r.status === "skipped")).toBe(true);
      // No two runs of one target overlapped in time.
      const byTarget = new Map<string, typeof runs>();
      for (const r of runs) byTarget.set(r.target, [...(byTarget.get(r.target) ?? []), r]);
      for (const list of byTarget.values()) {
        const spans = list
          .map((r) => [Date.parse(r.startedAt!), Date.parse(r.finishedAt!)] as const)
          .sort((a, b) => a[0] - b[0]);
        for (let i = 1; i < spans.length; i++) expect(spans[i]![0]).toBeGreaterThanOrEqual(spans[i - 1]![1]);
        // And they ran in the order requested.
        const bySeq = [...list].sort((a, b) => a.seq - b.seq).map((r) => r.runId);
        const byStart = [...list]
          .sort((a, b) => Date.parse(a.startedAt!) - Date.parse(b.startedAt!))
          .map((r) => r.runId);
        expect(byStart).toEqual(bySeq);
      }
      expect(new Set(runs.map((r) => r.worker))).toEqual(new Set(["w1", "w2"]));
      const catalog = await Catalog.open(ws);
      try {
        expect((await catalog.query('SELECT count(DISTINCT recordid) FROM "MotionRecord_v1"')).rows).toEqual([[60n]]);
      } finally {
        catalog.close();
      }
    } finally {
      for (const w of workers) w.kill("SIGKILL");
      await ws.close();
      if (stateConfig?.kind === "postgres") await dropSchema(stateConfig.schema);
    }
  });
}

function crashSuite(name: string, state: () => Config["state"] | undefined) {
  it(`${name}: a worker killed mid-run loses nothing; a rerun ends with exactly the outputs of an uninterrupted run`, async () => {
    const incoming = await tempDir();
    await writeBatch(incoming, planBatch(150, { valid: 8, "invalid-schema": 1, corrupt: 1 }, 3), { seed: 3 });

    const cleanState = state();
    const clean = await workspace(cleanState, incoming);
    await run(process.execPath, [CLI, "-w", clean, "run", "--log-level", "silent"], { cwd: REPO });
    const cleanWs = await openWorkspace(clean);
    const expected = await outputs(cleanWs);
    await cleanWs.close();

    const crashedState = state();
    const crashed = await workspace(crashedState, incoming);
    const worker = studylake(crashed, "worker", "--log-level", "silent");
    const ws = await openWorkspace(crashed);
    try {
      // Kill it while it is taking uploads in.
      await waitFor(async () => {
        const counts = await ws.state.countByStatus();
        return Object.values(counts).reduce((a, b) => a + b, 0) >= 30;
      });
      worker.kill("SIGKILL");
      await new Promise((r) => worker.once("exit", r));
      const before = await ws.state.countByStatus();
      expect(Object.values(before).reduce((a, b) => a + b, 0)).toBeLessThan(150);

      // Its lease expires; the next run takes the interrupted work over.
      await new Promise((r) => setTimeout(r, 1200));
      await run(process.execPath, [CLI, "-w", crashed, "run", "--log-level", "silent"], {
        cwd: REPO,
      });
      expect(await outputs(ws)).toEqual(expected);
      const runs = await ws.state.pipeline.list({ limit: 200 });
      expect(runs.filter((r) => r.status === "pending" || r.status === "in_progress")).toEqual([]);
      expect(runs.find((r) => r.kind === "intake" && r.attempts >= 2)).toBeDefined();
    } finally {
      worker.kill("SIGKILL");
      await ws.close();
      for (const s of [cleanState, crashedState]) if (s?.kind === "postgres") await dropSchema(s.schema);
    }
  });
}

describe("pipeline runs across real processes", () => {
  crashSuite("SQLite", () => undefined);
  twoWorkerSuite("SQLite", () => undefined);
  describe.skipIf(!pgReady)("on PostgreSQL", () => {
    crashSuite("PostgreSQL", () => ({ kind: "postgres", url: POSTGRES_URL, schema: uniqueSchema() }));
    twoWorkerSuite("PostgreSQL", () => ({ kind: "postgres", url: POSTGRES_URL, schema: uniqueSchema() }));
  });
});
