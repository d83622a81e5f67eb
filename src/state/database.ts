import { mkdirSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import SQLite from "better-sqlite3";
import {
  CompiledQuery,
  type DatabaseConnection,
  type Driver,
  Kysely,
  Migrator,
  PostgresDialect,
  SqliteDialect,
  type SqliteDialectConfig,
  SqliteDriver,
  sql,
  type Transaction,
} from "kysely";
import pg from "pg";
import type { StateConfig } from "../config/config.js";
import { migrations } from "./migrations.js";
import type { RelationalizeRunStatus } from "./models.js";

/** Row shapes of the state tables, as stored. */
export interface UploadsTable {
  upload_id: string;
  record_id: string | null;
  version: number | null;
  content_hash: string;
  raw_key: string;
  size_bytes: number;
  source_name: string;
  metadata: string;
  status: string;
  error: string | null;
  summary: string | null;
  attempts: number;
  received_at: string;
  processed_at: string | null;
  /** From the metadata, kept as columns for export selection. */
  uploaded_on: string | null;
  study_id: string | null;
  health_code: string | null;
}

export interface UploadFilesTable {
  upload_id: string;
  seq: number;
  path: string;
  size_bytes: number;
  schema_url: string | null;
  schema_source: string | null;
  schema_missing: number;
  validation: string;
  errors: string;
  dataset_id: string | null;
  output_key: string | null;
  note: string | null;
}

export interface DatasetSchemasTable {
  dataset: string;
  schema: string;
  updated_at: string;
}

export interface JsonBookmarksTable {
  dataset: string;
  key: string;
  size_bytes: number;
  modified_ms: number;
  run_id: string;
}

export interface ParquetRecordsTable {
  dataset: string;
  record_id: string;
  run_id: string;
  json_key: string;
  record_order: string | null;
}

/**
 * Parquet files whose rows a relationalize run put in files of its own: merged (see
 * `relationalize.compactAfterFiles`), or all but the records it replaced or deleted. The records of the run
 * that wrote each file (`absorbed_run_id`) may now be in the merging run's files, and the file is deleted
 * once the merging run has committed (`removed` 0 until then, or when its process died).
 */
export interface ParquetCompactionsTable {
  dataset: string;
  run_id: string;
  absorbed_run_id: string;
  /** The file, relative to the Parquet folder (`<table>/<partition folders>/<name>`). */
  file: string;
  removed: number;
}

/** Records a dataset's deletion export names (see `relationalize.datasets.*.deletedBy`). */
export interface DeletedRecordsTable {
  dataset: string;
  record_id: string;
  json_key: string;
}

export interface RelationalizeRunsTable {
  run_id: string;
  dataset: string;
  status: RelationalizeRunStatus;
  started_at: string;
  finished_at: string | null;
  summary: string | null;
}

export interface RunsTable {
  run_id: string;
  seq: number;
  kind: string;
  target: string;
  params: string;
  requested_by: string;
  idempotency_key: string | null;
  status: string;
  attempts: number;
  max_attempts: number;
  next_attempt_at: string;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  worker: string | null;
  error: string | null;
  error_kind: string | null;
  summary: string | null;
}

export interface RunStepsTable {
  run_id: string;
  attempt: number;
  name: string;
  status: string;
  started_at: string;
  finished_at: string | null;
  error: string | null;
  summary: string | null;
}

export interface LeasesTable {
  target: string;
  holder: string;
  run_id: string;
  expires_at: string;
}

export interface SchedulesTable {
  name: string;
  last_tick: string;
}

export interface ParticipantsTable {
  health_code: string;
  sharing_scope: string;
  updated_at: string;
}

export interface ExportTimesTable {
  study_id: string;
  last_export_at: string;
}

/** One export of records to researcher tables: its request, status and metrics. */
export interface ExportsTable {
  export_id: string;
  /** Same key, same export: a finished export is not repeated. */
  idempotency_key: string;
  destination: string;
  export_date: string;
  request: string;
  status: string;
  started_at: string;
  finished_at: string | null;
  metrics: string | null;
  error: string | null;
}

/** The bookkeeping of researcher tables: which table holds a study's schema, with which columns. */
export interface ExportTablesTable {
  destination: string;
  table_key: string;
  study_id: string;
  table_name: string;
  /** The schema's fields the table was built from (JSON). */
  fields: string;
  /** Ordered column list (JSON), as the destination has it. */
  columns: string;
  updated_at: string;
}

/** Which export wrote each record's row in each table: exactly once, and what a redrive replaces. */
export interface ExportRecordsTable {
  destination: string;
  table_key: string;
  record_id: string;
  export_id: string;
}

/** A lake dataset: made of immutable updates, in one security tier. */
export interface LakeDatasetsTable {
  name: string;
  description: string;
  owner: string;
  tier: string;
  update_kind: string;
  /** Key columns (JSON list): a delta's row replaces the earlier row with the same key. */
  key_columns: string;
  created_at: string;
}

export interface LakeUpdatesTable {
  dataset: string;
  update_id: string;
  kind: string;
  status: string;
  /** JSON: files, rows, schema, checksums, who, when, run, lineage. */
  manifest: string | null;
  created_by: string;
  created_at: string;
  committed_at: string | null;
  /** The run that began the update (a relationalize run, or a pipeline run's), if one did. */
  run_id: string | null;
  /** While it is written: the time by which its writer must renew it, or it is taken for dead. */
  alive_until: string | null;
}

export interface LakeUsersTable {
  name: string;
  created_at: string;
}

export interface LakeUserRolesTable {
  user_name: string;
  role: string;
}

export interface LakeGrantsTable {
  /** `user` or `role`. */
  principal_kind: string;
  principal: string;
  /** `read` or `write` (write includes read). */
  permission: string;
  /** `dataset` or `tier`. */
  target_kind: string;
  target: string;
  created_at: string;
}

export interface LakeTokensTable {
  /** SHA-256 of the token: the token itself is shown once and never stored. */
  token_hash: string;
  user_name: string;
  created_at: string;
}

export interface LakeAuditTable {
  audit_id: string;
  at: string;
  actor: string;
  action: string;
  /** JSON list of dataset names. */
  datasets: string;
  rows: number | null;
  detail: string;
  outcome: string;
}

/** Participants who withdrew: their rows are gone from the lake's current updates and hidden from every read. */
export interface WithdrawalsTable {
  health_code: string;
  withdrawn_at: string;
}

export interface StateDatabase {
  uploads: UploadsTable;
  upload_files: UploadFilesTable;
  dataset_schemas: DatasetSchemasTable;
  json_bookmarks: JsonBookmarksTable;
  parquet_records: ParquetRecordsTable;
  parquet_compactions: ParquetCompactionsTable;
  deleted_records: DeletedRecordsTable;
  relationalize_runs: RelationalizeRunsTable;
  runs: RunsTable;
  run_steps: RunStepsTable;
  leases: LeasesTable;
  schedules: SchedulesTable;
  participants: ParticipantsTable;
  export_times: ExportTimesTable;
  exports: ExportsTable;
  export_tables: ExportTablesTable;
  export_records: ExportRecordsTable;
  lake_datasets: LakeDatasetsTable;
  lake_updates: LakeUpdatesTable;
  lake_users: LakeUsersTable;
  lake_user_roles: LakeUserRolesTable;
  lake_grants: LakeGrantsTable;
  lake_tokens: LakeTokensTable;
  lake_audit: LakeAuditTable;
  withdrawals: WithdrawalsTable;
}

export interface OpenDatabase {
  db: Kysely<StateDatabase>;
  /** Where the state lives, for messages (never includes a password). */
  description: string;
  /**
   * Notes rows written to a table; once 10,000 have been since the table's statistics were last refreshed
   * here, refreshes them (`ANALYZE`). PostgreSQL plans a lookup of a few hundred keys as a scan of a whole
   * dataset's (or destination's) index range when its statistics still describe the table before a large
   * write, and autovacuum analyzes a minute or more later: 30 ms instead of 3 ms per lookup. SQLite needs none.
   */
  wrote(table: keyof StateDatabase, rows: number): Promise<void>;
  /**
   * Makes the transactions that take the same key go one after another, until the transaction ends:
   * PostgreSQL takes an advisory lock; SQLite's write transactions already go one at a time.
   */
  lockKey(trx: Transaction<StateDatabase>, key: string): Promise<void>;
}

/** Rows written to a table from which its planner statistics are refreshed at once (see `OpenDatabase.wrote`). */
const ANALYZE_AFTER_ROWS = 10_000;

function statisticsKeeper(analyze: (table: keyof StateDatabase) => Promise<void>): OpenDatabase["wrote"] {
  const written = new Map<keyof StateDatabase, number>();
  return async (table, rows) => {
    const total = (written.get(table) ?? 0) + rows;
    written.set(table, total >= ANALYZE_AFTER_ROWS ? 0 : total);
    if (total >= ANALYZE_AFTER_ROWS) await analyze(table);
  };
}

const PG_INT8 = 20;
/** How long a SQLite state file waits for another process's write before giving up. */
const BUSY_TIMEOUT_MS = 10_000;
const WAL_RETRY_MS = 50;

/** Opens the state database named by the configuration and brings its tables up to date. */
export async function openDatabase(config: StateConfig, root: string): Promise<OpenDatabase> {
  if (config.kind === "sqlite") {
    const file = path.resolve(root, config.path);
    mkdirSync(path.dirname(file), { recursive: true });
    const database = new SQLite(file);
    // First, so that every step below waits for another process rather than failing with "database is locked".
    database.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    await walMode(database);
    database.pragma("synchronous = NORMAL");
    database.pragma("foreign_keys = ON");
    const db = new Kysely<StateDatabase>({ dialect: new ImmediateSqliteDialect({ database }) });
    if (!migrated(database)) {
      // Kysely takes no lock for SQLite migrations: two processes opening a new state file at once would both
      // run them. The write lock, held across them, makes the second wait and then find nothing to do.
      database.exec("begin immediate");
      try {
        await migrate(db, undefined);
        database.exec("commit");
      } catch (err) {
        database.exec("rollback");
        await db.destroy();
        throw err;
      }
    }
    return { db, description: `sqlite:${file}`, wrote: async () => {}, lockKey: async () => {} };
  }
  const pool = new pg.Pool({
    connectionString: config.url,
    max: 4,
    // Sizes are bigint columns; every size studylake stores fits a JS number.
    types: {
      getTypeParser: ((oid: number, format?: string) =>
        oid === PG_INT8 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as "text")) as never,
    },
  });
  const root_db = new Kysely<StateDatabase>({ dialect: new PostgresDialect({ pool }) });
  try {
    await sql`create schema if not exists ${sql.id(config.schema)}`.execute(root_db);
  } catch (err) {
    await root_db.destroy();
    throw new Error(`cannot reach PostgreSQL state store (${redact(config.url)}): ${(err as Error).message}`);
  }
  const db = root_db.withSchema(config.schema);
  await migrate(db, config.schema);
  return {
    db,
    description: `postgres:${redact(config.url)} schema ${config.schema}`,
    wrote: statisticsKeeper(async (table) => {
      await sql`analyze ${sql.id(config.schema, table)}`.execute(root_db);
    }),
    lockKey: async (trx, key) => {
      await sql`SELECT pg_advisory_xact_lock(hashtext(${key}))`.execute(trx);
    },
  };
}

