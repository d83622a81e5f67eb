import { createHash } from "node:crypto";
import { mkdir, readFile, stat, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Exporter } from "../src/export/exporter.js";
import { parseExportRequest } from "../src/export/request.js";
import { Intake } from "../src/intake/intake.js";
import { canAccess, type Principal } from "../src/lake/access.js";
import { AccessDeniedError, Lake, LakeError } from "../src/lake/lake.js";
import type { Grant, Tier } from "../src/lake/models.js";
import { UpdateLease } from "../src/lake/update-lease.js";
import { withdrawParticipant } from "../src/lake/withdraw.js";
import { Catalog } from "../src/parquet/catalog.js";
import { literal, openDuckDB, QueryRefusedError } from "../src/parquet/duckdb.js";
import { RelationalizeStage } from "../src/parquet/stage.js";
import { Pipeline } from "../src/pipeline/pipeline.js";
import { LocalObjectStore } from "../src/storage/object-store.js";
import { writeBatch } from "../src/synth/generate.js";
import { makeWorkspace, tableRows as rows, type TestWorkspace, tempDir } from "./support/workspace.js";

function inAnHour(): string {
  return new Date(Date.now() + 3_600_000).toISOString();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function writeParquet(file: string, select: string): Promise<void> {
  const duck = await openDuckDB();
  try {
    await duck.connection.run(`COPY (${select}) TO ${literal(file)} (FORMAT parquet)`);
  } finally {
    duck.close();
  }
}

describe("lake datasets, updates and time travel", () => {
  let t: TestWorkspace;
  let lake: Lake;
  let files: string;
  let operator: Principal;

  beforeAll(async () => {
    t = await makeWorkspace();
    lake = new Lake(t.ws);
    operator = await lake.principal();
    files = await tempDir();
  });
  afterAll(() => t.cleanup());

  it("imports CSV, TSV, NDJSON, JSON and Parquet as updates with a manifest, keeping the raw file", async () => {
    const sources: Record<string, string> = {
      "a.csv": "id,name,score\n1,ann,3.5\n2,bob,4\n",
      "a.tsv": "id\tname\tscore\n1\tann\t3.5\n2\tbob\t4\n",
      "a.ndjson": '{"id":1,"name":"ann","score":3.5}\n{"id":2,"name":"bob","score":4}\n',
      "a.json": '[{"id":1,"name":"ann","score":3.5},{"id":2,"name":"bob","score":4}]',
    };
    for (const [name, text] of Object.entries(sources)) await writeFile(path.join(files, name), text);
    await writeParquet(
      path.join(files, "a.parquet"),
      "SELECT * FROM (VALUES (1, 'ann', 3.5), (2, 'bob', 4.0)) v(id, name, score)",
    );
    for (const [i, file] of ["a.csv", "a.tsv", "a.ndjson", "a.json", "a.parquet"].entries()) {
      const name = `people_${i}`;
      await lake.createDataset(
        { name, description: "test", owner: "operator", tier: "internal", updateKind: "snapshot", keyColumns: [] },
        operator,
      );
      const manifest = await lake.importFile(name, path.join(files, file), operator);
      expect(manifest).toMatchObject({
        dataset: name,
        update: "u000001",
        kind: "snapshot",
        rows: 2,
        operation: "import",
      });
      expect(manifest.schema.map((c) => c.name)).toEqual(["id", "name", "score"]);
      const raw = manifest.raw[0];
      const kept = await readFile(path.join(lake.root, raw?.path as string));
      expect(kept.equals(await readFile(path.join(files, file)))).toBe(true);
      expect(raw?.sha256).toBe(createHash("sha256").update(kept).digest("hex"));
      const part = manifest.files[0]?.path as string;
      expect(part).toBe(`data/${name}/u000001/part-0.parquet`);
      const onDisk = JSON.parse(
        await readFile(path.join(lake.root, "data", name, "u000001", "_manifest.json"), "utf8"),
      );
      expect(onDisk).toEqual(manifest);
      const result = await lake.query(operator, `SELECT name, score FROM ${name} ORDER BY id`);
      expect(result.rows).toEqual([
        ["ann", 3.5],
        ["bob", 4],
      ]);
    }
  });

  it("takes the long names that nested relationalized tables get, and refuses names that are not SQL-safe", async () => {
    const long = `survey_v1${"_answers_items".repeat(8)}`;
    expect(long.length).toBeGreaterThan(63);
    await lake.createDataset(
      { name: long, description: "", owner: "operator", tier: "internal", updateKind: "snapshot", keyColumns: [] },
      operator,
    );
    await writeFile(path.join(files, "long.csv"), "a\n1\n");
    await lake.importFile(long, path.join(files, "long.csv"), operator);
    expect((await lake.query(operator, `SELECT a FROM ${long}`)).rows).toEqual([[1n]]);
    await expect(
      lake.createDataset(
        {
          name: "bad-name",
          description: "",
          owner: "operator",
          tier: "internal",
          updateKind: "snapshot",
          keyColumns: [],
        },
        operator,
      ),
    ).rejects.toThrow(/letters, digits and _/);
  });

  it("refuses a file it cannot read, leaving no update behind", async () => {
    await writeFile(path.join(files, "bad.parquet"), "not parquet at all");
    await expect(lake.importFile("people_0", path.join(files, "bad.parquet"), operator)).rejects.toThrow(
      /bad\.parquet cannot be read as parquet/,
    );
    await expect(lake.importFile("people_0", path.join(files, "missing.csv"), operator)).rejects.toThrow(
      /no such file/,
    );
    const updates = await lake.updates("people_0", operator);
    expect(updates.map((u) => [u.update, u.status])).toEqual([
      ["u000001", "committed"],
      ["u000002", "abandoned"],
    ]);
    expect((await lake.query(operator, "SELECT count(*) FROM people_0")).rows).toEqual([[2n]]);
  });

  it("reads a keyed dataset as its latest snapshot plus deltas, as of any update or time, and compacts it", async () => {
    await lake.createDataset(
      { name: "visits", description: "", owner: "operator", tier: "internal", updateKind: "delta", keyColumns: ["id"] },
      operator,
    );
    const csv = async (name: string, text: string) => {
      await writeFile(path.join(files, name), text);
      return path.join(files, name);
    };
    await lake.importFile("visits", await csv("v1.csv", "id,n\n1,10\n2,20\n3,30\n"), operator, { kind: "snapshot" });
    await new Promise((r) => setTimeout(r, 20));
    const between = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 20));
    await lake.importFile("visits", await csv("v2.csv", "id,n\n2,21\n4,40\n"), operator);
    await lake.importFile("visits", await csv("v3.csv", "id,n,_deleted\n1,,true\n"), operator);
    const read = async (options = {}) =>
      (await lake.query(operator, "SELECT id, n FROM visits ORDER BY id", options)).rows.map((r) => r.map(Number));
    expect(await read()).toEqual([
      [2, 21],
      [3, 30],
      [4, 40],
    ]);
    expect(await read({ asOf: { visits: "u000001" } })).toEqual([
      [1, 10],
      [2, 20],
      [3, 30],
    ]);
    expect(await read({ asOf: { visits: "u000002" } })).toEqual([
      [1, 10],
      [2, 21],
      [3, 30],
      [4, 40],
    ]);
    expect(await read({ at: between })).toEqual(await read({ asOf: { visits: "u000001" } }));
    await expect(read({ asOf: { visits: "u000009" } })).rejects.toThrow(/has no update 'u000009'/);

    const compacted = await lake.compact("visits", operator);
    expect(compacted).toMatchObject({ update: "u000004", kind: "snapshot", rows: 3, operation: "compact" });
    expect(compacted.lineage.map((l) => l.update)).toEqual(["u000001", "u000002", "u000003"]);
    expect(await read()).toEqual([
      [2, 21],
      [3, 30],
      [4, 40],
    ]);
    // The updates it folded stay, immutable: time travel still reads them.
    expect(await read({ asOf: { visits: "u000001" } })).toHaveLength(3);
  });

  it("refuses a snapshot of the state it read when an update begun after that read may still commit", async () => {
    const read = async () =>
      (await lake.query(operator, "SELECT id, n FROM visits ORDER BY id")).rows.map((r) => r.map(Number));
    const before = await read();
    // Another writer's delta, begun and not yet committed: a snapshot now would hide it without holding it.
    const aliveUntil = inAnHour();
    const other = await t.ws.state.lake.beginUpdate("visits", "delta", "operator", { aliveUntil });
    await expect(lake.compact("visits", operator)).rejects.toThrow(
      `has update ${other} (writing, abandoned unless its writer renews it by ${aliveUntil}) from another writer that this snapshot would hide`,
    );
    const statuses = (await lake.updates("visits", operator)).map((u) => [u.update, u.status]);
    expect(statuses.slice(-2)).toEqual([
      [other, "writing"],
      [expect.any(String), "abandoned"],
    ]);
    expect(await read()).toEqual(before);
    await t.ws.state.lake.abandonUpdate("visits", other);
    // A slow writer's update begun before the last committed one is missed as well.
    const slow = await t.ws.state.lake.beginUpdate("visits", "delta", "operator", { aliveUntil: inAnHour() });
    await writeFile(path.join(files, "v4.csv"), "id,n\n5,50\n");
    await lake.importFile("visits", path.join(files, "v4.csv"), operator);
    const after = await read();
    expect(after).toEqual([...before, [5, 50]]);
    await expect(lake.compact("visits", operator)).rejects.toThrow(`has update ${slow} (writing, abandoned unless`);
    await t.ws.state.lake.abandonUpdate("visits", slow);
    expect(await lake.compact("visits", operator)).toMatchObject({ kind: "snapshot", rows: after.length });
    expect(await read()).toEqual(after);
  });
});

