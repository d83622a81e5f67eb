import { readFile } from "node:fs/promises";
import path from "node:path";
import type { z } from "zod";
import { DatasetMapping, SchemaMapping } from "../bucket/dataset-id.js";
import { type Config, loadConfig } from "../config/config.js";
import { ArchiveMap } from "../resolve/archive-map.js";
import { SchemaRegistry } from "../resolve/schema-registry.js";
import { StateStore } from "../state/store.js";
import { LocalObjectStore, type ObjectStore } from "../storage/object-store.js";

/** The reference data that routes files: archive map, schema mapping, legacy dataset mapping, schemas. */
export interface ReferenceData {
  archiveMap: ArchiveMap;
  schemaMapping: SchemaMapping;
  datasetMapping: DatasetMapping;
  schemas: SchemaRegistry;
}

/** An open workspace: its configuration, its object stores and its state store. Close it when done. */
export interface Workspace {
  root: string;
  config: Config;
  raw: ObjectStore;
  json: ObjectStore;
  quarantine: ObjectStore;
  state: StateStore;
  reference: ReferenceData;
  close(): Promise<void>;
}

export class ReferenceDataError extends Error {
  override name = "ReferenceDataError";
}

export async function openWorkspace(root: string): Promise<Workspace> {
  const { root: base, config } = loadConfig(root);
  const at = (p: string) => path.resolve(base, p);
  const reference = await loadReferenceData(config, base);
  const state = await StateStore.open(config.state, base);
  return {
    root: base,
    config,
    raw: new LocalObjectStore(at(config.paths.raw)),
    json: new LocalObjectStore(at(config.paths.json)),
    quarantine: new LocalObjectStore(at(config.paths.quarantine)),
    state,
    reference,
    close: () => state.close(),
  };
}

/** Reads and checks the archive map and mappings the configuration names. */
export async function loadReferenceData(config: Config, root: string): Promise<ReferenceData> {
  const at = (p: string) => path.resolve(root, p);
  return {
    archiveMap: await readModel(at(config.archiveMap), ArchiveMap, "archive map"),
    schemaMapping: await readModel(at(config.schemaMapping), SchemaMapping, "schema mapping"),
    datasetMapping: await readModel(at(config.datasetMapping), DatasetMapping, "dataset mapping"),
    schemas: new SchemaRegistry(config.schemaLocations.map((l) => ({ urlPrefix: l.urlPrefix, folder: at(l.folder) }))),
  };
}

async function readModel<T extends z.ZodType>(file: string, model: T, what: string): Promise<z.infer<T>> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (err) {
    throw new ReferenceDataError(`${what} ${file}: ${(err as Error).message}`);
  }
  const parsed = model.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ReferenceDataError(`${what} ${file}: ${issue?.path.join(".") || "(top level)"}: ${issue?.message}`);
  }
  return parsed.data;
}
