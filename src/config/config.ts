import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { FieldDefinition } from "../export/serialize.js";

export const CONFIG_FILE = "studylake.config.json";

export const MissingSchemaPolicy = z.enum(["treat-as-unvalidated", "quarantine"]);
export type MissingSchemaPolicy = z.infer<typeof MissingSchemaPolicy>;

const SchemaLocation = z.object({
  /** Schema URLs starting with this prefix… */
  urlPrefix: z.string().min(1),
  /** …are read from this folder (the rest of the URL is the path inside it). */
  folder: z.string().min(1),
});

const AllowedValidationError = z.object({
  /** File name inside the archive (basename). */
  file: z.string().min(1),
  /** The validator's message, exactly as reported (for example "must have required property 'type'"). */
  message: z.string().min(1),
  /** Only drop the error when the upload's clientinfo contains this text (for example "Android"). */
  clientInfoContains: z.string().optional(),
});

/** A PostgreSQL schema name that needs no quoting. */
const PgSchemaName = z.string().regex(/^[a-z_][a-z0-9_]*$/, "must be lower-case letters, digits and _");

const StateConfig = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("sqlite"), path: z.string().default("state.db") }),
  z.object({
    kind: z.literal("postgres"),
    url: z.string().min(1),
    /** Tables live in this PostgreSQL schema, so several workspaces can share one database. */
    schema: PgSchemaName.default("studylake"),
  }),
]);

/** An IANA time zone name, for example America/Los_Angeles: one the runtime does not know is refused here. */
export const TimeZone = z.string().refine(
  (zone) => {
    try {
      new Intl.DateTimeFormat("en-US", { timeZone: zone });
      return true;
    } catch {
      return false;
    }
  },
  { message: "not a known IANA time zone (for example America/Los_Angeles or UTC)" },
);

const Schedule = z.object({
  name: z.string().regex(/^[A-Za-z0-9_.-]+$/),
  /** Cron expression (5 or 6 fields), read in `timezone`. */
  cron: z.string().min(1),
  /** IANA time zone, for example America/Los_Angeles (the reference runs its daily export at 2am Pacific). */
  timezone: TimeZone.default("UTC"),
  kind: z.enum(["intake", "relationalize", "export", "transform"]),
  /** A dataset id, or `*` for every dataset (relationalize); an export destination's name (export). */
  target: z.string().default("*"),
  /**
   * Export only: request fields each tick's request starts from (for example a study whitelist or a sharing
   * mode), as the reference's scheduler configuration overrides them. The tick fills in yesterday's date.
   */
  request: z.record(z.string(), z.unknown()).default({}),
});

const ExportDestination = z.discriminatedUnion("kind", [
  z.object({
    kind: z.literal("folder"),
    /** Relative to the workspace. */
    path: z.string().min(1),
    format: z.enum(["tsv", "csv"]).default("tsv"),
  }),
  z.object({
    kind: z.literal("postgres"),
    url: z.string().min(1),
    /** Researcher tables live in this PostgreSQL schema. */
    schema: PgSchemaName.default("studylake_export"),
  }),
]);
export type ExportDestination = z.infer<typeof ExportDestination>;

/** The destination an export goes to when its request names none. */
export const DEFAULT_DESTINATION = "default";

/**
 * How the records of one dataset are told apart, which version of a record wins, and where its deletions
 * come from (recover's rules: an index per data type, the newest `InsertedDate` then `export_end_date`, and
 * HealthKit's `_Deleted` exports).
 */
const DatasetRules = z.object({
  /**
   * The root fields that identify a record of this dataset (recover's index, for example `["LogId"]` or
   * `["ParticipantIdentifier", "Date"]`), instead of `relationalize.recordField`. Child rows inherit them.
   */
  key: z.array(z.string().min(1)).min(1).optional(),
  /**
   * Root fields compared in order to decide which of two documents of a record is newer (a missing value
   * is the oldest); on a tie, or with none, the newest upload wins. An older document arriving later is
   * counted and not written.
   */
  newestBy: z.array(z.string().min(1)).default([]),
  /**
   * A dataset of deletion exports: each of its documents removes the record with the same id (every other
   * field ignored) from this dataset's tables, and keeps it out when it arrives again later.
   */
  deletedBy: z.string().min(1).optional(),
  /**
   * A root field (recover: `export_end_date`) whose values each run's summary counts documents by: read,
   * older than the version in the tables, kept out by the deletion export, and written.
   */
  countBy: z.string().min(1).optional(),
});
export type DatasetRules = z.infer<typeof DatasetRules>;

