import { readFile } from "node:fs/promises";
import path from "node:path";
import { text as streamText } from "node:stream/consumers";
import { Argument, Command, CommanderError, Option } from "commander";
import pino from "pino";
import { DEFAULT_DESTINATION } from "../config/config.js";
import { Exporter, type ExportReport, openDestination } from "../export/exporter.js";
import { SharingMode, strictScope } from "../export/filter.js";
import type { ExportMetrics } from "../export/metrics.js";
import { readParticipants } from "../export/participants.js";
import { planExport, type Selection, yesterday } from "../export/plan.js";
import { parseExportRequest, RECORD_SOURCES } from "../export/request.js";
import { type IngestReport, Intake, type ReprocessReport } from "../intake/intake.js";
import { readTransform } from "../lake/lake.js";
import { withdrawParticipant } from "../lake/withdraw.js";
import { Catalog, documentText } from "../parquet/catalog.js";
import { type RelationalizeReport, RelationalizeStage } from "../parquet/stage.js";
import { RunKind } from "../pipeline/models.js";
import { Pipeline } from "../pipeline/pipeline.js";
import { RunStatus } from "../pipeline/status.js";
import { UploadStatus } from "../state/models.js";
import { LocalObjectStore } from "../storage/object-store.js";
import { initWorkspace } from "../workspace/init.js";
import type { Workspace } from "../workspace/workspace.js";
import { addLakeCommands, lakeQuery, printResult } from "./lake.js";
import { printJson, printList, progress, table } from "./output.js";
import { globals, positiveInt, UsageError, withWorkspace } from "./shared.js";

/** Exit codes: 0 ok, 1 the work failed, 2 the command was used wrongly. */
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

/** Metadata flags of `ingest`, named after the upload-metadata keys they set. */
const METADATA_FLAGS = [
  ["--record-id <id>", "recordid", "record id (only with a single archive)"],
  ["--participant <healthCode>", "healthcode", "participant id (health code)"],
  ["--app <appId>", "appid", "app id"],
  ["--study <studyId>", "studyid", "study id"],
  ["--assessment <id>", "assessmentid", "assessment id"],
  ["--revision <n>", "assessmentrevision", "assessment revision"],
  ["--uploaded-on <time>", "uploadedon", "upload time, ISO-8601 with a zone"],
  ["--client-info <text>", "clientinfo", "client info"],
  ["--sharing-scope <scope>", "sharingscope", "sharing scope at upload time"],
  ["--data-groups <groups>", "datagroups", "data groups, comma-separated"],
] as const;

