import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import path from "node:path";
import { CLI, REPO } from "./workspace.js";

/**
 * Vitest global setup: the tests that run the CLI in child processes run the built one (`dist/`), which starts
 * in half the time of the TypeScript sources through tsx; it is built here first when a source file is newer.
 * Type errors are the linter's to report: the build only has to produce the files.
 */
export default function buildCli(): void {
  const built = statSync(CLI, { throwIfNoEntry: false })?.mtimeMs ?? 0;
  const sources = readdirSync(path.join(REPO, "src"), { recursive: true, withFileTypes: true }).filter((e) =>
    e.isFile(),
  );
  if (sources.every((e) => statSync(path.join(e.parentPath, e.name)).mtimeMs <= built)) return;
  const tsc = path.join(REPO, "node_modules", "typescript", "bin", "tsc");
  const result = spawnSync(process.execPath, [tsc, "-p", "tsconfig.build.json"], { cwd: REPO, encoding: "utf8" });
  if (statSync(CLI, { throwIfNoEntry: false }) === undefined || result.error) {
    throw new Error(`could not build the CLI for the tests: ${result.error?.message ?? result.stdout}`);
  }
}
