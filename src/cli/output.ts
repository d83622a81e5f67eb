import cliProgress from "cli-progress";

/** Columns aligned with spaces; the first row is the header. */
export function table(rows: ReadonlyArray<ReadonlyArray<string | number | null>>): string {
  const cells = rows.map((r) => r.map((c) => (c === null ? "" : String(c))));
  const widths: number[] = [];
  for (const row of cells) {
    row.forEach((c, i) => {
      widths[i] = Math.max(widths[i] ?? 0, c.length);
    });
  }
  return cells
    .map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join("  "))
    .join("\n");
}

/** JSON on stdout; 64-bit integers (DuckDB's BIGINT) as numbers when exact, else as strings. */
export function printJson(value: unknown): void {
  const replacer = (_key: string, v: unknown) =>
    typeof v === "bigint" ? (Number.isSafeInteger(Number(v)) ? Number(v) : v.toString()) : v;
  process.stdout.write(`${JSON.stringify(value, replacer, 2)}\n`);
}

/**
 * A list command's output: the items as JSON with `--json`; otherwise a line saying there are none (and how to
 * get some), or the text `render` makes of them.
 */
export function printList<T>(
  items: readonly T[],
  json: boolean | undefined,
  none: string,
  render: (items: readonly T[]) => string,
): void {
  if (json) printJson(items);
  else console.log(items.length === 0 ? none : render(items));
}

export interface Progress {
  /** `total` may grow as work is found (for example a dataset at a time). */
  update(done: number, total: number): void;
  stop(): void;
}

/** A progress bar on stderr, only when a person is watching (a TTY) and the output is not JSON. */
export function progress(label: string, enabled: boolean): Progress {
  if (!enabled || !process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} [{bar}] {value}/{total} {percentage}% | {rate}/s | eta {eta_formatted}`,
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  const started = Date.now();
  let running = false;
  return {
    update(done, total) {
      if (!running) {
        bar.start(total, 0, { rate: "0" });
        running = true;
      }
      if (bar.getTotal() !== total) bar.setTotal(total);
      const seconds = (Date.now() - started) / 1000;
      bar.update(done, { rate: seconds > 0 ? Math.round(done / seconds).toString() : "0" });
    },
    stop() {
      if (running) bar.stop();
    },
  };
}
