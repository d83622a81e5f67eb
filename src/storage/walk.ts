import type { Dirent } from "node:fs";
import { readdir } from "node:fs/promises";
import path from "node:path";

export interface WalkOptions {
  /** Keep a file (by its name) or not. */
  keep?: (name: string) => boolean;
  /** Do not descend into folders whose name starts with `.`. */
  skipHiddenFolders?: boolean;
}

/**
 * Every file below a folder, as `/`-separated paths relative to it, in sorted order, a folder's files at a
 * time: a walk holds the folders it is in, not the whole tree. A missing folder (or a file) has none.
 */
export async function* walkFiles(dir: string, options: WalkOptions = {}): AsyncGenerator<string[]> {
  const entries = await folderEntries(dir);
  // A folder sorts as its name and a slash, as its files' paths do: the walk then yields paths in sorted order.
  const named = entries
    .filter((e) => (e.isDirectory() ? !(options.skipHiddenFolders && e.name.startsWith(".")) : e.isFile()))
    .map((e) => ({ entry: e, sortAs: e.isDirectory() ? `${e.name}/` : e.name }))
    .sort((a, b) => (a.sortAs < b.sortAs ? -1 : a.sortAs > b.sortAs ? 1 : 0));
  let files: string[] = [];
  for (const { entry } of named) {
    if (entry.isDirectory()) {
      if (files.length > 0) yield files;
      files = [];
      for await (const below of walkFiles(path.join(dir, entry.name), options))
        yield below.map((file) => `${entry.name}/${file}`);
    } else if (options.keep?.(entry.name) ?? true) {
      files.push(entry.name);
    }
  }
  if (files.length > 0) yield files;
}

/** Every file below a folder, as `/`-separated paths relative to it, sorted; a missing folder (or a file) has none. */
export async function listFiles(dir: string, options: WalkOptions = {}): Promise<string[]> {
  const out: string[] = [];
  for await (const files of walkFiles(dir, options)) for (const file of files) out.push(file);
  return out;
}

/** What a folder holds; a missing folder, or a file where a folder was expected, holds nothing. */
export async function folderEntries(dir: string): Promise<Dirent[]> {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return [];
    throw err;
  }
}