export const Limits = z.object({
  /** Largest archive accepted, in bytes. */
  maxArchiveBytes: z
    .number()
    .int()
    .positive()
    .default(512 * 1024 * 1024),
  /** Most entries one archive may hold. */
  maxEntries: z.number().int().positive().default(1000),
  /** Largest inflated size of one entry, in bytes. */
  maxEntryBytes: z
    .number()
    .int()
    .positive()
    .default(256 * 1024 * 1024),
  /** Largest inflated size of all entries together, in bytes. */
  maxInflatedBytes: z
    .number()
    .int()
    .positive()
    .default(1024 * 1024 * 1024),
  /** Largest inflated/compressed ratio of an entry larger than 1 MiB: a zip bomb's ratio is in the thousands. */
  maxCompressionRatio: z.number().positive().default(200),
  /** Validation messages kept per file in a quarantine report. */
  maxErrorsPerFile: z.number().int().positive().default(10),
});
export type Limits = z.infer<typeof Limits>;

export const Config = z.object({
  /** Folders of the embedded workspace, relative to the config file. */
  paths: z
    .object({
      raw: z.string().default("raw"),
      json: z.string().default("json"),
      quarantine: z.string().default("quarantine"),
      parquet: z.string().default("parquet"),
      /** The lake: `raw/<dataset>/<update>/` and `data/<dataset>/<update>/` inside. */
      lake: z.string().default("lake"),
    })
    .default({ raw: "raw", json: "json", quarantine: "quarantine", parquet: "parquet", lake: "lake" }),
  state: StateConfig.default({ kind: "sqlite", path: "state.db" }),
  /** The archive map (mobile-client-json format) that names a JSON Schema per file. */
  archiveMap: z.string().default("reference/archive-map.json"),
  /** Schema `$id` → dataset id. */
  schemaMapping: z.string().default("reference/schema_mapping.json"),
  /** Legacy: assessment id → revision → file name → dataset id, for files without a schema. */
  datasetMapping: z.string().default("reference/dataset_mapping.json"),
  schemaLocations: z.array(SchemaLocation).default([
    {
      urlPrefix: "https://sage-bionetworks.github.io/mobile-client-json/",
      folder: "reference/mobile-client-json",
    },
  ]),
  /** What happens to a file whose schema URL has no local copy. */
  missingSchemaPolicy: MissingSchemaPolicy.default("treat-as-unvalidated"),
  /** The app id used for the archive map's app scope when an upload does not name one. */
  defaultAppId: z.string().default("mobile-toolbox"),
  /** The study id given to uploads that do not name one. */
  defaultStudyId: z.string().optional(),
  allowedValidationErrors: z.array(AllowedValidationError).default([]),
  limits: Limits.default(Limits.parse({})),
  export: z
    .object({
      /** The zone whose calendar days an export's `date` names (the reference: America/Los_Angeles). */
      timezone: TimeZone.default("America/Los_Angeles"),
      /** Studies configured for export; when set, records of other studies are excluded (and counted). */
      studies: z.array(z.string().min(1)).optional(),
      /** Named destinations; `default` is used when a request names none. */
      destinations: z
        .record(z.string().regex(/^[A-Za-z0-9_.-]+$/), ExportDestination)
        .default({ [DEFAULT_DESTINATION]: { kind: "folder", path: "exports", format: "tsv" } }),
      /**
       * Declared fields per dataset id (the reference's typed schemas: multi-choice answers, string lengths);
       * a dataset without declared fields has them inferred from its documents.
       */
      fields: z.record(z.string(), z.array(FieldDefinition)).default({}),
      /** Records whose export failed for a transient reason are exported again, up to `maxCount` times. */
      redrive: z
        .object({ maxCount: z.number().int().min(0).default(2), delaySeconds: z.number().nonnegative().default(900) })
        .default({ maxCount: 2, delaySeconds: 900 }),
    })
    .default({
      timezone: "America/Los_Angeles",
      destinations: { [DEFAULT_DESTINATION]: { kind: "folder", path: "exports", format: "tsv" } },
      fields: {},
      redrive: { maxCount: 2, delaySeconds: 900 },
    }),
  pipeline: z
    .object({
      /** Archives dropped here are taken in by `studylake run` and `studylake worker`, then moved to `.done/`. */
      dropFolder: z.string().default("incoming"),
      /**
       * An archive in the drop folder is taken in once neither it nor its sidecar has changed for this long, for
       * writers that copy in place (a copy still being written keeps changing). 0: at once, for writers that
       * copy under another name and rename, as rsync does.
       */
      dropQuietSeconds: z.number().nonnegative().default(0),
      /** How long a worker's claim on a target lasts without renewal; a dead worker's runs are retried after it. */
      leaseSeconds: z.number().int().positive().default(120),
      maxAttempts: z.number().int().min(1).default(3),
      /** First retry delay; it doubles with each attempt. */
      retryBaseSeconds: z.number().nonnegative().default(30),
      pollSeconds: z.number().positive().default(5),
      /** Receives an HTTP POST of the run (status, summary, error) when a run succeeds or fails. */
      webhook: z.url().optional(),
      schedules: z.array(Schedule).default([]),
    })
    .default({
      dropFolder: "incoming",
      dropQuietSeconds: 0,
      leaseSeconds: 120,
      maxAttempts: 3,
      retryBaseSeconds: 30,
      pollSeconds: 5,
      schedules: [],
    }),
  relationalize: z
    .object({
      /** The root field that identifies a record: one record per table, the newest upload winning. */
      recordField: z.string().default("recordid"),
      /** Partition folders of the Parquet tables; child rows inherit these fields and the record field. */
      partitionFields: z.array(z.string()).default(["assessmentid", "year", "month", "day"]),
      /** Rows gathered before a batch is written: bounds memory whatever the input size. */
      batchRows: z.number().int().positive().default(50_000),
      /**
       * JSON bytes DuckDB reads and relationalizes at once (the typed way): bounds memory, as DuckDB holds a
       * group's typed documents (about ten times their JSON). A file larger than this is read line by line,
       * in pieces of this size.
       */
      groupBytes: z
        .number()
        .int()
        .positive()
        .default(64 * 1024 * 1024),
      /**
       * New files one run takes at most: a larger backlog (a first run over a long history) goes in several
       * runs, each committed, so a process killed in a long catch-up loses only the run it was in.
       */
      filesPerRun: z.number().int().positive().default(50_000),
      /**
       * Once a table's partition folder holds this many files (each run adds one to each partition it writes
       * to), the run writing there next merges them into one; 0: never.
       */
      compactAfterFiles: z.number().int().min(0).default(32),
      /**
       * Only files smaller than this are merged: in a partition that keeps growing, merging its large file
       * with each new handful of small ones would rewrite it whole every time.
       */
      compactBelowBytes: z
        .number()
        .int()
        .positive()
        .default(64 * 1024 * 1024),
      /**
       * Let DuckDB read and relationalize the documents whose structure says everything about them (most
       * documents; see src/parquet/typed-batch.ts); the rest, or everything when false, is parsed in JavaScript.
       * Both give the same tables.
       */
      typed: z.boolean().default(true),
      /** Rules of particular datasets, by dataset id (recover's per-data-type index and deletion exports). */
      datasets: z.record(z.string(), DatasetRules).default({}),
    })
    .default({
      recordField: "recordid",
      partitionFields: ["assessmentid", "year", "month", "day"],
      batchRows: 50_000,
      groupBytes: 64 * 1024 * 1024,
      filesPerRun: 50_000,
      compactAfterFiles: 32,
      compactBelowBytes: 64 * 1024 * 1024,
      typed: true,
      datasets: {},
    }),
  lake: z
    .object({
      /** Columns that name the participant of a row: a withdrawal removes and hides rows by them. */
      participantColumns: z.array(z.string().min(1)).default(["healthCode", "healthcode", "participant_id"]),
      /** Each relationalize run's tables become one delta update each of a lake dataset named after the table. */
      publishRelationalized: z.boolean().default(true),
      /** The tier of the datasets made from relationalized tables. */
      relationalizedTier: z.enum(["internal", "restricted", "sensitive"]).default("restricted"),
      /** Transformation folders (relative to the workspace) whose pipeline.json schedules a worker runs. */
      transforms: z.array(z.string().min(1)).default([]),
      /**
       * A dataset relationalize runs publish to is compacted once this many deltas follow its latest snapshot
       * (reads go through every delta's files); 0 leaves it to `studylake compact`.
       */
      compactAfterDeltas: z.number().int().min(0).default(50),
      /**
       * An update's writer renews it every third of this while it writes; one not renewed for this long was cut
       * off (its process died) and is abandoned by the next write to its dataset.
       */
      abandonAfterSeconds: z.number().positive().default(120),
    })
    .default({
      participantColumns: ["healthCode", "healthcode", "participant_id"],
      publishRelationalized: true,
      relationalizedTier: "restricted",
      transforms: [],
      compactAfterDeltas: 50,
      abandonAfterSeconds: 120,
    }),
  /** Archives processed at once by one process: overlapping their file I/O matters far more than CPU. */
  concurrency: z.number().int().min(1).max(256).default(8),
  /** fsync raw archives before recording them (derived outputs can always be rebuilt by `reprocess`). */
  fsyncRaw: z.boolean().default(true),
});
export type Config = z.infer<typeof Config>;
export interface EffectiveDatasetRules {
  /** The fields whose values identify a record. */
  key: string[];
  /**
   * The column holding each row's record id: the key's field, or for a key of several fields the
   * synthetic `_record` (the values as a JSON array of text), added to every row and left out of rebuilds.
   */
  recordField: string;
  newestBy: string[];
  deletedBy: string | undefined;
  countBy: string | undefined;
}

