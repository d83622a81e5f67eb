/**
 * Intake benchmark (not a test): archives/s and MB/s of `studylake ingest` end to end (hash, keep raw, record,
 * unzip, resolve, validate, write JSON datasets) on generated fixture-like uploads, beside the same run's
 * figure for bare unzip + JSON.parse, which is the ceiling for any intake that reads every file.
 *
 *   npm run bench:intake -- [count]       (default 2000)
 */
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pLimit from "p-limit";
import yauzl from "yauzl";
import { CONFIG_FILE } from "../src/config/config.js";
import { Intake } from "../src/intake/intake.js";
import { writeBatch } from "../src/synth/generate.js";
import { initWorkspace } from "../src/workspace/init.js";
import { openWorkspace } from "../src/workspace/workspace.js";

const count = Number(process.argv[2] ?? 2000);
let peakRss = 0;
const sampler = setInterval(() => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
}, 20);

function unzipAndParse(buffer: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    yauzl.fromBuffer(buffer, { lazyEntries: true }, (err, zip) => {
      if (err || !zip) return reject(err);
      let parsed = 0;
      zip.on("entry", (entry: yauzl.Entry) => {
        zip.openReadStream(entry, (e, stream) => {
          if (e || !stream) return reject(e);
          const chunks: Buffer[] = [];
          stream.on("data", (c: Buffer) => chunks.push(c));
          stream.on("end", () => {
            try {
              JSON.parse(Buffer.concat(chunks).toString("utf8"));
              parsed++;
            } catch {
              // `taskData` and friends are JSON too; anything else would simply not count.
            }
            zip.readEntry();
          });
        });
      });
      zip.on("end", () => resolve(parsed));
      zip.readEntry();
    });
  });
}

async function main(): Promise<void> {
  const base = path.join(os.tmpdir(), `studylake-bench-intake-${process.pid}`);
  const uploads = path.join(base, "uploads");
  await rm(base, { recursive: true, force: true });
  await mkdir(base, { recursive: true });
  console.log(`generating ${count} fixture-like uploads…`);
  await writeBatch(uploads, Array(count).fill("valid"), { seed: 11, days: 30 });
  const files = (await readdir(uploads)).filter((f) => f.endsWith(".zip")).map((f) => path.join(uploads, f));
  let bytes = 0;
  for (const f of files) bytes += (await readFile(f)).length;
  const mb = bytes / 1e6;

  // (a) reference: read + unzip + JSON.parse every entry, nothing else, with the same file concurrency as ingest.
  const limit = pLimit(8);
  let t0 = performance.now();
  await Promise.all(files.map((f) => limit(async () => unzipAndParse(await readFile(f)))));
  const bareSeconds = (performance.now() - t0) / 1000;

  // (b) studylake ingest, embedded default (local folders, SQLite), fsync of raw archives as configured by default.
  const ws = path.join(base, "workspace");
  await initWorkspace(ws);
  const config = JSON.parse(await readFile(path.join(ws, CONFIG_FILE), "utf8"));
  const variants: Array<[string, boolean]> = [
    ["studylake ingest (fsyncRaw: true, the default)", true],
    ["studylake ingest (fsyncRaw: false)", false],
  ];
  const results: Array<[string, number]> = [];
  for (const [label, fsyncRaw] of variants) {
    await rm(ws, { recursive: true, force: true });
    await initWorkspace(ws);
    await writeFile(path.join(ws, CONFIG_FILE), JSON.stringify({ ...config, fsyncRaw }));
    const workspace = await openWorkspace(ws);
    t0 = performance.now();
    const report = await new Intake(workspace).ingest([uploads]);
    const seconds = (performance.now() - t0) / 1000;
    await workspace.close();
    if (report.statuses.valid !== count)
      throw new Error(`expected ${count} valid uploads, got ${JSON.stringify(report.statuses)}`);
    results.push([label, seconds]);
  }
  clearInterval(sampler);

  const line = (label: string, seconds: number) =>
    `${label.padEnd(48)} ${(count / seconds).toFixed(0).padStart(7)} archives/s ${(mb / seconds).toFixed(1).padStart(7)} MB/s`;
  console.log(`\n${count} archives, ${mb.toFixed(1)} MB, node ${process.version}, ${os.cpus().length} cores`);
  console.log(line("reference: unzip + JSON.parse alone", bareSeconds));
  for (const [label, seconds] of results) {
    console.log(`${line(label, seconds)}   ratio to reference ${(bareSeconds / seconds).toFixed(2)}`);
  }
  console.log(`peak RSS ${(peakRss / 1e6).toFixed(0)} MB`);
  await rm(base, { recursive: true, force: true });
}

await main();
