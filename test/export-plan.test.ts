import { writeFile } from "node:fs/promises";
import path from "node:path";
import { DateTime } from "luxon";
import { describe, expect, it } from "vitest";
import type { Config } from "../src/config/config.js";
import { readParticipants } from "../src/export/participants.js";
import { planExport, schemaOf, selectionOf, yesterday } from "../src/export/plan.js";
import { parseExportRequest } from "../src/export/request.js";
import { Intake } from "../src/intake/intake.js";
import { writeBatch } from "../src/synth/generate.js";
import { POSTGRES_URL, postgresAvailable, tempDir, uniqueSchema, workspacePerTest } from "./support/workspace.js";

const pgReady = await postgresAvailable();
const SCOPES = ["no_sharing", "sponsors_and_partners", "all_qualified_researchers"];
const ORDER = ["NO_SHARING", "SPONSORS_AND_PARTNERS", "ALL_QUALIFIED_RESEARCHERS"];

describe("export selection", () => {
  it("reads a date as a calendar day in the configured zone, and defaults to yesterday there", () => {
    const request = parseExportRequest({ date: "2026-11-23" });
    expect(selectionOf(request, "America/Los_Angeles", new Date())).toEqual({
      kind: "window",
      start: "2026-11-23T08:00:00.000Z",
      end: "2026-11-24T08:00:00.000Z",
    });
    expect(yesterday("America/Los_Angeles", new Date("2026-11-24T05:00:00Z"))).toBe("2026-11-22");
    expect(yesterday("UTC", new Date("2026-11-24T05:00:00Z"))).toBe("2026-11-23");
    expect(schemaOf("MotionRecord_v1")).toEqual({ schemaId: "MotionRecord", revision: 1 });
    expect(schemaOf("taskData")).toEqual({ schemaId: "taskData", revision: 1 });
  });

  it("reads participants from CSV and refuses an unknown scope, naming the row", async () => {
    const dir = await tempDir();
    await writeFile(
      path.join(dir, "p.csv"),
      "healthCode,sharingScope\np1,all_qualified_researchers\np2, SPONSORS_AND_PARTNERS\n",
    );
    expect(await readParticipants(path.join(dir, "p.csv"))).toEqual([
      { healthCode: "p1", scope: "ALL_QUALIFIED_RESEARCHERS" },
      { healthCode: "p2", scope: "SPONSORS_AND_PARTNERS" },
    ]);
    await writeFile(path.join(dir, "bad.csv"), "healthCode,sharingScope\np1,all\n");
    await expect(readParticipants(path.join(dir, "bad.csv"))).rejects.toThrow(
      /bad\.csv row 1: sharingScope 'all' is not one of NO_SHARING/,
    );
  });
});

