// `npm run demo`: makes an embedded workspace in .demo/, ingests the bundled real upload plus a generated
// day of uploads (mostly valid, some broken in every way intake guards against), and prints the summary.
import { execFileSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { planBatch, writeBatch } from "../dist/synth/generate.js";

const repo = fileURLToPath(new URL("..", import.meta.url));
const demo = path.join(repo, ".demo");
const generated = path.join(demo, "incoming");
const cli = (...args) => {
  console.log(`\n$ studylake ${args.join(" ")}`);
  execFileSync(process.execPath, [path.join(repo, "dist/cli/bin.js"), ...args], { stdio: "inherit" });
};

rmSync(demo, { recursive: true, force: true });
const kinds = planBatch(
  200,
  { valid: 85, "invalid-schema": 4, "not-json": 2, truncated: 2, "unsafe-path": 2, bomb: 2, "missing-metadata": 3 },
  2024,
);
await writeBatch(generated, kinds, { seed: 2024 });
console.log(
  `Generated ${kinds.length} synthetic uploads in ${path.relative(repo, generated)}/ (see src/synth/generate.ts).`,
);

cli("init", demo);
cli(
  "-w",
  demo,
  "ingest",
  path.join(repo, "sample", "uploads"),
  generated,
  "--study",
  "demo-study",
  "--sharing-scope",
  "all_qualified_researchers",
);
cli("-w", demo, "status", "--limit", "5");
cli("-w", demo, "show", "OCJByUtSrVTYtqObYp7XZV_J");
cli("-w", demo, "relationalize");
cli(
  "-w",
  demo,
  "query",
  "SELECT sensorType, count(*) AS samples, round(avg(x), 4) AS mean_x FROM MotionRecord_v1 GROUP BY 1 ORDER BY 2 DESC",
);
// Every relationalized table is also a lake dataset: a user with a grant queries it through governed SQL.
cli("-w", demo, "datasets");
cli("-w", demo, "users", "create", "ana", "--role", "analyst");
cli("-w", demo, "grant", "read", "tier:restricted", "--to", "role:analyst");
cli("-w", demo, "query", "--as", "ana", "SELECT count(*) AS weather_records FROM WeatherResult_v1");

// Participants' current sharing scopes: most share, some only with sponsors, some withdrew.
const scopes = ["ALL_QUALIFIED_RESEARCHERS", "ALL_QUALIFIED_RESEARCHERS", "SPONSORS_AND_PARTNERS", "NO_SHARING"];
const participants = path.join(demo, "participants.csv");
writeFileSync(
  participants,
  ["healthCode,sharingScope", ...Array.from({ length: 50 }, (_, i) => `participant-${i},${scopes[i % 4]}`)].join("\n"),
);
cli("-w", demo, "participants", "import", participants);
cli("-w", demo, "export", "--start", "2022-02-08T00:00:00Z", "--end", "2022-02-16T00:00:00Z");
console.log(`\nResearcher tables: ${path.relative(repo, path.join(demo, "exports"))}/`);
console.log(
  `\nJSON datasets: ${path.relative(repo, path.join(demo, "json"))}/  Parquet tables: ${path.relative(repo, path.join(demo, "parquet"))}/  quarantine reports: ${path.relative(repo, path.join(demo, "quarantine"))}/`,
);
