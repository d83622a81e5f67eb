import { copyFile, mkdir, readdir, utimes } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { Config } from "../src/config/config.js";
import { backoffSeconds, isTransient } from "../src/pipeline/errors.js";
import type { Run } from "../src/pipeline/models.js";
import { type Executor, Pipeline } from "../src/pipeline/pipeline.js";
import { dueTick } from "../src/pipeline/schedule.js";
import { assertTransition, IllegalTransitionError, predecessors, RunStatus } from "../src/pipeline/status.js";
import {
  FIXTURE_ARCHIVE,
  FIXTURE_RECORD,
  POSTGRES_URL,
  postgresAvailable,
  uniqueSchema,
  workspacePerTest,
} from "./support/workspace.js";

const pgReady = await postgresAvailable();

describe("run status rules", () => {
  it("allows only the listed transitions, checked in one place", () => {
    expect(() => assertTransition("pending", "in_progress")).not.toThrow();
    expect(() => assertTransition("in_progress", "pending")).not.toThrow();
    expect(() => assertTransition("succeeded", "pending")).toThrow(IllegalTransitionError);
    expect(() => assertTransition("pending", "succeeded")).toThrow(/cannot go from pending to succeeded/);
    expect(predecessors("pending").sort()).toEqual(["aborted", "failed", "in_progress"]);
    expect(predecessors("aborted").sort()).toEqual(["in_progress", "pending"]);
    for (const terminal of ["succeeded", "skipped"] as RunStatus[]) {
      for (const to of RunStatus.options) expect(() => assertTransition(terminal, to)).toThrow();
    }
  });

  it("tells transient failures from permanent ones, and backs off", () => {
    expect(isTransient(Object.assign(new Error("x"), { code: "ECONNRESET" }))).toBe(true);
    expect(isTransient(new Error("wrapped", { cause: Object.assign(new Error("db"), { code: "57P01" }) }))).toBe(true);
    expect(isTransient(new Error("bad data"))).toBe(false);
    expect(isTransient(Object.assign(new Error("x"), { code: "ENOENT" }))).toBe(false);
    expect([1, 2, 3, 20].map((a) => backoffSeconds(a, 30))).toEqual([30, 60, 120, 3600]);
  });

  it("runs a missed schedule once, for its latest tick", () => {
    const now = new Date("2026-11-24T12:00:00Z");
    // Daily at 2am Pacific = 10:00 UTC in November.
    expect(dueTick("0 2 * * *", "America/Los_Angeles", undefined, now)).toBe("2026-11-24T10:00:00.000Z");
    expect(dueTick("0 2 * * *", "America/Los_Angeles", "2026-11-21T10:00:00.000Z", now)).toBe(
      "2026-11-24T10:00:00.000Z",
    );
    expect(dueTick("0 2 * * *", "America/Los_Angeles", "2026-11-24T10:00:00.000Z", now)).toBeNull();
    expect(
      dueTick("0 2 * * *", "America/Los_Angeles", "2026-11-24T10:00:00.000Z", new Date("2026-11-25T10:00:00Z")),
    ).toBe("2026-11-25T10:00:00.000Z");
  });
});

/** Executors that record what ran, fail on demand, or wait until released: test data for the real machinery. */
function recorder() {
  const order: string[] = [];
  const failures = new Map<string, Error[]>();
  const gates = new Map<string, Promise<void>>();
  const executor: Executor = async (run) => {
    order.push(`${run.target}:${run.params.n ?? ""}`);
    await gates.get(run.target);
    const queue = failures.get(run.target);
    const failure = queue?.shift();
    if (failure) throw failure;
    return { summary: { n: run.params.n ?? null } };
  };
  return { order, failures, gates, executor };
}

