import { existsSync } from "node:fs";
import { cp, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { CONFIG_FILE, Config } from "../config/config.js";

/** The package's bundled sample data (reference files and one real upload); see sample/PROVENANCE.md. */
export const SAMPLE_DIR = fileURLToPath(new URL("../../sample", import.meta.url));

export interface InitResult {
  root: string;
  configFile: string;
  created: string[];
}

/**
 * Makes an embedded workspace: a config file with every default written out, the folders it names, and a
 * copy of the bundled reference data (archive map, schemas, mappings) that the user may then edit.
 */
export async function initWorkspace(dir: string): Promise<InitResult> {
  const root = path.resolve(dir);
  const configFile = path.join(root, CONFIG_FILE);
  if (existsSync(configFile)) throw new Error(`${configFile} already exists: this folder is a workspace already`);
  // The reference's daily export: yesterday's records, every night at 2am Pacific, when a worker runs.
  const config = Config.parse({
    pipeline: {
      schedules: [
        { name: "daily-export", cron: "0 2 * * *", timezone: "America/Los_Angeles", kind: "export", target: "default" },
      ],
    },
  });
  await mkdir(root, { recursive: true });
  const created: string[] = [];
  for (const folder of Object.values(config.paths)) {
    await mkdir(path.join(root, folder), { recursive: true });
    created.push(`${folder}/`);
  }
  const reference = path.join(root, "reference");
  if (!existsSync(reference)) {
    await cp(path.join(SAMPLE_DIR, "reference"), reference, { recursive: true });
    created.push("reference/");
  }
  await writeFile(configFile, `${JSON.stringify(config, null, 2)}\n`);
  created.push(CONFIG_FILE);
  return { root, configFile, created };
}
