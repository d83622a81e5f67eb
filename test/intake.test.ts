import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { zipSync } from "fflate";
import { afterEach, describe, expect, it } from "vitest";
import { CONFIG_FILE, Limits } from "../src/config/config.js";
import { readArchive } from "../src/intake/archive.js";
import { Intake, reportKey } from "../src/intake/intake.js";
import { synthUpload } from "../src/synth/generate.js";
import {
  FIXTURE_ARCHIVE,
  FIXTURE_RECORD,
  FIXTURES,
  fixtureConfig,
  makeWorkspace,
  SCHEMA_PREFIX,
  type TestWorkspace,
  tempDir,
} from "./support/workspace.js";

const TASKDATA_URL =
  "https://raw.githubusercontent.com/MobileToolbox/MobileToolboxSchemas/0.9.8/OldCombinedSchema/taskData_combinedSchema.json";
const V2 = `${SCHEMA_PREFIX}schemas/v2/`;
const PARTITION = "assessmentid=spelling/year=2022/month=2/day=15";
const sidecar = JSON.parse(readFileSync(`${FIXTURE_ARCHIVE}.metadata.json`, "utf8")) as Record<string, string>;
const fixtureEntries = await readArchive(readFileSync(FIXTURE_ARCHIVE), Limits.parse({}));
const original = (name: string) => JSON.parse(fixtureEntries.find((e) => e.path === name)!.data.toString());

let t: TestWorkspace | undefined;
afterEach(async () => {
  await t?.cleanup();
  t = undefined;
});

