import { randomUUID } from "node:crypto";
import type { Kysely, Selectable } from "kysely";
import {
  type AuditEntry,
  Dataset,
  type Grant,
  type Update,
  type UpdateKind,
  UpdateManifest,
  UpdateStatus,
} from "../lake/models.js";
import { lookUpInChunks } from "./chunks.js";
import type { LakeDatasetsTable, LakeUpdatesTable, StateDatabase } from "./database.js";

function toDataset(row: Selectable<LakeDatasetsTable>): Dataset {
  return Dataset.parse({
    name: row.name,
    description: row.description,
    owner: row.owner,
    tier: row.tier,
    updateKind: row.update_kind,
    keyColumns: JSON.parse(row.key_columns),
    createdAt: row.created_at,
  });
}

function toUpdate(row: Selectable<LakeUpdatesTable>): Update {
  return {
    dataset: row.dataset,
    update: row.update_id,
    kind: row.kind as UpdateKind,
    status: UpdateStatus.parse(row.status),
    createdBy: row.created_by,
    createdAt: row.created_at,
    committedAt: row.committed_at,
    aliveUntil: row.alive_until,
    manifest: row.manifest === null ? null : UpdateManifest.parse(JSON.parse(row.manifest)),
  };
}

/** Update ids sort in the order updates were begun: `u000001`, `u000002`, … */
export function updateId(seq: number): string {
  return `u${String(seq).padStart(6, "0")}`;
}

export interface UpdateFilter {
  status?: UpdateStatus;
  /** Updates after this one. */
  after?: string;
  /** Updates up to this one. */
  through?: string;
  /** Updates committed at or before this time (ISO 8601, UTC). */
  committedBy?: string;
  /** Of those, the last snapshot and the updates after it: what the dataset's state is made of. */
  live?: boolean;
}

/** The lake's bookkeeping: datasets, their updates, users, roles, grants, tokens and the audit log. */
export class LakeState {
  constructor(private readonly db: Kysely<StateDatabase>) {}

  async createDataset(dataset: Dataset): Promise<void> {
    await this.db
      .insertInto("lake_datasets")
      .values({
        name: dataset.name,
        description: dataset.description,
        owner: dataset.owner,
        tier: dataset.tier,
        update_kind: dataset.updateKind,
        key_columns: JSON.stringify(dataset.keyColumns),
        created_at: dataset.createdAt,
      })
      .execute();
  }

  async dataset(name: string): Promise<Dataset | undefined> {
    const row = await this.db.selectFrom("lake_datasets").selectAll().where("name", "=", name).executeTakeFirst();
    return row && toDataset(row);
  }

  async datasets(): Promise<Dataset[]> {
    return (await this.db.selectFrom("lake_datasets").selectAll().orderBy("name").execute()).map(toDataset);
  }

