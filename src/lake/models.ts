import { z } from "zod";
import { TimeZone } from "../config/config.js";

/**
 * Security tiers, from the most open: internal (everyone in the organisation), restricted (a limited group,
 * same risk), sensitive (need to know: only a grant naming the dataset opens it).
 */
export const Tier = z.enum(["internal", "restricted", "sensitive"]);
export type Tier = z.infer<typeof Tier>;

/** A snapshot replaces everything before it; a delta adds rows (or, with key columns, replaces and deletes). */
export const UpdateKind = z.enum(["snapshot", "delta"]);
export type UpdateKind = z.infer<typeof UpdateKind>;

/** An update is written, then committed; only committed updates are ever read. */
export const UpdateStatus = z.enum(["writing", "committed", "abandoned"]);
export type UpdateStatus = z.infer<typeof UpdateStatus>;

export const Permission = z.enum(["read", "write"]);
export type Permission = z.infer<typeof Permission>;

/** A lake name: dataset, user and role names are SQL identifiers too. */
export const LakeName = z.string().regex(/^[A-Za-z0-9_]{1,255}$/, "must be 1 to 255 letters, digits and _");

export const Dataset = z.object({
  name: LakeName,
  description: z.string().default(""),
  owner: LakeName,
  tier: Tier,
  updateKind: UpdateKind.default("snapshot"),
  /** With key columns, a delta's row replaces the earlier row with the same key; `_deleted = true` removes it. */
  keyColumns: z.array(z.string().min(1)).default([]),
  createdAt: z.string(),
});
export type Dataset = z.infer<typeof Dataset>;

export const ManifestFile = z.object({
  path: z.string(),
  bytes: z.number().int().nonnegative(),
  sha256: z.string(),
  rows: z.number().int().nonnegative().optional(),
});

export const UpdateManifest = z.object({
  dataset: z.string(),
  update: z.string(),
  kind: UpdateKind,
  rows: z.number().int().nonnegative(),
  schema: z.array(z.object({ name: z.string(), type: z.string() })),
  /** The Parquet files (under `data/`) and the raw files they came from (under `raw/`). */
  files: z.array(ManifestFile),
  raw: z.array(ManifestFile),
  createdBy: z.string(),
  createdAt: z.string(),
  /** What made it: `import`, `compact`, `withdraw`, `transform`. */
  operation: z.string(),
  run: z.string().nullable(),
  /** The updates it was computed from (compaction, withdrawal, transformation). */
  lineage: z.array(z.object({ dataset: z.string(), update: z.string() })).default([]),
  note: z.string().optional(),
});
export type UpdateManifest = z.infer<typeof UpdateManifest>;

export const Update = z.object({
  dataset: z.string(),
  update: z.string(),
  kind: UpdateKind,
  status: UpdateStatus,
  createdBy: z.string(),
  createdAt: z.string(),
  committedAt: z.string().nullable(),
  /** While it is written: the time by which its writer must renew it, or it is taken for dead. */
  aliveUntil: z.string().nullable(),
  manifest: UpdateManifest.nullable(),
});
export type Update = z.infer<typeof Update>;

export const Grant = z.object({
  principalKind: z.enum(["user", "role"]),
  principal: LakeName,
  permission: Permission,
  targetKind: z.enum(["dataset", "tier"]),
  target: z.string().min(1),
});
export type Grant = z.infer<typeof Grant>;

export const AuditEntry = z.object({
  auditId: z.string(),
  at: z.string(),
  actor: z.string(),
  action: z.string(),
  datasets: z.array(z.string()),
  rows: z.number().int().nullable(),
  detail: z.string(),
  outcome: z.string(),
});
export type AuditEntry = z.infer<typeof AuditEntry>;

/**
 * A transformation: a folder with this `pipeline.json` and `.sql` files. Each file is one SELECT; in name
 * order, each becomes a view named after the file for the files after it, and the last one's result is the
 * output dataset's new update. It runs with its owner's grants.
 */
export const TransformConfig = z.object({
  owner: LakeName,
  /** Datasets the SQL reads (and nothing else). */
  inputs: z.array(LakeName).min(1),
  output: z.object({
    dataset: LakeName,
    /** Needed when the output dataset does not exist yet (it is created, owned by the owner). */
    tier: Tier.optional(),
    description: z.string().default(""),
    kind: UpdateKind.default("snapshot"),
  }),
  /** When a worker runs it (cron, in `timezone`). */
  schedule: z.object({ cron: z.string().min(1), timezone: TimeZone.default("UTC") }).optional(),
});
export type TransformConfig = z.infer<typeof TransformConfig>;

/** The workspace operator: whoever runs the CLI on the workspace's files without `--as` may do everything. */
export const OPERATOR = "operator";
