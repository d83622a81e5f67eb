import { z } from "zod";
import type { ExportMetrics } from "./metrics.js";

/** Sharing scopes, from the most restrictive to the least. */
export const SharingScope = z.enum(["NO_SHARING", "SPONSORS_AND_PARTNERS", "ALL_QUALIFIED_RESEARCHERS"]);
export type SharingScope = z.infer<typeof SharingScope>;

/** Which effective scopes an export accepts. */
export const SharingMode = z.enum(["ALL", "SHARED", "PUBLIC_ONLY"]);
export type SharingMode = z.infer<typeof SharingMode>;

const ACCEPTED: Record<SharingMode, readonly SharingScope[]> = {
  ALL: ["NO_SHARING", "SPONSORS_AND_PARTNERS", "ALL_QUALIFIED_RESEARCHERS"],
  SHARED: ["SPONSORS_AND_PARTNERS", "ALL_QUALIFIED_RESEARCHERS"],
  PUBLIC_ONLY: ["ALL_QUALIFIED_RESEARCHERS"],
};

/** A scope as written (any case, `-` or `_`); null when it names none. */
export function strictScope(value: unknown): SharingScope | null {
  if (typeof value !== "string") return null;
  const parsed = SharingScope.safeParse(value.trim().toUpperCase().replace(/-/g, "_"));
  return parsed.success ? parsed.data : null;
}

/** A scope as sent with a record; missing, blank or unknown counts as NO_SHARING, never as sharing. */
export function parseScope(value: unknown): SharingScope {
  return strictScope(value) ?? "NO_SHARING";
}

/** The more restrictive of the scope at upload and the participant's current one. */
export function effectiveScope(recordScope: unknown, participantScope: unknown): SharingScope {
  const order = SharingScope.options;
  const a = order.indexOf(parseScope(recordScope));
  const b = order.indexOf(parseScope(participantScope));
  return order[Math.min(a, b)] as SharingScope;
}

export interface TableKey {
  studyId: string;
  schemaId: string;
  revision: number;
}

export interface FilterSettings {
  sharingMode: SharingMode;
  studyWhitelist?: ReadonlySet<string>;
  tableWhitelist?: readonly TableKey[];
  /** Studies configured for export; a record of another study is excluded. */
  exportableStudies?: ReadonlySet<string>;
}

export interface RecordFacts {
  studyId: string;
  schemaId: string | null;
  schemaRevision: number | null;
  /** Scope captured at upload. */
  recordScope: unknown;
  /** The participant's scope now (undefined: unknown participant). */
  participantScope: unknown;
}

export type Exclusion = "sharing" | "study-whitelist" | "table-whitelist" | "study-not-exported";

/**
 * Decides whether a record is exported. Every rule is evaluated (none short-circuits), so every outcome is
 * counted: `accepted[SCOPE]`/`excluded[SCOPE]` with the effective scope, `accepted[study]`/`excluded[study]`
 * for the study whitelist, `accepted[study-schema-vN]`/`excluded[…]` (`excluded[study-default]` for a record
 * without a schema) for the table whitelist, and `excluded[study-not-exported]`.
 */
export function filterRecord(facts: RecordFacts, settings: FilterSettings, metrics: ExportMetrics): Exclusion[] {
  const excluded: Exclusion[] = [];
  const scope = effectiveScope(facts.recordScope, facts.participantScope);
  if (ACCEPTED[settings.sharingMode].includes(scope)) metrics.increment(`accepted[${scope}]`);
  else {
    metrics.increment(`excluded[${scope}]`);
    excluded.push("sharing");
  }
  if (settings.studyWhitelist) {
    if (settings.studyWhitelist.has(facts.studyId)) metrics.increment(`accepted[${facts.studyId}]`);
    else {
      metrics.increment(`excluded[${facts.studyId}]`);
      excluded.push("study-whitelist");
    }
  }
  if (settings.tableWhitelist) {
    const schema =
      facts.schemaId === null || facts.schemaRevision === null
        ? null
        : { schemaId: facts.schemaId, revision: facts.schemaRevision };
    if (!tableAllowed(facts.studyId, schema, settings.tableWhitelist, metrics)) excluded.push("table-whitelist");
  }
  if (settings.exportableStudies && !settings.exportableStudies.has(facts.studyId)) {
    metrics.increment("excluded[study-not-exported]");
    excluded.push("study-not-exported");
  }
  return excluded;
}

/**
 * The table whitelist for one study and schema: counted `accepted[study-schema-vN]` or `excluded[…]`; a record
 * without a schema never passes (`excluded[study-default]`).
 */
export function tableAllowed(
  studyId: string,
  schema: { schemaId: string; revision: number } | null,
  whitelist: readonly TableKey[],
  metrics: ExportMetrics,
): boolean {
  if (!schema) {
    metrics.increment(`excluded[${studyId}-default]`);
    return false;
  }
  const key = `${studyId}-${schema.schemaId}-v${schema.revision}`;
  const listed = whitelist.some(
    (t) => t.studyId === studyId && t.schemaId === schema.schemaId && t.revision === schema.revision,
  );
  metrics.increment(`${listed ? "accepted" : "excluded"}[${key}]`);
  return listed;
}