export function buildProgram(): Command {
  const program = new Command()
    .name("studylake")
    .description("Turn digital-health study uploads into analysis-ready, consent-aware tables.")
    .option(
      "-w, --workspace <dir>",
      "workspace folder (holds studylake.config.json)",
      process.env.STUDYLAKE_WORKSPACE ?? process.cwd(),
    )
    .showHelpAfterError()
    .exitOverride();

  program
    .command("init")
    .description("make an embedded workspace: config, raw/, json/, quarantine/, SQLite state, reference data")
    .argument("[dir]", "folder to make the workspace in (default: the --workspace folder)")
    .option("--json", "machine-readable output")
    .action(async (dir: string | undefined, opts: { json?: boolean }) => {
      const result = await initWorkspace(dir ?? globals(program).workspace);
      if (opts.json) printJson(result);
      else console.log(`Workspace ready in ${result.root}\n  created: ${result.created.join(", ")}`);
    });

  const ingest = program
    .command("ingest")
    .description("take in upload archives (files, or folders of *.zip), keep them, validate and bucket their files")
    .argument("<paths...>", "archive files or folders of them; metadata comes from <archive>.metadata.json beside each")
    .option("--meta <key=value...>", "any other upload-metadata field")
    .option("--strict", "exit 1 when any upload ends quarantined or rejected")
    .option("--json", "machine-readable output");
  for (const [flag, , help] of METADATA_FLAGS) ingest.option(flag, help);
  ingest.action(async (paths: string[], opts: Record<string, unknown>) => {
    const metadata = metadataFlags(opts);
    if (metadata.recordid && paths.length > 1) throw new UsageError("--record-id names one record: give one archive");
    await withWorkspace(program, async (ws) => {
      const bar = progress("ingest", !opts.json);
      const report = await new Intake(ws).ingest(paths, { metadata, onProgress: (d, t) => bar.update(d, t) });
      bar.stop();
      if (opts.json) printJson(report);
      else printIngestReport(report);
      const failed = report.actions.failed > 0;
      const bad = report.statuses.quarantined + report.statuses.rejected > 0;
      if (failed || (opts.strict && bad)) process.exitCode = EXIT_FAILURE;
    });
  });

  program
    .command("reprocess")
    .description("run kept raw archives through resolution and validation again, after a schema or mapping fix")
    .option("--quarantined", "only quarantined uploads (default: quarantined and unfinished ones)")
    .option("--record <recordId>", "only the versions of this record (any status)")
    .addOption(new Option("--status <status...>", "only uploads with these statuses").choices(UploadStatus.options))
    .option("--json", "machine-readable output")
    .action(async (opts: { quarantined?: boolean; record?: string; status?: UploadStatus[]; json?: boolean }) => {
      await withWorkspace(program, async (ws) => {
        const statuses = opts.status ?? (opts.quarantined ? (["quarantined"] as UploadStatus[]) : undefined);
        const bar = progress("reprocess", !opts.json);
        const report = await new Intake(ws).reprocess({
          ...(statuses ? { statuses } : {}),
          ...(opts.record !== undefined ? { recordId: opts.record } : {}),
          onProgress: (d, t) => bar.update(d, t),
        });
        bar.stop();
        if (opts.json) printJson(report);
        else printReprocessReport(report);
        if (report.actions.failed > 0) process.exitCode = EXIT_FAILURE;
      });
    });

  program
    .command("status")
    .description("count uploads by status and list the ones that need attention")
    .option("--limit <n>", "how many quarantined or rejected uploads to list", "20")
    .option("--json", "machine-readable output")
    .action(async (opts: { limit: string; json?: boolean }) => {
      const limit = positiveInt(opts.limit, "--limit");
      await withWorkspace(program, async (ws) => {
        const counts = await ws.state.countByStatus();
        const attention = await ws.state.listUploads({ statuses: ["quarantined", "rejected", "received"], limit });
        if (opts.json) {
          printJson({ counts, attention });
          return;
        }
        const total = Object.values(counts).reduce((a, b) => a + b, 0);
        console.log(`Uploads in ${ws.root} (state: ${ws.state.description})`);
        console.log(
          table([["status", "uploads"], ...UploadStatus.options.map((s) => [s, counts[s]]), ["total", total]]),
        );
        if (attention.length > 0) {
          console.log("\nNeeding attention:");
          console.log(
            table([
              ["record", "version", "status", "why"],
              ...attention.map((u) => [u.recordId ?? u.sourceName, u.version, u.status, u.error ?? "unfinished"]),
            ]),
          );
        }
      });
    });

  program
    .command("show")
    .description("show one record's uploads: metadata, files, resolved schemas, validation results and outputs")
    .argument("<recordId>", "record id")
    .option("--json", "machine-readable output")
    .action(async (recordId: string, opts: { json?: boolean }) => {
      await withWorkspace(program, async (ws) => {
        const uploads = await ws.state.uploadsOfRecord(recordId);
        if (uploads.length === 0) throw new Error(`no upload with record id '${recordId}'`);
        const versions = [];
        for (const upload of uploads) versions.push({ ...upload, files: await ws.state.getFiles(upload.uploadId) });
        if (opts.json) {
          printJson(versions);
          return;
        }
        for (const v of versions) {
          console.log(`Record ${recordId} version ${v.version}: ${v.status}${v.error ? ` (${v.error})` : ""}`);
          console.log(`  source ${v.sourceName}, ${v.sizeBytes} bytes, sha256 ${v.contentHash}`);
          console.log(`  received ${v.receivedAt}, processed ${v.processedAt ?? "never"}, attempts ${v.attempts}`);
          console.log("  metadata:");
          for (const [k, val] of Object.entries(v.metadata)) console.log(`    ${k}: ${val}`);
          if (v.files.length > 0) {
            console.log("  files:");
            console.log(
              indent(
                table([
                  ["file", "schema", "validation", "dataset", "output / note"],
                  ...v.files.map((f) => [
                    f.path,
                    f.schemaUrl
                      ? `${f.schemaSource}: ${shortUrl(f.schemaUrl)}${f.schemaMissing ? " (missing)" : ""}`
                      : "-",
                    f.validation,
                    f.datasetId ?? "-",
                    f.outputKey ?? f.note ?? "",
                  ]),
                ]),
                4,
              ),
            );
            for (const f of v.files) {
              for (const e of f.errors) console.log(`    ${f.path} ${e.pointer || "/"}: ${e.message}`);
            }
          }
        }
      });
    });

  program
    .command("relationalize")
    .description("flatten JSON datasets into partitioned Parquet tables, reading only what is new since the last run")
    .option("--dataset <id...>", "only these datasets (default: every dataset in the JSON folder)")
    .option("--from <dir>", "read JSON datasets from this folder instead of the workspace's json/ (same layout)")
    .option(
      "--compact",
      "read nothing new: merge the small files of every partition of the tables (a run merges only where it writes)",
    )
    .option("--json", "machine-readable output")
    .action(async (opts: { dataset?: string[]; from?: string; compact?: boolean; json?: boolean }) => {
      await withWorkspace(program, async (ws) => {
        const stage = new RelationalizeStage(ws, opts.from ? new LocalObjectStore(opts.from) : ws.json);
        if (opts.dataset) await checkDatasets(stage, opts.dataset);
        if (opts.compact) {
          const known = (await ws.state.relationalize.datasets()).map((d) => d.dataset);
          const reports: RelationalizeReport[] = [];
          const bar = progress("compact (partitions)", !opts.json);
          try {
            for (const dataset of opts.dataset ?? known)
              reports.push(await stage.compact(dataset, { onPartitions: (done, total) => bar.update(done, total) }));
          } finally {
            bar.stop();
          }
          if (opts.json) printJson(reports);
          else {
            for (const r of reports) {
              const merged = r.mergedFiles > 0 ? `${r.mergedFiles} files merged into fewer` : "nothing to merge";
              console.log(`${r.dataset}: ${merged}`);
            }
          }
          return;
        }
        const datasets = opts.dataset ?? (await stage.datasets());
        // Files of the datasets done so far, plus the one running: its new files are known once it starts.
        const bar = progress("relationalize (files)", !opts.json);
        const reports: RelationalizeReport[] = [];
        let before = 0;
        for (const dataset of datasets) {
          let total = 0;
          reports.push(
            await stage.run(dataset, {
              onFiles: (done, files) => {
                total = files;
                bar.update(before + done, before + files);
              },
            }),
          );
          before += total;
        }
        bar.stop();
        if (opts.json) {
          printJson(reports);
          return;
        }
        for (const r of reports) {
          if (r.runId === null) {
            console.log(`${r.dataset}: nothing new`);
            continue;
          }
          const tables = r.tables.map((t) => `${t.table} ${t.rows} rows`).join(", ");
          console.log(
            `${r.dataset}: ${r.filesRead} files, ${r.documents} documents (${r.typedDocuments} read by DuckDB), ${r.records} records (${r.replaced} replaced, ${r.deleted} deleted) → ${tables}`,
          );
          if (r.runs > 1)
            console.log(`  in ${r.runs} runs of at most relationalize.filesPerRun files, each committed on its own`);
          if (r.older > 0)
            console.log(`  ${r.older} older versions of records in the tables were not written (newestBy)`);
          if (r.deletedByExport > 0) console.log(`  ${r.deletedByExport} removed or kept out by the deletion export`);
          if (r.mergedFiles > 0)
            console.log(`  ${r.mergedFiles} files of earlier runs merged into fewer (relationalize.compactAfterFiles)`);
          for (const c of r.counts) {
            console.log(
              `  ${c.value ?? "(none)"}: ${c.read} read, ${c.older} older, ${c.deletedByExport} deleted, ${c.written} written`,
            );
          }
          for (const c of r.conflicts) {
            console.log(
              `  type conflict: ${c.table}.${c.column} held ${c.kinds.join(" and ")}; stored as ${c.resolvedAs}`,
            );
          }
          for (const u of r.unreadable) console.log(`  unreadable: ${u.key} line ${u.line}: ${u.message}`);
        }
        if (datasets.length === 0) {
          const folder = opts.from ? path.resolve(opts.from) : path.resolve(ws.root, ws.config.paths.json);
          console.log(`No JSON datasets in ${folder}: they are folders named dataset=<id>/, as intake writes them.`);
          return;
        }
        const written = reports.filter((r) => r.runId !== null).length;
        console.log(
          `Relationalized ${datasets.length} dataset${datasets.length === 1 ? "" : "s"}: ${written} with new data.`,
        );
      });
    });

  program
    .command("tables")
    .description("list the Parquet tables with row counts, columns and types")
    .option("--json", "machine-readable output")
    .action(async (opts: { json?: boolean }) => {
      await withCatalog(program, async (catalog) => {
        printList(await catalog.tables(), opts.json, "No tables yet: run 'studylake relationalize'.", (tables) =>
          tables
            .map(
              (t) =>
                `${t.table} (${t.rows} rows in ${t.files} files${t.parent ? `, child of ${t.parent}` : ""})\n  ${t.columns.map((c) => `${c.name} ${c.type}`).join(", ")}`,
            )
            .join("\n"),
        );
      });
    });

  program
    .command("query")
    .description(
      "run read-only SQL through DuckDB: over the relationalized tables, or with --as/--lake over the lake's datasets the user may read",
    )
    .argument("<sql>", "one or more SELECT statements; the last one's result is printed")
    .addOption(
      new Option("--format <format>", "output format").choices(["table", "csv", "json", "parquet"]).default("table"),
    )
    .option("--as <user>", "query the lake as this user: only datasets they may read exist")
    .option("--lake", "query the lake (as the operator, or as STUDYLAKE_TOKEN's user)")
    .option("--as-of <dataset=update...>", "lake: read a dataset as of an update")
    .option("--at <time>", "lake: read every dataset as it was at this time")
    .option("--output <file>", "lake: write the result to a file (csv, json or parquet) instead of printing it")
    .action(
      async (
        sql: string,
        opts: {
          format: "table" | "csv" | "json" | "parquet";
          as?: string;
          lake?: boolean;
          asOf?: string[];
          at?: string;
          output?: string;
        },
      ) => {
        if (opts.as !== undefined || opts.lake || process.env.STUDYLAKE_TOKEN) {
          await withWorkspace(program, (ws) => lakeQuery(ws, sql, opts));
          return;
        }
        if (opts.format === "parquet" || opts.asOf || opts.at || opts.output) {
          throw new UsageError(
            "--format parquet, --as-of, --at and --output work on the lake: add --as <user> or --lake",
          );
        }
        const format = opts.format;
        await withCatalog(program, async (catalog) => printResult(await catalog.query(sql), format));
      },
    );

  program
    .command("rebuild-json")
    .description("rebuild a record's original document from the Parquet tables (shows that nothing was lost)")
    .argument("<dataset>", "dataset id")
    .argument("<recordId>", "record id")
    .action(async (dataset: string, recordId: string) => {
      await withCatalog(program, async (catalog) => {
        const document = await catalog.rebuild(dataset, recordId);
        if (document === undefined) throw new Error(`record '${recordId}' is not in the tables of '${dataset}'`);
        console.log(documentText(document));
      });
    });

  const logLevel = new Option("--log-level <level>", "structured log lines (JSON, on stderr) from this level")
    .choices(["trace", "debug", "info", "warn", "error", "silent"])
    .default("info");

  program
    .command("run")
    .description("process everything pending once: intake of the drop folder, relationalize, due schedules; then exit")
    .addOption(logLevel)
    .option("--json", "machine-readable output")
    .action(async (opts: { logLevel: string; json?: boolean }) => {
      await withWorkspace(program, async (ws) => {
        const pipeline = new Pipeline(ws, { logger: pino({ level: opts.logLevel }, pino.destination(2)) });
        await pipeline.requestDue();
        // Whatever intake wrote earlier but was never relationalized is picked up too.
        for (const dataset of await new RelationalizeStage(ws).datasets()) {
          await pipeline.requestOnce({ kind: "relationalize", target: dataset, requestedBy: "run" });
        }
        const summary = await pipeline.drain();
        const waiting = await ws.state.pipeline.list({ statuses: ["pending"] });
        if (opts.json) {
          printJson({ ...summary, waiting: waiting.length });
        } else {
          if (summary.runs.length > 0) console.log(runsTable(summary.runs));
          const counts = new Map<string, number>();
          for (const r of summary.runs) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
          const parts = [...counts].map(([status, n]) => `${n} ${status}`);
          console.log(
            `Ran ${summary.runs.length} run${summary.runs.length === 1 ? "" : "s"}${parts.length ? `: ${parts.join(", ")}` : ""}` +
              `${waiting.length ? `; ${waiting.length} waiting to be retried later` : ""}.`,
          );
        }
        if (summary.runs.some((r) => r.status === "failed")) process.exitCode = EXIT_FAILURE;
      });
    });

  program
    .command("worker")
    .description(
      "keep running: poll the drop folder, schedules and requested runs; stop with Ctrl-C (SIGINT) or SIGTERM",
    )
    .option("--worker-id <id>", "name of this worker in runs and logs")
    .addOption(logLevel)
    .action(async (opts: { workerId?: string; logLevel: string }) => {
      await withWorkspace(program, async (ws) => {
        const logger = pino({ level: opts.logLevel }, pino.destination(2));
        const pipeline = new Pipeline(ws, { logger, ...(opts.workerId ? { workerId: opts.workerId } : {}) });
        const stop = new AbortController();
        const onSignal = () => stop.abort();
        process.once("SIGINT", onSignal);
        process.once("SIGTERM", onSignal);
        await pipeline.work(stop.signal);
      });
    });

  program
    .command("request")
    .description("request a run; with --key, requesting again returns the same run instead of a new one")
    .addArgument(new Argument("<kind>", "kind of run").choices(RunKind.options))
    .argument("[target]", "the dataset id (relationalize) or transformation folder (transform); none for intake")
    .option("--key <idempotencyKey>", "idempotency key")
    .option("--path <path...>", "archives or folders to take in (intake; default: the drop folder)")
    .option("--json", "machine-readable output")
    .action(
      async (kind: RunKind, given: string | undefined, opts: { key?: string; path?: string[]; json?: boolean }) => {
        await withWorkspace(program, async (ws) => {
          const target = await requestTarget(ws, kind, given);
          const { run, created } = await new Pipeline(ws).request({
            kind,
            target,
            requestedBy: "cli",
            ...(opts.key ? { idempotencyKey: opts.key } : {}),
            ...(opts.path ? { params: { paths: opts.path.map((p) => path.resolve(p)) } } : {}),
          });
          if (opts.json) printJson({ created, run });
          else
            console.log(
              `${created ? "Requested" : "Already requested"}: run ${run.runId} (${run.kind} ${run.target}), ${run.status}`,
            );
        });
      },
    );

  const runs = program
    .command("runs")
    .description("list recent pipeline runs with status, duration and counts")
    .addOption(new Option("--status <status...>", "only runs with these statuses").choices(RunStatus.options))
    .option("--limit <n>", "how many", "30")
    .option("--json", "machine-readable output")
    .action(async (opts: { status?: RunStatus[]; limit: string; json?: boolean }) => {
      const limit = positiveInt(opts.limit, "--limit");
      await withWorkspace(program, async (ws) => {
        const list = await ws.state.pipeline.list({ ...(opts.status ? { statuses: opts.status } : {}), limit });
        printList(list, opts.json, "No runs yet.", runsTable);
      });
    });

  runs
    .command("show")
    .description("show one run: request, steps, errors and summary")
    .argument("<runId>", "run id")
    .option("--json", "machine-readable output")
    .action(async (runId: string, opts: { json?: boolean }) => {
      await withWorkspace(program, async (ws) => {
        const run = await ws.state.pipeline.get(runId);
        if (!run) throw new Error(`no run '${runId}'`);
        const steps = await ws.state.pipeline.steps(runId);
        if (opts.json) {
          printJson({ ...run, steps });
          return;
        }
        console.log(
          `Run ${run.runId}: ${run.kind} ${run.target}, ${run.status} after ${run.attempts}/${run.maxAttempts} attempts`,
        );
        console.log(
          `  requested by ${run.requestedBy} at ${run.createdAt}${run.idempotencyKey ? ` (key ${run.idempotencyKey})` : ""}`,
        );
        if (run.startedAt)
          console.log(
            `  started ${run.startedAt} on ${run.worker}, finished ${run.finishedAt ?? "-"} (${duration(run)})`,
          );
        if (run.status === "pending" && run.attempts > 0) console.log(`  next attempt at ${run.nextAttemptAt}`);
        if (run.error) console.log(`  error (${run.errorKind}): ${run.error}`);
        for (const step of steps) {
          console.log(`  attempt ${step.attempt} ${step.name}: ${step.status}${step.error ? `: ${step.error}` : ""}`);
        }
        if (run.summary) console.log(`  summary: ${JSON.stringify(run.summary)}`);
      });
    });

  program
    .command("retry")
    .description("run a failed or aborted run again")
    .argument("<runId>", "run id")
    .action(async (runId: string) => {
      await withWorkspace(program, async (ws) => {
        await ws.state.pipeline.transition(runId, "pending", {
          nextAttemptAt: new Date().toISOString(),
          finishedAt: null,
        });
        console.log(`Run ${runId} is pending again.`);
      });
    });

  program
    .command("abort")
    .description("abort a pending or running run (a running one keeps what it already wrote)")
    .argument("<runId>", "run id")
    .action(async (runId: string) => {
      await withWorkspace(program, async (ws) => {
        await ws.state.pipeline.transition(runId, "aborted", { finishedAt: new Date().toISOString() });
        console.log(`Run ${runId} aborted.`);
      });
    });

  const participants = program
    .command("participants")
    .description("participants' current sharing scopes, which every export applies");
  participants
    .command("import")
    .description("import sharing scopes from a CSV (healthCode,sharingScope), JSON or NDJSON file")
    .argument("<file>", "the file")
    .action(async (file: string) => {
      const entries = await readParticipants(file);
      await withWorkspace(program, async (ws) => {
        await ws.state.exports.setScopes(entries);
        console.log(
          `Imported ${entries.length} participant scope${entries.length === 1 ? "" : "s"}; ${await ws.state.exports.participantCount()} known.`,
        );
      });
    });
  participants
    .command("set-scope")
    .description("set one participant's current sharing scope (for example after a withdrawal)")
    .argument("<healthCode>", "participant")
    .argument("<scope>", "NO_SHARING, SPONSORS_AND_PARTNERS or ALL_QUALIFIED_RESEARCHERS")
    .action(async (healthCode: string, scopeText: string) => {
      const scope = strictScope(scopeText);
      if (!scope)
        throw new UsageError(
          `scope '${scopeText}' is not one of NO_SHARING, SPONSORS_AND_PARTNERS, ALL_QUALIFIED_RESEARCHERS`,
        );
      await withWorkspace(program, async (ws) => {
        await ws.state.exports.setScopes([{ healthCode, scope }]);
        console.log(`Participant ${healthCode}: ${scope}.`);
      });
    });

  participants
    .command("withdraw")
    .description(
      "a participant withdraws: their rows leave every lake dataset (new updates), every read hides them, and exports skip them",
    )
    .argument("<healthCode>", "participant")
    .option("--json", "machine-readable output")
    .action(async (healthCode: string, opts: { json?: boolean }) => {
      await withWorkspace(program, async (ws) => {
        const report = await withdrawParticipant(ws, healthCode);
        if (opts.json) {
          printJson(report);
          return;
        }
        for (const u of report.updates) console.log(`  ${u.dataset}: ${u.removed} rows removed in update ${u.update}`);
        console.log(
          `Participant ${healthCode} withdrawn: ${report.updates.length} lake datasets updated, ${report.documentsDeleted} JSON documents deleted, ${report.relationalized.length} datasets relationalized again; sharing scope NO_SHARING; hidden from every lake query.`,
        );
      });
    });

  program
    .command("export")
    .description(
      "export records to researcher tables (one per study and schema, plus appVersion and status tables), honouring each participant's current sharing scope",
    )
    .option("--date <YYYY-MM-DD>", "records uploaded on this day in the export time zone (default: yesterday)")
    .option("--start <time>", "records uploaded from this time (with --end)")
    .option("--end <time>", "records uploaded before this time")
    .option("--since-last-export", "each study's records since its last export")
    .option("--records <ids...>", "exactly these record ids: a redrive, replacing their rows")
    .option("--records-from <file>", "a redrive of the record ids in a file, one per line (- reads standard input)")
    .option("--request <file>", "a JSON request file instead of the flags above")
    .addOption(new Option("--sharing-mode <mode>", "which sharing scopes to export").choices(SharingMode.options))
    .option("--study <id...>", "study whitelist")
    .option("--table <study:schema:revision...>", "table whitelist")
    .option("--destination <name>", "a destination configured under export.destinations (default: default)")
    .option("--tag <text>", "free text kept with the export")
    .option("--again", "export a selection that was exported before: adds the records it left out, keeps existing rows")
    .option("--dry-run", "select, filter and count without writing anything")
    .option("--json", "machine-readable output")
    .action(async (opts: Record<string, unknown>) => {
      await withWorkspace(program, async (ws) => {
        let input: Record<string, unknown>;
        if (typeof opts.request === "string") {
          try {
            input = JSON.parse(await readFile(opts.request, "utf8"));
          } catch (err) {
            throw new UsageError(`--request ${opts.request}: ${(err as Error).message}`);
          }
        } else {
          const listed = typeof opts.recordsFrom === "string" ? await recordIdsFrom(opts.recordsFrom) : undefined;
          const records =
            opts.records || listed ? [...((opts.records as string[]) ?? []), ...(listed ?? [])] : undefined;
          input = {
            ...(opts.date ? { date: opts.date } : {}),
            ...(opts.start ? { startDateTime: opts.start } : {}),
            ...(opts.end ? { endDateTime: opts.end } : {}),
            ...(opts.sinceLastExport ? { sinceLastExport: true } : {}),
            ...(records ? { recordIds: records } : {}),
            ...(opts.sharingMode ? { sharingMode: opts.sharingMode } : {}),
            ...(opts.study ? { studyWhitelist: opts.study } : {}),
            ...(opts.tag ? { tag: opts.tag } : {}),
            ...(opts.table
              ? {
                  tableWhitelist: (opts.table as string[]).map((t) => {
                    const [studyId, schemaId, revision] = t.split(":");
                    return { studyId, schemaId, revision: Number(revision) };
                  }),
                }
              : {}),
          };
          if (!RECORD_SOURCES.some((k) => k in input)) input.date = yesterday(ws.config.export.timezone, new Date());
        }
        if (typeof opts.destination === "string") input.destination = opts.destination;
        let request: ReturnType<typeof parseExportRequest>;
        try {
          request = parseExportRequest(input);
          if (!opts.dryRun) await openDestination(ws, request.destination ?? DEFAULT_DESTINATION).close();
        } catch (err) {
          throw new UsageError((err as Error).message);
        }
        if (opts.dryRun) {
          const plan = await planExport(ws, request);
          const tables = new Map<string, number>();
          for (const p of plan.records)
            for (const d of p.documents) tables.set(d.table.key, (tables.get(d.table.key) ?? 0) + 1);
          if (opts.json) {
            printJson({
              request,
              selection: plan.selection,
              records: plan.records.map((p) => ({
                recordId: p.record.recordId,
                studyId: p.record.studyId,
                tables: p.documents.map((d) => d.table.key),
              })),
              tables: Object.fromEntries(tables),
              errors: plan.errors,
              metrics: plan.metrics,
            });
            return;
          }
          console.log(
            `Export (dry run) of ${describeSelection(plan.selection)}: ${plan.records.length} of ${plan.metrics.counter("numTotal")} records would be exported.`,
          );
          for (const [key, n] of [...tables].sort()) console.log(`  ${key}: ${n} rows`);
          printMetrics(plan.metrics.toJSON(), plan.errors);
          return;
        }
        const bar = progress("export", !opts.json);
        let report: ExportReport;
        try {
          report = await new Exporter(ws).run(request, {
            again: opts.again === true,
            onProgress: (done, total) => bar.update(done, total),
          });
        } finally {
          bar.stop();
        }
        if (report.status !== "succeeded") process.exitCode = EXIT_FAILURE;
        if (opts.json) {
          printJson(report);
          return;
        }
        if (report.alreadyDone) {
          console.log(
            `Export ${report.exportId} of ${describeSelection(report.selection)} to '${report.destination}' already finished (${report.status}) on ${report.exportDate}: nothing written again. Use --again to add what it left out, or --records to redrive records.`,
          );
          return;
        }
        if (report.tables.length > 0) {
          console.log(
            table([
              ["TABLE", "ROWS", "COLUMNS ADDED", "LOCATION"],
              ...report.tables.map((t) => [t.key, t.rows, t.added.length, t.location]),
            ]),
          );
        }
        printMetrics(report.metrics, report.errors);
        if (report.redrive) {
          console.log(
            `${report.redrive.records} records failed for a transient reason: redrive run ${report.redrive.runId} queued for ${report.redrive.notBefore} (a worker or 'studylake run' will take it).`,
          );
        }
        const lines = Object.entries(report.metrics.counters)
          .filter(([k]) => k.endsWith(".lineCount"))
          .reduce((n, [, v]) => n + v, 0);
        console.log(
          `Export ${report.exportId} of ${describeSelection(report.selection)} to '${report.destination}': ${report.status}; ${report.tables.length} tables, ${lines} rows written, ${report.errors.length} errors.`,
        );
      });
    });

  program
    .command("exports")
    .description("list recent exports, newest first")
    .option("--limit <n>", "how many", "20")
    .option("--json", "machine-readable output")
    .action(async (opts: { limit: string; json?: boolean }) => {
      const limit = positiveInt(opts.limit, "--limit");
      await withWorkspace(program, async (ws) => {
        const rows = await ws.state.exports.list(limit);
        printList(rows, opts.json, "No exports yet.", () =>
          table([
            ["EXPORT", "DATE", "DESTINATION", "STATUS", "TAG", "ERROR"],
            ...rows.map((r) => [
              r.exportId,
              r.exportDate,
              r.destination,
              r.status,
              (r.request as { tag?: string }).tag ?? "",
              r.error ?? "",
            ]),
          ]),
        );
      });
    });

  addLakeCommands(program);
  return program;
}