/**
 * Puts a SQLite file in WAL mode (it stays so). Switching takes the file for itself, and SQLite answers
 * "database is locked" at once rather than calling the busy handler when other processes have it open, as
 * when several open a new state file together: it is tried again for as long as the busy timeout.
 */
async function walMode(database: SQLite.Database): Promise<void> {
  for (let waited = 0; ; waited += WAL_RETRY_MS) {
    try {
      database.pragma("journal_mode = WAL");
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== "SQLITE_BUSY" || waited >= BUSY_TIMEOUT_MS) throw err;
      await sleep(WAL_RETRY_MS);
    }
  }
}

/** Whether a SQLite state file has every migration already (Kysely's own table says): then none need run. */
function migrated(database: SQLite.Database): boolean {
  const exists = database
    .prepare("select 1 from sqlite_master where type = 'table' and name = 'kysely_migration'")
    .get();
  if (!exists) return false;
  const done = new Set(
    (database.prepare("select name from kysely_migration").all() as Array<{ name: string }>).map((r) => r.name),
  );
  return Object.keys(migrations).every((name) => done.has(name));
}

async function migrate(db: Kysely<StateDatabase>, schema: string | undefined): Promise<void> {
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    ...(schema ? { migrationTableSchema: schema } : {}),
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === "Error");
    throw new Error(`state store migration ${failed?.migrationName ?? ""} failed: ${(error as Error).message}`);
  }
}

/**
 * SQLite transactions that begin IMMEDIATE: they take the write lock at the start, so a writer waits (up to the
 * busy timeout) for another process's writer instead of failing with "database is locked" when a read turns
 * into a write. Several workers may share one SQLite state file this way.
 */
class ImmediateSqliteDialect extends SqliteDialect {
  constructor(private readonly settings: SqliteDialectConfig) {
    super(settings);
  }

  override createDriver(): Driver {
    return new ImmediateSqliteDriver(this.settings);
  }
}

class ImmediateSqliteDriver extends SqliteDriver {
  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw("begin immediate"));
  }
}

function redact(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, "//$1:***@");
}