describe("automatic compaction of relationalized tables", () => {
  it("compacts a table's lake dataset once lake.compactAfterDeltas runs follow its snapshot, reading the same", async () => {
    const t = await makeWorkspace({ lake: { compactAfterDeltas: 3 } });
    try {
      const folder = path.join(await tempDir(), "json");
      const day = path.join(folder, "dataset=Visits", "assessmentid=a", "year=2022", "month=2", "day=1");
      await mkdir(day, { recursive: true });
      const stage = new RelationalizeStage(t.ws, new LocalObjectStore(folder));
      const lake = new Lake(t.ws);
      const operator = await lake.principal();
      const read = async (options = {}) =>
        (await lake.query(operator, "SELECT recordid, n FROM Visits ORDER BY recordid", options)).rows;
      // Four runs; the third uploads r1 again, so the snapshot must keep the newest version of it.
      for (const [run, records] of [["r1", "r2"], ["r3"], ["r1"], ["r4"]].entries()) {
        for (const id of records) {
          const file = path.join(day, `${id}-${run}.ndjson`);
          await writeFile(file, `${JSON.stringify({ recordid: id, n: run })}\n`);
          const when = new Date(1_700_000_000_000 + run * 1000);
          await utimes(file, when, when);
        }
        await stage.run("Visits");
      }
      const updates = await lake.updates("Visits", operator);
      expect(updates.map((u) => [u.update, u.kind, u.manifest?.operation])).toEqual([
        ["u000001", "delta", "relationalize"],
        ["u000002", "delta", "relationalize"],
        ["u000003", "delta", "relationalize"],
        ["u000004", "snapshot", "compact"],
        ["u000005", "delta", "relationalize"],
      ]);
      expect(updates[3]?.manifest).toMatchObject({ note: "automatic, after 3 deltas", rows: 3 });
      expect(updates[3]?.manifest?.lineage.map((l) => l.update)).toEqual(["u000001", "u000002", "u000003"]);
      const expected = [
        ["r1", 2n],
        ["r2", 0n],
        ["r3", 1n],
        ["r4", 3n],
      ];
      expect(await read()).toEqual(expected);
      expect(await rows(t.ws, "SELECT recordid, n FROM Visits ORDER BY recordid")).toEqual(expected);
      expect(await read({ asOf: { Visits: "u000002" } })).toEqual([
        ["r1", 0n],
        ["r2", 0n],
        ["r3", 1n],
      ]);
      // The snapshot holds every row the deltas made current: reading it alone gives the state before run 4.
      expect(await read({ asOf: { Visits: "u000004" } })).toEqual(expected.slice(0, 3));
    } finally {
      await t.cleanup();
    }
  });
});