function pipelineSuite(name: string, state: () => Config["state"] | undefined) {
  describe(`pipeline runs on ${name}`, () => {
    const workspace = workspacePerTest(state);
    const open = async (pipeline: Partial<Config["pipeline"]> = {}) => {
      const t = await workspace({
        pipeline: {
          dropFolder: "incoming",
          leaseSeconds: 60,
          maxAttempts: 3,
          retryBaseSeconds: 0,
          pollSeconds: 1,
          schedules: [],
          ...pipeline,
        },
      });
      return t.ws;
    };

    it("answers a request with a known idempotency key with the same run", async () => {
      const ws = await open();
      const pipeline = new Pipeline(ws);
      const first = await pipeline.request({ kind: "relationalize", target: "D", idempotencyKey: "daily-2026-11-23" });
      const again = await pipeline.request({ kind: "relationalize", target: "D", idempotencyKey: "daily-2026-11-23" });
      expect(first.created).toBe(true);
      expect(again).toEqual({ run: first.run, created: false });
      const other = await pipeline.request({ kind: "relationalize", target: "D", idempotencyKey: "daily-2026-11-24" });
      expect(other.run.runId).not.toBe(first.run.runId);
      expect(other.run.seq).toBeGreaterThan(first.run.seq);
    });

    it("runs the requests of one target in the order they were made", async () => {
      const ws = await open();
      const { order, executor } = recorder();
      const pipeline = new Pipeline(ws, { executors: { relationalize: executor } });
      for (let n = 1; n <= 4; n++) {
        await pipeline.request({ kind: "relationalize", target: "A", params: { n } });
        await pipeline.request({ kind: "relationalize", target: "B", params: { n } });
      }
      const summary = await pipeline.drain();
      expect(summary.runs.every((r) => r.status === "succeeded")).toBe(true);
      expect(order.filter((o) => o.startsWith("A:"))).toEqual(["A:1", "A:2", "A:3", "A:4"]);
      expect(order.filter((o) => o.startsWith("B:"))).toEqual(["B:1", "B:2", "B:3", "B:4"]);
    });

    it("lets one worker at a time hold a target; other targets proceed", async () => {
      const ws = await open();
      const { order, gates, executor } = recorder();
      let release = () => {};
      gates.set("A", new Promise<void>((r) => (release = r)));
      const one = new Pipeline(ws, { workerId: "one", executors: { relationalize: executor } });
      const two = new Pipeline(ws, { workerId: "two", executors: { relationalize: executor } });
      await one.request({ kind: "relationalize", target: "A", params: { n: 1 } });
      await one.request({ kind: "relationalize", target: "A", params: { n: 2 } });
      await one.request({ kind: "relationalize", target: "B", params: { n: 1 } });
      const running = one.runNext();
      await new Promise((r) => setTimeout(r, 50));
      // Worker two may not touch A (held, and A:2 must wait for A:1), but takes B.
      const taken = await two.runNext();
      expect(taken).toMatchObject({ target: "B", status: "succeeded" });
      expect(await two.runNext()).toBeUndefined();
      release();
      expect(await running).toMatchObject({ target: "A", status: "succeeded", worker: "one" });
      expect(await two.runNext()).toMatchObject({ target: "A", params: { n: 2 }, status: "succeeded", worker: "two" });
      expect(order).toEqual(["A:1", "B:1", "A:2"]);
    });

    it("retries a transient failure with backoff and records every attempt", async () => {
      const ws = await open();
      const { failures, executor } = recorder();
      failures.set("A", [Object.assign(new Error("connection reset"), { code: "ECONNRESET" })]);
      const pipeline = new Pipeline(ws, { executors: { relationalize: executor } });
      const { run } = await pipeline.request({ kind: "relationalize", target: "A" });
      const first = await pipeline.runNext();
      expect(first).toMatchObject({
        status: "pending",
        attempts: 1,
        errorKind: "transient",
        error: "connection reset",
      });
      const second = await pipeline.runNext();
      expect(second).toMatchObject({ runId: run.runId, status: "succeeded", attempts: 2 });
      const steps = await ws.state.pipeline.steps(run.runId);
      expect(steps.map((s) => [s.attempt, s.status, s.error])).toEqual([
        [1, "failed", "connection reset"],
        [2, "succeeded", null],
      ]);
    });

    it("waits out the backoff before retrying", async () => {
      const ws = await open({ retryBaseSeconds: 3600 });
      const { failures, executor } = recorder();
      failures.set("A", [Object.assign(new Error("busy"), { code: "EBUSY" })]);
      const pipeline = new Pipeline(ws, { executors: { relationalize: executor } });
      await pipeline.request({ kind: "relationalize", target: "A" });
      const failed = await pipeline.runNext();
      expect(Date.parse(failed!.nextAttemptAt) - Date.now()).toBeGreaterThan(3500 * 1000);
      expect(await pipeline.runNext()).toBeUndefined();
    });

    it("does not retry a permanent failure, and gives up on a transient one after the attempt limit", async () => {
      const ws = await open({ maxAttempts: 2 });
      const { failures, executor } = recorder();
      failures.set("bad", [new Error("document is not valid")]);
      const transient = () => Object.assign(new Error("timed out"), { code: "ETIMEDOUT" });
      failures.set("flaky", [transient(), transient(), transient()]);
      const pipeline = new Pipeline(ws, { executors: { relationalize: executor } });
      await pipeline.request({ kind: "relationalize", target: "bad" });
      await pipeline.request({ kind: "relationalize", target: "flaky" });
      const summary = await pipeline.drain();
      const byTarget = Object.fromEntries(summary.runs.map((r) => [r.target, r]));
      const runs = await ws.state.pipeline.list();
      const bad = runs.find((r) => r.target === "bad")!;
      const flaky = runs.find((r) => r.target === "flaky")!;
      expect(bad).toMatchObject({
        status: "failed",
        attempts: 1,
        errorKind: "permanent",
        error: "document is not valid",
      });
      expect(flaky).toMatchObject({ status: "failed", attempts: 2, errorKind: "transient" });
      expect(byTarget.bad?.status).toBe("failed");
    });

    it("aborts and retries on request; a finished run cannot be aborted", async () => {
      const ws = await open();
      const { executor } = recorder();
      const pipeline = new Pipeline(ws, { executors: { relationalize: executor } });
      const { run } = await pipeline.request({ kind: "relationalize", target: "A" });
      await ws.state.pipeline.transition(run.runId, "aborted");
      expect(await pipeline.runNext()).toBeUndefined();
      await ws.state.pipeline.transition(run.runId, "pending");
      expect((await pipeline.runNext())?.status).toBe("succeeded");
      await expect(ws.state.pipeline.transition(run.runId, "aborted")).rejects.toThrow(
        new IllegalTransitionError("a run cannot go from succeeded to aborted"),
      );
      await expect(ws.state.pipeline.transition("no-such-run", "aborted")).rejects.toThrow(/no run 'no-such-run'/);
    });

    it("puts back the run of a worker that died once its lease expires", async () => {
      const ws = await open({ leaseSeconds: 1 });
      const { executor } = recorder();
      const { run } = await new Pipeline(ws).request({ kind: "relationalize", target: "A" });
      // A worker claims the run and dies (it never finishes nor renews its lease).
      const claimed = await ws.state.pipeline.claim("dead-worker", 200);
      expect(claimed?.runId).toBe(run.runId);
      const survivor = new Pipeline(ws, { workerId: "survivor", executors: { relationalize: executor } });
      expect(await survivor.runNext()).toBeUndefined();
      await new Promise((r) => setTimeout(r, 300));
      expect(await survivor.runNext()).toMatchObject({
        runId: run.runId,
        status: "succeeded",
        attempts: 2,
        worker: "survivor",
      });
    });

    it("requests a missed schedule's run once, however many ticks were missed", async () => {
      const ws = await open({
        schedules: [
          {
            name: "daily",
            cron: "0 2 * * *",
            timezone: "America/Los_Angeles",
            kind: "relationalize",
            target: "D",
            request: {},
          },
        ],
      });
      const pipeline = new Pipeline(ws);
      await ws.state.pipeline.setLastTick("daily", new Date(Date.now() - 5 * 86_400_000).toISOString());
      const due = await pipeline.requestDue();
      expect(due).toHaveLength(1);
      expect(due[0]).toMatchObject({ kind: "relationalize", target: "D", requestedBy: "schedule:daily" });
      expect(await pipeline.requestDue()).toEqual([]);
      expect(await ws.state.pipeline.list()).toHaveLength(1);
    });

    it("takes an archive from the drop folder only once it and its sidecar have stopped changing", async () => {
      const ws = await open({ dropQuietSeconds: 60 });
      const drop = path.join(ws.root, "incoming");
      const archive = path.join(drop, path.basename(FIXTURE_ARCHIVE));
      const sidecar = `${archive}.metadata.json`;
      await mkdir(drop, { recursive: true });
      await copyFile(FIXTURE_ARCHIVE, archive);
      await copyFile(`${FIXTURE_ARCHIVE}.metadata.json`, sidecar);
      const pipeline = new Pipeline(ws);
      expect(await pipeline.requestDue()).toEqual([]);
      const quiet = new Date(Date.now() - 120_000);
      await utimes(archive, quiet, quiet);
      // The sidecar is still being written.
      expect(await pipeline.requestDue()).toEqual([]);
      await utimes(sidecar, quiet, quiet);
      expect(await pipeline.requestDue()).toMatchObject([{ kind: "intake", requestedBy: "drop-folder" }]);
      const summary = await pipeline.drain();
      expect(summary.runs.find((r) => r.kind === "intake")?.status).toBe("succeeded");
      expect((await ws.state.listUploads({})).map((u) => u.recordId)).toEqual([FIXTURE_RECORD]);
      expect(await readdir(drop)).toEqual([".done"]);
    });

    it("posts each outcome to the webhook, and a webhook that is down never fails the run", async () => {
      const received: Array<{ event: string; run: Run }> = [];
      const server = createServer((req, res) => {
        let body = "";
        req.on("data", (c) => (body += c));
        req.on("end", () => {
          received.push(JSON.parse(body));
          res.end("ok");
        });
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      const { port } = server.address() as AddressInfo;
      try {
        const ws = await open({ webhook: `http://127.0.0.1:${port}/hook` });
        const { failures, executor } = recorder();
        failures.set("bad", [new Error("broken")]);
        const pipeline = new Pipeline(ws, { executors: { relationalize: executor } });
        await pipeline.request({ kind: "relationalize", target: "good" });
        await pipeline.request({ kind: "relationalize", target: "bad" });
        await pipeline.drain();
        expect(received.map((r) => [r.event, r.run.target]).sort()).toEqual([
          ["run.failed", "bad"],
          ["run.succeeded", "good"],
        ]);
        expect(received.find((r) => r.run.target === "good")?.run.summary).toEqual({ n: null });
      } finally {
        await new Promise((r) => server.close(r));
      }
      const ws = await open({ webhook: "http://127.0.0.1:9/unreachable" });
      const pipeline = new Pipeline(ws, { executors: { relationalize: recorder().executor } });
      await pipeline.request({ kind: "relationalize", target: "A" });
      expect((await pipeline.runNext())?.status).toBe("succeeded");
    });
  });
}

pipelineSuite("SQLite", () => undefined);

describe.skipIf(!pgReady)("PostgreSQL", () => {
  pipelineSuite("PostgreSQL", () => ({ kind: "postgres", url: POSTGRES_URL, schema: uniqueSchema() }));
});
