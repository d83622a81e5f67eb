import { randomUUID } from "node:crypto";
import type { Kysely, Selectable } from "kysely";
import { Run, RunRequest, type RunStep } from "../pipeline/models.js";
import { assertTransition, IllegalTransitionError, predecessors, type RunStatus } from "../pipeline/status.js";
import type { RunsTable, StateDatabase } from "./database.js";

export interface RunUpdate {
  error?: string | null;
  errorKind?: "transient" | "permanent" | null;
  summary?: unknown;
  nextAttemptAt?: string;
  finishedAt?: string | null;
}

/** Pipeline runs, their steps, target leases and schedule ticks, on either state store. */
export class PipelineState {
  constructor(private readonly db: Kysely<StateDatabase>) {}

  /** Records a request; a request whose idempotency key is known returns that run instead (created: false). */
  async request(input: RunRequest, defaultMaxAttempts: number): Promise<{ run: Run; created: boolean }> {
    const req = RunRequest.parse(input);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.db.transaction().execute(async (trx) => {
          if (req.idempotencyKey) {
            const existing = await trx
              .selectFrom("runs")
              .selectAll()
              .where("idempotency_key", "=", req.idempotencyKey)
              .executeTakeFirst();
            if (existing) return { run: toRun(existing), created: false };
          }
          const { max } = await trx
            .selectFrom("runs")
            .select((eb) => eb.fn.max<number | null>("seq").as("max"))
            .executeTakeFirstOrThrow();
          const now = new Date().toISOString();
          const row: RunsTable = {
            run_id: randomUUID(),
            seq: (max === null ? 0 : Number(max)) + 1,
            kind: req.kind,
            target: req.target,
            params: JSON.stringify(req.params),
            requested_by: req.requestedBy,
            idempotency_key: req.idempotencyKey ?? null,
            status: "pending",
            attempts: 0,
            max_attempts: req.maxAttempts ?? defaultMaxAttempts,
            next_attempt_at: req.notBefore ? new Date(req.notBefore).toISOString() : now,
            created_at: now,
            started_at: null,
            finished_at: null,
            worker: null,
            error: null,
            error_kind: null,
            summary: null,
          };
          await trx.insertInto("runs").values(row).execute();
          return { run: toRun(row), created: true };
        });
      } catch (err) {
        // Two writers took the same seq (or key): the unique constraint refused one; look again.
        if (attempt < 10 && /unique|duplicate/i.test((err as Error).message)) continue;
        throw err;
      }
    }
  }

  /** The run queued or running for this kind and target, if any (so automatic requests coalesce). */
  async queued(kind: string, target: string): Promise<Run | undefined> {
    const row = await this.db
      .selectFrom("runs")
      .selectAll()
      .where("kind", "=", kind)
      .where("target", "=", target)
      .where("status", "in", ["pending", "in_progress"])
      .orderBy("seq")
      .executeTakeFirst();
    return row && toRun(row);
  }

  /**
   * Claims the next runnable run for a worker: the oldest pending run that is due and first in its target's
   * queue, whose target lease the worker can take. Runs whose worker died (lease expired) are put back first.
   */
  async claim(worker: string, leaseMs: number): Promise<Run | undefined> {
    await this.recoverOrphans();
    const now = new Date().toISOString();
    const candidates = await this.db
      .selectFrom("runs as r")
      .selectAll("r")
      .where("r.status", "=", "pending")
      .where("r.next_attempt_at", "<=", now)
      .where(({ not, exists, selectFrom }) =>
        not(
          exists(
            selectFrom("runs as e")
              .select("e.run_id")
              .whereRef("e.target", "=", "r.target")
              .whereRef("e.seq", "<", "r.seq")
              .where("e.status", "in", ["pending", "in_progress"]),
          ),
        ),
      )
      .orderBy("r.seq")
      .limit(20)
      .execute();
    for (const candidate of candidates) {
      const expires = new Date(Date.now() + leaseMs).toISOString();
      if (!(await this.takeLease(candidate.target, worker, candidate.run_id, expires))) continue;
      const started = await this.db
        .updateTable("runs")
        .set((eb) => ({
          status: "in_progress",
          attempts: eb("attempts", "+", 1),
          started_at: now,
          worker,
          error: null,
          error_kind: null,
        }))
        .where("run_id", "=", candidate.run_id)
        .where("status", "=", "pending")
        .executeTakeFirst();
      if (Number(started.numUpdatedRows) === 1) return (await this.get(candidate.run_id))!;
      await this.releaseLease(candidate.target, worker, candidate.run_id);
    }
    return undefined;
  }

  /** Takes (or renews) a target's lease when it is free, expired, or already this worker's for this run. */
  async takeLease(target: string, holder: string, runId: string, expiresAt: string): Promise<boolean> {
    const now = new Date().toISOString();
    await this.db
      .insertInto("leases")
      .values({ target, holder, run_id: runId, expires_at: expiresAt })
      .onConflict((oc) =>
        oc
          .column("target")
          .doUpdateSet((eb) => ({
            holder: eb.ref("excluded.holder"),
            run_id: eb.ref("excluded.run_id"),
            expires_at: eb.ref("excluded.expires_at"),
          }))
          .where((eb) =>
            eb.or([
              eb("leases.expires_at", "<", now),
              eb.and([eb("leases.holder", "=", holder), eb("leases.run_id", "=", runId)]),
            ]),
          ),
      )
      .execute();
    const lease = await this.db.selectFrom("leases").selectAll().where("target", "=", target).executeTakeFirst();
    return lease?.holder === holder && lease.run_id === runId;
  }

  async releaseLease(target: string, holder: string, runId: string): Promise<void> {
    await this.db
      .deleteFrom("leases")
      .where("target", "=", target)
      .where("holder", "=", holder)
      .where("run_id", "=", runId)
      .execute();
  }

  /** Runs left in progress by a worker whose lease expired go back to pending (their attempt counted). */
  async recoverOrphans(): Promise<number> {
    const now = new Date().toISOString();
    const result = await this.db
      .updateTable("runs")
      .set({
        status: "pending",
        error: "the worker running it stopped (its lease expired); retrying",
        error_kind: "transient",
      })
      .where("status", "=", "in_progress")
      .where(({ not, exists, selectFrom }) =>
        not(
          exists(
            selectFrom("leases")
              .select("leases.target")
              .whereRef("leases.run_id", "=", "runs.run_id")
              .where("leases.expires_at", ">=", now),
          ),
        ),
      )
      .executeTakeFirst();
    return Number(result.numUpdatedRows);
  }

  /**
   * Moves a run to a new status. The move happens only from a status that allows it (checked in the same
   * statement, so it holds against other processes); otherwise it is an IllegalTransitionError naming both.
   */
  async transition(runId: string, to: RunStatus, update: RunUpdate = {}): Promise<void> {
    const set: Partial<RunsTable> = { status: to };
    if (update.error !== undefined) set.error = update.error;
    if (update.errorKind !== undefined) set.error_kind = update.errorKind;
    if (update.summary !== undefined) set.summary = JSON.stringify(update.summary);
    if (update.nextAttemptAt !== undefined) set.next_attempt_at = update.nextAttemptAt;
    if (update.finishedAt !== undefined) set.finished_at = update.finishedAt;
    const result = await this.db
      .updateTable("runs")
      .set(set)
      .where("run_id", "=", runId)
      .where("status", "in", predecessors(to))
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) === 1) return;
    const current = await this.get(runId);
    if (!current) throw new Error(`no run '${runId}'`);
    assertTransition(current.status, to);
    throw new IllegalTransitionError(`run ${runId} changed status while moving to ${to}; try again`);
  }

  async startStep(runId: string, attempt: number, name: string): Promise<void> {
    await this.db
      .insertInto("run_steps")
      .values({
        run_id: runId,
        attempt,
        name,
        status: "in_progress",
        started_at: new Date().toISOString(),
        finished_at: null,
        error: null,
        summary: null,
      })
      .onConflict((oc) => oc.columns(["run_id", "attempt", "name"]).doNothing())
      .execute();
  }

  async finishStep(
    runId: string,
    attempt: number,
    name: string,
    status: string,
    summary: unknown,
    error: string | null,
  ): Promise<void> {
    await this.db
      .updateTable("run_steps")
      .set({ status, finished_at: new Date().toISOString(), summary: JSON.stringify(summary ?? null), error })
      .where("run_id", "=", runId)
      .where("attempt", "=", attempt)
      .where("name", "=", name)
      .execute();
  }

  async get(runId: string): Promise<Run | undefined> {
    const row = await this.db.selectFrom("runs").selectAll().where("run_id", "=", runId).executeTakeFirst();
    return row && toRun(row);
  }

  async list(options: { statuses?: RunStatus[]; limit?: number } = {}): Promise<Run[]> {
    let q = this.db.selectFrom("runs").selectAll();
    if (options.statuses?.length) q = q.where("status", "in", options.statuses);
    const rows = await q
      .orderBy("seq", "desc")
      .limit(options.limit ?? 50)
      .execute();
    return rows.map(toRun);
  }

  async steps(runId: string): Promise<RunStep[]> {
    const rows = await this.db
      .selectFrom("run_steps")
      .selectAll()
      .where("run_id", "=", runId)
      .orderBy("attempt")
      .orderBy("started_at")
      .execute();
    return rows.map((r) => ({
      attempt: Number(r.attempt),
      name: r.name,
      status: r.status,
      startedAt: r.started_at,
      finishedAt: r.finished_at,
      error: r.error,
      summary: r.summary === null ? null : JSON.parse(r.summary),
    }));
  }

  async lastTick(schedule: string): Promise<string | undefined> {
    const row = await this.db
      .selectFrom("schedules")
      .select("last_tick")
      .where("name", "=", schedule)
      .executeTakeFirst();
    return row?.last_tick;
  }

  async setLastTick(schedule: string, tick: string): Promise<void> {
    await this.db
      .insertInto("schedules")
      .values({ name: schedule, last_tick: tick })
      .onConflict((oc) => oc.column("name").doUpdateSet({ last_tick: tick }))
      .execute();
  }
}

function toRun(row: Selectable<RunsTable>): Run {
  return Run.parse({
    runId: row.run_id,
    seq: Number(row.seq),
    kind: row.kind,
    target: row.target,
    params: JSON.parse(row.params),
    requestedBy: row.requested_by,
    idempotencyKey: row.idempotency_key,
    status: row.status,
    attempts: Number(row.attempts),
    maxAttempts: Number(row.max_attempts),
    nextAttemptAt: row.next_attempt_at,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    worker: row.worker,
    error: row.error,
    errorKind: row.error_kind,
    summary: row.summary === null ? null : JSON.parse(row.summary),
  });
}
