import type { Command } from "commander";
import { openWorkspace, type Workspace } from "../workspace/workspace.js";

/** The command was used wrongly: exit code 2. */
export class UsageError extends Error {}

/** A flag's value as a positive whole number, or a usage error naming the flag. */
export function positiveInt(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`${flag} takes a positive whole number, got '${value}'`);
  return n;
}

export interface GlobalOptions {
  workspace: string;
}

export function globals(program: Command): GlobalOptions {
  return program.opts<GlobalOptions>();
}

/** Opens the `--workspace`, runs the work, and closes it whatever happens. */
export async function withWorkspace(program: Command, work: (ws: Workspace) => Promise<void>): Promise<void> {
  const ws = await openWorkspace(globals(program).workspace);
  try {
    await work(ws);
  } finally {
    await ws.close();
  }
}
