import { z } from "zod";
import { SafeId } from "../storage/safe-id.js";

/** Schema `$id` → dataset id (the reference's `schema_mapping.json`). */
export const SchemaMapping = z.record(z.string(), SafeId);
export type SchemaMapping = z.infer<typeof SchemaMapping>;

/** Legacy routing for files without a schema (the reference's `dataset_mapping.json`). */
export const DatasetMapping = z.object({
  assessmentIdentifier: z.record(
    z.string(),
    z.object({ assessmentRevision: z.record(z.string(), z.record(z.string(), SafeId)) }),
  ),
});
export type DatasetMapping = z.infer<typeof DatasetMapping>;

/** Files of the assessment revisions the legacy mapping lists, keyed by file name; undefined when it lists none. */
export function legacyFiles(
  mapping: DatasetMapping,
  assessmentId: string,
  revision: string,
): Readonly<Record<string, string>> | undefined {
  return mapping.assessmentIdentifier[assessmentId]?.assessmentRevision[revision];
}

/**
 * The dataset a file goes to: its schema's `$id` through the schema mapping, else the legacy mapping by
 * assessment, revision and file name. Null: the file is skipped.
 */
export function datasetIdFor(
  schemaMapping: SchemaMapping,
  datasetMapping: DatasetMapping,
  schemaId: string | undefined,
  assessmentId: string,
  revision: string,
  fileName: string,
): string | null {
  if (schemaId !== undefined) {
    const mapped = schemaMapping[schemaId];
    if (mapped) return mapped;
  }
  return legacyFiles(datasetMapping, assessmentId, revision)?.[fileName] ?? null;
}