function duration(run: { startedAt: string | null; finishedAt: string | null }): string {
  if (!run.startedAt || !run.finishedAt) return "-";
  const ms = Date.parse(run.finishedAt) - Date.parse(run.startedAt);
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function runsTable(
  list: ReadonlyArray<
    { runId: string; kind: string; target: string; status: string; attempts: number; error: string | null } & Partial<{
      startedAt: string | null;
      finishedAt: string | null;
    }>
  >,
): string {
  return table([
    ["run", "kind", "target", "status", "attempts", "duration", "error"],
    ...list.map((r) => [
      r.runId,
      r.kind,
      r.target,
      r.status,
      r.attempts,
      duration({ startedAt: r.startedAt ?? null, finishedAt: r.finishedAt ?? null }),
      r.error ?? "",
    ]),
  ]);
}

async function withCatalog(program: Command, work: (catalog: Catalog) => Promise<void>): Promise<void> {
  await withWorkspace(program, async (ws) => {
    const catalog = await Catalog.open(ws);
    try {
      await work(catalog);
    } finally {
      catalog.close();
    }
  });
}

/** Record ids listed one per line in a file, or on standard input for `-`; blank lines are skipped. */
async function recordIdsFrom(file: string): Promise<string[]> {
  let text: string;
  try {
    text = file === "-" ? await streamText(process.stdin) : await readFile(file, "utf8");
  } catch (err) {
    throw new UsageError(`--records-from ${file}: ${(err as Error).message}`);
  }
  const ids = text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "");
  if (ids.length === 0) throw new UsageError(`--records-from ${file}: no record ids in it`);
  return ids;
}