describe("ingesting the real fixture upload", () => {
  it("resolves, validates and buckets every file as the reference logic does (treat-as-unvalidated)", async () => {
    t = await makeWorkspace();
    const report = await new Intake(t.ws).ingest([FIXTURE_ARCHIVE]);
    expect(report.actions.ingested).toBe(1);
    expect(report.items[0]).toMatchObject({ recordId: FIXTURE_RECORD, version: 1, status: "valid", message: null });

    const [upload] = await t.ws.state.uploadsOfRecord(FIXTURE_RECORD);
    const files = await t.ws.state.getFiles(upload!.uploadId);
    const outcome = Object.fromEntries(
      files.map((f) => [
        f.path,
        [f.schemaSource, f.schemaUrl, f.validation, f.errors.length, f.datasetId, f.schemaMissing],
      ]),
    );
    expect(outcome).toEqual({
      "info.json": [null, null, "unvalidated", 0, null, false],
      "metadata.json": ["shared", `${V2}ArchiveMetadata.json`, "valid", 0, "ArchiveMetadata_v1", false],
      "microphone.json": ["app", `${V2}AudioLevelRecord.json`, "valid", 0, "AudioLevelRecord_v1", false],
      "microphone_levels.json": ["app", `${V2}AudioLevelRecord.json`, "valid", 0, "AudioLevelRecord_v1", false],
      "motion.json": ["app", `${V2}MotionRecord.json`, "valid", 0, "MotionRecord_v1", false],
      taskData: [null, null, "unvalidated", 0, null, false],
      "taskData.json": ["app", TASKDATA_URL, "unvalidated", 0, null, true],
      "taskResult.json": [null, null, "unvalidated", 0, null, false],
      "weather.json": ["app", `${V2}WeatherResult.json`, "valid", 0, "WeatherResult_v1", false],
    });
    for (const skipped of ["info.json", "taskData", "taskData.json", "taskResult.json"]) {
      expect(files.find((f) => f.path === skipped)?.note).toMatch(
        `no dataset for spelling revision 5 file ${skipped}: skipped`,
      );
    }
    expect(files.find((f) => f.path === "microphone.json")?.note).toMatch(/replaced by microphone_levels\.json/);
    expect(upload!.summary).toMatchObject({
      files: 9,
      valid: 5,
      unvalidated: 4,
      skipped: 4,
      written: 4,
      invalid: 0,
      missingSchemaUrls: [TASKDATA_URL],
    });
    expect(report.warnings).toHaveLength(4);

    // The datasets, document by document.
    const keys = await t.ws.json.list();
    expect(keys).toEqual(
      ["ArchiveMetadata_v1", "AudioLevelRecord_v1", "MotionRecord_v1", "WeatherResult_v1"].map(
        (d) => `dataset=${d}/${PARTITION}/${FIXTURE_RECORD}.ndjson`,
      ),
    );
    const read = async (dataset: string) => {
      const text = (await t!.ws.json.get(`dataset=${dataset}/${PARTITION}/${FIXTURE_RECORD}.ndjson`)).toString();
      expect(text.endsWith("\n")).toBe(true);
      expect(text.trimEnd()).not.toContain("\n");
      return { text, doc: JSON.parse(text) };
    };
    const added = { assessmentid: "spelling", year: 2022, month: 2, day: 15, recordid: FIXTURE_RECORD };
    const motion = await read("MotionRecord_v1");
    expect(motion.doc).toEqual(original("motion.json").map((m: object) => ({ ...m, ...added })));
    expect(motion.text).toMatch(
      /^\[\{"stepPath":"MTB Spelling Form 1","timestamp":0,"timestampDate":"2022-04-08T13:02:48.724-07:00","uptime":557787.220381708,"assessmentid":"spelling","year":2022,"month":2,"day":15,"recordid":"OCJByUtSrVTYtqObYp7XZV_J"\},/,
    );
    // Number literals keep their text: a float stays a float, long digits stay as sent.
    expect(motion.text).toContain('"uptime":557787.23260183306');
    expect((await read("AudioLevelRecord_v1")).text).toContain('"timestamp":0.0,"uptime":1.647799492759E9');
    expect((await read("AudioLevelRecord_v1")).doc).toEqual(
      original("microphone_levels.json").map((m: object) => ({ ...m, ...added })),
    );
    expect((await read("WeatherResult_v1")).doc).toEqual({ ...original("weather.json"), ...added });
    expect((await read("ArchiveMetadata_v1")).doc).toEqual({
      ...original("metadata.json"),
      year: 2022,
      month: 2,
      day: 15,
      ...sidecar,
      appid: "mobile-toolbox",
    });

    // The raw archive is kept, byte for byte, under its content hash.
    expect(await t.ws.raw.get(upload!.rawKey)).toEqual(readFileSync(FIXTURE_ARCHIVE));
    expect(upload!.rawKey).toBe(`sha256/${upload!.contentHash.slice(0, 2)}/${upload!.contentHash}.zip`);
  });

  it("ingesting the same archive again is a no-op that says so", async () => {
    t = await makeWorkspace();
    const intake = new Intake(t.ws);
    await intake.ingest([FIXTURE_ARCHIVE]);
    const before = await t.ws.json.list();
    const again = await intake.ingest([path.dirname(FIXTURE_ARCHIVE)]);
    expect(again.actions).toMatchObject({ unchanged: 1, ingested: 0, "new-version": 0 });
    expect(again.items[0]).toMatchObject({ action: "unchanged", status: "valid", version: 1 });
    expect(again.filesWritten).toBe(0);
    expect(await t.ws.json.list()).toEqual(before);
    expect(await t.ws.state.countByStatus()).toMatchObject({ valid: 1 });
  });

  it("quarantines the record under the quarantine policy, then releases it when the schema is added and reprocess runs", async () => {
    t = await makeWorkspace({ missingSchemaPolicy: "quarantine" });
    const report = await new Intake(t.ws).ingest([FIXTURE_ARCHIVE]);
    expect(report.items[0]).toMatchObject({ status: "quarantined" });
    expect(report.items[0]?.message).toContain(`taskData.json: schema ${TASKDATA_URL} cannot be resolved`);
    expect(await t.ws.json.list()).toEqual([]);
    const [upload] = await t.ws.state.uploadsOfRecord(FIXTURE_RECORD);
    const files = await t.ws.state.getFiles(upload!.uploadId);
    expect(files.find((f) => f.path === "taskData.json")).toMatchObject({
      validation: "schema-missing",
      schemaMissing: true,
    });
    const quarantineReport = JSON.parse((await t.ws.quarantine.get(reportKey(upload!))).toString());
    expect(quarantineReport).toMatchObject({
      recordId: FIXTURE_RECORD,
      status: "quarantined",
      missingSchemaUrls: [TASKDATA_URL],
    });
    expect(Object.keys(quarantineReport.errors)).toEqual(["taskData.json"]);

    // Add a local copy of the missing schema (its $id is the one the schema mapping knows), then reprocess.
    const extra = await tempDir();
    await mkdir(path.join(extra, "OldCombinedSchema"), { recursive: true });
    await writeFile(
      path.join(extra, "OldCombinedSchema", "taskData_combinedSchema.json"),
      JSON.stringify({
        $id: "sharedSchema",
        $schema: "http://json-schema.org/draft-07/schema#",
        type: "object",
        required: ["consideredSteps"],
      }),
    );
    const config = fixtureConfig({ missingSchemaPolicy: "quarantine" }) as { schemaLocations: object[] };
    config.schemaLocations.push({
      urlPrefix: "https://raw.githubusercontent.com/MobileToolbox/MobileToolboxSchemas/0.9.8/",
      folder: extra,
    });
    await writeFile(path.join(t.root, CONFIG_FILE), JSON.stringify(config));
    const ws = await t.reopen();

    const rerun = await new Intake(ws).reprocess({ statuses: ["quarantined"] });
    expect(rerun.moves).toEqual({ "quarantined→valid": 1 });
    expect(await ws.quarantine.list()).toEqual([]);
    const after = await ws.state.getFiles(upload!.uploadId);
    expect(after.find((f) => f.path === "taskData.json")).toMatchObject({
      validation: "valid",
      datasetId: "sharedSchema_v1",
      schemaMissing: false,
    });
    const taskData = JSON.parse(
      (await ws.json.get(`dataset=sharedSchema_v1/${PARTITION}/${FIXTURE_RECORD}.ndjson`)).toString(),
    );
    expect(taskData).toEqual({
      ...original("taskData.json"),
      assessmentid: "spelling",
      year: 2022,
      month: 2,
      day: 15,
      recordid: FIXTURE_RECORD,
    });
    expect((await ws.json.list()).length).toBe(5);
    expect((await ws.state.getUpload(upload!.uploadId))?.attempts).toBe(2);
  });

  it("quarantines an invalid record with a readable report and writes nothing of it", async () => {
    t = await makeWorkspace();
    const bad = await synthUpload("invalid-schema", 7);
    const dir = await tempDir();
    await writeFile(path.join(dir, bad.fileName), bad.zip);
    await writeFile(path.join(dir, `${bad.fileName}.metadata.json`), JSON.stringify(bad.metadata));
    const report = await new Intake(t.ws).ingest([dir]);
    expect(report.items[0]).toMatchObject({ recordId: bad.recordId, status: "quarantined" });
    expect(report.items[0]?.message).toBe(
      '1 file failed: motion.json: /1/sensorType: must be equal to one of the allowed values: "accelerometer", "gyro", "magnetometer", "attitude", "gravity", "magneticField", "rotationRate", "userAcceleration"',
    );
    expect(await t.ws.json.list()).toEqual([]);
    const quarantined = JSON.parse((await t.ws.quarantine.get(`${bad.recordId}/v1.json`)).toString());
    expect(quarantined.errors["motion.json"]).toEqual([
      { pointer: "/1/sensorType", message: expect.stringMatching(/^must be equal to one of the allowed values/) },
    ]);
  });

  it("drops configured allowed validation errors only for the clients they name", async () => {
    const bad = await synthUpload("invalid-schema", 7);
    const message =
      'must be equal to one of the allowed values: "accelerometer", "gyro", "magnetometer", "attitude", "gravity", "magneticField", "rotationRate", "userAcceleration"';
    const dir = await tempDir();
    await writeFile(path.join(dir, bad.fileName), bad.zip);
    await writeFile(path.join(dir, `${bad.fileName}.metadata.json`), JSON.stringify(bad.metadata));
    t = await makeWorkspace({
      allowedValidationErrors: [{ file: "motion.json", message, clientInfoContains: "Android" }],
    });
    expect((await new Intake(t.ws).ingest([dir])).statuses.quarantined).toBe(1);
    await t.cleanup();
    t = await makeWorkspace({
      allowedValidationErrors: [{ file: "motion.json", message, clientInfoContains: "iPhone" }],
    });
    expect((await new Intake(t.ws).ingest([dir])).statuses.valid).toBe(1);
  });

  it("keeps the same record id with new content as a new version that replaces the old outputs", async () => {
    t = await makeWorkspace();
    const intake = new Intake(t.ws);
    const dir = await tempDir();
    const first = await synthUpload("valid", 1);
    const file1 = path.join(dir, "first.zip");
    await writeFile(file1, first.zip);
    const meta = { ...first.metadata, recordid: "SameRecord" };
    await writeFile(`${file1}.metadata.json`, JSON.stringify(meta));
    expect((await intake.ingest([file1])).items[0]).toMatchObject({ action: "ingested", version: 1, status: "valid" });
    const v1Keys = await t.ws.json.list();
    expect(v1Keys).toHaveLength(4);

    // Version 2 has no weather.json, and a different motion file.
    const second = await synthUpload("valid", 2);
    const entries = await readArchive(Buffer.from(second.zip), Limits.parse({}));
    const file2 = path.join(dir, "second.zip");
    await writeFile(
      file2,
      zipSync(Object.fromEntries(entries.filter((e) => e.path !== "weather.json").map((e) => [e.path, e.data]))),
    );
    await writeFile(`${file2}.metadata.json`, JSON.stringify(meta));
    const report = await intake.ingest([file2]);
    expect(report.items[0]).toMatchObject({ action: "new-version", version: 2, status: "valid" });

    const versions = await t.ws.state.uploadsOfRecord("SameRecord");
    expect(versions.map((v) => [v.version, v.status])).toEqual([
      [1, "superseded"],
      [2, "valid"],
    ]);
    const keys = await t.ws.json.list();
    expect(keys).toEqual(v1Keys.filter((k) => !k.startsWith("dataset=WeatherResult_v1/")));
    const motionKey = keys.find((k) => k.startsWith("dataset=MotionRecord_v1/"))!;
    const expectedMotion = JSON.parse(entries.find((e) => e.path === "motion.json")!.data.toString());
    expect(JSON.parse((await t.ws.json.get(motionKey)).toString())[1].uptime).toBe(expectedMotion[1].uptime);

    // Reprocessing the old version does not bring its outputs back.
    const rerun = await intake.reprocess({ recordId: "SameRecord", statuses: ["superseded"] });
    expect(rerun.moves).toEqual({ "superseded→superseded": 1 });
    expect(await t.ws.json.list()).toEqual(keys);
  });

  it("reads metadata from CLI-style flags over the sidecar, and names a missing field", async () => {
    t = await makeWorkspace();
    const dir = await tempDir();
    const file = path.join(dir, "Rec1-spelling.zip");
    await writeFile(file, readFileSync(FIXTURE_ARCHIVE));
    const intake = new Intake(t.ws);
    const missing = await intake.ingest([file], {
      metadata: { assessmentrevision: "5", uploadedon: "2023-01-02T03:04:05Z" },
    });
    expect(missing.items[0]).toMatchObject({
      recordId: "Rec1",
      status: "rejected",
      message: "metadata: missing required field 'healthcode'",
    });
    expect(await t.ws.quarantine.exists("Rec1/v1.json")).toBe(true);

    // Corrected metadata: the same bytes are tried again as the next version.
    const fixed = await intake.ingest([file], {
      metadata: { assessmentrevision: "5", uploadedon: "2023-01-02T03:04:05Z", healthcode: "p" },
    });
    expect(fixed.items[0]).toMatchObject({ recordId: "Rec1", version: 2, status: "valid" });
    expect(
      await t.ws.json.exists(`dataset=MotionRecord_v1/assessmentid=spelling/year=2023/month=1/day=2/Rec1.ndjson`),
    ).toBe(true);
    expect((await t.ws.state.uploadsOfRecord("Rec1")).map((u) => u.status)).toEqual(["superseded", "valid"]);
    expect(await t.ws.quarantine.exists("Rec1/v1.json")).toBe(false);
  });

  it("resumes an upload that was recorded but never finished", async () => {
    t = await makeWorkspace();
    const bytes = readFileSync(FIXTURE_ARCHIVE);
    const hash = createHash("sha256").update(bytes).digest("hex");
    // What a process killed between recording and processing leaves behind.
    const stuck = await t.ws.state.recordUpload({
      recordId: FIXTURE_RECORD,
      contentHash: hash,
      rawKey: `sha256/${hash.slice(0, 2)}/${hash}.zip`,
      sizeBytes: bytes.length,
      sourceName: path.basename(FIXTURE_ARCHIVE),
      metadata: { ...sidecar, appid: "mobile-toolbox" },
      status: "received",
    });
    const report = await new Intake(t.ws).ingest([FIXTURE_ARCHIVE]);
    expect(report.items[0]).toMatchObject({ action: "resumed", uploadId: stuck.uploadId, status: "valid" });
    expect(await t.ws.json.list()).toHaveLength(4);
    expect(await t.ws.state.countByStatus()).toMatchObject({ valid: 1, received: 0 });
  });

  it("reports a path that does not exist and goes on with the rest", async () => {
    t = await makeWorkspace();
    const report = await new Intake(t.ws).ingest([path.join(FIXTURES, "nope.zip"), FIXTURE_ARCHIVE]);
    expect(report.actions).toMatchObject({ failed: 1, ingested: 1 });
    // The path is the item's source; the message does not repeat it (the CLI prints "source: message").
    expect(report.items[0]).toMatchObject({
      source: path.join(FIXTURES, "nope.zip"),
      message: "no such file or folder",
    });
  });
});