function planSuite(name: string, state: () => Config["state"] | undefined) {
  describe(`export plan on ${name}`, () => {
    const workspace = workspacePerTest(state);

    it("applies each participant's current scope, the whitelists and the studies configured, and counts it all", async () => {
      const t = await workspace({ export: { timezone: "America/Los_Angeles", studies: ["s1", "s2"] } });
      // Three studies (s3 is not configured for export), every upload-time scope, a spread of upload days.
      const uploads: Array<{ recordId: string; study: string; scope: string; healthCode: string; uploadedOn: string }> =
        [];
      const intake = new Intake(t.ws);
      for (const [i, study] of ["s1", "s2", "s3"].entries()) {
        for (const [j, scope] of SCOPES.entries()) {
          const dir = await tempDir();
          const batch = await writeBatch(dir, Array(6).fill("valid"), { seed: 100 + i * 10 + j, participants: 6 });
          await intake.ingest([dir], { metadata: { studyid: study, sharingscope: scope } });
          for (const u of batch)
            uploads.push({
              recordId: u.recordId,
              study,
              scope,
              healthCode: u.metadata.healthcode as string,
              uploadedOn: u.metadata.uploadedon as string,
            });
        }
      }
      // Participants' current scopes: participant-0 withdrew, participant-1 shares with sponsors, the rest with all; participant-5 is unknown.
      const current = new Map<string, string>();
      for (let p = 0; p < 5; p++)
        current.set(
          `participant-${p}`,
          p === 0 ? "NO_SHARING" : p === 1 ? "SPONSORS_AND_PARTNERS" : "ALL_QUALIFIED_RESEARCHERS",
        );
      await t.ws.state.exports.setScopes([...current].map(([healthCode, scope]) => ({ healthCode, scope })));

      const plan = await planExport(
        t.ws,
        parseExportRequest({ recordIds: uploads.map((u) => u.recordId), sharingMode: "SHARED" }),
      );

      // Expected, worked out here from the rules: the more restrictive scope; SHARED takes the two sharing scopes.
      const effective = (u: (typeof uploads)[number]) =>
        ORDER[
          Math.min(ORDER.indexOf(u.scope.toUpperCase()), ORDER.indexOf(current.get(u.healthCode) ?? "NO_SHARING"))
        ] as string;
      const exported = uploads.filter((u) => effective(u) !== "NO_SHARING" && u.study !== "s3");
      const counters = plan.metrics.toJSON().counters;
      expect(counters.numTotal).toBe(uploads.length);
      for (const scope of ORDER) {
        const n = uploads.filter((u) => effective(u) === scope).length;
        expect(counters[`${scope === "NO_SHARING" ? "excluded" : "accepted"}[${scope}]`] ?? 0).toBe(n);
      }
      expect(counters.unknownParticipant).toBe(uploads.filter((u) => !current.has(u.healthCode)).length);
      expect(counters["excluded[study-not-exported]"]).toBe(uploads.filter((u) => u.study === "s3").length);
      expect(new Set(plan.records.map((r) => r.record.recordId))).toEqual(new Set(exported.map((u) => u.recordId)));
      for (const r of plan.records) {
        expect(r.documents.map((d) => d.table.key)).toEqual(
          // Two of the archive's files are audio level records.
          ["ArchiveMetadata", "AudioLevelRecord", "AudioLevelRecord", "MotionRecord", "WeatherResult"].map(
            (s) => `${r.record.studyId}-${s}-v1`,
          ),
        );
      }
      expect(plan.studies).toEqual(["s1", "s2"]);
      const distinct = plan.metrics.toJSON().distinctCounts;
      expect(distinct["uniqueHealthCodes[s1]"]).toBe(
        new Set(exported.filter((u) => u.study === "s1").map((u) => u.healthCode)).size,
      );
      expect(JSON.stringify(plan.metrics)).not.toContain("participant-");

      // A withdrawal applies to every later export, and a table whitelist keeps only the tables it names.
      await t.ws.state.exports.setScopes([{ healthCode: "participant-2", scope: "NO_SHARING" }]);
      current.set("participant-2", "NO_SHARING");
      const again = await planExport(
        t.ws,
        parseExportRequest({
          recordIds: uploads.map((u) => u.recordId),
          sharingMode: "SHARED",
          tableWhitelist: [{ studyId: "s1", schemaId: "MotionRecord", revision: 1 }],
        }),
      );
      const stillExported = uploads.filter((u) => effective(u) !== "NO_SHARING" && u.study === "s1");
      expect(new Set(again.records.map((r) => r.record.recordId))).toEqual(
        new Set(stillExported.map((u) => u.recordId)),
      );
      expect(
        again.records.every((r) => r.documents.length === 1 && r.documents[0]?.table.key === "s1-MotionRecord-v1"),
      ).toBe(true);

      // A date selects the uploads of that calendar day in the export zone.
      const day = DateTime.fromISO(uploads[0]!.uploadedOn).setZone("America/Los_Angeles").toISODate() as string;
      const byDate = await planExport(t.ws, parseExportRequest({ date: day, sharingMode: "ALL" }));
      const onDay = uploads.filter(
        (u) => DateTime.fromISO(u.uploadedOn).setZone("America/Los_Angeles").toISODate() === day,
      );
      expect(byDate.metrics.counter("numTotal")).toBe(onDay.length);
    });
  });
}

planSuite("SQLite", () => undefined);
describe.skipIf(!pgReady)("PostgreSQL", () => {
  planSuite("PostgreSQL", () => ({ kind: "postgres", url: POSTGRES_URL, schema: uniqueSchema() }));
});
