import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { copyFile, link, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type { DuckDBConnection } from "@duckdb/node-api";
import { ident, literal, openDuckDB, QueryRefusedError, runSelect } from "../parquet/duckdb.js";
import { listParquet } from "../parquet/writer.js";
import type { UpdateFilter } from "../state/lake-state.js";
import type { Workspace } from "../workspace/workspace.js";
import { canAccess, type Principal } from "./access.js";
import {
  Dataset,
  OPERATOR,
  type Permission,
  TransformConfig,
  type Update,
  type UpdateKind,
  type UpdateManifest,
} from "./models.js";
import { checkParsedQuery, missingTable } from "./sql-guard.js";
import { UpdateLease } from "./update-lease.js";

export class LakeError extends Error {
  override name = "LakeError";
}

/** Refused for lack of a grant. The message never says whether a dataset the caller cannot read exists. */
export class AccessDeniedError extends Error {
  override name = "AccessDeniedError";
}

export const IMPORT_FORMATS = ["csv", "tsv", "ndjson", "json", "parquet"] as const;
export type ImportFormat = (typeof IMPORT_FORMATS)[number];

export interface QueryOptions {
  /** Read these datasets as of an update id. */
  asOf?: Record<string, string>;
  /** Read every dataset as it was at this time (ISO-8601). */
  at?: string;
  /** Write the result to a file instead of returning its rows (one statement only). */
  output?: { file: string; format: "csv" | "json" | "parquet" };
}

export interface QueryResult {
  columns: string[];
  /** Empty when the result went to a file. */
  rows: unknown[][];
  rowCount: number;
  datasets: string[];
}

/** Where a dataset's state comes from: the files of its latest snapshot and the deltas after it. */
interface DatasetState {
  dataset: Dataset;
  updates: Update[];
  files: string[];
  columns: string[];
  /**
   * How a row names its participant: a participant column, or (for a table relationalized from uploads) the
   * record column, whose records belong to known participants.
   */
  participant: { column: string; by: "participant" | "record" } | undefined;
  /** Values of that column that belong to withdrawn participants: never shown, whatever update is read. */
  hidden: readonly string[];
}

async function sha256(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

function formatOf(file: string, format: ImportFormat | undefined): ImportFormat {
  if (format) return format;
  const ext = path.extname(file).toLowerCase().replace(".", "");
  if (ext === "jsonl") return "ndjson";
  if ((IMPORT_FORMATS as readonly string[]).includes(ext)) return ext as ImportFormat;
  throw new LakeError(
    `${file}: cannot tell the format from the extension; pass --format (${IMPORT_FORMATS.join(", ")})`,
  );
}

function readerOf(file: string, format: ImportFormat): string {
  const f = literal(file);
  switch (format) {
    case "csv":
      return `read_csv(${f}, auto_detect = true, header = true)`;
    case "tsv":
      return `read_csv(${f}, auto_detect = true, header = true, delim = '\t')`;
    case "ndjson":
      return `read_json(${f}, format = 'newline_delimited')`;
    case "json":
      return `read_json(${f}, format = 'auto')`;
    case "parquet":
      return `read_parquet(${f})`;
  }
}

/**
 * The lake: datasets made of immutable updates (`raw/<dataset>/<update>/`, `data/<dataset>/<update>/` with a
 * manifest), security tiers and grants, and governed SQL that only ever sees what the caller may read.
 */
export class Lake {
  readonly root: string;
  private engine: ReturnType<typeof openDuckDB> | undefined;

  constructor(private readonly ws: Workspace) {
    this.root = path.resolve(ws.root, ws.config.paths.lake);
  }

  private get state() {
    return this.ws.state.lake;
  }

  /** The caller: a named user (their roles and grants), or the workspace operator when no user is named. */
  async principal(user?: string): Promise<Principal> {
    if (user === undefined || user === OPERATOR) return { user: OPERATOR, roles: [], grants: [], operator: true };
    if (!(await this.state.userExists(user))) throw new AccessDeniedError(`unknown user '${user}'`);
    const roles = await this.state.roles(user);
    return { user, roles, grants: await this.state.grants(user, roles) };
  }

  /** Makes an API token for a user: returned once, stored only as its hash. */
  async createToken(user: string): Promise<string> {
    if (!(await this.state.userExists(user))) throw new LakeError(`unknown user '${user}'`);
    const token = `slk_${randomBytes(24).toString("base64url")}`;
    await this.state.addToken(createHash("sha256").update(token).digest("hex"), user);
    return token;
  }

  async principalOfToken(token: string): Promise<Principal> {
    const user = await this.state.userOfToken(createHash("sha256").update(token).digest("hex"));
    if (!user) throw new AccessDeniedError("unknown or revoked token");
    return this.principal(user);
  }

  async createDataset(input: Omit<Dataset, "createdAt">, actor: Principal): Promise<Dataset> {
    const dataset = Dataset.parse({ ...input, createdAt: new Date().toISOString() });
    if (await this.state.dataset(dataset.name)) throw new LakeError(`dataset '${dataset.name}' exists already`);
    if (!actor.operator && actor.user !== dataset.owner) {
      throw new AccessDeniedError(`${actor.user} may only create datasets they own`);
    }
    await this.state.createDataset(dataset);
    await this.state.audit({
      actor: actor.user,
      action: "create-dataset",
      datasets: [dataset.name],
      rows: null,
      detail: `tier ${dataset.tier}, ${dataset.updateKind} updates, owner ${dataset.owner}`,
      outcome: "ok",
    });
    return dataset;
  }

  /** A dataset the caller may access; one it may not read is reported exactly like one that does not exist. */
  async dataset(name: string, actor: Principal, permission: Permission = "read"): Promise<Dataset> {
    const dataset = await this.state.dataset(name);
    if (!dataset || !canAccess(actor, dataset, "read")) throw new LakeError(`no dataset '${name}'`);
    if (!canAccess(actor, dataset, permission)) {
      throw new AccessDeniedError(`${actor.user} may not ${permission} dataset '${name}'`);
    }
    return dataset;
  }

  /** The datasets the caller may read. */
  async datasets(actor: Principal): Promise<Dataset[]> {
    return (await this.state.datasets()).filter((d) => canAccess(actor, d, "read"));
  }

  async updates(name: string, actor: Principal): Promise<Update[]> {
    await this.dataset(name, actor);
    return this.state.updates(name);
  }

  /** How many committed updates a dataset has, and the newest: what a listing shows, without every manifest. */
  async committed(name: string, actor: Principal): Promise<{ count: number; latest: Update | undefined }> {
    await this.dataset(name, actor);
    return this.state.committed(name);
  }

  /** Takes in an external file (CSV, TSV, NDJSON, JSON, Parquet) as a new update, kept raw and as Parquet. */
  async importFile(
    name: string,
    file: string,
    actor: Principal,
    options: { kind?: UpdateKind; format?: ImportFormat; run?: string } = {},
  ): Promise<UpdateManifest> {
    const dataset = await this.dataset(name, actor, "write");
    const format = formatOf(file, options.format);
    const info = await stat(file).catch(() => {
      throw new LakeError(`${file}: no such file`);
    });
    if (!info.isFile()) throw new LakeError(`${file}: not a file`);
    return this.writeUpdate(dataset, options.kind ?? dataset.updateKind, actor, {
      operation: "import",
      run: options.run ?? null,
      lineage: [],
      note: `from ${path.basename(file)} (${format})`,
      async raw(dir) {
        const target = path.join(dir, path.basename(file));
        await copyFile(file, target);
        return [target];
      },
      select: () => `SELECT * FROM ${readerOf(file, format)}`,
      describeFailure: (err) => `${file} cannot be read as ${format}: ${err.message.split("\n")[0]}`,
    });
  }

  /** Folds the latest snapshot and the deltas after it into a new snapshot update. */
  async compact(name: string, actor: Principal, note?: string): Promise<UpdateManifest> {
    const dataset = await this.dataset(name, actor, "write");
    const current = await this.stateOf(dataset, {});
    if (current.updates.length === 0) throw new LakeError(`dataset '${name}' has no updates to compact`);
    return this.writeUpdate(dataset, "snapshot", actor, {
      operation: "compact",
      run: null,
      lineage: current.updates.map((u) => ({ dataset: name, update: u.update })),
      ...(note ? { note } : {}),
      from: current,
      select: () => this.viewSql(current),
    });
  }

  /**
   * Compacts a dataset once `lake.compactAfterDeltas` deltas follow its latest snapshot: a relationalized
   * table gains a delta every run, and a read goes through every delta's files. Returns the snapshot, if any.
   */
  private async compactIfDue(dataset: Dataset, actor: Principal): Promise<UpdateManifest | undefined> {
    const after = this.ws.config.lake.compactAfterDeltas;
    if (after === 0) return undefined;
    const live = await this.state.updates(dataset.name, { status: "committed", live: true });
    const deltas = live.filter((u) => u.kind === "delta").length;
    if (deltas < after) return undefined;
    // A compaction refused or failed is in the audit log; the run's own update stands, and the next run tries again.
    return this.compact(dataset.name, actor, `automatic, after ${deltas} deltas`).catch((err) => {
      if (err instanceof LakeError) return undefined;
      throw err;
    });
  }

  /**
   * Refuses a snapshot made from `from` when an update before it that `from` does not hold may yet commit, or
   * has committed since `from` was read (another writer's): the snapshot would hide it without its rows.
   * Updates before `from`'s own snapshot are hidden by that one already.
   */
  private async refuseMissed(name: string, from: DatasetState, snapshot: string): Promise<void> {
    const held = new Set(from.updates.map((u) => u.update));
    const base = from.updates[0]?.kind === "snapshot" ? from.updates[0].update : "";
    // Only the updates after that snapshot are read: a dataset a pipeline publishes to has one per run.
    const missed = (await this.state.updates(name, { after: base, through: snapshot })).find(
      (u) => u.update !== snapshot && !held.has(u.update) && u.status !== "abandoned",
    );
    if (!missed) return;
    // Says how long to wait at most: a writer that died is taken for dead once its lease runs out.
    const status =
      missed.status === "writing" && missed.aliveUntil
        ? `writing, abandoned unless its writer renews it by ${missed.aliveUntil}`
        : missed.status;
    throw new LakeError(
      `dataset '${name}' has update ${missed.update} (${status}) from another writer that this snapshot would hide without holding its rows; run it again once that update is done`,
    );
  }

  /**
   * Writes an update: raw files first, then Parquet from `select`, into a folder that is renamed into place,
   * then the manifest; the update becomes visible only when the state store commits it.
   */
  private async writeUpdate(
    dataset: Dataset,
    kind: UpdateKind,
    actor: Principal,
    spec: {
      operation: string;
      run: string | null;
      lineage: UpdateManifest["lineage"];
      note?: string;
      raw?: (dir: string) => Promise<string[]>;
      /** Makes the views `select` reads; the session is then locked down to the lake's data. */
      prepare?: (connection: DuckDBConnection) => Promise<void>;
      /** The update's rows, written as one Parquet file… */
      select?: () => string;
      /** …or its Parquet files, put into the folder by the caller. */
      produce?: (connection: DuckDBConnection, dir: string) => Promise<void>;
      /**
       * The dataset's state a snapshot is made from: an update begun after it was read, and before this one,
       * would end up under the snapshot without being in it, so the snapshot is then refused.
       */
      from?: DatasetState;
      describeFailure?: (err: Error) => string;
    },
    /** A DuckDB the caller keeps open for several updates (not with `prepare`, which locks its engine down). */
    shared?: DuckDBConnection,
  ): Promise<UpdateManifest> {
    if (shared && spec.prepare) throw new Error("an update that prepares views needs a DuckDB of its own");
    await this.abandonStale(dataset.name);
    const lease = await UpdateLease.begin(
      this.state,
      dataset.name,
      kind,
      actor.user,
      spec.run,
      this.ws.config.lake.abandonAfterSeconds * 1000,
    );
    const { update } = lease;
    const rawDir = path.join(this.root, "raw", dataset.name, update);
    const dataDir = path.join(this.root, "data", dataset.name, update);
    const writing = `${dataDir}.writing`;
    let close = () => {};
    try {
      const duck = shared ? { connection: shared, close } : await openDuckDB();
      close = duck.close;
      const { connection } = duck;
      if (spec.from) await this.refuseMissed(dataset.name, spec.from, update);
      await mkdir(rawDir, { recursive: true });
      await mkdir(writing, { recursive: true });
      const rawFiles = spec.raw ? await spec.raw(rawDir) : [];
      if (spec.prepare) {
        await spec.prepare(connection);
        await lockDown(connection, [path.join(this.root, "data")]);
      }
      try {
        if (spec.produce) await spec.produce(connection, writing);
        else if (spec.select) {
          const part = path.join(writing, "part-0.parquet");
          await connection.run(
            `COPY (${spec.select()}) TO ${literal(part)} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)`,
          );
        }
      } catch (err) {
        throw new LakeError(spec.describeFailure ? spec.describeFailure(err as Error) : (err as Error).message);
      }
      const written = (await listParquet(writing)).map((relative) => path.join(writing, relative));
      // Rows per file in one query (Parquet footers say it): a run's update can have a file per partition.
      const perFile = new Map<string, number>();
      if (written.length > 0) {
        const reader = await connection.runAndReadAll(
          `SELECT file_name, sum(row_group_num_rows) FROM (SELECT DISTINCT file_name, row_group_id, row_group_num_rows FROM parquet_metadata([${written.map(literal).join(", ")}])) GROUP BY file_name`,
        );
        for (const [file, count] of reader.getRowsJS()) perFile.set(String(file), Number(count));
      }
      const counts = written.map((file) => perFile.get(file) ?? 0);
      const schema =
        written.length === 0
          ? []
          : ((
              await connection.runAndReadAll(
                `DESCRIBE SELECT * FROM read_parquet([${written.map(literal).join(", ")}], union_by_name = true, hive_partitioning = false)`,
              )
            ).getRowObjectsJS() as Array<{ column_name: string; column_type: string }>);
      await rename(writing, dataDir);
      const describe = async (file: string, base: string, fileRows?: number) => ({
        path: path.relative(base, file).split(path.sep).join("/"),
        bytes: (await stat(file)).size,
        sha256: await sha256(file),
        ...(fileRows === undefined ? {} : { rows: fileRows }),
      });
      const rows = counts.reduce((a, b) => a + b, 0);
      const manifest: UpdateManifest = {
        dataset: dataset.name,
        update,
        kind,
        rows,
        schema: schema.map((c) => ({ name: c.column_name, type: c.column_type })),
        files: await Promise.all(
          written.map((file, i) => describe(path.join(dataDir, path.relative(writing, file)), this.root, counts[i])),
        ),
        raw: await Promise.all(rawFiles.map((f) => describe(f, this.root))),
        createdBy: actor.user,
        createdAt: new Date().toISOString(),
        operation: spec.operation,
        run: spec.run,
        lineage: spec.lineage,
        ...(spec.note ? { note: spec.note } : {}),
      };
      await writeFile(path.join(dataDir, "_manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
      await this.state.commitUpdate(manifest);
      await this.state.audit({
        actor: actor.user,
        action: spec.operation,
        datasets: [dataset.name, ...new Set(spec.lineage.map((l) => l.dataset).filter((d) => d !== dataset.name))],
        rows,
        detail: `${update} (${kind})${spec.note ? ` ${spec.note}` : ""}`,
        outcome: "ok",
      });
      return manifest;
    } catch (err) {
      await this.state.abandonUpdate(dataset.name, update);
      await rm(writing, { recursive: true, force: true });
      await rm(dataDir, { recursive: true, force: true });
      await rm(rawDir, { recursive: true, force: true });
      await this.state.audit({
        actor: actor.user,
        action: spec.operation,
        datasets: [dataset.name],
        rows: null,
        detail: (err as Error).message,
        outcome: "failed",
      });
      throw err;
    } finally {
      lease.end();
      close();
    }
  }

  /**
   * Updates left `writing` by a process that died (not renewed for `lake.abandonAfterSeconds`) are marked
   * abandoned and their folders removed; they were never visible.
   */
  private async abandonStale(name: string): Promise<void> {
    const now = Date.now();
    const leaseMs = this.ws.config.lake.abandonAfterSeconds * 1000;
    for (const u of await this.state.updates(name, { status: "writing" })) {
      // Updates begun before leases existed have no deadline: their begin time plus one lease stands in.
      const deadline = u.aliveUntil === null ? Date.parse(u.createdAt) + leaseMs : Date.parse(u.aliveUntil);
      if (deadline <= now) await this.abandon(name, u.update);
    }
  }

  /**
   * Abandons the updates that these runs began and never committed: the caller knows the runs are dead (the
   * relationalize stage, on finding a run of the dataset it writes that never committed), so there is no need
   * to wait `lake.abandonAfterSeconds`, during which such an update holds back automatic compaction.
   */
  async abandonRuns(runs: readonly string[]): Promise<void> {
    for (const { dataset, update } of await this.state.writingUpdatesOf(runs)) await this.abandon(dataset, update);
  }

  private async abandon(name: string, update: string): Promise<void> {
    await this.state.abandonUpdate(name, update);
    const dataDir = path.join(this.root, "data", name, update);
    for (const dir of [`${dataDir}.writing`, dataDir, path.join(this.root, "raw", name, update)]) {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** A dataset's committed updates up to a point, and the files that make its state there. */
  private async stateOf(dataset: Dataset, options: QueryOptions): Promise<DatasetState> {
    const asOf = options.asOf?.[dataset.name];
    const filter: UpdateFilter = { status: "committed", live: true, ...(asOf === undefined ? {} : { through: asOf }) };
    const live = await this.state.updates(
      dataset.name,
      options.at === undefined ? filter : { ...filter, committedBy: new Date(options.at).toISOString() },
    );
    if (asOf !== undefined) {
      // The update must exist whatever the time asked for; without one, the live updates end with it if it does.
      const named = options.at === undefined ? live : await this.state.updates(dataset.name, filter);
      if (named.at(-1)?.update !== asOf) throw new LakeError(`dataset '${dataset.name}' has no update '${asOf}'`);
    }
    const files = live.flatMap((u) => (u.manifest?.files ?? []).map((f) => path.join(this.root, ...f.path.split("/"))));
    const columns = [...new Set(live.flatMap((u) => (u.manifest?.schema ?? []).map((c) => c.name)))];
    const participant = this.participantOf(dataset, columns);
    return { dataset, updates: live, files, columns, participant, hidden: await this.hiddenValues(participant) };
  }

  private participantOf(dataset: Dataset, columns: readonly string[]): DatasetState["participant"] {
    const column = this.ws.config.lake.participantColumns.find((c) => columns.includes(c));
    if (column) return { column, by: "participant" };
    const record = this.ws.config.relationalize.recordField;
    return dataset.keyColumns.includes(record) ? { column: record, by: "record" } : undefined;
  }

  /** The values of a dataset's participant column that withdrawn participants own. */
  private async hiddenValues(
    participant: DatasetState["participant"],
    withdrawn?: readonly string[],
  ): Promise<string[]> {
    if (!participant) return [];
    const who = withdrawn ?? (await this.state.withdrawn());
    if (who.length === 0) return [];
    return participant.by === "participant" ? [...who] : this.ws.state.exports.recordsOf(who);
  }

  /**
   * The SQL of a dataset's state: its files; with key columns, the newest row per key, deletions applied;
   * never a withdrawn participant's rows.
   */
  private viewSql(state: DatasetState): string {
    if (state.files.length === 0) return "SELECT NULL AS empty WHERE false";
    const source = `read_parquet([${state.files.map(literal).join(", ")}], union_by_name = true, hive_partitioning = false`;
    const conditions: string[] = [];
    if (state.participant && state.hidden.length > 0) {
      const column = ident(state.participant.column);
      conditions.push(
        `${column} IS NULL OR CAST(${column} AS VARCHAR) NOT IN (${state.hidden.map(literal).join(", ")})`,
      );
    }
    const keys = state.dataset.keyColumns;
    if (keys.length === 0) {
      return `SELECT * FROM ${source})${conditions.length ? ` WHERE ${conditions.map((c) => `(${c})`).join(" AND ")}` : ""}`;
    }
    // The newest update holding a key replaces all of that key's rows (update folders sort in update order).
    const deleted = state.columns.includes("_deleted");
    if (deleted) conditions.push("NOT coalesce(_deleted, false)");
    const exclude = ["__lake_file", "__newest", ...(deleted ? ["_deleted"] : [])].map(ident).join(", ");
    const updateOf = `regexp_extract(__lake_file, '/data/${state.dataset.name}/(u[0-9]+)/', 1)`;
    return `SELECT * EXCLUDE (${exclude}) FROM (SELECT *, max(${updateOf}) OVER (PARTITION BY ${keys.map(ident).join(", ")}) AS __newest FROM ${source}, filename = '__lake_file')) WHERE ${[`${updateOf} = __newest`, ...conditions].map((c) => `(${c})`).join(" AND ")}`;
  }

  /**
   * A participant withdraws: recorded (every read hides their rows from now on, whatever update it reads),
   * their sharing scope becomes NO_SHARING (later exports skip them), and every dataset whose current state
   * holds their rows gets a new update without them: a snapshot where rows name the participant, a delta of
   * `_deleted` rows where a table relationalized from uploads holds their records.
   */
  async withdraw(
    participant: string,
    actor: Principal,
  ): Promise<Array<{ dataset: string; update: string; removed: number }>> {
    if (!actor.operator) throw new AccessDeniedError("only the workspace operator records a withdrawal");
    await this.ws.state.exports.setScopes([{ healthCode: participant, scope: "NO_SHARING" }]);
    const affected: Array<{ dataset: Dataset; values: string[]; removed: number }> = [];
    for (const dataset of await this.state.datasets()) {
      const current = await this.stateOf(dataset, {});
      if (!current.participant || current.files.length === 0) continue;
      const values = await this.hiddenValues(current.participant, [participant]);
      const removed = await this.countRows({ ...current, hidden: [] }, values);
      if (removed > 0) affected.push({ dataset, values, removed });
    }
    await this.state.withdraw(participant);
    const out: Array<{ dataset: string; update: string; removed: number }> = [];
    for (const { dataset, values, removed } of affected) {
      const current = await this.stateOf(dataset, {});
      const byRecord = current.participant?.by === "record";
      const manifest = await this.writeUpdate(dataset, byRecord ? "delta" : "snapshot", actor, {
        operation: "withdraw",
        run: null,
        lineage: current.updates.map((u) => ({ dataset: dataset.name, update: u.update })),
        note: `${removed} rows of a withdrawn participant removed`,
        ...(byRecord ? {} : { from: current }),
        select: () =>
          byRecord
            ? `SELECT unnest([${values.map(literal).join(", ")}]) AS ${ident(current.participant?.column as string)}, true AS _deleted`
            : this.viewSql(current),
      });
      out.push({ dataset: dataset.name, update: manifest.update, removed });
    }
    await this.state.audit({
      actor: actor.user,
      action: "withdraw",
      datasets: affected.map((a) => a.dataset.name),
      rows: affected.reduce((n, a) => n + a.removed, 0),
      detail: `participant ${participant}`,
      outcome: "ok",
    });
    return out;
  }

  /**
   * Runs a transformation folder (see `TransformConfig`) with its owner's grants and commits the result as a
   * new update of its output dataset, the input updates it read recorded as lineage.
   */
  async transform(folder: string, actor: Principal, run: string | null = null): Promise<UpdateManifest> {
    const config = await readTransform(folder);
    if (!actor.operator && actor.user !== config.owner) {
      throw new AccessDeniedError(`${actor.user} may not run ${config.owner}'s transformation`);
    }
    const owner = await this.principal(config.owner);
    const inputs = new Map<string, DatasetState>();
    for (const name of config.inputs) inputs.set(name, await this.stateOf(await this.dataset(name, owner), {}));
    let output = await this.state.dataset(config.output.dataset);
    if (!output) {
      if (!config.output.tier) {
        throw new LakeError(
          `${folder}: output dataset '${config.output.dataset}' does not exist; give output.tier to create it`,
        );
      }
      output = await this.createDataset(
        {
          name: config.output.dataset,
          description: config.output.description,
          owner: config.owner,
          tier: config.output.tier,
          updateKind: config.output.kind,
          keyColumns: [],
        },
        owner,
      );
    }
    output = await this.dataset(output.name, owner, "write");
    const files = (await readdir(folder)).filter((f) => f.endsWith(".sql")).sort();
    if (files.length === 0) throw new LakeError(`${folder}: no .sql files`);
    const steps = await Promise.all(
      files.map(async (file) => ({
        name: path.basename(file, ".sql"),
        sql: (await readFile(path.join(folder, file), "utf8")).trim().replace(/;+\s*$/, ""),
      })),
    );
    for (const step of steps) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(step.name)) {
        throw new LakeError(`${folder}/${step.name}.sql: a step's file name must be an SQL name (letters, digits, _)`);
      }
    }
    const last = steps.at(-1)?.name as string;
    return this.writeUpdate(output, config.output.kind, owner, {
      operation: "transform",
      run,
      lineage: [...inputs].flatMap(([name, state]) => state.updates.map((u) => ({ dataset: name, update: u.update }))),
      note: `by ${path.basename(path.resolve(folder))} (${steps.map((s) => `${s.name}.sql`).join(", ")})`,
      prepare: async (connection) => {
        for (const [name, state] of inputs)
          await connection.run(`CREATE VIEW ${ident(name)} AS ${this.viewSql(state)}`);
        const known = new Set(config.inputs.map((n) => n.toLowerCase()));
        for (const step of steps) {
          for (const table of await tablesOf(connection, step.sql)) {
            if (!known.has(table.toLowerCase()))
              throw new QueryRefusedError(`${step.name}.sql: ${missingTable(table)}`);
          }
          await connection.run(`CREATE VIEW ${ident(step.name)} AS ${step.sql}`);
          known.add(step.name.toLowerCase());
        }
      },
      select: () => `SELECT * FROM ${ident(last)}`,
    });
  }

  /**
   * Publishes a relationalize run: for each table it wrote, one delta update of the dataset named after the
   * table (made on first use, keyed by the record column): the run's rows, partition columns included, plus a
   * `_deleted` row for each record the run removed. Newest-update-wins per record then gives the table's state.
   */
  async publishRelationalized(run: {
    runId: string;
    source: string;
    tables: ReadonlyArray<{ name: string; recordColumn: string; recordType: string; files: readonly string[] }>;
    deletedRecords: readonly string[];
  }): Promise<void> {
    const operator = await this.principal();
    // One DuckDB for the run's tables: opening one per table cost more than the little each update asks of it.
    const duck = await openDuckDB();
    try {
      for (const table of run.tables) {
        if (table.files.length === 0 && run.deletedRecords.length === 0) continue;
        let dataset = await this.state.dataset(table.name);
        if (!dataset) {
          dataset = await this.createDataset(
            {
              name: table.name,
              description: `relationalized from JSON dataset ${run.source}`,
              owner: OPERATOR,
              tier: this.ws.config.lake.relationalizedTier,
              updateKind: "delta",
              keyColumns: [table.recordColumn],
            },
            operator,
          );
        }
        const deleted = run.deletedRecords;
        await this.writeUpdate(
          dataset,
          "delta",
          operator,
          {
            operation: "relationalize",
            run: run.runId,
            lineage: [],
            note: `run ${run.runId} of ${run.source}`,
            // The run's files hold their partition columns and are never changed once published (the rest of a
            // file that loses records is a new file), so the update links them instead of copying.
            produce: async (connection, dir) => {
              for (const [i, file] of table.files.entries()) {
                const target = path.join(dir, `part-${i}.parquet`);
                await link(file, target).catch(() => copyFile(file, target));
              }
              if (deleted.length > 0) {
                await connection.run(
                  `COPY (SELECT TRY_CAST(unnest([${deleted.map(literal).join(", ")}]) AS ${table.recordType}) AS ${ident(table.recordColumn)}, true AS _deleted) TO ${literal(path.join(dir, "_deleted.parquet"))} (FORMAT parquet)`,
                );
              }
            },
          },
          duck.connection,
        );
        await this.compactIfDue(dataset, operator);
      }
    } finally {
      duck.close();
    }
  }

  /** Rows of a dataset's state whose participant column holds one of these values. */
  private async countRows(state: DatasetState, values: readonly string[]): Promise<number> {
    if (!state.participant || values.length === 0) return 0;
    const duck = await openDuckDB();
    try {
      const column = ident(state.participant.column);
      const reader = await duck.connection.runAndReadAll(
        `SELECT count(*) FROM (${this.viewSql(state)}) WHERE CAST(${column} AS VARCHAR) IN (${values.map(literal).join(", ")})`,
      );
      return Number(reader.getRows()[0]?.[0] ?? 0);
    } finally {
      duck.close();
    }
  }

  /**
   * A query's session. Usually a new connection to the lake's engine, which was locked down when it started
   * (it reads nothing outside the lake's data and its settings cannot change); the connection's TEMP views are
   * its own. A result written to a file gets an engine of its own, locked once its views exist, whose lock
   * also allows the output folder.
   */
  private async session(output: QueryOptions["output"]): Promise<{ connection: DuckDBConnection; close(): void }> {
    if (output) return openDuckDB();
    this.engine ??= openDuckDB()
      .then(async (duck) => {
        await lockDown(duck.connection, [path.join(this.root, "data")]);
        return duck;
      })
      .catch((err) => {
        this.engine = undefined;
        throw err;
      });
    const connection = await (await this.engine).instance.connect();
    return { connection, close: () => connection.closeSync() };
  }

  /** Closes the query engine (a process that exits need not). */
  async close(): Promise<void> {
    const engine = this.engine;
    this.engine = undefined;
    (await engine)?.close();
  }

  /**
   * Runs read-only SQL as the caller: the query is checked before anything runs (see `sql-guard.ts`), then
   * runs in a session of its own whose only tables are views of the datasets it names that the caller may
   * read, and which can read no file outside the lake's data (see `session`). Every query is audited.
   */
  async query(actor: Principal, sql: string, options: QueryOptions = {}): Promise<QueryResult> {
    const output = options.output;
    const duck = await this.session(output);
    let named: string[] = [];
    try {
      named = await tablesOf(duck.connection, sql);
      const readable = new Map((await this.datasets(actor)).map((d) => [d.name.toLowerCase(), d]));
      const views = new Map<string, DatasetState>();
      for (const name of named) {
        const dataset = readable.get(name.toLowerCase());
        if (!dataset) throw new QueryRefusedError(missingTable(name));
        views.set(dataset.name, await this.stateOf(dataset, options));
      }
      for (const [name, state] of views) {
        await duck.connection.run(`CREATE TEMP VIEW ${ident(name)} AS ${this.viewSql(state)}`);
      }
      if (output)
        await lockDown(duck.connection, [path.join(this.root, "data"), path.dirname(path.resolve(output.file))]);
      const result = output
        ? await copyResult(duck.connection, sql, output)
        : { ...(await runSelect(duck.connection, sql)), rowCount: 0 };
      if (!output) result.rowCount = result.rows.length;
      await this.state.audit({
        actor: actor.user,
        action: "query",
        datasets: [...views.keys()],
        rows: result.rowCount,
        detail: sql.slice(0, 2000),
        outcome: "ok",
      });
      return { ...result, datasets: [...views.keys()] };
    } catch (err) {
      await this.state.audit({
        actor: actor.user,
        action: "query",
        datasets: named,
        rows: null,
        detail: `${sql.slice(0, 2000)} -- ${(err as Error).message}`,
        outcome: err instanceof QueryRefusedError ? "refused" : "failed",
      });
      throw err;
    } finally {
      duck.close();
    }
  }
}

/** No file outside these folders may be touched, and no setting changed, from now on. */
async function lockDown(connection: DuckDBConnection, folders: readonly string[]): Promise<void> {
  await connection.run(`SET allowed_directories = [${folders.map(literal).join(", ")}]`);
  await connection.run("SET enable_external_access = false");
  await connection.run("SET lock_configuration = true");
}

/**
 * Writes one checked SELECT's result to a file (the caller's output folder is the only other one the session
 * may touch); its rows are not returned, only their count.
 */
async function copyResult(
  connection: DuckDBConnection,
  sql: string,
  output: NonNullable<QueryOptions["output"]>,
): Promise<{ columns: string[]; rows: unknown[][]; rowCount: number }> {
  const statement = sql.trim().replace(/;+\s*$/, "");
  const extracted = await connection.extractStatements(statement);
  if (extracted.count !== 1) throw new QueryRefusedError("writing a result to a file takes exactly one SELECT");
  const check = await runSelect(connection, `SELECT * FROM (${statement}) LIMIT 0`);
  const format = output.format === "json" ? "json, ARRAY true" : output.format;
  const reader = await connection.runAndReadAll(
    `COPY (${statement}) TO ${literal(path.resolve(output.file))} (FORMAT ${format})`,
  );
  const count = Number(reader.getRows()[0]?.[0] ?? 0);
  return { columns: check.columns, rows: [], rowCount: count };
}

/** Checks a query on DuckDB's parse tree (see `sql-guard.ts`) and returns the tables it names. */
async function tablesOf(connection: DuckDBConnection, sql: string): Promise<string[]> {
  const parse = await connection.prepare("SELECT json_serialize_sql($1::VARCHAR)");
  parse.bindVarchar(1, sql);
  return checkParsedQuery(JSON.parse(String((await parse.runAndReadAll()).getRows()[0]?.[0]))).tables;
}

/** Reads and checks a transformation folder's `pipeline.json`. */
export async function readTransform(folder: string): Promise<TransformConfig> {
  const file = path.join(folder, "pipeline.json");
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (err) {
    throw new LakeError(`${file}: ${(err as Error).message}`);
  }
  const parsed = TransformConfig.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new LakeError(`${file}: ${issue?.path.join(".") || "(top level)"}: ${issue?.message}`);
  }
  return parsed.data;
}
