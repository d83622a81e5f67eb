import { type Command, Option } from "commander";
import type { Principal } from "../lake/access.js";
import { IMPORT_FORMATS, type ImportFormat, Lake, type QueryOptions } from "../lake/lake.js";
import { Grant, LakeName, Permission, Tier, UpdateKind } from "../lake/models.js";
import type { Workspace } from "../workspace/workspace.js";
import { printJson, printList, table } from "./output.js";
import { positiveInt, UsageError, withWorkspace } from "./shared.js";

const asOption = () =>
  new Option("--as <user>", "act as this lake user (default: the workspace operator, who may do everything)");

/** The caller: `--as <user>`, or a token from STUDYLAKE_TOKEN, or the workspace operator. */
export async function callerOf(lake: Lake, as: string | undefined): Promise<Principal> {
  if (as !== undefined) return lake.principal(as);
  const token = process.env.STUDYLAKE_TOKEN;
  return token ? lake.principalOfToken(token) : lake.principal();
}

function parse<T>(
  schema: {
    safeParse(
      v: unknown,
    ): { success: true; data: T } | { success: false; error: { issues: Array<{ message: string }> } };
  },
  value: unknown,
  what: string,
): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success)
    throw new UsageError(`${what} '${String(value)}' ${parsed.error.issues[0]?.message ?? "is invalid"}`);
  return parsed.data;
}

/** `dataset:NAME` or `tier:NAME`; `user:NAME` or `role:NAME`. */
function grantOf(permission: string, target: string, to: string): Grant {
  const [targetKind, targetName] = target.split(":");
  const [principalKind, principal] = to.split(":");
  if ((targetKind !== "dataset" && targetKind !== "tier") || !targetName) {
    throw new UsageError(`target '${target}' must be dataset:<name> or tier:<${Tier.options.join("|")}>`);
  }
  if ((principalKind !== "user" && principalKind !== "role") || !principal) {
    throw new UsageError(`--to '${to}' must be user:<name> or role:<name>`);
  }
  if (targetKind === "tier") parse(Tier, targetName, "tier");
  return parse(
    Grant,
    {
      principalKind,
      principal,
      permission: parse(Permission, permission, "permission"),
      targetKind,
      target: targetName,
    },
    "grant",
  );
}

export function printResult(result: { columns: string[]; rows: unknown[][] }, format: "table" | "csv" | "json"): void {
  if (format === "json") {
    printJson(result.rows.map((r) => Object.fromEntries(result.columns.map((c, i) => [c, r[i]]))));
  } else if (format === "csv") {
    const cell = (v: unknown) => {
      const text = v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
      return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
    };
    process.stdout.write(`${[result.columns, ...result.rows].map((r) => r.map(cell).join(",")).join("\n")}\n`);
  } else {
    console.log(
      table([
        result.columns,
        ...result.rows.map((r) =>
          r.map((v) => (v === null ? null : typeof v === "object" ? JSON.stringify(v) : String(v))),
        ),
      ]),
    );
    console.log(`(${result.rows.length} row${result.rows.length === 1 ? "" : "s"})`);
  }
}

/** Governed SQL over the lake's datasets, as a user: what `query --as` runs. */
export async function lakeQuery(
  ws: Workspace,
  sql: string,
  opts: { as?: string; asOf?: string[]; at?: string; format: "table" | "csv" | "json" | "parquet"; output?: string },
): Promise<void> {
  const lake = new Lake(ws);
  const options: QueryOptions = {};
  for (const pair of opts.asOf ?? []) {
    const [dataset, update] = pair.split("=");
    if (!dataset || !update) throw new UsageError(`--as-of '${pair}' must be <dataset>=<update>`);
    options.asOf = { ...options.asOf, [dataset]: update };
  }
  if (opts.at !== undefined) {
    if (Number.isNaN(Date.parse(opts.at))) throw new UsageError(`--at '${opts.at}' is not a date-time`);
    options.at = opts.at;
  }
  if (opts.format === "parquet" && !opts.output) throw new UsageError("--format parquet needs --output <file>");
  if (opts.output) options.output = { file: opts.output, format: opts.format === "table" ? "csv" : opts.format };
  let result: Awaited<ReturnType<Lake["query"]>>;
  try {
    result = await lake.query(await callerOf(lake, opts.as), sql, options);
  } finally {
    await lake.close();
  }
  if (opts.output) {
    console.log(`Wrote ${result.rowCount} rows (${result.columns.length} columns) to ${opts.output}.`);
    return;
  }
  printResult(result, opts.format === "parquet" ? "table" : opts.format);
}

