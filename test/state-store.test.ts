import { execFile } from "node:child_process";
import { rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StateConfig } from "../src/config/config.js";
import type { UploadFile } from "../src/state/models.js";
import type { Bookmark, RunCommit } from "../src/state/relationalize-state.js";
import { StateStore } from "../src/state/store.js";
import { dropSchema, POSTGRES_URL, postgresAvailable, tempDir, uniqueSchema } from "./support/workspace.js";

const pgReady = await postgresAvailable();
const run = promisify(execFile);

function file(seq: number, overrides: Partial<UploadFile> = {}): UploadFile {
  return {
    seq,
    path: `f${seq}.json`,
    sizeBytes: 100 + seq,
    schemaUrl: null,
    schemaSource: null,
    schemaMissing: false,
    validation: "unvalidated",
    errors: [],
    datasetId: null,
    outputKey: null,
    note: null,
    ...overrides,
  };
}

/** A relationalize run of a dataset that wrote nothing but these bookmarks. */
async function commitBookmarks(
  store: StateStore,
  dataset: string,
  bookmarks: Array<[string, Bookmark]>,
  compacted: RunCommit["compacted"] = [],
  runId = `run-${dataset}-${bookmarks.length}`,
): Promise<void> {
  await store.relationalize.startRun(runId, dataset);
  await store.relationalize.commitRun({
    runId,
    dataset,
    schema: { root: dataset, recordField: "recordid", inherit: ["recordid"], tables: [] },
    bookmarks: new Map(bookmarks),
    removedKeys: [],
    records: new Map(),
    removedRecords: [],
    deletedRecords: [],
    removedDeletionKeys: [],
    compacted,
    summary: {},
  });
}

