import { readFile } from "node:fs/promises";
import path from "node:path";
import { parse as parseCsv } from "csv-parse/sync";
import { SharingScope, strictScope } from "./filter.js";

export interface ParticipantScope {
  healthCode: string;
  scope: SharingScope;
}

export class ParticipantsFileError extends Error {
  override name = "ParticipantsFileError";
}

/**
 * Reads participants' current sharing scopes from CSV (header `healthCode,sharingScope`), JSON (an array of
 * objects) or NDJSON. A row without a participant or with an unknown scope refuses the whole file, naming it.
 */
export async function readParticipants(file: string): Promise<ParticipantScope[]> {
  const text = await readFile(file, "utf8");
  const ext = path.extname(file).toLowerCase();
  let rows: Array<Record<string, unknown>>;
  try {
    if (ext === ".csv") rows = parseCsv(text, { columns: true, skip_empty_lines: true, trim: true });
    else if (ext === ".ndjson" || ext === ".jsonl")
      rows = text
        .split("\n")
        .filter((l) => l.trim())
        .map((l) => JSON.parse(l));
    else rows = JSON.parse(text);
  } catch (err) {
    throw new ParticipantsFileError(`${file}: cannot be read as ${ext.slice(1) || "JSON"}: ${(err as Error).message}`);
  }
  if (!Array.isArray(rows)) throw new ParticipantsFileError(`${file}: expected a list of participants`);
  return rows.map((row, i) => {
    const where = `${file} ${ext === ".csv" ? "row" : "entry"} ${i + 1}`;
    const healthCode = row.healthCode ?? row.healthcode;
    if (typeof healthCode !== "string" || healthCode.trim() === "")
      throw new ParticipantsFileError(`${where}: missing healthCode`);
    const scope = strictScope(row.sharingScope ?? row.sharingscope);
    if (!scope) {
      throw new ParticipantsFileError(
        `${where}: sharingScope '${String(row.sharingScope ?? row.sharingscope ?? "")}' is not one of ${SharingScope.options.join(", ")}`,
      );
    }
    return { healthCode: healthCode.trim(), scope };
  });
}
