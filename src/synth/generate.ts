import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { zipSync } from "fflate";
import { z } from "zod";
import type { Limits } from "../config/config.js";
import { readArchive } from "../intake/archive.js";
import { SAMPLE_DIR } from "../workspace/init.js";

/**
 * Synthetic uploads shaped like the bundled real one (same files, fresh ids and times), valid or broken in
 * one named way each: for tests, benchmarks and the demo.
 */
export const SynthKind = z.enum([
  "valid",
  /** motion.json names a sensor type its schema does not allow (a real Android client error). */
  "invalid-schema",
  /** weather.json is not JSON. */
  "not-json",
  /** Not a ZIP at all. */
  "corrupt",
  /** A valid archive cut short. */
  "truncated",
  /** An entry whose path climbs out of the archive (`../`). */
  "unsafe-path",
  /** Two entries with the same name. */
  "duplicate-entry",
  /** An entry of zeros that inflates over a thousand times its size. */
  "bomb",
  /** A header that declares a smaller size than the entry inflates to. */
  "lying-size",
  /** A ZIP with no entries. */
  "empty",
  /** The sidecar lacks the participant (healthcode). */
  "missing-metadata",
]);
export type SynthKind = z.infer<typeof SynthKind>;

export interface SynthUpload {
  kind: SynthKind;
  recordId: string;
  fileName: string;
  zip: Uint8Array;
  metadata: Record<string, string>;
}

interface Template {
  entries: Array<{ path: string; data: Buffer }>;
  metadata: Record<string, string>;
}

let template: Promise<Template> | undefined;

/** The bundled real upload, read once. */
function loadTemplate(): Promise<Template> {
  template ??= (async () => {
    const file = path.join(SAMPLE_DIR, "uploads", "OCJByUtSrVTYtqObYp7XZV_J-mtbSpelling.zip");
    const limits = {
      maxArchiveBytes: 1e9,
      maxEntries: 1e4,
      maxEntryBytes: 1e9,
      maxInflatedBytes: 1e9,
      maxCompressionRatio: 1e9,
      maxErrorsPerFile: 10,
    } satisfies Limits;
    const entries = await readArchive(await readFile(file), limits);
    const metadata = JSON.parse(await readFile(`${file}.metadata.json`, "utf8")) as Record<string, string>;
    return { entries, metadata };
  })();
  return template;
}

/** A small deterministic PRNG, so a seed always gives the same batch. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_";

function randomId(next: () => number, length = 24): string {
  let id = "";
  for (let i = 0; i < length; i++) id += ID_CHARS[Math.floor(next() * ID_CHARS.length)];
  return id;
}

export interface SynthOptions {
  seed?: number;
  /** Upload times are spread over this many days before `start`. */
  days?: number;
  start?: Date;
  participants?: number;
}