describe("access control: no query returns a row it should not", () => {
  let t: TestWorkspace;
  let lake: Lake;
  const tiers: Tier[] = ["internal", "restricted", "sensitive"];
  const datasets = tiers.flatMap((tier) =>
    [0, 1].map((i) => ({ name: `${tier}_${i}`, tier, owner: i === 0 ? "owner1" : "operator" })),
  );
  const grants: Grant[] = [
    { principalKind: "role", principal: "analyst", permission: "read", targetKind: "tier", target: "internal" },
    { principalKind: "role", principal: "clinician", permission: "read", targetKind: "tier", target: "restricted" },
    // A tier-wide grant never opens a sensitive dataset.
    { principalKind: "role", principal: "clinician", permission: "write", targetKind: "tier", target: "sensitive" },
    { principalKind: "user", principal: "dana", permission: "read", targetKind: "dataset", target: "sensitive_1" },
    { principalKind: "role", principal: "analyst", permission: "read", targetKind: "dataset", target: "restricted_1" },
  ];
  const users: Record<string, string[]> = {
    owner1: [],
    ana: ["analyst"],
    cleo: ["clinician"],
    dana: [],
    both: ["analyst", "clinician"],
    nobody: [],
  };

  /** The rule, written out here on its own: owner; a grant naming the dataset; a tier grant below sensitive. */
  function expected(user: string, dataset: (typeof datasets)[number]): boolean {
    if (dataset.owner === user) return true;
    const mine = grants.filter(
      (g) =>
        (g.principalKind === "user" && g.principal === user) ||
        (g.principalKind === "role" && users[user]?.includes(g.principal)),
    );
    return mine.some((g) =>
      g.targetKind === "dataset"
        ? g.target === dataset.name
        : g.target === dataset.tier && dataset.tier !== "sensitive",
    );
  }

  beforeAll(async () => {
    t = await makeWorkspace();
    lake = new Lake(t.ws);
    const operator = await lake.principal();
    const dir = await tempDir();
    for (const [user, userRoles] of Object.entries(users)) {
      await t.ws.state.lake.createUser(user);
      for (const role of userRoles) await t.ws.state.lake.addRole(user, role);
    }
    for (const grant of grants) await t.ws.state.lake.grant(grant);
    for (const d of datasets) {
      await lake.createDataset(
        { name: d.name, description: "", owner: d.owner, tier: d.tier, updateKind: "snapshot", keyColumns: [] },
        operator,
      );
      const file = path.join(dir, `${d.name}.csv`);
      await writeFile(file, `secret,tier\n${d.name}-row,${d.tier}\n`);
      await lake.importFile(d.name, file, operator);
    }
  });
  afterAll(() => t.cleanup());

  it("agrees with the rule for every user, role, tier and dataset, in queries and listings", async () => {
    let checked = 0;
    for (const user of Object.keys(users)) {
      const principal = await lake.principal(user);
      const listed = (await lake.datasets(principal)).map((d) => d.name);
      for (const d of datasets) {
        const allowed = expected(user, d);
        expect(canAccess(principal, d, "read")).toBe(allowed);
        expect(listed.includes(d.name)).toBe(allowed);
        if (allowed) {
          expect((await lake.query(principal, `SELECT secret FROM ${d.name}`)).rows).toEqual([[`${d.name}-row`]]);
        } else {
          const refused = await lake.query(principal, `SELECT secret FROM ${d.name}`).catch((e: Error) => e);
          expect(refused).toBeInstanceOf(QueryRefusedError);
          // Exactly what a dataset that does not exist gets.
          const missing = await lake.query(principal, "SELECT secret FROM no_such_dataset").catch((e: Error) => e);
          expect((refused as Error).message).toBe((missing as Error).message.replace("no_such_dataset", d.name));
        }
        checked++;
      }
      // One unreadable dataset anywhere in a query refuses the whole query.
      const all = datasets.map((d) => `SELECT secret FROM ${d.name}`).join(" UNION ALL ");
      const everything = await lake.query(principal, all).catch((e: Error) => e);
      expect(everything instanceof Error).toBe(datasets.some((d) => !expected(user, d)));
    }
    expect(checked).toBe(Object.keys(users).length * datasets.length);
  });

  it("writes only with a write grant, and a sensitive dataset only with a grant naming it", async () => {
    const dir = await tempDir();
    const file = path.join(dir, "more.csv");
    await writeFile(file, "secret,tier\nx,y\n");
    const cleo = await lake.principal("cleo");
    await expect(lake.importFile("sensitive_1", file, cleo)).rejects.toThrow(LakeError);
    await expect(lake.importFile("restricted_1", file, cleo)).rejects.toThrow(AccessDeniedError);
    await t.ws.state.lake.grant({
      principalKind: "user",
      principal: "cleo",
      permission: "write",
      targetKind: "dataset",
      target: "sensitive_1",
    });
    const manifest = await lake.importFile("sensitive_1", file, await lake.principal("cleo"));
    expect(manifest.createdBy).toBe("cleo");
  });

  it("gives each user tokens that are stored only as hashes", async () => {
    const token = await lake.createToken("ana");
    expect((await lake.principalOfToken(token)).user).toBe("ana");
    await expect(lake.principalOfToken(`${token}x`)).rejects.toThrow(AccessDeniedError);
    const state = await readFile(path.join(t.root, "state.db"));
    expect(state.includes(Buffer.from(token))).toBe(false);
  });

  it("records every query in the audit log: who, which datasets, how many rows, and refusals", async () => {
    const ana = await lake.principal("ana");
    await lake.query(ana, "SELECT * FROM internal_0");
    await lake.query(ana, "SELECT * FROM sensitive_0").catch(() => undefined);
    const log = await t.ws.state.lake.auditLog({ actor: "ana", limit: 2 });
    expect(log[1]).toMatchObject({ action: "query", datasets: ["internal_0"], rows: 1, outcome: "ok" });
    expect(log[0]).toMatchObject({ action: "query", outcome: "refused" });
  });
});