/** The lake's commands: datasets, import, compact, users, grants, tokens, audit. */
export function addLakeCommands(program: Command): void {
  const datasets = program
    .command("datasets")
    .description("lake datasets you may read, with their tier, owner and latest update")
    .addOption(asOption())
    .option("--json", "machine-readable output")
    .action(async (opts: { as?: string; json?: boolean }) => {
      await withWorkspace(program, async (ws) => {
        const lake = new Lake(ws);
        const caller = await callerOf(lake, opts.as);
        const list = await lake.datasets(caller);
        const rows = await Promise.all(
          list.map(async (d) => {
            const { count, latest } = await lake.committed(d.name, caller);
            return { ...d, updates: count, latest: latest?.update ?? null, rows: latest?.manifest?.rows ?? null };
          }),
        );
        printList(rows, opts.json, "No datasets you may read.", () =>
          table([
            ["DATASET", "TIER", "OWNER", "KIND", "UPDATES", "LATEST", "DESCRIPTION"],
            ...rows.map((r) => [r.name, r.tier, r.owner, r.updateKind, r.updates, r.latest, r.description]),
          ]),
        );
      });
    });

  datasets
    .command("create")
    .description("create a dataset (its updates come from import, compact, transform)")
    .argument("<name>", "dataset name (letters, digits, _)")
    .addOption(new Option("--tier <tier>", "security tier").choices(Tier.options).makeOptionMandatory())
    .option("--owner <user>", "owner (default: you)")
    .option("--description <text>", "what it holds", "")
    .addOption(new Option("--kind <kind>", "what an update usually is").choices(UpdateKind.options).default("snapshot"))
    .option("--key <column...>", "key columns: a delta's row replaces the earlier one with the same key")
    .addOption(asOption())
    .action(
      async (
        name: string,
        opts: { tier: Tier; owner?: string; description: string; kind: UpdateKind; key?: string[]; as?: string },
      ) => {
        await withWorkspace(program, async (ws) => {
          const lake = new Lake(ws);
          const caller = await callerOf(lake, opts.as);
          const dataset = await lake.createDataset(
            {
              name: parse(LakeName, name, "dataset name"),
              tier: opts.tier,
              owner: opts.owner ?? caller.user,
              description: opts.description,
              updateKind: opts.kind,
              keyColumns: opts.key ?? [],
            },
            caller,
          );
          console.log(`Dataset ${dataset.name} created (${dataset.tier}, owner ${dataset.owner}).`);
        });
      },
    );

  datasets
    .command("show")
    .description("a dataset and its update history")
    .argument("<name>", "dataset name")
    .addOption(asOption())
    .option("--json", "machine-readable output")
    .action(async (name: string, opts: { as?: string; json?: boolean }) => {
      await withWorkspace(program, async (ws) => {
        const lake = new Lake(ws);
        const caller = await callerOf(lake, opts.as);
        const dataset = await lake.dataset(name, caller);
        const updates = await lake.updates(name, caller);
        if (opts.json) {
          printJson({ dataset, updates });
          return;
        }
        console.log(`${dataset.name}: ${dataset.description || "(no description)"}`);
        console.log(
          `  tier ${dataset.tier}, owner ${dataset.owner}, ${dataset.updateKind} updates${dataset.keyColumns.length ? `, key ${dataset.keyColumns.join(", ")}` : ""}`,
        );
        if (updates.length === 0) {
          console.log("  no updates yet");
          return;
        }
        console.log(
          table([
            ["UPDATE", "KIND", "STATUS", "ROWS", "BY", "COMMITTED", "MADE BY"],
            ...updates.map((u) => [
              u.update,
              u.kind,
              u.status,
              u.manifest?.rows ?? null,
              u.createdBy,
              u.committedAt,
              u.manifest ? `${u.manifest.operation}${u.manifest.note ? ` ${u.manifest.note}` : ""}` : null,
            ]),
          ]),
        );
      });
    });

  program
    .command("import")
    .description("take in an external file (CSV, TSV, NDJSON, JSON, Parquet) as a new update of a dataset")
    .argument("<dataset>", "dataset name")
    .argument("<file>", "the file")
    .addOption(new Option("--format <format>", "file format (default: from the extension)").choices(IMPORT_FORMATS))
    .addOption(new Option("--kind <kind>", "snapshot or delta (default: the dataset's)").choices(UpdateKind.options))
    .addOption(asOption())
    .option("--json", "machine-readable output")
    .action(
      async (
        name: string,
        file: string,
        opts: { format?: ImportFormat; kind?: UpdateKind; as?: string; json?: boolean },
      ) => {
        await withWorkspace(program, async (ws) => {
          const lake = new Lake(ws);
          const manifest = await lake.importFile(name, file, await callerOf(lake, opts.as), {
            ...(opts.format ? { format: opts.format } : {}),
            ...(opts.kind ? { kind: opts.kind } : {}),
          });
          if (opts.json) printJson(manifest);
          else
            console.log(`Imported ${manifest.rows} rows into ${name} as update ${manifest.update} (${manifest.kind}).`);
        });
      },
    );

  program
    .command("compact")
    .description("fold a dataset's latest snapshot and later deltas into a new snapshot update")
    .argument("<dataset>", "dataset name")
    .addOption(asOption())
    .action(async (name: string, opts: { as?: string }) => {
      await withWorkspace(program, async (ws) => {
        const lake = new Lake(ws);
        const manifest = await lake.compact(name, await callerOf(lake, opts.as));
        console.log(
          `Compacted ${name}: ${manifest.lineage.length} updates into snapshot ${manifest.update} (${manifest.rows} rows).`,
        );
      });
    });

  program
    .command("transform")
    .description(
      "run a transformation folder (pipeline.json + .sql files) with its owner's grants; commits a new update of its output, with lineage",
    )
    .argument("<folder>", "the transformation's folder")
    .addOption(asOption())
    .option("--json", "machine-readable output")
    .action(async (folder: string, opts: { as?: string; json?: boolean }) => {
      await withWorkspace(program, async (ws) => {
        const lake = new Lake(ws);
        const manifest = await lake.transform(folder, await callerOf(lake, opts.as));
        if (opts.json) printJson(manifest);
        else
          console.log(
            `Transformed into ${manifest.dataset} update ${manifest.update}: ${manifest.rows} rows from ${[...new Set(manifest.lineage.map((l) => `${l.dataset}@${l.update}`))].join(", ")}.`,
          );
      });
    });

  const users = program
    .command("users")
    .description("lake users and their roles")
    .option("--json", "machine-readable output")
    .action(async (opts: { json?: boolean }) => {
      await withWorkspace(program, async (ws) => {
        const list = await ws.state.lake.users();
        printList(list, opts.json, "No users yet: studylake users create <name>.", () =>
          table([["USER", "ROLES"], ...list.map((u) => [u.name, u.roles.join(", ")])]),
        );
      });
    });

  users
    .command("create")
    .description("add a user (and give them roles)")
    .argument("<name>", "user name")
    .option("--role <role...>", "roles")
    .action(async (name: string, opts: { role?: string[] }) => {
      await withWorkspace(program, async (ws) => {
        await ws.state.lake.createUser(parse(LakeName, name, "user name"));
        for (const role of opts.role ?? []) await ws.state.lake.addRole(name, parse(LakeName, role, "role"));
        console.log(`User ${name}${opts.role?.length ? ` with roles ${opts.role.join(", ")}` : ""}.`);
      });
    });

  program
    .command("grant")
    .description("grant read or write on a dataset or a whole tier (never opens a sensitive dataset) to a user or role")
    .argument("<permission>", "read or write (write includes read)")
    .argument("<target>", "dataset:<name> or tier:<internal|restricted|sensitive>")
    .requiredOption("--to <principal>", "user:<name> or role:<name>")
    .action(async (permission: string, target: string, opts: { to: string }) => {
      await withWorkspace(program, async (ws) => {
        const grant = grantOf(permission, target, opts.to);
        await ws.state.lake.grant(grant);
        await ws.state.lake.audit({
          actor: "operator",
          action: "grant",
          datasets: grant.targetKind === "dataset" ? [grant.target] : [],
          rows: null,
          detail: `${permission} ${target} to ${opts.to}`,
          outcome: "ok",
        });
        console.log(`Granted ${permission} on ${target} to ${opts.to}.`);
      });
    });

  program
    .command("revoke")
    .description("take back a grant")
    .argument("<permission>", "read or write")
    .argument("<target>", "dataset:<name> or tier:<name>")
    .requiredOption("--from <principal>", "user:<name> or role:<name>")
    .action(async (permission: string, target: string, opts: { from: string }) => {
      await withWorkspace(program, async (ws) => {
        const removed = await ws.state.lake.revoke(grantOf(permission, target, opts.from));
        if (removed === 0) throw new Error(`no such grant: ${permission} on ${target} to ${opts.from}`);
        await ws.state.lake.audit({
          actor: "operator",
          action: "revoke",
          datasets: [],
          rows: null,
          detail: `${permission} ${target} from ${opts.from}`,
          outcome: "ok",
        });
        console.log(`Revoked ${permission} on ${target} from ${opts.from}.`);
      });
    });

  program
    .command("tokens")
    .description("API tokens")
    .command("create")
    .description("make an API token for a user (shown once; only its hash is stored); use it as STUDYLAKE_TOKEN")
    .argument("<user>", "user name")
    .action(async (user: string) => {
      await withWorkspace(program, async (ws) => {
        console.log(await new Lake(ws).createToken(user));
      });
    });

  program
    .command("audit")
    .description("the audit log: every query, import, compaction and grant, newest first")
    .option("--user <name>", "only this user's entries")
    .option("--limit <n>", "how many", "50")
    .option("--json", "machine-readable output")
    .action(async (opts: { user?: string; limit: string; json?: boolean }) => {
      const limit = positiveInt(opts.limit, "--limit");
      await withWorkspace(program, async (ws) => {
        const entries = await ws.state.lake.auditLog({ ...(opts.user ? { actor: opts.user } : {}), limit });
        printList(entries, opts.json, "No audit entries yet.", () =>
          table([
            ["AT", "WHO", "ACTION", "DATASETS", "ROWS", "OUTCOME", "DETAIL"],
            ...entries.map((e) => [
              e.at,
              e.actor,
              e.action,
              e.datasets.join(","),
              e.rows,
              e.outcome,
              e.detail.replace(/\s+/g, " ").slice(0, 80),
            ]),
          ]),
        );
      });
    });
}
