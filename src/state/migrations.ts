import type { Kysely, Migration } from "kysely";
import { utcInstant } from "./time.js";

/**
 * Schema changes of the state store, in order. Each runs once per database (Kysely's migrator keeps the list).
 * Column types are chosen to mean the same on SQLite and PostgreSQL: times are ISO-8601 text, JSON is text.
 */
export const migrations: Record<string, Migration> = {
  "0001_uploads": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("uploads")
        .addColumn("upload_id", "text", (c) => c.primaryKey())
        .addColumn("record_id", "text")
        .addColumn("version", "integer")
        .addColumn("content_hash", "text", (c) => c.notNull())
        .addColumn("raw_key", "text", (c) => c.notNull())
        .addColumn("size_bytes", "bigint", (c) => c.notNull())
        .addColumn("source_name", "text", (c) => c.notNull())
        .addColumn("metadata", "text", (c) => c.notNull())
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("error", "text")
        .addColumn("summary", "text")
        .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("received_at", "text", (c) => c.notNull())
        .addColumn("processed_at", "text")
        .addUniqueConstraint("uploads_record_version", ["record_id", "version"])
        .execute();
      await db.schema.createIndex("uploads_record_hash").on("uploads").columns(["record_id", "content_hash"]).execute();
      await db.schema.createIndex("uploads_status").on("uploads").column("status").execute();

      await db.schema
        .createTable("upload_files")
        .addColumn("upload_id", "text", (c) => c.notNull().references("uploads.upload_id").onDelete("cascade"))
        .addColumn("seq", "integer", (c) => c.notNull())
        .addColumn("path", "text", (c) => c.notNull())
        .addColumn("size_bytes", "bigint", (c) => c.notNull())
        .addColumn("schema_url", "text")
        .addColumn("schema_source", "text")
        .addColumn("schema_missing", "integer", (c) => c.notNull())
        .addColumn("validation", "text", (c) => c.notNull())
        .addColumn("errors", "text", (c) => c.notNull())
        .addColumn("dataset_id", "text")
        .addColumn("output_key", "text")
        .addColumn("note", "text")
        .addPrimaryKeyConstraint("upload_files_pk", ["upload_id", "seq"])
        .execute();
    },
  },
  "0002_relationalize": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("dataset_schemas")
        .addColumn("dataset", "text", (c) => c.primaryKey())
        .addColumn("schema", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .execute();
      // Which JSON files each dataset's tables were built from (the incremental bookmark).
      await db.schema
        .createTable("json_bookmarks")
        .addColumn("dataset", "text", (c) => c.notNull())
        .addColumn("key", "text", (c) => c.notNull())
        .addColumn("size_bytes", "bigint", (c) => c.notNull())
        .addColumn("modified_ms", "bigint", (c) => c.notNull())
        .addColumn("run_id", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("json_bookmarks_pk", ["dataset", "key"])
        .execute();
      // Which run's Parquet files hold each record's rows, so a newer upload can replace them.
      await db.schema
        .createTable("parquet_records")
        .addColumn("dataset", "text", (c) => c.notNull())
        .addColumn("record_id", "text", (c) => c.notNull())
        .addColumn("run_id", "text", (c) => c.notNull())
        .addColumn("json_key", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("parquet_records_pk", ["dataset", "record_id"])
        .execute();
      await db.schema
        .createTable("relationalize_runs")
        .addColumn("run_id", "text", (c) => c.primaryKey())
        .addColumn("dataset", "text", (c) => c.notNull())
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("started_at", "text", (c) => c.notNull())
        .addColumn("finished_at", "text")
        .addColumn("summary", "text")
        .execute();
    },
  },
  "0003_pipeline": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("runs")
        .addColumn("run_id", "text", (c) => c.primaryKey())
        // Order of request; runs of one target start in this order.
        .addColumn("seq", "integer", (c) => c.notNull().unique())
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("target", "text", (c) => c.notNull())
        .addColumn("params", "text", (c) => c.notNull())
        .addColumn("requested_by", "text", (c) => c.notNull())
        .addColumn("idempotency_key", "text", (c) => c.unique())
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("attempts", "integer", (c) => c.notNull())
        .addColumn("max_attempts", "integer", (c) => c.notNull())
        .addColumn("next_attempt_at", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("started_at", "text")
        .addColumn("finished_at", "text")
        .addColumn("worker", "text")
        .addColumn("error", "text")
        .addColumn("error_kind", "text")
        .addColumn("summary", "text")
        .execute();
      await db.schema.createIndex("runs_target_seq").on("runs").columns(["target", "seq"]).execute();
      await db.schema.createIndex("runs_status").on("runs").columns(["status", "next_attempt_at"]).execute();
      await db.schema
        .createTable("run_steps")
        .addColumn("run_id", "text", (c) => c.notNull())
        .addColumn("attempt", "integer", (c) => c.notNull())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("started_at", "text", (c) => c.notNull())
        .addColumn("finished_at", "text")
        .addColumn("error", "text")
        .addColumn("summary", "text")
        .addPrimaryKeyConstraint("run_steps_pk", ["run_id", "attempt", "name"])
        .execute();
      // One writer per target: a worker holds the lease while it runs, renews it, and loses it when it dies.
      await db.schema
        .createTable("leases")
        .addColumn("target", "text", (c) => c.primaryKey())
        .addColumn("holder", "text", (c) => c.notNull())
        .addColumn("run_id", "text", (c) => c.notNull())
        .addColumn("expires_at", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("schedules")
        .addColumn("name", "text", (c) => c.primaryKey())
        .addColumn("last_tick", "text", (c) => c.notNull())
        .execute();
    },
  },
  "0004_export": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("participants")
        .addColumn("health_code", "text", (c) => c.primaryKey())
        .addColumn("sharing_scope", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("export_times")
        .addColumn("study_id", "text", (c) => c.primaryKey())
        .addColumn("last_export_at", "text", (c) => c.notNull())
        .execute();
      // Exports select uploads by time, study and participant: those move out of the metadata into columns.
      await db.schema.alterTable("uploads").addColumn("uploaded_on", "text").execute();
      await db.schema.alterTable("uploads").addColumn("study_id", "text").execute();
      await db.schema.alterTable("uploads").addColumn("health_code", "text").execute();
      const typed = db as unknown as Kysely<{
        uploads: {
          upload_id: string;
          metadata: string;
          uploaded_on: string | null;
          study_id: string | null;
          health_code: string | null;
        };
      }>;
      for (const row of await typed.selectFrom("uploads").select(["upload_id", "metadata"]).execute()) {
        const metadata = JSON.parse(row.metadata) as Record<string, string>;
        await typed
          .updateTable("uploads")
          .set({
            uploaded_on: utcInstant(metadata.uploadedon),
            study_id: metadata.studyid ?? null,
            health_code: metadata.healthcode ?? null,
          })
          .where("upload_id", "=", row.upload_id)
          .execute();
      }
      await db.schema.createIndex("uploads_uploaded_on").on("uploads").column("uploaded_on").execute();
    },
  },
  "0005_export_tables": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("exports")
        .addColumn("export_id", "text", (c) => c.primaryKey())
        .addColumn("idempotency_key", "text", (c) => c.notNull().unique())
        .addColumn("destination", "text", (c) => c.notNull())
        .addColumn("export_date", "text", (c) => c.notNull())
        .addColumn("request", "text", (c) => c.notNull())
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("started_at", "text", (c) => c.notNull())
        .addColumn("finished_at", "text")
        .addColumn("metrics", "text")
        .addColumn("error", "text")
        .execute();
      await db.schema
        .createTable("export_tables")
        .addColumn("destination", "text", (c) => c.notNull())
        .addColumn("table_key", "text", (c) => c.notNull())
        .addColumn("study_id", "text", (c) => c.notNull())
        .addColumn("table_name", "text", (c) => c.notNull())
        .addColumn("fields", "text", (c) => c.notNull())
        .addColumn("columns", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("export_tables_pk", ["destination", "table_key"])
        .execute();
      await db.schema
        .createTable("export_records")
        .addColumn("destination", "text", (c) => c.notNull())
        .addColumn("table_key", "text", (c) => c.notNull())
        .addColumn("record_id", "text", (c) => c.notNull())
        .addColumn("export_id", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("export_records_pk", ["destination", "table_key", "record_id"])
        .execute();
      await db.schema
        .createIndex("export_records_record")
        .on("export_records")
        .columns(["destination", "record_id"])
        .execute();
    },
  },
  "0006_lake": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("lake_datasets")
        .addColumn("name", "text", (c) => c.primaryKey())
        .addColumn("description", "text", (c) => c.notNull())
        .addColumn("owner", "text", (c) => c.notNull())
        .addColumn("tier", "text", (c) => c.notNull())
        .addColumn("update_kind", "text", (c) => c.notNull())
        .addColumn("key_columns", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("lake_updates")
        .addColumn("dataset", "text", (c) => c.notNull())
        .addColumn("update_id", "text", (c) => c.notNull())
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("manifest", "text")
        .addColumn("created_by", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("committed_at", "text")
        .addPrimaryKeyConstraint("lake_updates_pk", ["dataset", "update_id"])
        .execute();
      await db.schema
        .createTable("lake_users")
        .addColumn("name", "text", (c) => c.primaryKey())
        .addColumn("created_at", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("lake_user_roles")
        .addColumn("user_name", "text", (c) => c.notNull())
        .addColumn("role", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("lake_user_roles_pk", ["user_name", "role"])
        .execute();
      await db.schema
        .createTable("lake_grants")
        .addColumn("principal_kind", "text", (c) => c.notNull())
        .addColumn("principal", "text", (c) => c.notNull())
        .addColumn("permission", "text", (c) => c.notNull())
        .addColumn("target_kind", "text", (c) => c.notNull())
        .addColumn("target", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("lake_grants_pk", [
          "principal_kind",
          "principal",
          "permission",
          "target_kind",
          "target",
        ])
        .execute();
      await db.schema
        .createTable("lake_tokens")
        .addColumn("token_hash", "text", (c) => c.primaryKey())
        .addColumn("user_name", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("lake_audit")
        .addColumn("audit_id", "text", (c) => c.primaryKey())
        .addColumn("at", "text", (c) => c.notNull())
        .addColumn("actor", "text", (c) => c.notNull())
        .addColumn("action", "text", (c) => c.notNull())
        .addColumn("datasets", "text", (c) => c.notNull())
        .addColumn("rows", "integer")
        .addColumn("detail", "text", (c) => c.notNull())
        .addColumn("outcome", "text", (c) => c.notNull())
        .execute();
      await db.schema.createIndex("lake_audit_at").on("lake_audit").column("at").execute();
      await db.schema
        .createTable("withdrawals")
        .addColumn("health_code", "text", (c) => c.primaryKey())
        .addColumn("withdrawn_at", "text", (c) => c.notNull())
        .execute();
    },
  },
  "0007_record_rules": {
    async up(db: Kysely<unknown>) {
      // The newest-by values of the version of a record in the tables (JSON text), for datasets that order by them.
      await db.schema.alterTable("parquet_records").addColumn("record_order", "text").execute();
      // Records a deletion export names, one row per file naming each: removed from the dataset's tables and
      // kept out while any of those files stays.
      await db.schema
        .createTable("deleted_records")
        .addColumn("dataset", "text", (c) => c.notNull())
        .addColumn("record_id", "text", (c) => c.notNull())
        .addColumn("json_key", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("deleted_records_pk", ["dataset", "record_id", "json_key"])
        .execute();
    },
  },
  "0008_record_files": {
    async up(db: Kysely<unknown>) {
      // A run looks up the records of the JSON files that are gone, not every record of the dataset.
      await db.schema
        .createIndex("parquet_records_json_key")
        .on("parquet_records")
        .columns(["dataset", "json_key"])
        .execute();
    },
  },
  "0009_parquet_compactions": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("parquet_compactions")
        .addColumn("dataset", "text", (c) => c.notNull())
        .addColumn("run_id", "text", (c) => c.notNull())
        .addColumn("absorbed_run_id", "text", (c) => c.notNull())
        .addColumn("file", "text", (c) => c.notNull())
        .addColumn("removed", "integer", (c) => c.notNull().defaultTo(0))
        .addPrimaryKeyConstraint("parquet_compactions_pk", ["dataset", "file"])
        .execute();
      await db.schema
        .createIndex("parquet_compactions_absorbed")
        .on("parquet_compactions")
        .columns(["dataset", "absorbed_run_id"])
        .execute();
    },
  },
  "0010_lake_update_runs": {
    async up(db: Kysely<unknown>) {
      // The pipeline run that began a lake update: when that run is found dead, so is its update.
      await db.schema.alterTable("lake_updates").addColumn("run_id", "text").execute();
    },
  },
  "0011_lake_update_leases": {
    async up(db: Kysely<unknown>) {
      // While an update is written, its writer keeps pushing this time forward; once it passes, the writer is dead.
      await db.schema.alterTable("lake_updates").addColumn("alive_until", "text").execute();
    },
  },
  "0012_relationalize_run_status": {
    async up(db: Kysely<unknown>) {
      // Every run start and every catalog open look for the few runs not committed among many committed ones.
      await db.schema
        .createIndex("relationalize_runs_status")
        .on("relationalize_runs")
        .columns(["status", "dataset"])
        .execute();
    },
  },
};