  /**
   * Reserves the dataset's next update id; the update is invisible until committed. Its writer renews it
   * (renewUpdate) before `aliveUntil` passes; `run` is the pipeline run that began it, if one did.
   */
  async beginUpdate(
    dataset: string,
    kind: UpdateKind,
    createdBy: string,
    options: { aliveUntil: string; run?: string | null },
  ): Promise<string> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.db.transaction().execute(async (trx) => {
          const { n } = await trx
            .selectFrom("lake_updates")
            .select((eb) => eb.fn.countAll<number>().as("n"))
            .where("dataset", "=", dataset)
            .executeTakeFirstOrThrow();
          const id = updateId(Number(n) + 1);
          await trx
            .insertInto("lake_updates")
            .values({
              dataset,
              update_id: id,
              kind,
              status: "writing",
              manifest: null,
              created_by: createdBy,
              created_at: new Date().toISOString(),
              committed_at: null,
              run_id: options.run ?? null,
              alive_until: options.aliveUntil,
            })
            .execute();
          return id;
        });
      } catch (err) {
        if (attempt < 10 && /unique|duplicate/i.test((err as Error).message)) continue;
        throw err;
      }
    }
  }

  /** Commits an update that is being written; one abandoned meanwhile (taken for dead) is refused. */
  async commitUpdate(manifest: UpdateManifest): Promise<void> {
    const result = await this.db
      .updateTable("lake_updates")
      .set({ status: "committed", manifest: JSON.stringify(manifest), committed_at: new Date().toISOString() })
      .where("dataset", "=", manifest.dataset)
      .where("update_id", "=", manifest.update)
      .where("status", "=", "writing")
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) !== 1) {
      throw new Error(
        `update ${manifest.update} of ${manifest.dataset} was abandoned while it was written; run it again`,
      );
    }
  }

  /** The updates these runs began that are still being written. */
  async writingUpdatesOf(runs: readonly string[]): Promise<Array<{ dataset: string; update: string }>> {
    const rows = await lookUpInChunks(runs, (part) =>
      this.db
        .selectFrom("lake_updates")
        .select(["dataset", "update_id"])
        .where("status", "=", "writing")
        .where("run_id", "in", part)
        .execute(),
    );
    return rows.map((r) => ({ dataset: r.dataset, update: r.update_id }));
  }

  /** Pushes a writing update's deadline forward; false when it is no longer being written (taken for dead). */
  async renewUpdate(dataset: string, update: string, aliveUntil: string): Promise<boolean> {
    const result = await this.db
      .updateTable("lake_updates")
      .set({ alive_until: aliveUntil })
      .where("dataset", "=", dataset)
      .where("update_id", "=", update)
      .where("status", "=", "writing")
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  async abandonUpdate(dataset: string, update: string): Promise<void> {
    await this.db
      .updateTable("lake_updates")
      .set({ status: "abandoned" })
      .where("dataset", "=", dataset)
      .where("update_id", "=", update)
      .where("status", "=", "writing")
      .execute();
  }

  /**
   * A dataset's updates, oldest first: all of them, or those the filter keeps. Filtering here rather than in
   * the caller matters: a dataset a pipeline publishes to gains an update each run, and every manifest read is
   * parsed.
   */
  async updates(dataset: string, filter: UpdateFilter = {}): Promise<Update[]> {
    let chosen = this.db.selectFrom("lake_updates").where("dataset", "=", dataset);
    if (filter.status !== undefined) chosen = chosen.where("status", "=", filter.status);
    if (filter.after !== undefined) chosen = chosen.where("update_id", ">", filter.after);
    if (filter.through !== undefined) chosen = chosen.where("update_id", "<=", filter.through);
    if (filter.committedBy !== undefined) chosen = chosen.where("committed_at", "<=", filter.committedBy);
    if (filter.live) {
      const snapshot = await chosen
        .where("kind", "=", "snapshot")
        .select((eb) => eb.fn.max("update_id").as("id"))
        .executeTakeFirst();
      if (snapshot?.id) chosen = chosen.where("update_id", ">=", snapshot.id);
    }
    return (await chosen.selectAll().orderBy("update_id").execute()).map(toUpdate);
  }

  /** How many committed updates a dataset has, and the newest (only its manifest is read). */
  async committed(dataset: string): Promise<{ count: number; latest: Update | undefined }> {
    const committed = this.db
      .selectFrom("lake_updates")
      .where("dataset", "=", dataset)
      .where("status", "=", "committed");
    const { n } = await committed.select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow();
    const latest = await committed.selectAll().orderBy("update_id", "desc").limit(1).executeTakeFirst();
    return { count: Number(n), latest: latest && toUpdate(latest) };
  }

  async createUser(name: string): Promise<void> {
    await this.db
      .insertInto("lake_users")
      .values({ name, created_at: new Date().toISOString() })
      .onConflict((oc) => oc.column("name").doNothing())
      .execute();
  }

  async userExists(name: string): Promise<boolean> {
    return !!(await this.db.selectFrom("lake_users").select("name").where("name", "=", name).executeTakeFirst());
  }

  async users(): Promise<Array<{ name: string; roles: string[] }>> {
    const users = await this.db.selectFrom("lake_users").select("name").orderBy("name").execute();
    const roles = await this.db.selectFrom("lake_user_roles").selectAll().orderBy("role").execute();
    return users.map((u) => ({ name: u.name, roles: roles.filter((r) => r.user_name === u.name).map((r) => r.role) }));
  }

  async addRole(user: string, role: string): Promise<void> {
    await this.db
      .insertInto("lake_user_roles")
      .values({ user_name: user, role })
      .onConflict((oc) => oc.columns(["user_name", "role"]).doNothing())
      .execute();
  }

  async roles(user: string): Promise<string[]> {
    const rows = await this.db.selectFrom("lake_user_roles").select("role").where("user_name", "=", user).execute();
    return rows.map((r) => r.role).sort();
  }

  async grant(grant: Grant): Promise<void> {
    await this.db
      .insertInto("lake_grants")
      .values({
        principal_kind: grant.principalKind,
        principal: grant.principal,
        permission: grant.permission,
        target_kind: grant.targetKind,
        target: grant.target,
        created_at: new Date().toISOString(),
      })
      .onConflict((oc) =>
        oc.columns(["principal_kind", "principal", "permission", "target_kind", "target"]).doNothing(),
      )
      .execute();
  }

  async revoke(grant: Grant): Promise<number> {
    const result = await this.db
      .deleteFrom("lake_grants")
      .where("principal_kind", "=", grant.principalKind)
      .where("principal", "=", grant.principal)
      .where("permission", "=", grant.permission)
      .where("target_kind", "=", grant.targetKind)
      .where("target", "=", grant.target)
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  /** Grants to this user or any of these roles (all grants when neither is given). */
  async grants(user?: string, roles: readonly string[] = []): Promise<Grant[]> {
    let query = this.db.selectFrom("lake_grants").selectAll();
    if (user !== undefined) {
      query = query.where((eb) =>
        eb.or([
          eb.and([eb("principal_kind", "=", "user"), eb("principal", "=", user)]),
          ...(roles.length > 0 ? [eb.and([eb("principal_kind", "=", "role"), eb("principal", "in", [...roles])])] : []),
        ]),
      );
    }
    const rows = await query.orderBy("principal").orderBy("target").execute();
    return rows.map((r) => ({
      principalKind: r.principal_kind as Grant["principalKind"],
      principal: r.principal,
      permission: r.permission as Grant["permission"],
      targetKind: r.target_kind as Grant["targetKind"],
      target: r.target,
    }));
  }

  async addToken(tokenHash: string, user: string): Promise<void> {
    await this.db
      .insertInto("lake_tokens")
      .values({ token_hash: tokenHash, user_name: user, created_at: new Date().toISOString() })
      .execute();
  }

  async userOfToken(tokenHash: string): Promise<string | undefined> {
    const row = await this.db
      .selectFrom("lake_tokens")
      .select("user_name")
      .where("token_hash", "=", tokenHash)
      .executeTakeFirst();
    return row?.user_name;
  }

  async withdraw(healthCode: string): Promise<void> {
    await this.db
      .insertInto("withdrawals")
      .values({ health_code: healthCode, withdrawn_at: new Date().toISOString() })
      .onConflict((oc) => oc.column("health_code").doNothing())
      .execute();
  }

  async withdrawn(): Promise<string[]> {
    const rows = await this.db.selectFrom("withdrawals").select("health_code").orderBy("health_code").execute();
    return rows.map((r) => r.health_code);
  }

  async audit(entry: Omit<AuditEntry, "auditId" | "at">): Promise<void> {
    const at = new Date().toISOString();
    await this.db
      .insertInto("lake_audit")
      .values({
        audit_id: `${at}-${randomUUID().slice(0, 8)}`,
        at,
        actor: entry.actor,
        action: entry.action,
        datasets: JSON.stringify(entry.datasets),
        rows: entry.rows,
        detail: entry.detail,
        outcome: entry.outcome,
      })
      .execute();
  }

  /** The newest entries first. */
  async auditLog(options: { actor?: string; limit?: number } = {}): Promise<AuditEntry[]> {
    let query = this.db.selectFrom("lake_audit").selectAll();
    if (options.actor) query = query.where("actor", "=", options.actor);
    const rows = await query
      .orderBy("at", "desc")
      .orderBy("audit_id", "desc")
      .limit(options.limit ?? 50)
      .execute();
    return rows.map((r) => ({
      auditId: r.audit_id,
      at: r.at,
      actor: r.actor,
      action: r.action,
      datasets: JSON.parse(r.datasets),
      rows: r.rows === null ? null : Number(r.rows),
      detail: r.detail,
      outcome: r.outcome,
    }));
  }
}
