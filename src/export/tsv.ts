/** Text formats of a folder destination. */
export type TextFormat = "tsv" | "csv";

const SEPARATOR: Record<TextFormat, string> = { tsv: "\t", csv: "," };

/**
 * The reference exporter's TSV (opencsv with a TAB separator): every non-null field in double quotes, `"` and
 * `\` doubled inside, null written as nothing, newlines and tabs kept as they are inside the quotes, `\n`
 * line ends, a header row first. CSV is the same with commas and without the backslash doubling (RFC 4180).
 */
export function formatRow(format: TextFormat, values: ReadonlyArray<string | null | undefined>): string {
  const escapeBackslash = format === "tsv";
  return `${values
    .map((v) => {
      if (v === null || v === undefined) return "";
      const escaped = escapeBackslash ? v.replace(/\\/g, "\\\\") : v;
      return `"${escaped.replace(/"/g, '""')}"`;
    })
    .join(SEPARATOR[format])}\n`;
}

export function tsvRow(values: ReadonlyArray<string | null | undefined>): string {
  return formatRow("tsv", values);
}

export function formatTable(
  format: TextFormat,
  columns: readonly string[],
  rows: ReadonlyArray<Readonly<Record<string, string | null>>>,
): string {
  return (
    formatRow(format, columns) +
    rows
      .map((row) =>
        formatRow(
          format,
          columns.map((c) => row[c] ?? null),
        ),
      )
      .join("")
  );
}

export function tsvTable(
  columns: readonly string[],
  rows: ReadonlyArray<Readonly<Record<string, string | null>>>,
): string {
  return formatTable("tsv", columns, rows);
}

export class TextFormatError extends Error {
  override name = "TextFormatError";
}

/**
 * Reads back what `formatRow` writes: rows of cells, an empty unquoted cell being null. Used to rewrite a
 * table's earlier files when a redrive replaces some of their rows.
 */
export function parseRows(format: TextFormat, text: string): Array<Array<string | null>> {
  const separator = SEPARATOR[format];
  const rows: Array<Array<string | null>> = [];
  let row: Array<string | null> = [];
  let i = 0;
  while (i < text.length) {
    let cell: string | null = null;
    if (text[i] === '"') {
      let value = "";
      i++;
      for (;;) {
        if (i >= text.length) throw new TextFormatError("unterminated quoted field");
        const c = text[i] as string;
        if (c === '"') {
          if (text[i + 1] === '"') {
            value += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        if (c === "\\" && format === "tsv" && text[i + 1] === "\\") {
          value += "\\";
          i += 2;
          continue;
        }
        value += c;
        i++;
      }
      cell = value;
    }
    row.push(cell);
    const next = text[i];
    if (next === separator) i++;
    else if (next === "\n" || next === undefined) {
      rows.push(row);
      row = [];
      i++;
    } else throw new TextFormatError(`unexpected '${next}' after a field at offset ${i}`);
  }
  return rows;
}
