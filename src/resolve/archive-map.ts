import { z } from "zod";
import type { SchemaSource } from "../state/models.js";

const FileRef = z
  .object({
    filename: z.string(),
    jsonSchema: z.string().optional(),
  })
  .loose();

/** The mobile-client-json archive map (v3 format): which JSON Schema each file of an upload has. */
export const ArchiveMap = z
  .object({
    anyOf: z.array(FileRef).default([]),
    assessments: z
      .array(
        z
          .object({
            assessmentIdentifier: z.string(),
            assessmentRevision: z.number().int(),
            files: z.array(FileRef).default([]),
          })
          .loose(),
      )
      .default([]),
    apps: z
      .array(
        z
          .object({
            appId: z.string(),
            default: z.array(z.object({ files: z.array(FileRef).default([]) }).loose()).default([]),
            anyOf: z.array(FileRef).default([]),
          })
          .loose(),
      )
      .default([]),
  })
  .loose();
export type ArchiveMap = z.infer<typeof ArchiveMap>;

export interface SchemaLookup {
  /** Base name of the file inside the archive. */
  fileName: string;
  appId: string;
  assessmentId: string;
  assessmentRevision: number;
  /** file name → schema URL, from the `files[].jsonSchema` of the archive's own metadata.json. */
  selfReferences: ReadonlyMap<string, string>;
}

export interface ResolvedSchema {
  url: string;
  source: SchemaSource;
}

/** `microphone.json` is an old name of `microphone_levels.json`: same schema, same dataset. */
export function lookupName(baseName: string): string {
  return baseName === "microphone.json" ? "microphone_levels.json" : baseName;
}

export function baseName(entryPath: string): string {
  const slash = entryPath.lastIndexOf("/");
  return slash === -1 ? entryPath : entryPath.slice(slash + 1);
}

/**
 * Finds the schema URL for one file, in the reference's order: the archive's own metadata.json, then the
 * assessment (closest revision not above the record's; only that entry), then the app (`anyOf` over
 * `default`), then the shared `anyOf` list (only entries that name a schema). The first scope that lists the
 * file decides, even when its entry names no schema. Null: the file has no schema.
 */
export function resolveSchemaUrl(map: ArchiveMap, lookup: SchemaLookup): ResolvedSchema | null {
  const name = lookupName(lookup.fileName);

  const own = lookup.selfReferences.get(name) ?? lookup.selfReferences.get(lookup.fileName);
  if (own) return { url: own, source: "archive-metadata" };

  let closest: ArchiveMap["assessments"][number] | undefined;
  for (const entry of map.assessments) {
    if (entry.assessmentIdentifier !== lookup.assessmentId) continue;
    if (entry.assessmentRevision > lookup.assessmentRevision) continue;
    if (!closest || entry.assessmentRevision > closest.assessmentRevision) closest = entry;
  }
  const fromAssessment = closest?.files.find((f) => f.filename === name);
  if (fromAssessment)
    return fromAssessment.jsonSchema ? { url: fromAssessment.jsonSchema, source: "assessment" } : null;

  const app = map.apps.find((a) => a.appId === lookup.appId);
  if (app) {
    let fromApp: { jsonSchema?: string | undefined } | undefined;
    for (const org of app.default) {
      for (const f of org.files) if (f.filename === name) fromApp = f;
    }
    for (const f of app.anyOf) if (f.filename === name) fromApp = f;
    // As in the reference, an app-scope match ends the search even when it names no schema.
    if (fromApp) return fromApp.jsonSchema ? { url: fromApp.jsonSchema, source: "app" } : null;
  }

  const shared = map.anyOf.find((f) => f.filename === name && f.jsonSchema);
  if (shared?.jsonSchema) return { url: shared.jsonSchema, source: "shared" };
  return null;
}

/** The `files[].jsonSchema` entries of an archive's metadata.json document, if it has any. */
export function selfReferencesOf(metadataDocument: unknown): Map<string, string> {
  const refs = new Map<string, string>();
  if (typeof metadataDocument !== "object" || metadataDocument === null) return refs;
  const files = (metadataDocument as { files?: unknown }).files;
  if (!Array.isArray(files)) return refs;
  for (const file of files) {
    if (typeof file !== "object" || file === null) continue;
    const { filename, jsonSchema } = file as { filename?: unknown; jsonSchema?: unknown };
    if (typeof filename === "string" && typeof jsonSchema === "string" && jsonSchema) refs.set(filename, jsonSchema);
  }
  return refs;
}
