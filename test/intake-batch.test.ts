import { spawn } from "node:child_process";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Intake } from "../src/intake/intake.js";
import type { UploadStatus } from "../src/state/models.js";
import { planBatch, type SynthKind, type SynthMix, writeBatch } from "../src/synth/generate.js";
import { CLI, makeWorkspace, type TestWorkspace, tempDir } from "./support/workspace.js";

const REPO = fileURLToPath(new URL("..", import.meta.url));

const MIX: SynthMix = {
  valid: 70,
  "invalid-schema": 4,
  "not-json": 4,
  corrupt: 2,
  truncated: 3,
  "unsafe-path": 3,
  "duplicate-entry": 3,
  bomb: 3,
  "lying-size": 3,
  empty: 2,
  "missing-metadata": 3,
};

const EXPECTED_STATUS: Record<SynthKind, UploadStatus> = {
  valid: "valid",
  "invalid-schema": "quarantined",
  "not-json": "quarantined",
  corrupt: "rejected",
  truncated: "rejected",
  "unsafe-path": "rejected",
  "duplicate-entry": "rejected",
  bomb: "rejected",
  "lying-size": "rejected",
  empty: "rejected",
  "missing-metadata": "rejected",
};

function expectedCounts(kinds: readonly SynthKind[]): Record<UploadStatus, number> {
  const counts: Record<UploadStatus, number> = {
    received: 0,
    valid: 0,
    quarantined: 0,
    rejected: 0,
    superseded: 0,
    withdrawn: 0,
  };
  for (const kind of kinds) counts[EXPECTED_STATUS[kind]] += 1;
  return counts;
}

/** Every JSON dataset file with its bytes, to compare two runs exactly. */
async function snapshot(t: TestWorkspace): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const key of await t.ws.json.list()) out.set(key, (await t.ws.json.get(key)).toString());
  return out;
}

describe("a generated batch of 1,000 uploads", () => {
  const kinds = planBatch(1000, MIX, 42);
  let dir: string;
  let t: TestWorkspace;

  beforeAll(async () => {
    dir = await tempDir();
    await writeBatch(dir, kinds, { seed: 42 });
    t = await makeWorkspace();
  });
  afterAll(async () => {
    await t?.cleanup();
  });

  it("ends with the right count per status, every raw archive kept, and one dataset file per valid output", async () => {
    // Every kind is in the batch, so every bad-input case is exercised among good ones.
    expect(new Set(kinds).size).toBe(Object.keys(MIX).length);
    const report = await new Intake(t.ws).ingest([dir]);
    const expected = expectedCounts(kinds);
    expect(report.statuses).toEqual(expected);
    expect(report.actions).toMatchObject({ ingested: 1000, failed: 0 });
    expect(await t.ws.state.countByStatus()).toEqual(expected);

    // Each valid upload writes four datasets; nothing of a quarantined or rejected one is written.
    expect(report.filesWritten).toBe(expected.valid * 4);
    expect((await t.ws.json.list()).length).toBe(expected.valid * 4);

    // The raw archive of every upload, even a broken one, is kept; every failure has a report and a one-line reason.
    // (Raw archives are content-addressed: byte-identical uploads, such as the empty ones, share one copy.)
    const uploads = await t.ws.state.listUploads();
    expect(uploads).toHaveLength(1000);
    for (const upload of uploads) expect(await t.ws.raw.exists(upload.rawKey)).toBe(true);
    expect((await t.ws.raw.list()).length).toBe(new Set(uploads.map((u) => u.contentHash)).size);
    expect((await t.ws.quarantine.list()).length).toBe(expected.quarantined + expected.rejected);
    for (const item of report.items.filter((i) => i.status !== "valid")) {
      expect(item.message).toBeTruthy();
      expect(item.message).not.toContain("\n");
    }
    // A missing participant names the field.
    const missing = report.items.find((i) => i.message?.includes("healthcode"));
    expect(missing?.message).toBe("metadata: missing required field 'healthcode'");
  });

  it("running the same ingest again changes nothing", async () => {
    const before = await snapshot(t);
    const report = await new Intake(t.ws).ingest([dir]);
    expect(report.actions).toMatchObject({ unchanged: 1000, ingested: 0, "new-version": 0, resumed: 0, failed: 0 });
    expect(report.filesWritten).toBe(0);
    expect(await snapshot(t)).toEqual(before);
    expect(await t.ws.state.countByStatus()).toEqual(expectedCounts(kinds));
  });
});

describe("a process killed mid-run", () => {
  it("loses nothing: a rerun finishes the batch with exactly the outputs of an uninterrupted run", async () => {
    const kinds = planBatch(300, MIX, 7);
    const dir = await tempDir();
    await writeBatch(dir, kinds, { seed: 7 });

    const clean = await makeWorkspace();
    await new Intake(clean.ws).ingest([dir]);
    const cleanOutputs = await snapshot(clean);
    const cleanCounts = await clean.ws.state.countByStatus();
    await clean.cleanup();

    const killed = await makeWorkspace();
    await killed.ws.close();
    const child = spawn(process.execPath, [CLI, "-w", killed.root, "ingest", dir, "--json"], {
      cwd: REPO,
      stdio: "ignore",
    });
    // Kill it once it has recorded some uploads, well before it could finish.
    const db = path.join(killed.root, "state.db-wal");
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      const size = await stat(db).then(
        (s) => s.size,
        () => 0,
      );
      if (size > 200_000) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));

    const ws = await killed.reopen();
    const partial = await ws.state.countByStatus();
    const recorded = Object.values(partial).reduce((a, b) => a + b, 0);
    expect(recorded).toBeGreaterThan(0);
    expect(recorded).toBeLessThan(300);

    const rerun = await new Intake(ws).ingest([dir]);
    expect(rerun.actions.failed).toBe(0);
    expect(await ws.state.countByStatus()).toEqual(cleanCounts);
    expect(await snapshot(killed)).toEqual(cleanOutputs);
    // No half-written file is ever visible: every dataset file is one complete JSON line.
    for (const key of await ws.json.list()) {
      const text = await readFile(path.join(ws.json.location, key), "utf8");
      expect(() => JSON.parse(text)).not.toThrow();
    }
    await killed.cleanup();
  });
});
