import { z } from "zod";
import { SafeId } from "../storage/safe-id.js";

/**
 * Metadata of one upload. Keys are lower-case and values strings, as S3 object metadata carries them
 * (see the fixture's `*.zip.metadata.json`); keys beyond the known ones are kept as they are.
 */
export const UploadMetadata = z
  .object({
    recordid: SafeId,
    /** The participant (Bridge's health code). */
    healthcode: z.string().min(1),
    assessmentid: SafeId,
    assessmentrevision: z.string().regex(/^-?\d+$/, "must be a whole number"),
    /** ISO-8601 time with a zone; date partitions come from its UTC date. */
    uploadedon: z.iso.datetime({ offset: true }),
    appid: z.string().min(1),
    studyid: z.string().min(1).optional(),
    clientinfo: z.string().optional(),
    /** The participant's sharing scope at upload time, as the app sent it (the exporter interprets it). */
    sharingscope: z.string().optional(),
    /** Comma-separated. */
    datagroups: z.string().optional(),
  })
  .catchall(z.string());
export type UploadMetadata = z.infer<typeof UploadMetadata>;

export class MetadataError extends Error {
  override name = "MetadataError";
}

/** The parts of upload metadata an archive's file name gives: `<recordId>-<assessment>.zip`. */
export function metadataFromFileName(fileName: string): Record<string, string> {
  const stem = fileName.replace(/\.zip$/i, "");
  // Bridge record ids are 24 characters and may themselves hold '-', so prefer that split when it fits.
  const bridge = /^([A-Za-z0-9_-]{24})-(.+)$/.exec(stem);
  const generic = /^([^-]+)-(.+)$/.exec(stem);
  const match = bridge ?? generic;
  if (!match?.[1] || !match[2]) return { recordid: stem };
  return { recordid: match[1], assessmentid: match[2] };
}

/**
 * Merges metadata sources, later ones winning: file name, then defaults, then sidecar, then CLI flags.
 * The file name is the weakest source because it is the least precise (`mtbSpelling` vs `spelling`).
 */
export function mergeMetadata(...sources: Array<Record<string, unknown> | undefined>): Record<string, string> {
  const merged: Record<string, string> = {};
  for (const source of sources) {
    if (!source) continue;
    for (const [key, value] of Object.entries(source)) {
      if (value === undefined || value === null) continue;
      merged[key.toLowerCase()] = typeof value === "string" ? value : JSON.stringify(value);
    }
  }
  return merged;
}

/** Validates merged metadata; a missing or malformed field is an error naming it. */
export function parseMetadata(raw: Record<string, string>): UploadMetadata {
  const parsed = UploadMetadata.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const field = issue?.path.join(".") || "(metadata)";
  if (issue && raw[field] === undefined) throw new MetadataError(`metadata: missing required field '${field}'`);
  throw new MetadataError(`metadata: field '${field}' ${issue?.message ?? "is invalid"} (got '${raw[field]}')`);
}

/** The UTC date of the upload, as the reference partitions it (integers, not zero-padded). */
export function uploadDateParts(uploadedOn: string): { year: number; month: number; day: number } {
  const date = new Date(uploadedOn);
  return { year: date.getUTCFullYear(), month: date.getUTCMonth() + 1, day: date.getUTCDate() };
}