/** One synthetic upload of the given kind; `index` and the seed make it unique and repeatable. */
export async function synthUpload(kind: SynthKind, index: number, options: SynthOptions = {}): Promise<SynthUpload> {
  const { entries, metadata: base } = await loadTemplate();
  const next = prng((options.seed ?? 1) * 1_000_003 + index);
  const recordId = randomId(next);
  const days = options.days ?? 7;
  const start = (options.start ?? new Date("2022-02-15T18:48:15.890Z")).getTime();
  const uploadedOn = new Date(start - Math.floor(next() * days * 86_400_000)).toISOString();
  const participant = Math.floor(next() * (options.participants ?? 50));
  const metadata: Record<string, string> = {
    ...base,
    recordid: recordId,
    healthcode: `participant-${participant}`,
    uploadedon: uploadedOn,
    exportedon: uploadedOn,
  };
  if (kind === "missing-metadata") delete metadata.healthcode;

  const files: Array<[string, Uint8Array]> = entries.map((e) => [e.path, e.data]);
  const replace = (name: string, data: string | Uint8Array) => {
    const at = files.findIndex(([p]) => p === name);
    files[at] = [name, typeof data === "string" ? Buffer.from(data) : data];
  };
  const get = (name: string) => JSON.parse(Buffer.from(files.find(([p]) => p === name)?.[1] ?? "null").toString());
  // Every archive differs in content (as real ones do), so their hashes differ too.
  replace("metadata.json", JSON.stringify({ ...get("metadata.json"), taskRunUUID: recordId }, null, 2));
  const motion = get("motion.json") as Array<Record<string, unknown>>;
  for (const sample of motion) if (typeof sample.uptime === "number") sample.uptime += next();
  if (kind === "invalid-schema") (motion[1] as Record<string, unknown>).sensorType = "acceleration";
  replace("motion.json", JSON.stringify(motion, null, 2));
  if (kind === "not-json") replace("weather.json", "{ this is not JSON");

  let zip: Uint8Array;
  switch (kind) {
    case "corrupt":
      zip = Uint8Array.from({ length: 4096 }, () => Math.floor(next() * 256));
      break;
    case "truncated":
      zip = toZip(files).subarray(0, 3000);
      break;
    case "unsafe-path":
      zip = renameEntry(toZip(files), "motion.json", "../mot.json");
      break;
    case "duplicate-entry":
      zip = renameEntry(toZip(files), "taskData.json", "metadata.json");
      break;
    case "bomb":
      zip = toZip([...files, ["padding.bin", new Uint8Array(4 * 1024 * 1024)]]);
      break;
    case "lying-size":
      zip = declareSize(toZip(files), "taskResult.json", 1000);
      break;
    case "empty":
      zip = zipSync({});
      break;
    default:
      zip = toZip(files);
  }
  return { kind, recordId, fileName: `${recordId}-mtbSpelling.zip`, zip, metadata };
}

function toZip(files: Array<[string, Uint8Array]>): Uint8Array {
  return zipSync(Object.fromEntries(files), { level: 6, mtime: new Date("2022-02-16T04:47:00Z") });
}

/** Rewrites an entry's name in both its local header and the central directory (same length only). */
function renameEntry(zip: Uint8Array, from: string, to: string): Uint8Array {
  if (from.length !== to.length) throw new Error("renameEntry keeps the name's length");
  const out = Buffer.from(zip);
  const needle = Buffer.from(from);
  let at = out.indexOf(needle);
  while (at !== -1) {
    out.write(to, at, "latin1");
    at = out.indexOf(needle, at + 1);
  }
  return out;
}

/** Makes an entry's headers declare `size` bytes although it inflates to more. */
function declareSize(zip: Uint8Array, name: string, size: number): Uint8Array {
  const out = Buffer.from(zip);
  const needle = Buffer.from(name);
  for (let at = out.indexOf(needle); at !== -1; at = out.indexOf(needle, at + 1)) {
    if (out.readUInt32LE(at - 30) === 0x04034b50) out.writeUInt32LE(size, at - 30 + 22);
    else if (out.readUInt32LE(at - 46) === 0x02014b50) out.writeUInt32LE(size, at - 46 + 24);
  }
  return out;
}

export type SynthMix = Partial<Record<SynthKind, number>>;

/** Picks `count` kinds by weight, deterministically. */
export function planBatch(count: number, mix: SynthMix, seed = 1): SynthKind[] {
  const entries = Object.entries(mix).filter(([, w]) => (w ?? 0) > 0) as Array<[SynthKind, number]>;
  const total = entries.reduce((a, [, w]) => a + w, 0);
  const next = prng(seed);
  return Array.from({ length: count }, () => {
    let r = next() * total;
    for (const [kind, w] of entries) {
      r -= w;
      if (r < 0) return kind;
    }
    return entries[entries.length - 1]?.[0] ?? "valid";
  });
}

/** Writes a batch of uploads, each with its `<archive>.metadata.json` sidecar, into a folder. */
export async function writeBatch(
  dir: string,
  kinds: readonly SynthKind[],
  options: SynthOptions = {},
): Promise<SynthUpload[]> {
  await mkdir(dir, { recursive: true });
  const uploads: SynthUpload[] = [];
  for (const [i, kind] of kinds.entries()) {
    const upload = await synthUpload(kind, i, options);
    await writeFile(path.join(dir, upload.fileName), upload.zip);
    await writeFile(path.join(dir, `${upload.fileName}.metadata.json`), JSON.stringify(upload.metadata, null, 2));
    uploads.push(upload);
  }
  return uploads;
}
