import { stat } from "node:fs/promises";
import path from "node:path";
import { listFiles } from "../storage/walk.js";

export const SIDECAR_SUFFIX = ".metadata.json";

export interface ArchiveSource {
  file: string;
  /** `<archive>.metadata.json` beside it, when there is one. */
  sidecar: string | null;
}

export interface Discovery {
  sources: ArchiveSource[];
  /** Paths that could not be used, each with a one-line reason. */
  problems: Array<{ path: string; message: string }>;
}

/**
 * Expands the paths given to `ingest`: a file is an archive; a folder contributes every `*.zip` below it,
 * in sorted order so that runs are repeatable.
 */
export async function discoverArchives(paths: readonly string[]): Promise<Discovery> {
  const sources: ArchiveSource[] = [];
  const problems: Discovery["problems"] = [];
  const seen = new Set<string>();
  const add = async (file: string) => {
    const abs = path.resolve(file);
    if (seen.has(abs)) return;
    seen.add(abs);
    const sidecar = `${abs}${SIDECAR_SUFFIX}`;
    sources.push({ file: abs, sidecar: (await isFile(sidecar)) ? sidecar : null });
  };
  for (const p of paths) {
    let info: Awaited<ReturnType<typeof stat>>;
    try {
      info = await stat(p);
    } catch {
      problems.push({ path: p, message: "no such file or folder" });
      continue;
    }
    if (info.isDirectory()) {
      for (const file of await listArchives(p)) await add(file);
    } else {
      await add(p);
    }
  }
  return { sources, problems };
}

/** Archives below a folder, in sorted order; hidden folders (such as a drop folder's `.done/`) are not searched. */
export async function listArchives(dir: string): Promise<string[]> {
  const files = await listFiles(dir, { keep: (name) => name.toLowerCase().endsWith(".zip"), skipHiddenFolders: true });
  return files.map((relative) => path.join(dir, ...relative.split("/")));
}

/**
 * The archives below a drop folder that are ready: neither the archive nor its sidecar has changed in the last
 * `quietSeconds` (a copy still being written keeps changing), in sorted order.
 */
export async function readyArchives(dir: string, quietSeconds: number): Promise<string[]> {
  const before = Date.now() - quietSeconds * 1000;
  const changedAt = (file: string) =>
    stat(file).then(
      (s) => s.mtimeMs,
      () => undefined,
    );
  const ready: string[] = [];
  for (const file of await listArchives(dir)) {
    const [archive, sidecar] = await Promise.all([changedAt(file), changedAt(`${file}${SIDECAR_SUFFIX}`)]);
    if (archive !== undefined && archive <= before && (sidecar ?? 0) <= before) ready.push(file);
  }
  return ready;
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}