describe("governed SQL refuses before running", () => {
  let t: TestWorkspace;
  let lake: Lake;
  let secretPart: string;

  beforeAll(async () => {
    t = await makeWorkspace();
    lake = new Lake(t.ws);
    const operator = await lake.principal();
    const dir = await tempDir();
    await t.ws.state.lake.createUser("ana");
    await t.ws.state.lake.grant({
      principalKind: "user",
      principal: "ana",
      permission: "read",
      targetKind: "dataset",
      target: "open_data",
    });
    for (const name of ["open_data", "secret_data"]) {
      await lake.createDataset(
        { name, description: "", owner: "operator", tier: "sensitive", updateKind: "snapshot", keyColumns: [] },
        operator,
      );
      await writeFile(path.join(dir, `${name}.csv`), "v\n1\n");
      await lake.importFile(name, path.join(dir, `${name}.csv`), operator);
    }
    secretPart = path.join(lake.root, "data", "secret_data", "u000001", "part-0.parquet");
  });
  afterAll(() => t.cleanup());

  const refused: Array<[string, (part: string) => string, RegExp]> = [
    ["COPY", () => "COPY open_data TO '/tmp/x.csv'", /only queries/],
    ["ATTACH", () => "ATTACH '/tmp/other.db'", /only queries/],
    ["INSTALL", () => "INSTALL httpfs", /only queries/],
    ["LOAD", () => "LOAD httpfs", /only queries/],
    ["SET", () => "SET enable_external_access = true", /only queries/],
    ["RESET", () => "RESET allowed_directories", /only queries/],
    ["PRAGMA", () => "PRAGMA database_list", /only queries/],
    ["CREATE", () => "CREATE TABLE x AS SELECT 1", /only queries/],
    ["CREATE VIEW over a file", () => "CREATE VIEW x AS SELECT * FROM read_parquet('/tmp/*.parquet')", /only queries/],
    ["INSERT", () => "INSERT INTO open_data VALUES (2)", /only queries/],
    ["UPDATE", () => "UPDATE open_data SET v = 2", /only queries/],
    ["DELETE", () => "DELETE FROM open_data", /only queries/],
    ["DROP", () => "DROP VIEW open_data", /only queries/],
    ["CALL", () => "CALL pragma_version()", /only queries/],
    ["EXPORT", () => "EXPORT DATABASE '/tmp/out'", /only queries/],
    ["EXPLAIN", () => "EXPLAIN SELECT 1", /only queries/],
    ["a write after a query", () => "SELECT 1; DROP VIEW open_data", /only queries/],
    [
      "read_parquet of another dataset's file",
      (p) => `SELECT * FROM read_parquet('${p}')`,
      /table function read_parquet\(\) is not allowed/,
    ],
    ["read_csv", () => "SELECT * FROM read_csv('/etc/passwd')", /table function read_csv\(\) is not allowed/],
    ["read_json", () => "SELECT * FROM read_json('/tmp/x.json')", /table function read_json\(\) is not allowed/],
    ["read_text", () => "SELECT * FROM read_text('/etc/hostname')", /table function read_text\(\) is not allowed/],
    ["glob", () => "SELECT * FROM glob('/*')", /table function glob\(\) is not allowed/],
    ["duckdb_settings", () => "SELECT * FROM duckdb_settings()", /table function duckdb_settings\(\) is not allowed/],
    ["query_table", () => "SELECT * FROM query_table('secret_data')", /table function query_table\(\) is not allowed/],
    ["a file path as a table", (p) => `SELECT * FROM '${p}'`, /Catalog Error: Table with name .* does not exist!/],
    [
      "a qualified name",
      () => "SELECT * FROM main.secret_data",
      /Catalog Error: Table with name main\.secret_data does not exist!/,
    ],
    ["getenv", () => "SELECT getenv('HOME')", /function getenv\(\) is not allowed/],
    [
      "current_setting",
      () => "SELECT current_setting('allowed_directories')",
      /function current_setting\(\) is not allowed/,
    ],
    ["DESCRIBE", () => "DESCRIBE open_data", /DESCRIBE, SHOW and SUMMARIZE are not allowed/],
    ["SHOW TABLES", () => "SHOW TABLES", /DESCRIBE, SHOW and SUMMARIZE are not allowed/],
    ["SUMMARIZE", () => "SUMMARIZE open_data", /DESCRIBE, SHOW and SUMMARIZE are not allowed/],
    ["an AT clause", () => "SELECT * FROM open_data AT (VERSION => 1)", /AT clauses are not supported/],
    [
      "a dataset not granted, inside a subquery",
      () => "SELECT * FROM open_data WHERE v IN (SELECT v FROM secret_data)",
      /Table with name secret_data does not exist/,
    ],
  ];

  it.each(refused)("refuses %s", async (_name, sql, message) => {
    const ana = await lake.principal("ana");
    const error = await lake.query(ana, sql(secretPart)).catch((e: Error) => e);
    expect(error).toBeInstanceOf(QueryRefusedError);
    expect((error as Error).message).toMatch(message);
    const [entry] = await t.ws.state.lake.auditLog({ actor: "ana", limit: 1 });
    expect(entry?.outcome).toBe("refused");
  });

  it("still answers the queries it should, including CTEs, joins and table functions that read nothing", async () => {
    const ana = await lake.principal("ana");
    const result = await lake.query(
      ana,
      "WITH o AS (SELECT v FROM open_data) SELECT count(*) AS n, max(r.range) AS top FROM o, range(3) r",
    );
    expect(result).toMatchObject({ columns: ["n", "top"], rows: [[3n, 2n]], datasets: ["open_data"] });
  });
});