/** One suite, run against every state store implementation. */
function stateStoreSuite(
  name: string,
  setup: () => Promise<{ config: StateConfig; root: string; teardown(): Promise<void> }>,
) {
  describe(`state store: ${name}`, () => {
    let store: StateStore;
    let env: Awaited<ReturnType<typeof setup>>;

    beforeAll(async () => {
      env = await setup();
      store = await StateStore.open(env.config, env.root);
    });
    afterAll(async () => {
      await store?.close();
      await env?.teardown();
    });

    const base = {
      contentHash: "a".repeat(64),
      rawKey: "sha256/aa/x.zip",
      sizeBytes: 5_000_000_000,
      sourceName: "x.zip",
      metadata: { recordid: "r1", healthcode: "p1" },
      status: "received" as const,
    };

    it("numbers versions of a record from 1 and keeps big sizes exact", async () => {
      const v1 = await store.recordUpload({ ...base, recordId: "r1" });
      const v2 = await store.recordUpload({ ...base, recordId: "r1", contentHash: "b".repeat(64) });
      const other = await store.recordUpload({ ...base, recordId: "r2" });
      expect([v1.version, v2.version, other.version]).toEqual([1, 2, 1]);
      const read = await store.getUpload(v1.uploadId);
      expect(read?.sizeBytes).toBe(5_000_000_000);
      expect(read?.metadata).toEqual(base.metadata);
      expect(read?.status).toBe("received");
    });

    it("finds an upload by record id and content hash, and by hash alone when the record id is unknown", async () => {
      const found = await store.findUpload("r1", "b".repeat(64));
      expect(found?.version).toBe(2);
      expect(await store.findUpload("r1", "c".repeat(64))).toBeUndefined();
      const anonymous = await store.recordUpload({
        ...base,
        recordId: null,
        contentHash: "d".repeat(64),
        status: "rejected",
        error: "bad",
      });
      expect(anonymous.version).toBeNull();
      expect((await store.findUpload(null, "d".repeat(64)))?.uploadId).toBe(anonymous.uploadId);
      expect(await store.findUpload("r1", "d".repeat(64))).toBeUndefined();
    });

    it("stores an outcome and its files in one step, replacing earlier files", async () => {
      const upload = await store.recordUpload({ ...base, recordId: "r3" });
      await store.markAttempt(upload.uploadId);
      const files = [
        file(0, {
          validation: "valid",
          schemaUrl: "https://x/s.json",
          schemaSource: "app",
          datasetId: "D_v1",
          outputKey: "dataset=D_v1/k",
        }),
        file(1, { validation: "invalid", errors: [{ pointer: "/0/x", message: "must be number" }] }),
        file(2, { schemaMissing: true, note: "no local copy" }),
      ];
      const summary = {
        files: 3,
        valid: 1,
        invalid: 1,
        unvalidated: 1,
        skipped: 1,
        written: 0,
        missingSchemaUrls: ["u"],
        warnings: ["w"],
      };
      await store.finishUpload(upload.uploadId, { status: "quarantined", error: "1 file failed", summary, files });
      expect(await store.getFiles(upload.uploadId)).toEqual(files);
      const read = await store.getUpload(upload.uploadId);
      expect(read).toMatchObject({ status: "quarantined", error: "1 file failed", summary, attempts: 1 });
      expect(read?.processedAt).not.toBeNull();

      await store.markAttempt(upload.uploadId);
      await store.finishUpload(upload.uploadId, { status: "valid", error: null, summary, files: [file(0)] });
      expect(await store.getFiles(upload.uploadId)).toEqual([file(0)]);
      expect(await store.getUpload(upload.uploadId)).toMatchObject({ status: "valid", error: null, attempts: 2 });
    });

    it("lists and counts uploads by status", async () => {
      const [r1v1] = await store.uploadsOfRecord("r1");
      await store.setStatus(r1v1!.uploadId, "superseded");
      const counts = await store.countByStatus();
      expect(counts).toEqual({ received: 2, valid: 1, quarantined: 0, rejected: 1, superseded: 1, withdrawn: 0 });
      const received = await store.listUploads({ statuses: ["received"] });
      expect(received.map((u) => `${u.recordId}@${u.version}`).sort()).toEqual(["r1@2", "r2@1"]);
      expect(await store.listUploads({ recordId: "r1", limit: 1 })).toHaveLength(1);
      expect((await store.uploadsOfRecord("r1")).map((u) => u.version)).toEqual([1, 2]);
    });

    it("hands out distinct versions to concurrent writers", async () => {
      const uploads = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          store.recordUpload({ ...base, recordId: "busy", contentHash: String(i).repeat(64) }),
        ),
      );
      expect(uploads.map((u) => u.version).sort((a, b) => (a ?? 0) - (b ?? 0))).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    });

    it("reads a dataset's updates by status, up to an update, by commit time, and those its state is made of", async () => {
      const { lake } = store;
      await lake.createDataset({
        name: "visits",
        description: "",
        owner: "operator",
        tier: "internal",
        updateKind: "delta",
        keyColumns: [],
        createdAt: new Date().toISOString(),
      });
      const add = async (kind: "snapshot" | "delta", outcome: "commit" | "abandon" | "leave") => {
        const update = await lake.beginUpdate("visits", kind, "operator", {
          aliveUntil: new Date(Date.now() + 60_000).toISOString(),
          run: `run-${outcome}`,
        });
        if (outcome === "abandon") await lake.abandonUpdate("visits", update);
        if (outcome !== "commit") return update;
        await lake.commitUpdate({
          dataset: "visits",
          update,
          kind,
          rows: 1,
          schema: [],
          files: [],
          raw: [],
          createdBy: "operator",
          createdAt: new Date().toISOString(),
          operation: "import",
          run: null,
          lineage: [],
        });
        return update;
      };
      const u1 = await add("delta", "commit");
      const u2 = await add("snapshot", "commit");
      const u3 = await add("delta", "commit");
      const committedBy = (await lake.updates("visits")).at(-1)?.committedAt as string;
      await new Promise((resolve) => setTimeout(resolve, 5));
      const u4 = await add("snapshot", "abandon");
      const u5 = await add("delta", "commit");
      const u6 = await add("delta", "leave");
      const ids = async (filter: Parameters<typeof lake.updates>[1]) =>
        (await lake.updates("visits", filter)).map((u) => u.update);
      expect(await ids({})).toHaveLength(6);
      expect(await ids({ status: "writing" })).toEqual([u6]);
      expect(await ids({ status: "committed", live: true })).toEqual([u2, u3, u5]);
      expect(await ids({ status: "committed", live: true, through: u1 })).toEqual([u1]);
      expect(await ids({ status: "committed", live: true, through: u3 })).toEqual([u2, u3]);
      expect(await ids({ status: "committed", live: true, committedBy })).toEqual([u2, u3]);
      expect(await ids({ status: "committed", through: u3 })).toEqual([u1, u2, u3]);
      expect(await ids({ after: u2, through: u5 })).toEqual([u3, u4, u5]);
      const { count, latest } = await lake.committed("visits");
      expect([count, latest?.update, latest?.manifest?.rows]).toEqual([4, u5, 1]);
      // The updates a run began and left being written (its process died), by run.
      expect(await lake.writingUpdatesOf(["run-leave", "run-commit", "run-abandon", "none"])).toEqual([
        { dataset: "visits", update: u6 },
      ]);
      // Its writer renews an update while it is written; once abandoned or committed, a renewal is refused.
      const renewed = new Date(Date.now() + 120_000).toISOString();
      expect(await lake.renewUpdate("visits", u6, renewed)).toBe(true);
      expect((await lake.updates("visits", { status: "writing" })).map((u) => u.aliveUntil)).toEqual([renewed]);
      expect(await lake.renewUpdate("visits", u5, renewed)).toBe(false);
      await lake.abandonUpdate("visits", u6);
      expect(await lake.renewUpdate("visits", u6, renewed)).toBe(false);
      expect((await lake.updates("visits", { after: u4 })).map((u) => u.aliveUntil === renewed)).toEqual([false, true]);
    });

    it("looks up a dataset's bookmarks by key, counts them, and lists them a page at a time", async () => {
      const state = store.relationalize;
      const keys = ["dataset=d/b.ndjson", "dataset=d/a.ndjson", "dataset=d/x/c.ndjson", "dataset=d/e", "dataset=d/é"];
      for (const [dataset, names] of [
        ["d", keys],
        ["other", ["dataset=other/a.ndjson"]],
      ] as const) {
        await commitBookmarks(
          store,
          dataset,
          names.map((key, i) => [key, { sizeBytes: i, modifiedMs: 1_700_000_000_000 + i }]),
        );
      }
      const found = await state.bookmarks("d", ["dataset=d/a.ndjson", "dataset=d/none", "dataset=other/a.ndjson"]);
      expect([...found]).toEqual([["dataset=d/a.ndjson", { sizeBytes: 1, modifiedMs: 1_700_000_000_001 }]]);
      expect(await state.bookmarkCount("d")).toBe(5);
      expect(await state.bookmarkCount("none")).toBe(0);
      const pages: string[][] = [];
      for await (const page of state.bookmarkedKeys("d", 2)) pages.push(page);
      expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
      expect(pages.flat().sort()).toEqual([...keys].sort());
    });

    it("follows merged Parquet files to the runs that merged them, and lists those still to delete", async () => {
      const state = store.relationalize;
      // Run B merged files of A and X; run C merged B's merged file; D, on another dataset, merged A's.
      await commitBookmarks(
        store,
        "m",
        [],
        [
          { absorbedRunId: "A", file: "t/A_b0_0.parquet" },
          { absorbedRunId: "X", file: "t/X_b0_0.parquet" },
        ],
        "B",
      );
      await commitBookmarks(store, "m", [], [{ absorbedRunId: "B", file: "t/B_c0_0.parquet" }], "C");
      await commitBookmarks(store, "other-m", [], [{ absorbedRunId: "A", file: "u/A_b0_0.parquet" }], "D");
      const into = await state.mergedInto("m", ["A", "C", "Z"]);
      expect([...into].map(([run, to]) => [run, [...to].sort()])).toEqual([
        ["A", ["B", "C"]],
        ["C", []],
        ["Z", []],
      ]);
      expect((await state.mergedFiles("m")).sort()).toEqual([
        "t/A_b0_0.parquet",
        "t/B_c0_0.parquet",
        "t/X_b0_0.parquet",
      ]);
      await state.mergedFilesRemoved("m", ["t/A_b0_0.parquet", "t/X_b0_0.parquet"]);
      expect(await state.mergedFiles("m")).toEqual(["t/B_c0_0.parquet"]);
      expect(await state.mergedFiles("other-m")).toEqual(["u/A_b0_0.parquet"]);
      // What a reader leaves out: files still to delete, of any dataset, and runs not committed.
      await state.startRun("E", "m");
      await state.startRun("F", "m");
      expect(await state.abandonRuns("m")).toEqual(expect.arrayContaining(["E", "F"]));
      await state.startRun("G", "m");
      const unpublished = await state.unpublished();
      expect([...unpublished.files].sort()).toEqual(["t/B_c0_0.parquet", "u/A_b0_0.parquet"]);
      expect([...unpublished.runs].sort()).toEqual(["E", "F", "G"]);
    });

    it("looks a redrive's records up by id, more than one statement holds, in upload order", async () => {
      const count = 700;
      const ids = Array.from({ length: count }, (_, i) => `redrive-${String(i).padStart(4, "0")}`);
      for (const [i, recordId] of ids.entries()) {
        // Later ids were uploaded earlier, two records per second.
        const uploadedon = new Date(Date.UTC(2022, 1, 1) + Math.floor((count - i) / 2) * 1000).toISOString();
        await store.recordUpload({
          ...base,
          recordId,
          status: "valid",
          metadata: { recordid: recordId, healthcode: "p-redrive", uploadedon },
        });
      }
      // More ids than SQLite (32,766) or PostgreSQL (65,535) take in one statement, most of them unknown.
      const unknown = Array.from({ length: 70_000 }, (_, i) => `redrive-none-${i}`);
      const found = await store.exports.records({ recordIds: [...unknown, ...ids, ids[0] as string] });
      const expected = [...ids].sort((a, b) => {
        const [x, y] = [Math.floor((count - ids.indexOf(a)) / 2), Math.floor((count - ids.indexOf(b)) / 2)];
        return x - y || (a < b ? -1 : 1);
      });
      expect(found.map((r) => r.recordId)).toEqual(expected);
      expect(await store.exports.recordsOf(["p-redrive", "p-none"])).toEqual(ids);
      expect(await store.exports.exported("default", [...unknown, ...ids])).toEqual([]);
    });

    it("keeps its tables across reopening (migrations run once)", async () => {
      await store.close();
      store = await StateStore.open(env.config, env.root);
      expect((await store.uploadsOfRecord("busy")).length).toBe(8);
    });
  });
}