/** The record column of datasets whose records are identified by several fields. */
export const COMPOSITE_RECORD_FIELD = "_record";

/** The rules one dataset's records follow: its own where configured, the workspace's otherwise. */
export function datasetRules(settings: Config["relationalize"], dataset: string): EffectiveDatasetRules {
  const own = settings.datasets[dataset];
  if (own?.deletedBy === dataset) throw new ConfigError(`relationalize.datasets.${dataset}: deletedBy names itself`);
  const key = own?.key ?? [settings.recordField];
  return {
    key,
    recordField: key.length === 1 ? (key[0] as string) : COMPOSITE_RECORD_FIELD,
    newestBy: own?.newestBy ?? [],
    deletedBy: own?.deletedBy,
    countBy: own?.countBy,
  };
}

/** A configuration as written, before defaults are filled in. */
export type ConfigInput = z.input<typeof Config>;
export type StateConfig = z.infer<typeof StateConfig>;

/** A parsed configuration plus the folder its relative paths are resolved against. */
export interface WorkspaceConfig {
  root: string;
  config: Config;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Reads `studylake.config.json` from the workspace folder. */
export function loadConfig(root: string): WorkspaceConfig {
  const file = path.join(root, CONFIG_FILE);
  if (!existsSync(file)) {
    throw new ConfigError(`no ${CONFIG_FILE} in ${root}: run 'studylake init' there first`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new ConfigError(`${file} is not valid JSON: ${(err as Error).message}`);
  }
  const parsed = Config.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? issue.path.join(".") : "(top level)";
    throw new ConfigError(`${file}: ${where}: ${issue?.message ?? "invalid"}`);
  }
  return { root: path.resolve(root), config: parsed.data };
}