function describeSelection(selection: Selection): string {
  if (selection.kind === "records") return `${selection.recordIds.length} named records`;
  if (selection.kind === "window") return `uploads from ${selection.start} to ${selection.end}`;
  return `each study's uploads since its last export, to ${selection.end}`;
}

/** Counters, distinct counts (never the values: they may be participant ids) and value lists, then errors. */
function printMetrics(metrics: ReturnType<ExportMetrics["toJSON"]>, errors: readonly string[]): void {
  for (const [name, n] of Object.entries(metrics.counters)) console.log(`  ${name}: ${n}`);
  for (const [name, n] of Object.entries(metrics.distinctCounts)) console.log(`  ${name}: ${n} distinct`);
  for (const [name, list] of Object.entries(metrics.values)) console.log(`  ${name}: ${list.join(", ")}`);
  for (const e of errors.slice(0, 20)) console.log(`  error: ${e}`);
  if (errors.length > 20) console.log(`  … and ${errors.length - 20} more errors (--json lists them all)`);
}

function metadataFlags(opts: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (opts.meta as string[] | undefined) ?? []) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new UsageError(`--meta takes key=value, got '${pair}'`);
    out[pair.slice(0, eq).toLowerCase()] = pair.slice(eq + 1);
  }
  for (const [flag, key] of METADATA_FLAGS) {
    const name = flag.slice(2, flag.indexOf(" ")).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    const value = opts[name];
    if (typeof value === "string") out[key] = value;
  }
  return out;
}