describe("participant withdrawal and transformations", () => {
  let t: TestWorkspace;
  let lake: Lake;
  let dir: string;
  let operator: Principal;

  beforeAll(async () => {
    t = await makeWorkspace();
    lake = new Lake(t.ws);
    operator = await lake.principal();
    dir = await tempDir();
    const create = (name: string, keyColumns: string[] = []) =>
      lake.createDataset(
        {
          name,
          description: "",
          owner: "operator",
          tier: "restricted",
          updateKind: keyColumns.length ? "delta" : "snapshot",
          keyColumns,
        },
        operator,
      );
    await create("scores");
    await create("visits", ["visit"]);
    await create("sites");
    const put = async (name: string, text: string) => {
      await writeFile(path.join(dir, name), text);
      return path.join(dir, name);
    };
    await lake.importFile("scores", await put("scores.csv", "healthCode,score\np1,10\np2,20\np3,30\n"), operator);
    await lake.importFile("visits", await put("v1.csv", "visit,healthCode,site\n1,p1,a\n2,p2,b\n"), operator, {
      kind: "snapshot",
    });
    await lake.importFile("visits", await put("v2.csv", "visit,healthCode,site\n3,p1,b\n"), operator);
    await lake.importFile("sites", await put("sites.csv", "site,city\na,Paris\nb,Lyon\n"), operator);
  });
  afterAll(() => t.cleanup());

  it("removes a withdrawn participant's rows from every dataset with new updates, and hides them from every read", async () => {
    const result = await lake.withdraw("p1", operator);
    expect(result.map((r) => [r.dataset, r.removed])).toEqual([
      ["scores", 1],
      ["visits", 2],
    ]);
    for (const { dataset, update } of result) {
      const manifest = (await lake.updates(dataset, operator)).find((u) => u.update === update)?.manifest;
      expect(manifest).toMatchObject({ operation: "withdraw", kind: "snapshot" });
      const parquet = path.join(lake.root, manifest?.files[0]?.path as string);
      const duck = await openDuckDB();
      const rows = await duck.connection.runAndReadAll(
        `SELECT count(*) FROM read_parquet(${literal(parquet)}) WHERE healthCode = 'p1'`,
      );
      duck.close();
      expect(Number(rows.getRows()[0]?.[0])).toBe(0);
    }
    expect((await lake.updates("sites", operator)).length).toBe(1);
    const ids = async (sql: string, options = {}) => (await lake.query(operator, sql, options)).rows.map((r) => r[0]);
    expect(await ids("SELECT healthCode FROM scores ORDER BY 1")).toEqual(["p2", "p3"]);
    // Time travel to before the withdrawal still never shows them.
    expect(await ids("SELECT healthCode FROM scores ORDER BY 1", { asOf: { scores: "u000001" } })).toEqual([
      "p2",
      "p3",
    ]);
    expect(await ids("SELECT DISTINCT healthCode FROM visits", { asOf: { visits: "u000002" } })).toEqual(["p2"]);
    expect((await t.ws.state.exports.scopes(["p1"])).get("p1")).toBe("NO_SHARING");
    const entry = (await t.ws.state.lake.auditLog({ limit: 20 })).find((e) => e.action === "withdraw");
    expect(entry).toMatchObject({ actor: "operator", rows: 3, datasets: ["scores", "visits"] });
  });

  it("runs a transformation with its owner's grants and records the input updates as lineage", async () => {
    await t.ws.state.lake.createUser("ana");
    await t.ws.state.lake.grant({
      principalKind: "user",
      principal: "ana",
      permission: "read",
      targetKind: "tier",
      target: "restricted",
    });
    const folder = path.join(dir, "site_scores");
    await mkdir(folder);
    await writeFile(
      path.join(folder, "pipeline.json"),
      JSON.stringify({
        owner: "ana",
        inputs: ["scores", "visits", "sites"],
        output: { dataset: "site_scores", tier: "restricted" },
      }),
    );
    await writeFile(
      path.join(folder, "a_joined.sql"),
      "SELECT s.city, sc.score FROM visits v JOIN sites s USING (site) JOIN scores sc USING (healthCode)",
    );
    await writeFile(
      path.join(folder, "b_summary.sql"),
      "SELECT city, avg(score) AS mean_score, count(*) AS n FROM a_joined GROUP BY city ORDER BY city;",
    );
    const manifest = await lake.transform(folder, await lake.principal("ana"));
    expect(manifest).toMatchObject({
      dataset: "site_scores",
      update: "u000001",
      operation: "transform",
      createdBy: "ana",
      rows: 1,
    });
    const latest = async (name: string) =>
      (await lake.updates(name, operator)).filter((u) => u.status === "committed").at(-1)?.update;
    expect(manifest.lineage).toEqual(
      expect.arrayContaining([
        { dataset: "scores", update: await latest("scores") },
        { dataset: "sites", update: await latest("sites") },
      ]),
    );
    expect((await lake.query(await lake.principal("ana"), "SELECT city, mean_score, n FROM site_scores")).rows).toEqual(
      [["Lyon", 20, 1n]],
    );
    expect((await lake.dataset("site_scores", operator)).owner).toBe("ana");

    // A step may read only the inputs it declares and the steps before it.
    await writeFile(path.join(folder, "c_sneaky.sql"), "SELECT * FROM site_scores");
    await expect(lake.transform(folder, await lake.principal("ana"))).rejects.toThrow(
      /c_sneaky\.sql: Catalog Error: Table with name site_scores does not exist/,
    );
    await writeFile(path.join(folder, "c_sneaky.sql"), "SELECT * FROM read_csv('/etc/passwd')");
    await expect(lake.transform(folder, await lake.principal("ana"))).rejects.toThrow(/read_csv\(\) is not allowed/);
    // Without read on an input, the owner cannot run it.
    await t.ws.state.lake.revoke({
      principalKind: "user",
      principal: "ana",
      permission: "read",
      targetKind: "tier",
      target: "restricted",
    });
    await expect(lake.transform(folder, await lake.principal("ana"))).rejects.toThrow(/no dataset 'scores'/);
  });
});