describe("a new SQLite state file", () => {
  it("is set up once when several processes open it at the same moment", async () => {
    const root = await tempDir();
    try {
      const store = fileURLToPath(new URL("../src/state/store.ts", import.meta.url));
      // Each process waits for the same moment (they take different times to start), then opens the file.
      const moment = Date.now() + 4000;
      const open = `import { StateStore } from ${JSON.stringify(store)};
        await new Promise((resolve) => setTimeout(resolve, ${moment} - Date.now()));
        const s = await StateStore.open({ kind: "sqlite", path: "state.db" }, ${JSON.stringify(root)});
        await s.close();`;
      const opened = await Promise.allSettled(
        Array.from({ length: 4 }, () =>
          run(process.execPath, ["--import", "tsx", "--input-type=module", "-e", open], { cwd: process.cwd() }),
        ),
      );
      expect(opened.map((o) => (o.status === "rejected" ? String(o.reason) : "ok"))).toEqual(["ok", "ok", "ok", "ok"]);
      const reopened = await StateStore.open({ kind: "sqlite", path: "state.db" }, root);
      expect(await reopened.listUploads({})).toEqual([]);
      await reopened.close();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  }, 60_000);
});

stateStoreSuite("SQLite", async () => {
  const root = await tempDir();
  return {
    root,
    config: { kind: "sqlite", path: path.join("state", "state.db") },
    teardown: () => rm(root, { recursive: true, force: true }),
  };
});

describe.skipIf(!pgReady)("PostgreSQL", () => {
  stateStoreSuite("PostgreSQL", async () => {
    const schema = uniqueSchema();
    return {
      root: process.cwd(),
      config: { kind: "postgres", url: POSTGRES_URL, schema },
      teardown: () => dropSchema(schema),
    };
  });

  it("refreshes the planner's statistics of the tables looked up by key after large writes, not after small ones", async () => {
    const schema = uniqueSchema();
    const store = await StateStore.open({ kind: "postgres", url: POSTGRES_URL, schema }, process.cwd());
    const client = new pg.Client({ connectionString: POSTGRES_URL });
    await client.connect();
    try {
      // reltuples is -1 until a table is first analyzed (PostgreSQL 14 and later).
      const known = async (table: string) =>
        Number(
          (await client.query("select reltuples from pg_class where oid = $1::regclass", [`"${schema}".${table}`]))
            .rows[0].reltuples,
        );
      const commit = (name: string, files: number) =>
        commitBookmarks(
          store,
          "d",
          Array.from({ length: files }, (_, i) => [`dataset=d/${name}-${i}`, { sizeBytes: i, modifiedMs: i }]),
        );
      await commit("small", 10);
      expect(await known("json_bookmarks")).toBe(-1);
      await commit("large", 10_000);
      expect(await known("json_bookmarks")).toBeGreaterThanOrEqual(10_000);
      const exported = (exportId: string, records: number) =>
        store.exports.commitTable({
          destination: "default",
          tableKey: "t",
          studyId: "s",
          tableName: "s-t",
          fields: [],
          columns: [],
          exportId,
          recordIds: Array.from({ length: records }, (_, i) => `r${i}`),
          removedRecordIds: [],
        });
      await exported("e1", 9_000);
      expect(await known("export_records")).toBe(-1);
      // Counted across exports: the second brings the table past 10,000 rows written.
      await exported("e2", 2_000);
      expect(await known("export_records")).toBeGreaterThanOrEqual(9_000);
    } finally {
      await client.end();
      await store.close();
      await dropSchema(schema);
    }
  });
});
