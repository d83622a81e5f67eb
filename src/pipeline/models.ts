import { z } from "zod";
import { RunStatus } from "./status.js";

/** What a run does. */
export const RunKind = z.enum([
  /** Take in the archives waiting in the drop folder. */
  "intake",
  /** Relationalize one dataset (target) to Parquet. */
  "relationalize",
  /** Export records to researcher tables (target: `export:<destination>`; params.request: the request). */
  "export",
  /** Run a lake transformation folder (target: the folder, relative to the workspace). */
  "transform",
]);
export type RunKind = z.infer<typeof RunKind>;

/** A request for a run. The same idempotency key always names the same run. */
export const RunRequest = z.object({
  kind: RunKind,
  /** What the run writes: one run at a time per target, in the order requested. */
  target: z.string().min(1),
  params: z.record(z.string(), z.unknown()).default({}),
  requestedBy: z.string().min(1).default("cli"),
  idempotencyKey: z.string().min(1).optional(),
  maxAttempts: z.number().int().min(1).max(50).optional(),
  /** Not run before this time (a delayed redrive). */
  notBefore: z.iso.datetime({ offset: true }).optional(),
});
export type RunRequest = z.input<typeof RunRequest>;

export const ErrorKind = z.enum(["transient", "permanent"]);

export const Run = z.object({
  runId: z.string(),
  seq: z.number().int(),
  kind: RunKind,
  target: z.string(),
  params: z.record(z.string(), z.unknown()),
  requestedBy: z.string(),
  idempotencyKey: z.string().nullable(),
  status: RunStatus,
  attempts: z.number().int(),
  maxAttempts: z.number().int(),
  nextAttemptAt: z.string(),
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  worker: z.string().nullable(),
  error: z.string().nullable(),
  errorKind: ErrorKind.nullable(),
  summary: z.unknown(),
});
export type Run = z.infer<typeof Run>;

export const RunStep = z.object({
  attempt: z.number().int(),
  name: z.string(),
  status: z.string(),
  startedAt: z.string(),
  finishedAt: z.string().nullable(),
  error: z.string().nullable(),
  summary: z.unknown(),
});
export type RunStep = z.infer<typeof RunStep>;