describe("an update cut off by a killed process", () => {
  it("is abandoned, its folders removed, once its writer stops renewing it, and never read; a slow writer's is kept", async () => {
    // Long enough that a renewal every third of it is never late on a busy machine, short for a test.
    const lease = 1500;
    const t = await makeWorkspace({ lake: { abandonAfterSeconds: lease / 1000 } });
    try {
      const lake = new Lake(t.ws);
      const operator = await lake.principal();
      const dir = await tempDir();
      await writeFile(path.join(dir, "a.csv"), "a\n1\n");
      await lake.createDataset(
        { name: "d", description: "", owner: "operator", tier: "internal", updateKind: "snapshot", keyColumns: [] },
        operator,
      );
      // What a kill leaves: an update begun and never renewed, a half-written folder.
      const dead = await t.ws.state.lake.beginUpdate("d", "snapshot", "operator", {
        aliveUntil: new Date(Date.now() + lease).toISOString(),
      });
      const writing = path.join(lake.root, "data", "d", `${dead}.writing`);
      await mkdir(writing, { recursive: true });
      await writeFile(path.join(writing, "part-0.parquet"), "half");
      // A slow writer, alive: it renews its update every third of the lease, however long it writes.
      const slow = await UpdateLease.begin(t.ws.state.lake, "d", "delta", "operator", null, lease);
      try {
        expect(await lake.query(operator, "SELECT * FROM d")).toMatchObject({ rows: [] });
        await sleep(lease + 1000);
        const manifest = await lake.importFile("d", path.join(dir, "a.csv"), operator);
        expect(manifest.update).toBe("u000003");
        const updates = await lake.updates("d", operator);
        expect(updates.map((u) => [u.update, u.status])).toEqual([
          ["u000001", "abandoned"],
          [slow.update, "writing"],
          ["u000003", "committed"],
        ]);
        const renewed = Date.parse(updates[1]?.aliveUntil ?? "") - Date.parse(updates[1]?.createdAt ?? "");
        expect(renewed).toBeGreaterThan(lease + 500);
        await expect(stat(writing)).rejects.toThrow(/ENOENT/);
      } finally {
        slow.end();
      }
      // Its writer gone, the slow one's update goes the same way one lease later.
      await sleep(lease + 500);
      await lake.importFile("d", path.join(dir, "a.csv"), operator);
      expect((await lake.updates("d", operator)).map((u) => u.status)).toEqual([
        "abandoned",
        "abandoned",
        "committed",
        "committed",
      ]);
    } finally {
      await t.cleanup();
    }
  });
});