/** Refuses dataset names that are neither in the JSON folder nor relationalized before (a typo, most likely). */
async function checkDatasets(stage: RelationalizeStage, datasets: readonly string[]): Promise<void> {
  const known = await stage.knownDatasets();
  const unknown = datasets.filter((d) => !known.includes(d));
  if (unknown.length > 0) {
    throw new UsageError(
      `no JSON dataset ${unknown.map((d) => `'${d}'`).join(", ")} (datasets: ${known.join(", ") || "none yet"})`,
    );
  }
}

/**
 * The target of a run requested from the command line, checked now rather than when a worker takes the run:
 * a known dataset, a transformation folder that reads, the drop folder for intake. An export run needs a
 * request (its selection), which `studylake export` and schedules give.
 */
async function requestTarget(ws: Workspace, kind: RunKind, given: string | undefined): Promise<string> {
  switch (kind) {
    case "intake":
      if (given !== undefined && given !== "intake") throw new UsageError("an intake run takes no target (use --path)");
      return "intake";
    case "relationalize":
      if (given === undefined) throw new UsageError("request relationalize <dataset>: name the dataset");
      await checkDatasets(new RelationalizeStage(ws), [given]);
      return given;
    case "transform":
      if (given === undefined) throw new UsageError("request transform <folder>: name the transformation folder");
      try {
        await readTransform(path.resolve(ws.root, given));
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      return given;
    case "export":
      throw new UsageError(
        "an export run needs its selection: run 'studylake export' (same options), or add a schedule",
      );
  }
}

/** Lines listing problem uploads in text mode; the rest are in `studylake status` and `--json`. */
const MAX_PROBLEM_LINES = 25;

function printIngestReport(report: IngestReport): void {
  const problems = report.items.filter((item) => item.status !== "valid" || item.action === "failed");
  for (const item of problems.slice(0, MAX_PROBLEM_LINES)) {
    const who = item.recordId ? `${item.recordId}${item.version ? ` v${item.version}` : ""}` : item.source;
    console.log(`${item.action === "failed" ? "error" : item.status}: ${who}: ${item.message ?? item.action}`);
  }
  if (problems.length > MAX_PROBLEM_LINES) {
    console.log(`… and ${problems.length - MAX_PROBLEM_LINES} more (studylake status, or --json)`);
  }
  if (report.warnings.length > 0) {
    // The same file is usually skipped for the same reason in every upload: say so once, with a count.
    const byReason = new Map<string, number>();
    for (const w of report.warnings) byReason.set(w.message, (byReason.get(w.message) ?? 0) + 1);
    console.log(`Files skipped (${report.warnings.length}; each upload is listed with --json):`);
    for (const [message, n] of [...byReason].sort((x, y) => y[1] - x[1])) {
      console.log(`  ${message} (${n} upload${n === 1 ? "" : "s"})`);
    }
  }
  const a = report.actions;
  const s = report.statuses;
  console.log(
    `Ingested ${report.items.length} archive${report.items.length === 1 ? "" : "s"}: ` +
      `${a.ingested} new, ${a["new-version"]} new versions, ${a.unchanged} unchanged, ${a.resumed} resumed, ${a.failed} failed; ` +
      `${s.valid} valid, ${s.quarantined} quarantined, ${s.rejected} rejected, ${s.superseded} superseded` +
      `${s.withdrawn > 0 ? `, ${s.withdrawn} from withdrawn participants (kept raw, not written)` : ""}; ` +
      `${report.filesWritten} dataset files written.`,
  );
}

function printReprocessReport(report: ReprocessReport): void {
  for (const item of report.items) {
    if (item.status !== "valid")
      console.log(`${item.status ?? "error"}: ${item.recordId ?? item.source}: ${item.message}`);
  }
  const moves = Object.entries(report.moves).map(([m, n]) => `${m} ${n}`);
  const fixed = report.moves["quarantined→valid"] ?? 0;
  console.log(
    `Reprocessed ${report.items.length} upload${report.items.length === 1 ? "" : "s"}: ${fixed} moved from quarantine to valid` +
      `${moves.length ? ` (${moves.join(", ")})` : ""}; ${report.filesWritten} dataset files written.`,
  );
}

function shortUrl(url: string): string {
  return url.replace(/^https?:\/\/[^/]+\//, "");
}

function indent(text: string, n: number): string {
  return text
    .split("\n")
    .map((l) => " ".repeat(n) + l)
    .join("\n");
}

/** Runs the CLI and returns its exit code (the binary sets process.exitCode from it). */
export async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv as string[], { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === "commander.helpDisplayed" || err.code === "commander.version" || err.code === "commander.help")
        return 0;
      return EXIT_USAGE;
    }
    if (err instanceof UsageError) {
      console.error(`studylake: ${err.message}`);
      return EXIT_USAGE;
    }
    console.error(`studylake: ${(err as Error).message}`);
    return EXIT_FAILURE;
  }
}
