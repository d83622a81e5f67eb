import { randomUUID } from "node:crypto";
import { mkdir, rename } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pino, { type Logger } from "pino";
import { type Config, DEFAULT_DESTINATION } from "../config/config.js";
import { Exporter, exportTarget } from "../export/exporter.js";
import { yesterday } from "../export/plan.js";
import { parseExportRequest } from "../export/request.js";
import { readyArchives, SIDECAR_SUFFIX } from "../intake/discover.js";
import { Intake } from "../intake/intake.js";
import { Lake, readTransform } from "../lake/lake.js";
import { RelationalizeStage } from "../parquet/stage.js";
import type { Workspace } from "../workspace/workspace.js";
import { backoffSeconds, isTransient } from "./errors.js";
import type { Run, RunKind, RunRequest } from "./models.js";
import { dueTick } from "./schedule.js";
import { IllegalTransitionError } from "./status.js";

/** What an executor reports: a summary to keep with the run, whether there was anything to do, follow-up requests. */
export interface ExecutorResult {
  summary: unknown;
  skipped?: boolean;
  followUps?: RunRequest[];
}

export type Executor = (run: Run, context: { ws: Workspace; log: Logger }) => Promise<ExecutorResult>;

/** A failure of part of the work that a later attempt may fix (an archive could not be read or recorded). */
export class PartialFailure extends Error {
  override name = "PartialFailure";
  readonly transient = true;
}

const DONE_FOLDER = ".done";

/** Datasets to relationalize after new data: those datasets, and those whose deletion export is among them. */
export function withDeletionTargets(settings: Config["relationalize"], datasets: readonly string[]): string[] {
  const changed = new Set(datasets);
  const targets = Object.entries(settings.datasets)
    .filter(([, rules]) => rules.deletedBy !== undefined && changed.has(rules.deletedBy))
    .map(([dataset]) => dataset);
  return [...new Set([...datasets, ...targets])];
}

/** The built-in kinds of run. Each is idempotent, so a retried or resumed run never duplicates anything. */
export const EXECUTORS: Record<RunKind, Executor> = {
  async intake(run, { ws, log }) {
    const drop = path.resolve(ws.root, ws.config.pipeline.dropFolder);
    const given = run.params.paths as string[] | undefined;
    const paths = given ?? (await readyArchives(drop, ws.config.pipeline.dropQuietSeconds));
    const report = await new Intake(ws).ingest(paths);
    log.info({ actions: report.actions, statuses: report.statuses }, "intake finished");
    if (report.actions.failed > 0) {
      const first = report.items.find((i) => i.action === "failed");
      throw new PartialFailure(
        `${report.actions.failed} archives could not be taken in (first: ${first?.source}: ${first?.message})`,
      );
    }
    // Archives taken in leave the drop folder (their raw copies are kept under raw/), so the next poll skips them.
    if (given === undefined)
      await moveDone(
        drop,
        run.runId,
        report.items.map((i) => i.source),
      );
    return {
      summary: {
        archives: report.items.length,
        actions: report.actions,
        statuses: report.statuses,
        filesWritten: report.filesWritten,
        datasets: report.datasets,
      },
      skipped: report.items.length === 0,
      followUps: withDeletionTargets(ws.config.relationalize, report.datasets).map((dataset) => ({
        kind: "relationalize",
        target: dataset,
        requestedBy: `run:${run.runId}`,
      })),
    };
  },

  async relationalize(run, { ws, log }) {
    const report = await new RelationalizeStage(ws).run(run.target);
    const { runs, records, replaced, deleted, deletedByExport, older, mergedFiles } = report;
    log.info({ runs, records, replaced, deleted, deletedByExport, older, mergedFiles }, "relationalize finished");
    return { summary: report, skipped: report.runId === null };
  },

  async transform(run, { ws, log }) {
    const lake = new Lake(ws);
    const manifest = await lake.transform(path.resolve(ws.root, run.target), await lake.principal(), run.runId);
    log.info({ dataset: manifest.dataset, update: manifest.update, rows: manifest.rows }, "transform finished");
    return { summary: { dataset: manifest.dataset, update: manifest.update, rows: manifest.rows } };
  },

  async export(run, { ws, log }) {
    const request = parseExportRequest(run.params.request ?? {});
    const report = await new Exporter(ws, { log }).run(request, { leaseHeld: true });
    return {
      summary: {
        exportId: report.exportId,
        status: report.status,
        alreadyDone: report.alreadyDone,
        tables: report.tables.length,
        errors: report.errors.slice(0, 20),
        redrive: report.redrive,
        counters: report.metrics.counters,
      },
      skipped: report.alreadyDone,
    };
  },
};