describe("a lease on an update", () => {
  it("is renewed no more often than a third of its length, however long that is", async () => {
    const t = await makeWorkspace();
    try {
      const lake = new Lake(t.ws);
      const operator = await lake.principal();
      await lake.createDataset(
        { name: "d", description: "", owner: "operator", tier: "internal", updateKind: "delta", keyColumns: [] },
        operator,
      );
      const warnings: string[] = [];
      const onWarning = (w: Error) => warnings.push(w.name);
      process.on("warning", onWarning);
      // A year: longer than Node's longest timer, which it would otherwise run at once, again and again.
      const lease = await UpdateLease.begin(t.ws.state.lake, "d", "delta", "operator", null, 365 * 86_400_000);
      try {
        const aliveUntil = async () => (await lake.updates("d", operator))[0]?.aliveUntil;
        const first = await aliveUntil();
        await sleep(100);
        expect(await aliveUntil()).toBe(first);
        expect(warnings).not.toContain("TimeoutOverflowWarning");
      } finally {
        lease.end();
        process.off("warning", onWarning);
      }
    } finally {
      await t.cleanup();
    }
  });
});

describe("scheduled transformations", () => {
  it("runs a transformation folder's schedule from the pipeline, recording the run in the manifest", async () => {
    const t = await makeWorkspace({ lake: { transforms: ["pipelines/daily_counts"] } });
    try {
      const lake = new Lake(t.ws);
      const operator = await lake.principal();
      const dir = await tempDir();
      await writeFile(path.join(dir, "e.csv"), "kind\na\nb\na\n");
      await lake.createDataset(
        {
          name: "events",
          description: "",
          owner: "operator",
          tier: "internal",
          updateKind: "snapshot",
          keyColumns: [],
        },
        operator,
      );
      await lake.importFile("events", path.join(dir, "e.csv"), operator);
      const folder = path.join(t.root, "pipelines", "daily_counts");
      await mkdir(folder, { recursive: true });
      await writeFile(
        path.join(folder, "pipeline.json"),
        JSON.stringify({
          owner: "operator",
          inputs: ["events"],
          output: { dataset: "event_counts", tier: "internal" },
          schedule: { cron: "0 3 * * *", timezone: "UTC" },
        }),
      );
      await writeFile(
        path.join(folder, "counts.sql"),
        "SELECT kind, count(*) AS n FROM events GROUP BY kind ORDER BY kind",
      );
      const pipeline = new Pipeline(t.ws);
      expect(await pipeline.requestDue(new Date("2026-11-20T04:00:00Z"))).toEqual([]);
      const [run] = await pipeline.requestDue(new Date("2026-11-21T04:00:00Z"));
      expect(run).toMatchObject({ kind: "transform", target: "pipelines/daily_counts" });
      expect((await pipeline.drain()).runs).toMatchObject([{ status: "succeeded" }]);
      const [update] = await lake.updates("event_counts", operator);
      expect(update?.manifest).toMatchObject({ operation: "transform", run: run?.runId, rows: 2 });
      expect((await lake.query(operator, "SELECT kind, n FROM event_counts ORDER BY kind")).rows).toEqual([
        ["a", 2n],
        ["b", 1n],
      ]);
    } finally {
      await t.cleanup();
    }
  });
});

