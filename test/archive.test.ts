import { readFileSync } from "node:fs";
import { zipSync } from "fflate";
import { describe, expect, it } from "vitest";
import { Limits } from "../src/config/config.js";
import { ArchiveError, readArchive } from "../src/intake/archive.js";
import { type SynthKind, synthUpload } from "../src/synth/generate.js";
import { FIXTURE_ARCHIVE } from "./support/workspace.js";

const limits = Limits.parse({});

async function problemOf(zip: Uint8Array, l = limits): Promise<ArchiveError> {
  const err = await readArchive(Buffer.from(zip), l).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ArchiveError);
  return err as ArchiveError;
}

describe("reading archives", () => {
  it("reads the real fixture's 9 entries in central-directory order", async () => {
    const entries = await readArchive(readFileSync(FIXTURE_ARCHIVE), limits);
    expect(entries.map((e) => e.path)).toEqual([
      "info.json",
      "metadata.json",
      "microphone.json",
      "microphone_levels.json",
      "motion.json",
      "taskData",
      "taskData.json",
      "taskResult.json",
      "weather.json",
    ]);
    expect(entries.map((e) => e.data.length)).toEqual([555, 1003, 347, 347, 840, 5765, 8371, 16241, 763]);
  });

  it("skips folder entries and reads stored (uncompressed) entries", async () => {
    const zip = zipSync({ "dir/": new Uint8Array(), "dir/a.json": [Buffer.from('{"a":1}'), { level: 0 }] });
    const entries = await readArchive(Buffer.from(zip), limits);
    expect(entries).toEqual([{ path: "dir/a.json", data: Buffer.from('{"a":1}') }]);
  });

  const expected: Partial<Record<SynthKind, [ArchiveError["problem"], RegExp]>> = {
    corrupt: ["corrupt", /not a readable ZIP archive/],
    truncated: ["corrupt", /not a readable ZIP archive/],
    "unsafe-path": ["unsafe-path", /\.\.\/mot\.json/],
    "duplicate-entry": ["duplicate-entry", /holds 'metadata\.json' twice/],
    bomb: ["bomb", /padding\.bin.*compression ratio/],
    "lying-size": ["bomb", /taskResult\.json.*inflates past the 1000 bytes/],
    empty: ["empty", /no files/],
  };
  for (const [kind, [problem, message]] of Object.entries(expected)) {
    it(`refuses a ${kind} archive with a one-line reason`, async () => {
      const err = await problemOf((await synthUpload(kind as SynthKind, 3)).zip);
      expect(err.problem).toBe(problem);
      expect(err.message).toMatch(message);
      expect(err.message).not.toContain("\n");
    });
  }

  it("refuses an entry whose bytes fail the CRC check", async () => {
    const zip = Buffer.from(zipSync({ "a.json": [Buffer.from('{"value": 12345}'), { level: 0 }] }));
    zip[zip.indexOf("12345")] = "9".charCodeAt(0);
    const err = await problemOf(zip);
    expect(err.problem).toBe("corrupt");
    expect(err.message).toMatch(/a\.json' fails its CRC check/);
  });

  it("applies the configured limits: archive size, entry size, total inflated size, entry count", async () => {
    const zip = zipSync({ "a.json": Buffer.alloc(2000, 32), "b.json": Buffer.alloc(2000, 32) });
    expect((await problemOf(zip, { ...limits, maxArchiveBytes: 100 })).problem).toBe("too-large");
    expect((await problemOf(zip, { ...limits, maxEntryBytes: 1999 })).message).toMatch(
      /a\.json' inflates to 2000 bytes/,
    );
    expect((await problemOf(zip, { ...limits, maxInflatedBytes: 3000 })).problem).toBe("bomb");
    expect((await problemOf(zip, { ...limits, maxEntries: 1 })).message).toMatch(/2 entries, over the limit of 1/);
  });
});
