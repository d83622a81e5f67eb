/**
 * The reference exporter's TSV (opencsv with a TAB separator): every non-null field in double quotes, `"` and
 * `\` doubled inside, null written as nothing, newlines and tabs kept as they are inside the quotes, `\n`
 * line ends, a header row first.
 */
export function tsvRow(values: ReadonlyArray<string | null | undefined>): string {
  return `${values.map((v) => (v === null || v === undefined ? "" : `"${v.replace(/\\/g, "\\\\").replace(/"/g, '""')}"`)).join("\t")}\n`;
}

export function tsvTable(
  columns: readonly string[],
  rows: ReadonlyArray<Readonly<Record<string, string | null>>>,
): string {
  return tsvRow(columns) + rows.map((row) => tsvRow(columns.map((c) => row[c] ?? null))).join("");
}