describe("withdrawal from tables relationalized from uploads", () => {
  it("deletes the participant's records from the lake datasets of relationalized tables, and hides them in time travel", async () => {
    const t = await makeWorkspace();
    try {
      const dir = await tempDir();
      const uploads = await writeBatch(dir, ["valid", "valid", "valid", "valid", "valid", "valid"], {
        seed: 3,
        participants: 3,
      });
      await new Intake(t.ws).ingest([dir]);
      await new RelationalizeStage(t.ws).run("WeatherResult_v1");
      const lake = new Lake(t.ws);
      const operator = await lake.principal();
      const who = uploads[0]?.metadata.healthcode as string;
      const theirs = uploads.filter((u) => u.metadata.healthcode === who).map((u) => u.recordId);
      const count = async (options = {}) =>
        Number((await lake.query(operator, "SELECT count(*) FROM WeatherResult_v1", options)).rows[0]?.[0]);
      expect(await count()).toBe(uploads.length);
      const report = await withdrawParticipant(t.ws, who);
      expect(report.updates).toContainEqual({ dataset: "WeatherResult_v1", update: "u000002", removed: theirs.length });
      // Their JSON documents are gone, and so are their rows in the stage's own Parquet tables.
      expect(report.relationalized).toContain("WeatherResult_v1");
      const left = await t.ws.json.list("dataset=WeatherResult_v1/");
      expect(left.filter((k) => theirs.some((id) => k.includes(id)))).toEqual([]);
      const catalog = await Catalog.open(t.ws);
      const inParquet = await catalog.query("SELECT recordid FROM WeatherResult_v1");
      catalog.close();
      expect(inParquet.rows.map((r) => r[0]).sort()).toEqual(
        uploads
          .map((u) => u.recordId)
          .filter((id) => !theirs.includes(id))
          .sort(),
      );
      expect(await count()).toBe(uploads.length - theirs.length);
      expect(await count({ asOf: { WeatherResult_v1: "u000001" } })).toBe(uploads.length - theirs.length);
      expect((await t.ws.state.exports.scopes([who])).get(who)).toBe("NO_SHARING");
      const update = (await lake.updates("WeatherResult_v1", operator))[1];
      expect(update).toMatchObject({ kind: "delta", manifest: { operation: "withdraw", rows: theirs.length } });
    } finally {
      await t.cleanup();
    }
  });
});

describe("uploads of a participant who has withdrawn", () => {
  it("are kept raw and recorded, but nothing of them is written, on intake or reprocess", async () => {
    const t = await makeWorkspace();
    try {
      const first = await tempDir();
      const [before] = await writeBatch(first, ["valid"], { seed: 21, participants: 1 });
      await new Intake(t.ws).ingest([first]);
      const who = before?.metadata.healthcode as string;
      await withdrawParticipant(t.ws, who);
      const later = await tempDir();
      const [after] = await writeBatch(later, ["valid"], { seed: 22, participants: 1 });
      expect(after?.metadata.healthcode).toBe(who);
      const report = await new Intake(t.ws).ingest([later]);
      expect(report.statuses.withdrawn).toBe(1);
      expect(report.filesWritten).toBe(0);
      const [upload] = await t.ws.state.uploadsOfRecord(after?.recordId as string);
      expect(upload).toMatchObject({ status: "withdrawn" });
      expect(await t.ws.raw.exists(upload?.rawKey as string)).toBe(true);
      expect((await t.ws.state.uploadsOfRecord(before?.recordId as string))[0]?.status).toBe("withdrawn");
      const exported = await new Exporter(t.ws).run(
        parseExportRequest({ recordIds: [before?.recordId as string, after?.recordId as string], sharingMode: "ALL" }),
      );
      expect(exported.metrics.counters.numTotal ?? 0).toBe(0);
      // Reprocessing the earlier record does not bring its documents back either.
      const again = await new Intake(t.ws).reprocess({ recordId: before?.recordId as string });
      expect(again.statuses.withdrawn).toBe(1);
      expect((await t.ws.json.list()).filter((k) => k.includes(before?.recordId as string))).toEqual([]);
    } finally {
      await t.cleanup();
    }
  });
});
