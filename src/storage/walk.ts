import type { Dirent } from "node:fs";
import { readdir } from "node:fs/promises";
import path from "node:path";

export interface WalkOptions {
  /** Keep a file (by its name) or not. */
  keep?: (name: string) => boolean;
  /** Do not descend into folders whose name starts with `.`. */
  skipHiddenFolders?: boolean;
}

/** Every file below a folder, as `/`-separated paths relative to it, sorted; a missing folder (or a file) has none. */
export async function listFiles(dir: string, options: WalkOptions = {}): Promise<string[]> {
  const out: string[] = [];
  const walk = async (at: string, rel: string): Promise<void> => {
    let entries: Dirent[];
    try {
      entries = await readdir(at, { withFileTypes: true });
    } catch (err) {
      // A missing folder, or a file where a folder was expected, has no files below it.
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") return;
      throw err;
    }
    for (const entry of entries) {
      const relative = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        if (!(options.skipHiddenFolders && entry.name.startsWith("."))) await walk(path.join(at, entry.name), relative);
      } else if (entry.isFile() && (options.keep?.(entry.name) ?? true)) {
        out.push(relative);
      }
    }
  };
  await walk(dir, "");
  return out.sort();
}
