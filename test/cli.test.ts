import { execFile } from "node:child_process";
import { copyFile, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import pLimit from "p-limit";
import { beforeAll, describe, expect, it } from "vitest";
import { CONFIG_FILE } from "../src/config/config.js";
import { synthUpload } from "../src/synth/generate.js";
import { CLI, FIXTURE_ARCHIVE, FIXTURE_RECORD, fixtureConfig, tempDir } from "./support/workspace.js";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const run = promisify(execFile);
const COMMANDS = [
  "init",
  "ingest",
  "reprocess",
  "status",
  "show",
  "relationalize",
  "tables",
  "query",
  "rebuild-json",
  "run",
  "worker",
  "request",
  "runs",
  "retry",
  "abort",
  "participants",
  "export",
  "exports",
  "datasets",
  "import",
  "compact",
  "transform",
  "users",
  "grant",
  "revoke",
  "tokens",
  "audit",
];

/** Runs the real CLI in a child process: real argv parsing, real exit codes, real output streams. */
async function studylake(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], {
      cwd: REPO,
      env: { ...process.env, STUDYLAKE_WORKSPACE: "" },
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe("the studylake CLI", () => {
  let ws: string;
  let uploads: string;

  beforeAll(async () => {
    ws = await tempDir();
    uploads = await tempDir();
    await copyFile(FIXTURE_ARCHIVE, path.join(uploads, path.basename(FIXTURE_ARCHIVE)));
    await copyFile(
      `${FIXTURE_ARCHIVE}.metadata.json`,
      path.join(uploads, `${path.basename(FIXTURE_ARCHIVE)}.metadata.json`),
    );
    const bad = await synthUpload("invalid-schema", 5);
    await writeFile(path.join(uploads, bad.fileName), bad.zip);
    await writeFile(path.join(uploads, `${bad.fileName}.metadata.json`), JSON.stringify(bad.metadata));
  });

  // About thirty Node processes, each starting the CLI.
  it("prints help for the program and every command, exiting 0", async () => {
    const top = await studylake("--help");
    expect(top.code).toBe(0);
    for (const command of COMMANDS) expect(top.stdout).toContain(command);
    // A few at a time: each is a Node process, and the machine runs other test files too.
    const limit = pLimit(4);
    const helps = await Promise.all(COMMANDS.map((command) => limit(() => studylake(command, "--help"))));
    helps.forEach((help, i) => {
      expect(help.code).toBe(0);
      expect(help.stdout).toMatch(new RegExp(`Usage: studylake ${COMMANDS[i]}`));
    });
  }, 240_000);

  it("exits 2 on wrong usage and 1 when the work fails, with one line on stderr", async () => {
    const unknown = await studylake("frobnicate");
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command 'frobnicate'/);
    const missingArg = await studylake("ingest");
    expect(missingArg.code).toBe(2);
    const badLimit = await studylake("-w", ws, "status", "--limit", "zero");
    expect(badLimit.code).toBe(2);
    expect(badLimit.stderr.trim()).toBe("studylake: --limit takes a positive whole number, got 'zero'");
    // Every list command checks its limit the same way.
    for (const command of ["exports", "audit", "runs"]) {
      const bad = await studylake("-w", ws, command, "--limit", "-3");
      expect([command, bad.code, bad.stderr.trim()]).toEqual([
        command,
        2,
        "studylake: --limit takes a positive whole number, got '-3'",
      ]);
    }
    const noWorkspace = await studylake("-w", uploads, "status");
    expect(noWorkspace.code).toBe(1);
    expect(noWorkspace.stderr.trim()).toMatch(
      /^studylake: no studylake\.config\.json in .*: run 'studylake init' there first$/,
    );
  });

  it("init, ingest, status, show and reprocess work together, in text and in JSON", async () => {
    const init = await studylake("init", ws);
    expect(init.code).toBe(0);
    expect(init.stdout).toContain("Workspace ready");
    // The workspace reads reference data from the shared fixtures, as the tests do everywhere.
    const config = { ...JSON.parse(await readFile(path.join(ws, CONFIG_FILE), "utf8")), ...fixtureConfig() };
    await writeFile(path.join(ws, CONFIG_FILE), JSON.stringify(config));
    expect((await studylake("init", ws)).code).toBe(1);
    // An empty list says so, and how to fill it where there is a way; JSON gives an empty list.
    const empty = await Promise.all(["tables", "runs", "exports"].map((command) => studylake("-w", ws, command)));
    expect(empty.map((r) => [r.code, r.stdout.trim()])).toEqual([
      [0, "No tables yet: run 'studylake relationalize'."],
      [0, "No runs yet."],
      [0, "No exports yet."],
    ]);
    expect(JSON.parse((await studylake("-w", ws, "runs", "--json")).stdout)).toEqual([]);

    const ingest = await studylake("-w", ws, "ingest", uploads);
    expect(ingest.code).toBe(0);
    expect(ingest.stdout).toMatch(/quarantined: \S+ v1: 1 file failed: motion\.json: \/1\/sensorType/);
    expect(ingest.stdout).toMatch(
      /Ingested 2 archives: 2 new, .*1 valid, 1 quarantined, 0 rejected.*4 dataset files written\./,
    );

    const strict = await studylake("-w", ws, "ingest", uploads, "--strict", "--json");
    expect(strict.code).toBe(1);
    const report = JSON.parse(strict.stdout);
    expect(report.actions.unchanged).toBe(2);
    expect(report.statuses).toMatchObject({ valid: 1, quarantined: 1 });

    const status = await studylake("-w", ws, "status", "--json");
    expect(JSON.parse(status.stdout).counts).toEqual({
      received: 0,
      valid: 1,
      quarantined: 1,
      rejected: 0,
      superseded: 0,
      withdrawn: 0,
    });
    const text = await studylake("-w", ws, "status");
    expect(text.stdout).toMatch(/quarantined\s+1/);
    expect(text.stdout).toMatch(/Needing attention:/);

    const show = await studylake("-w", ws, "show", FIXTURE_RECORD, "--json");
    const [version] = JSON.parse(show.stdout);
    expect(version.files).toHaveLength(9);
    expect(version.files.find((f: { path: string }) => f.path === "weather.json")).toMatchObject({
      validation: "valid",
      datasetId: "WeatherResult_v1",
    });
    const showText = await studylake("-w", ws, "show", FIXTURE_RECORD);
    expect(showText.stdout).toMatch(/Record OCJByUtSrVTYtqObYp7XZV_J version 1: valid/);
    expect((await studylake("-w", ws, "show", "nope")).code).toBe(1);

    const reprocess = await studylake("-w", ws, "reprocess", "--quarantined");
    expect(reprocess.code).toBe(0);
    expect(reprocess.stdout).toMatch(
      /Reprocessed 1 upload: 0 moved from quarantine to valid \(quarantined→quarantined 1\)/,
    );
  });

  it("relationalize, tables, query and rebuild-json work from the command line", async () => {
    const first = await studylake("-w", ws, "relationalize");
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(
      /MotionRecord_v1: 1 files, 1 documents \(1 read by DuckDB\), 1 records \(0 replaced, 0 deleted\) → MotionRecord_v1 4 rows/,
    );
    const again = await studylake("-w", ws, "relationalize", "--json");
    expect(JSON.parse(again.stdout).every((r: { runId: string | null }) => r.runId === null)).toBe(true);
    const compact = await studylake("-w", ws, "relationalize", "--compact", "--dataset", "MotionRecord_v1");
    expect([compact.code, compact.stdout.trim()]).toEqual([0, "MotionRecord_v1: nothing to merge"]);
    // A folder without dataset=<id>/ folders (a wrong --from, say) is named, not passed over in silence.
    const elsewhere = await tempDir();
    const none = await studylake("-w", ws, "relationalize", "--from", elsewhere);
    expect([none.code, none.stdout.trim()]).toEqual([
      0,
      `No JSON datasets in ${elsewhere}: they are folders named dataset=<id>/, as intake writes them.`,
    ]);

    const tables = await studylake("-w", ws, "tables", "--json");
    const motion = JSON.parse(tables.stdout).find((t: { table: string }) => t.table === "MotionRecord_v1");
    expect(motion).toMatchObject({ rows: 4, parent: null });
    expect(motion.columns.map((c: { name: string }) => c.name)).toContain("sensorType");

    const csv = await studylake(
      "-w",
      ws,
      "query",
      "SELECT sensorType, count(*) AS n FROM MotionRecord_v1 GROUP BY 1 ORDER BY 1",
      "--format",
      "csv",
    );
    expect(csv.stdout.trim().split("\n")).toEqual(["sensorType,n", "accelerometer,1", "gyro,2", ",1"]);
    const refused = await studylake("-w", ws, "query", "DROP VIEW MotionRecord_v1");
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim()).toBe("studylake: only queries (SELECT) are allowed; statement 1 is DROP");

    const rebuilt = await studylake("-w", ws, "rebuild-json", "WeatherResult_v1", FIXTURE_RECORD);
    expect(rebuilt.code).toBe(0);
    expect(JSON.parse(rebuilt.stdout)).toMatchObject({ recordid: FIXTURE_RECORD, type: "weather" });
  });

  it("request, run, runs, runs show, abort and retry work from the command line", async () => {
    const first = JSON.parse(
      (await studylake("-w", ws, "request", "relationalize", "MotionRecord_v1", "--key", "k1", "--json")).stdout,
    );
    const again = JSON.parse(
      (await studylake("-w", ws, "request", "relationalize", "MotionRecord_v1", "--key", "k1", "--json")).stdout,
    );
    expect(first.created).toBe(true);
    expect(again).toMatchObject({ created: false, run: { runId: first.run.runId } });
    const queued = JSON.parse(
      (await studylake("-w", ws, "request", "relationalize", "WeatherResult_v1", "--json")).stdout,
    );
    expect((await studylake("-w", ws, "abort", queued.run.runId)).stdout).toMatch(/aborted/);
    // A request that no worker could carry out is refused now, with the reason, and queues nothing.
    const refusals: Array<[string[], RegExp]> = [
      [
        ["relationalize", "MotionRecord_v2"],
        /^studylake: no JSON dataset 'MotionRecord_v2' \(datasets: .*MotionRecord_v1/,
      ],
      [["relationalize"], /name the dataset/],
      [["transform", "no-such-folder"], /no-such-folder/],
      [["export"], /studylake export/],
      [["intake", "somewhere"], /takes no target/],
    ];
    for (const [args, message] of refusals) {
      const refused = await studylake("-w", ws, "request", ...args);
      expect(refused.code).toBe(2);
      expect(refused.stderr.trim()).toMatch(message);
    }
    const typo = await studylake("-w", ws, "relationalize", "--dataset", "MotionRecord_v1", "Motion");
    expect([typo.code, typo.stderr.trim()]).toEqual([2, expect.stringMatching(/no JSON dataset 'Motion' \(/)]);

    const run = await studylake("-w", ws, "run", "--log-level", "info");
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/Ran \d+ runs: \d+ skipped\./);
    // Logs: one JSON object per line on stderr, with the worker on every line and the run id on every run's line.
    const logs = run.stderr
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(logs.every((l) => typeof l.worker === "string" && typeof l.time === "number")).toBe(true);
    const started = logs.filter((l) => l.msg === "run started");
    expect(started.length).toBeGreaterThan(0);
    expect(started.every((l) => typeof l.runId === "string" && l.kind === "relationalize")).toBe(true);
    expect(logs.find((l) => l.runId === first.run.runId && l.msg === "run finished")).toMatchObject({
      status: "skipped",
    });
    const list = JSON.parse((await studylake("-w", ws, "runs", "--json")).stdout);
    expect(list.find((r: { runId: string }) => r.runId === first.run.runId)).toMatchObject({
      status: "skipped",
      attempts: 1,
    });
    expect(list.find((r: { runId: string }) => r.runId === queued.run.runId)).toMatchObject({
      status: "aborted",
      attempts: 0,
    });

    const show = await studylake("-w", ws, "runs", "show", first.run.runId);
    expect(show.stdout).toMatch(/relationalize MotionRecord_v1, skipped after 1\/3 attempts/);
    expect(show.stdout).toMatch(/attempt 1 relationalize: skipped/);
    const refused = await studylake("-w", ws, "retry", first.run.runId);
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim()).toBe("studylake: a run cannot go from skipped to pending");
    expect((await studylake("-w", ws, "retry", queued.run.runId)).stdout).toMatch(/pending again/);
    expect((await studylake("-w", ws, "runs", "show", "nope")).code).toBe(1);
  });

  it("export writes researcher tables once, refusing a contradictory request or an unknown destination", async () => {
    const dir = await tempDir();
    const upload = await synthUpload("valid", 9, { start: new Date("2022-03-01T20:00:00Z"), days: 0 });
    await writeFile(path.join(dir, upload.fileName), upload.zip);
    await writeFile(path.join(dir, `${upload.fileName}.metadata.json`), JSON.stringify(upload.metadata));
    const ingest = await studylake(
      "-w",
      ws,
      "ingest",
      dir,
      "--study",
      "cli-study",
      "--sharing-scope",
      "all_qualified_researchers",
    );
    expect(ingest.code).toBe(0);
    const participant = upload.metadata.healthcode as string;
    expect((await studylake("-w", ws, "participants", "set-scope", participant, "sponsors_and_partners")).code).toBe(0);

    const dry = await studylake("-w", ws, "export", "--date", "2022-03-01", "--dry-run");
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/1 of 1 records would be exported/);
    const exported = await studylake("-w", ws, "export", "--date", "2022-03-01", "--json");
    expect(exported.code).toBe(0);
    const report = JSON.parse(exported.stdout);
    expect(report).toMatchObject({ status: "succeeded", alreadyDone: false });
    expect(report.tables.map((t: { key: string }) => t.key)).toContain("cli-study-MotionRecord-v1");
    expect(report.metrics.counters["accepted[SPONSORS_AND_PARTNERS]"]).toBe(1);
    const again = await studylake("-w", ws, "export", "--date", "2022-03-01");
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/already finished \(succeeded\).*nothing written again/);
    const list = await studylake("-w", ws, "exports", "--json");
    expect(JSON.parse(list.stdout)).toHaveLength(1);

    const both = await studylake("-w", ws, "export", "--date", "2022-03-01", "--records", "x");
    expect(both.code).toBe(2);
    expect(both.stderr.trim()).toBe(
      "studylake: export request: recordIds: names date and recordIds: a request takes exactly one record source",
    );
    // A redrive of the ids listed in a file; an unknown id is looked for and not found.
    const recordId = upload.metadata.recordid as string;
    const ids = path.join(dir, "ids.txt");
    await writeFile(ids, `${recordId}\n\nnot-a-record\n`);
    const listed = await studylake("-w", ws, "export", "--records-from", ids, "--dry-run", "--json");
    expect(listed.code).toBe(0);
    const plan = JSON.parse(listed.stdout);
    expect([plan.request.recordIds, plan.records.map((r: { recordId: string }) => r.recordId)]).toEqual([
      [recordId, "not-a-record"],
      [recordId],
    ]);
    await writeFile(ids, "\n");
    const empty = await studylake("-w", ws, "export", "--records-from", ids);
    expect([empty.code, empty.stderr.trim()]).toEqual([2, `studylake: --records-from ${ids}: no record ids in it`]);
    const nowhere = await studylake("-w", ws, "export", "--destination", "nope");
    expect(nowhere.code).toBe(2);
    expect(nowhere.stderr).toMatch(/destination: no destination 'nope' is configured \(known: default\)/);
  });

  it("lake: datasets, import, grants, governed queries, time travel, output files, withdrawal and audit", async () => {
    const dir = await tempDir();
    await writeFile(path.join(dir, "day1.csv"), "healthCode,score\np1,1\np2,2\n");
    await writeFile(path.join(dir, "day2.csv"), "healthCode,score\np3,3\n");
    expect(
      (await studylake("-w", ws, "datasets", "create", "scores", "--tier", "restricted", "--kind", "delta")).code,
    ).toBe(0);
    const imported = await studylake("-w", ws, "import", "scores", path.join(dir, "day1.csv"), "--kind", "snapshot");
    expect(imported.stdout.trim()).toBe("Imported 2 rows into scores as update u000001 (snapshot).");
    expect((await studylake("-w", ws, "import", "scores", path.join(dir, "day2.csv"))).code).toBe(0);
    expect((await studylake("-w", ws, "users", "create", "ana", "--role", "analyst")).code).toBe(0);
    const asAna = (sql: string, ...flags: string[]) => studylake("-w", ws, "query", "--as", "ana", sql, ...flags);
    const denied = await asAna("SELECT * FROM scores");
    expect(denied.code).toBe(1);
    expect(denied.stderr.trim()).toBe("studylake: Catalog Error: Table with name scores does not exist!");
    expect((await studylake("-w", ws, "grant", "read", "tier:restricted", "--to", "role:analyst")).code).toBe(0);
    const rows = await asAna("SELECT count(*) AS n FROM scores", "--format", "json");
    expect(JSON.parse(rows.stdout)).toEqual([{ n: 3 }]);
    const before = await asAna("SELECT count(*) AS n FROM scores", "--as-of", "scores=u000001", "--format", "csv");
    expect(before.stdout).toBe("n\n2\n");
    const out = path.join(dir, "scores.parquet");
    const written = await asAna("SELECT * FROM scores", "--format", "parquet", "--output", out);
    expect(written.stdout.trim()).toBe(`Wrote 3 rows (2 columns) to ${out}.`);
    const refused = await asAna(`SELECT * FROM read_parquet('${out}')`);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/table function read_parquet\(\) is not allowed/);
    expect((await studylake("-w", ws, "grant", "read", "tier:secret", "--to", "role:analyst")).code).toBe(2);

    const withdrawn = await studylake("-w", ws, "participants", "withdraw", "p2");
    expect(withdrawn.stdout).toMatch(/scores: 1 rows removed in update u000003/);
    const after = await asAna("SELECT healthCode FROM scores ORDER BY 1", "--format", "csv");
    expect(after.stdout).toBe("healthCode\np1\np3\n");
    const show = await studylake("-w", ws, "datasets", "show", "scores");
    expect(show.stdout).toMatch(/u000003 +snapshot +committed +2 +operator .* withdraw/);
    const listed = JSON.parse((await studylake("-w", ws, "datasets", "--as", "ana", "--json")).stdout);
    expect(listed.filter((d: { name: string }) => d.name === "scores")).toMatchObject([
      { name: "scores", tier: "restricted", updates: 3, latest: "u000003", rows: 2 },
    ]);
    const audit = JSON.parse((await studylake("-w", ws, "audit", "--user", "ana", "--json")).stdout);
    expect(audit.map((e: { outcome: string }) => e.outcome)).toEqual(["ok", "refused", "ok", "ok", "ok", "refused"]);
  }, 180_000);

  it("takes metadata from flags, and refuses --record-id with several archives", async () => {
    const refused = await studylake("-w", ws, "ingest", uploads, FIXTURE_ARCHIVE, "--record-id", "x");
    expect(refused.code).toBe(2);
    const flagged = await studylake(
      "-w",
      ws,
      "ingest",
      FIXTURE_ARCHIVE,
      "--record-id",
      "FromFlags",
      "--uploaded-on",
      "2024-03-04T05:06:07Z",
      "--meta",
      "studyburstnum=9",
      "--json",
    );
    expect(flagged.code).toBe(0);
    const item = JSON.parse(flagged.stdout).items[0];
    expect(item).toMatchObject({ recordId: "FromFlags", status: "valid" });
    const show = JSON.parse((await studylake("-w", ws, "show", "FromFlags", "--json")).stdout);
    expect(show[0].metadata).toMatchObject({
      uploadedon: "2024-03-04T05:06:07Z",
      studyburstnum: "9",
      healthcode: "8d6L6xdo7u8jlszxR-ZkHW_q",
    });
  });
});