async function moveDone(drop: string, runId: string, sources: string[]): Promise<void> {
  const done = path.join(drop, DONE_FOLDER, runId);
  for (const source of sources) {
    if (path.dirname(source) !== drop && !source.startsWith(drop + path.sep)) continue;
    const relative = path.relative(drop, source);
    for (const file of [source, `${source}${SIDECAR_SUFFIX}`]) {
      const target = path.join(done, file === source ? relative : `${relative}${SIDECAR_SUFFIX}`);
      await mkdir(path.dirname(target), { recursive: true });
      await rename(file, target).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== "ENOENT") throw err;
      });
    }
  }
}

export interface PipelineOptions {
  workerId?: string;
  logger?: Logger;
  executors?: Partial<Record<RunKind, Executor>>;
}

export interface WorkSummary {
  runs: Array<Pick<Run, "runId" | "kind" | "target" | "status" | "attempts" | "error">>;
}

/**
 * Runs pipeline work from the state store: claims the next run, holds its target's lease (renewed while it
 * works), executes it, and records the outcome. Several workers, in one process or many, on one state store,
 * share the work safely.
 */
export class Pipeline {
  readonly workerId: string;
  readonly log: Logger;
  private readonly executors: Record<RunKind, Executor>;

  constructor(
    private readonly ws: Workspace,
    options: PipelineOptions = {},
  ) {
    this.workerId = options.workerId ?? `${os.hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    this.log = (options.logger ?? pino({ level: "silent" })).child({ worker: this.workerId });
    this.executors = { ...EXECUTORS, ...options.executors };
  }

  private get state() {
    return this.ws.state.pipeline;
  }

  request(request: RunRequest): Promise<{ run: Run; created: boolean }> {
    return this.state.request(request, this.ws.config.pipeline.maxAttempts);
  }

  /** Requests a run unless one for the same kind and target is already waiting or running. */
  async requestOnce(request: RunRequest): Promise<Run> {
    const queued = await this.state.queued(request.kind, request.target);
    return queued ?? (await this.request(request)).run;
  }

  /**
   * Requests what is due: an intake when archives wait in the drop folder, and each schedule's latest tick
   * since it last ran (missed ticks run once).
   */
  async requestDue(now = new Date()): Promise<Run[]> {
    const runs: Run[] = [];
    const drop = path.resolve(this.ws.root, this.ws.config.pipeline.dropFolder);
    if ((await readyArchives(drop, this.ws.config.pipeline.dropQuietSeconds)).length > 0)
      runs.push(await this.requestOnce({ kind: "intake", target: "intake", requestedBy: "drop-folder" }));
    for (const schedule of [...this.ws.config.pipeline.schedules, ...(await transformSchedules(this.ws))]) {
      const lastTick = await this.state.lastTick(schedule.name);
      const tick = dueTick(schedule.cron, schedule.timezone, lastTick, now);
      if (!tick) continue;
      if (lastTick === undefined) {
        // As cron: a new schedule starts from now; ticks from before it was configured are not owed.
        await this.state.setLastTick(schedule.name, tick);
        this.log.info({ schedule: schedule.name, tick }, "schedule started; its first run is at its next tick");
        continue;
      }
      for (const { target, params } of await this.scheduledRuns(schedule, tick)) {
        const key = `schedule:${schedule.name}:${tick}:${target}`;
        const { run } = await this.request({
          kind: schedule.kind,
          target,
          params,
          requestedBy: `schedule:${schedule.name}`,
          idempotencyKey: key,
        });
        runs.push(run);
      }
      await this.state.setLastTick(schedule.name, tick);
      this.log.info({ schedule: schedule.name, tick }, "schedule due");
    }
    return runs;
  }

  /**
   * The runs one tick of a schedule asks for: one intake; a relationalize per dataset (`*`) or of one; an
   * export of the day before the tick (in the export time zone) to the schedule's destination, starting from
   * the schedule's request fields.
   */
  private async scheduledRuns(
    schedule: Config["pipeline"]["schedules"][number],
    tick: string,
  ): Promise<Array<{ target: string; params: Record<string, unknown> }>> {
    if (schedule.kind === "intake") return [{ target: "intake", params: {} }];
    if (schedule.kind === "transform") return [{ target: schedule.target, params: {} }];
    if (schedule.kind === "relationalize") {
      const datasets = schedule.target === "*" ? await new RelationalizeStage(this.ws).datasets() : [schedule.target];
      return datasets.map((target) => ({ target, params: {} }));
    }
    const destination = schedule.target === "*" ? DEFAULT_DESTINATION : schedule.target;
    const request = {
      ...schedule.request,
      date: yesterday(this.ws.config.export.timezone, new Date(tick)),
      destination,
    };
    // A bad override fails here, where the configuration is named, rather than in every run.
    parseExportRequest(request);
    return [{ target: exportTarget(destination), params: { request } }];
  }

  /** Claims and executes one run; undefined when nothing is runnable now. */
  async runNext(): Promise<Run | undefined> {
    const leaseMs = this.ws.config.pipeline.leaseSeconds * 1000;
    const run = await this.state.claim(this.workerId, leaseMs);
    if (!run) return undefined;
    const log = this.log.child({ runId: run.runId, kind: run.kind, target: run.target, attempt: run.attempts });
    log.info("run started");
    const heartbeat = setInterval(() => {
      const expires = new Date(Date.now() + leaseMs).toISOString();
      this.state.takeLease(run.target, this.workerId, run.runId, expires).then(
        (held) => {
          if (!held) log.warn("lost the lease on the run's target");
        },
        (err: Error) => log.warn({ err }, "could not renew the lease"),
      );
    }, leaseMs / 3);
    await this.state.startStep(run.runId, run.attempts, run.kind);
    try {
      const result = await this.executors[run.kind](run, { ws: this.ws, log });
      const status = result.skipped ? "skipped" : "succeeded";
      await this.state.finishStep(run.runId, run.attempts, run.kind, status, result.summary, null);
      try {
        await this.state.transition(run.runId, status, {
          summary: result.summary,
          finishedAt: new Date().toISOString(),
        });
      } catch (err) {
        if (!(err instanceof IllegalTransitionError)) throw err;
        log.warn("the run was aborted while it ran; its outputs are kept, its status stays aborted");
      }
      for (const followUp of result.followUps ?? []) await this.requestOnce(followUp);
      log.info({ status }, "run finished");
    } catch (err) {
      const message = (err as Error).message;
      const transient = isTransient(err);
      await this.state.finishStep(run.runId, run.attempts, run.kind, "failed", null, message);
      try {
        if (transient && run.attempts < run.maxAttempts) {
          const wait = backoffSeconds(run.attempts, this.ws.config.pipeline.retryBaseSeconds);
          const nextAttemptAt = new Date(Date.now() + wait * 1000).toISOString();
          await this.state.transition(run.runId, "pending", { error: message, errorKind: "transient", nextAttemptAt });
          log.warn({ err: message, retryInSeconds: wait }, "run failed; will retry");
        } else {
          await this.state.transition(run.runId, "failed", {
            error: message,
            errorKind: transient ? "transient" : "permanent",
            finishedAt: new Date().toISOString(),
          });
          log.error({ err: message, transient }, "run failed");
        }
      } catch (transitionError) {
        if (!(transitionError instanceof IllegalTransitionError)) throw transitionError;
        log.warn({ err: message }, "the run failed after it was aborted; its status stays aborted");
      }
    } finally {
      clearInterval(heartbeat);
      await this.state.releaseLease(run.target, this.workerId, run.runId);
    }
    const finished = (await this.state.get(run.runId)) ?? run;
    if (finished.status === "succeeded" || finished.status === "failed") await this.notify(finished, log);
    return finished;
  }

  /** Executes runs until none is runnable now (runs waiting for a retry later stay pending). */
  async drain(): Promise<WorkSummary> {
    const summary: WorkSummary = { runs: [] };
    for (let run = await this.runNext(); run; run = await this.runNext()) {
      summary.runs.push({
        runId: run.runId,
        kind: run.kind,
        target: run.target,
        status: run.status,
        attempts: run.attempts,
        error: run.error,
      });
    }
    return summary;
  }

  /** Polls for work until the signal aborts: requests what is due, then drains. */
  async work(signal: AbortSignal): Promise<void> {
    const pollMs = this.ws.config.pipeline.pollSeconds * 1000;
    this.log.info({ pollSeconds: pollMs / 1000 }, "worker started");
    while (!signal.aborted) {
      try {
        await this.requestDue();
        await this.drain();
      } catch (err) {
        this.log.error({ err: (err as Error).message }, "worker cycle failed; trying again after the poll interval");
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, pollMs);
        signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    this.log.info("worker stopped");
  }

  /** Posts the run to the configured webhook; a failed notification is logged and never fails the run. */
  private async notify(run: Run, log: Logger): Promise<void> {
    const url = this.ws.config.pipeline.webhook;
    log.info({ status: run.status, error: run.error }, `run ${run.status}`);
    if (!url) return;
    try {
      const response = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ event: `run.${run.status}`, run }),
        signal: AbortSignal.timeout(10_000),
      });
      if (!response.ok) log.warn({ status: response.status }, "webhook answered with an error");
    } catch (err) {
      log.warn({ err: (err as Error).message }, "webhook could not be reached");
    }
  }
}

/** The schedules of the transformation folders listed in `lake.transforms` whose pipeline.json has one. */
async function transformSchedules(ws: Workspace): Promise<Config["pipeline"]["schedules"]> {
  const out: Config["pipeline"]["schedules"] = [];
  for (const folder of ws.config.lake.transforms) {
    const config = await readTransform(path.resolve(ws.root, folder));
    if (!config.schedule) continue;
    out.push({
      name: `transform-${folder.replace(/[^A-Za-z0-9_.-]/g, "_")}`,
      cron: config.schedule.cron,
      timezone: config.schedule.timezone,
      kind: "transform",
      target: folder,
      request: {},
    });
  }
  return out;
}
