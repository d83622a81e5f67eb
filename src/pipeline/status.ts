import { z } from "zod";

/** Where a pipeline run stands. */
export const RunStatus = z.enum(["pending", "in_progress", "succeeded", "failed", "skipped", "aborted"]);
export type RunStatus = z.infer<typeof RunStatus>;

/**
 * Every allowed change of status, in one place. A run goes back to pending when a transient failure is retried,
 * when its worker died (its lease expired), or when a person retries a failed or aborted run.
 */
export const TRANSITIONS: Readonly<Record<RunStatus, readonly RunStatus[]>> = {
  pending: ["in_progress", "aborted", "skipped"],
  in_progress: ["succeeded", "failed", "skipped", "pending", "aborted"],
  failed: ["pending"],
  aborted: ["pending"],
  succeeded: [],
  skipped: [],
};

export class IllegalTransitionError extends Error {
  override name = "IllegalTransitionError";
}

/** The statuses a run may be in for it to move to `to`. */
export function predecessors(to: RunStatus): RunStatus[] {
  return RunStatus.options.filter((from) => TRANSITIONS[from].includes(to));
}

export function assertTransition(from: RunStatus, to: RunStatus): void {
  if (!TRANSITIONS[from].includes(to)) throw new IllegalTransitionError(`a run cannot go from ${from} to ${to}`);
}
