import { readFile } from "node:fs/promises";
import path from "node:path";
import { Ajv, type AnySchemaObject, type ErrorObject, type ValidateFunction } from "ajv";
import type { ValidationMessage } from "../state/models.js";

export interface SchemaLocation {
  urlPrefix: string;
  folder: string;
}

export interface CompiledSchema {
  /** The URL it was asked for. */
  url: string;
  /** The schema's own `$id`, as written (the schema mapping is keyed on it). */
  id: string | undefined;
  validate: ValidateFunction;
}

/** A schema URL (or one it references) that has no local copy or cannot be used. Nothing is ever fetched. */
export class SchemaUnavailableError extends Error {
  override name = "SchemaUnavailableError";
  constructor(
    readonly url: string,
    readonly reason: string,
  ) {
    super(`schema ${url} cannot be resolved: ${reason}`);
  }
}

/** Maps a schema URL to a local file through the configured URL prefixes; null when none applies. */
export function localSchemaPath(url: string, locations: readonly SchemaLocation[]): string | null {
  const bare = url.split("#")[0] ?? url;
  for (const { urlPrefix, folder } of locations) {
    if (!bare.startsWith(urlPrefix)) continue;
    const rest = decodeURIComponent(bare.slice(urlPrefix.length));
    const root = path.resolve(folder);
    const file = path.resolve(root, rest);
    // A URL like `prefix/../../etc/passwd` must not leave the schema folder.
    if (file !== root && file.startsWith(root + path.sep)) return file;
  }
  return null;
}

/**
 * Loads JSON Schemas from local folders by URL and keeps one compiled validator per URL for the process.
 * Relative `$ref`s resolve against the URL a schema was loaded from, so sibling files are found locally.
 */
export class SchemaRegistry {
  private readonly ajv: Ajv;
  private readonly compiled = new Map<string, Promise<CompiledSchema>>();
  private readonly originalIds = new Map<string, string | undefined>();

  constructor(private readonly locations: readonly SchemaLocation[]) {
    this.ajv = new Ajv({
      strict: false,
      allErrors: true,
      // Like the reference (python-jsonschema's default), `format` is an annotation, not an assertion.
      validateFormats: false,
      loadSchema: (uri) => this.load(uri),
    });
  }

  /** The compiled schema for a URL; rejects with SchemaUnavailableError when it or a schema it references is missing. */
  get(url: string): Promise<CompiledSchema> {
    let entry = this.compiled.get(url);
    if (!entry) {
      entry = this.compile(url);
      this.compiled.set(url, entry);
    }
    return entry;
  }

  private async compile(url: string): Promise<CompiledSchema> {
    try {
      const validate = await this.ajv.compileAsync({ $ref: url });
      return { url, id: this.originalIds.get(stripFragment(url)), validate };
    } catch (err) {
      if (err instanceof SchemaUnavailableError) {
        throw err.url === url ? err : new SchemaUnavailableError(url, `it references ${err.url}: ${err.reason}`);
      }
      throw new SchemaUnavailableError(url, `it is not a usable JSON Schema: ${(err as Error).message}`);
    }
  }

  private async load(uri: string): Promise<AnySchemaObject> {
    const url = stripFragment(uri);
    const file = localSchemaPath(url, this.locations);
    if (!file) throw new SchemaUnavailableError(url, "no local copy (no configured schema location covers this URL)");
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch {
      throw new SchemaUnavailableError(url, `no local copy (expected at ${file})`);
    }
    let schema: AnySchemaObject;
    try {
      schema = JSON.parse(text);
    } catch (err) {
      throw new SchemaUnavailableError(url, `${file} is not JSON: ${(err as Error).message}`);
    }
    const originalId = typeof schema.$id === "string" ? schema.$id : undefined;
    this.originalIds.set(url, originalId);
    return { ...schema, $id: url };
  }
}

function stripFragment(url: string): string {
  const hash = url.indexOf("#");
  return hash === -1 ? url : url.slice(0, hash);
}

/** Turns ajv's errors into readable messages with JSON pointers, at most `max` of them. */
export function formatErrors(errors: readonly ErrorObject[] | null | undefined, max: number): ValidationMessage[] {
  const out: ValidationMessage[] = [];
  const seen = new Set<string>();
  for (const error of errors ?? []) {
    const message = describe(error);
    const key = `${error.instancePath}\0${message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ pointer: error.instancePath, message });
    if (out.length >= max) break;
  }
  return out;
}

function describe(error: ErrorObject): string {
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case "enum":
      return `${error.message}: ${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ")}`;
    case "additionalProperties":
      return `${error.message} ('${String(params.additionalProperty)}' was unexpected)`;
    case "const":
      return `${error.message} ${JSON.stringify(params.allowedValue)}`;
    default:
      return error.message ?? error.keyword;
  }
}
