import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterEach } from "vitest";
import { CONFIG_FILE, type ConfigInput, type StateConfig } from "../../src/config/config.js";
import { Catalog } from "../../src/parquet/catalog.js";
import { openWorkspace, type Workspace } from "../../src/workspace/workspace.js";

export const REPO = fileURLToPath(new URL("../..", import.meta.url));
/** The built CLI, which tests run in child processes (test/support/build.ts builds it when it is stale). */
export const CLI = path.join(REPO, "dist", "cli", "bin.js");

/** The shared fixtures (real uploads, archive map, schemas, mappings), beside the repository. */
export const FIXTURES = process.env.STUDYLAKE_FIXTURES ?? path.resolve(REPO, "../shared/fixtures");
if (!existsSync(FIXTURES)) {
  throw new Error(`fixtures not found at ${FIXTURES}: clone beside shared/ or set STUDYLAKE_FIXTURES`);
}

export const FIXTURE_ARCHIVE = path.join(FIXTURES, "bridge-uploads", "OCJByUtSrVTYtqObYp7XZV_J-mtbSpelling.zip");
export const FIXTURE_RECORD = "OCJByUtSrVTYtqObYp7XZV_J";
export const SCHEMA_PREFIX = "https://sage-bionetworks.github.io/mobile-client-json/";

export async function tempDir(prefix = "studylake-test-"): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

/** A workspace config that reads reference data straight from the shared fixtures. */
export function fixtureConfig(overrides: Partial<ConfigInput> = {}): Record<string, unknown> {
  return {
    archiveMap: path.join(FIXTURES, "mobile-client-json", "archive-map.json"),
    schemaMapping: path.join(FIXTURES, "bridgedownstream-config", "schema_mapping.json"),
    datasetMapping: path.join(FIXTURES, "bridgedownstream-config", "dataset_mapping.json"),
    schemaLocations: [{ urlPrefix: SCHEMA_PREFIX, folder: path.join(FIXTURES, "mobile-client-json") }],
    fsyncRaw: false,
    ...overrides,
  };
}

export interface TestWorkspace {
  root: string;
  ws: Workspace;
  /** Closes and reopens the workspace (a new process would do the same). */
  reopen(): Promise<Workspace>;
  cleanup(): Promise<void>;
}

export async function makeWorkspace(overrides: Partial<ConfigInput> = {}): Promise<TestWorkspace> {
  const root = await tempDir();
  await mkdir(root, { recursive: true });
  await writeFile(path.join(root, CONFIG_FILE), JSON.stringify(fixtureConfig(overrides), null, 2));
  const handle: TestWorkspace = {
    root,
    ws: await openWorkspace(root),
    async reopen() {
      await handle.ws.close();
      handle.ws = await openWorkspace(root);
      return handle.ws;
    },
    async cleanup() {
      await handle.ws.close();
      await rm(root, { recursive: true, force: true });
    },
  };
  return handle;
}

export const POSTGRES_URL = process.env.STUDYLAKE_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

/**
 * Whether the PostgreSQL tests can run. Without a server they are skipped with a message saying so, unless
 * STUDYLAKE_REQUIRE_POSTGRES=1 (as in CI), where a missing server fails the run.
 */
export async function postgresAvailable(): Promise<boolean> {
  const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query("select 1");
    return true;
  } catch (err) {
    const why = `PostgreSQL at ${POSTGRES_URL} is not reachable (${(err as Error).message})`;
    if (process.env.STUDYLAKE_REQUIRE_POSTGRES === "1")
      throw new Error(`${why}; STUDYLAKE_REQUIRE_POSTGRES=1 requires it`);
    console.warn(
      `SKIPPED: PostgreSQL tests did not run: ${why}. Set STUDYLAKE_TEST_POSTGRES_URL to point at a server.`,
    );
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

/** A fresh PostgreSQL schema name for one test suite, so suites never see each other's rows. */
export function uniqueSchema(): string {
  return `studylake_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * For a suite that runs on each state store: a function that makes a workspace for the current test on the
 * state `state()` gives (the default SQLite when undefined); after each test every workspace it made is
 * closed and removed, and its PostgreSQL schema dropped.
 */
export function workspacePerTest(
  state: () => StateConfig | undefined,
): (overrides?: Partial<ConfigInput>) => Promise<TestWorkspace> {
  const made: Array<{ t: TestWorkspace; state: StateConfig | undefined }> = [];
  afterEach(async () => {
    for (const { t, state } of made.splice(0)) {
      await t.cleanup();
      if (state?.kind === "postgres") await dropSchema(state.schema);
    }
  });
  return async (overrides = {}) => {
    const config = state();
    const t = await makeWorkspace({ ...(config ? { state: config } : {}), ...overrides });
    made.push({ t, state: config });
    return t;
  };
}

export async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: POSTGRES_URL });
  await client.connect();
  try {
    await client.query(`drop schema if exists "${schema}" cascade`);
  } finally {
    await client.end();
  }
}

/** The rows a query over a workspace's Parquet tables returns (each table a view, as `studylake query` sees them). */
export async function tableRows(ws: Workspace, sql: string): Promise<unknown[][]> {
  const catalog = await Catalog.open(ws);
  try {
    return (await catalog.query(sql)).rows;
  } finally {
    catalog.close();
  }
}
