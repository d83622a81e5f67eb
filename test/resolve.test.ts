import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ArchiveMap, lookupName, resolveSchemaUrl, selfReferencesOf } from "../src/resolve/archive-map.js";
import {
  formatErrors,
  localSchemaPath,
  SchemaRegistry,
  SchemaUnavailableError,
} from "../src/resolve/schema-registry.js";
import { FIXTURES, SCHEMA_PREFIX } from "./support/workspace.js";

const realMap = ArchiveMap.parse(
  JSON.parse(readFileSync(path.join(FIXTURES, "mobile-client-json", "archive-map.json"), "utf8")),
);
const V2 = `${SCHEMA_PREFIX}schemas/v2/`;
const lookup = (fileName: string, over: Partial<Parameters<typeof resolveSchemaUrl>[1]> = {}) =>
  resolveSchemaUrl(realMap, {
    fileName,
    appId: "mobile-toolbox",
    assessmentId: "spelling",
    assessmentRevision: 5,
    selfReferences: new Map(),
    ...over,
  });

describe("schema resolution against the real archive map (v4.7.2)", () => {
  it("resolves each file of the fixture upload as the reference does", () => {
    expect(lookup("metadata.json")).toEqual({ url: `${V2}ArchiveMetadata.json`, source: "shared" });
    expect(lookup("motion.json")).toEqual({ url: `${V2}MotionRecord.json`, source: "app" });
    expect(lookup("weather.json")).toEqual({ url: `${V2}WeatherResult.json`, source: "app" });
    expect(lookup("microphone_levels.json")).toEqual({ url: `${V2}AudioLevelRecord.json`, source: "app" });
    expect(lookup("microphone.json")).toEqual({ url: `${V2}AudioLevelRecord.json`, source: "app" });
    expect(lookup("taskData.json")?.url).toBe(
      "https://raw.githubusercontent.com/MobileToolbox/MobileToolboxSchemas/0.9.8/OldCombinedSchema/taskData_combinedSchema.json",
    );
    // Listed in the shared anyOf, but without a schema.
    expect(lookup("info.json")).toBeNull();
    expect(lookup("taskResult.json")).toBeNull();
    expect(lookup("taskData")).toBeNull();
  });

  it("uses the assessment scope for assessments the map lists", () => {
    expect(lookup("right_tapping", { assessmentId: "finger-tapping", assessmentRevision: 3 })).toEqual({
      url: `${SCHEMA_PREFIX}schemas/v1/TappingResultObject.json`,
      source: "assessment",
    });
    // Revision 0 is below every listed revision: the assessment scope has no candidate, and no other scope lists the file.
    expect(lookup("right_tapping", { assessmentId: "finger-tapping", assessmentRevision: 0 })).toBeNull();
  });

  it("ignores an app the map does not list", () => {
    expect(lookup("motion.json", { appId: "another-app" })).toBeNull();
    expect(lookup("metadata.json", { appId: "another-app" })?.source).toBe("shared");
  });
});

describe("schema resolution rules", () => {
  const map = ArchiveMap.parse({
    anyOf: [
      { filename: "a.json", jsonSchema: "shared-a" },
      { filename: "b.json" },
      { filename: "b.json", jsonSchema: "shared-b" },
    ],
    assessments: [
      {
        assessmentIdentifier: "x",
        assessmentRevision: 1,
        files: [
          { filename: "a.json", jsonSchema: "x1-a" },
          { filename: "c.json", jsonSchema: "x1-c" },
        ],
      },
      { assessmentIdentifier: "x", assessmentRevision: 3, files: [{ filename: "a.json", jsonSchema: "x3-a" }] },
      { assessmentIdentifier: "x", assessmentRevision: 3, files: [{ filename: "a.json", jsonSchema: "x3-second" }] },
      { assessmentIdentifier: "x", assessmentRevision: 7, files: [{ filename: "a.json", jsonSchema: "x7-a" }] },
    ],
    apps: [
      {
        appId: "app",
        default: [
          { files: [{ filename: "d.json", jsonSchema: "org1-d" }] },
          {
            files: [
              { filename: "d.json", jsonSchema: "org2-d" },
              { filename: "e.json", jsonSchema: "org2-e" },
            ],
          },
        ],
        anyOf: [{ filename: "e.json", jsonSchema: "anyof-e" }, { filename: "f.json" }],
      },
    ],
  });
  const at = (fileName: string, assessmentRevision: number, selfReferences = new Map<string, string>()) =>
    resolveSchemaUrl(map, { fileName, appId: "app", assessmentId: "x", assessmentRevision, selfReferences })?.url ??
    null;

  it("takes the closest revision not above the record's, the first on ties", () => {
    expect(at("a.json", 5)).toBe("x3-a");
    expect(at("a.json", 7)).toBe("x7-a");
    expect(at("a.json", 2)).toBe("x1-a");
    expect(at("a.json", 0)).toBe("shared-a");
  });

  it("searches only the closest assessment entry, then falls through to app and shared scopes", () => {
    // c.json is only in revision 1; a record at revision 5 picks revision 3, which lacks it.
    expect(at("c.json", 5)).toBeNull();
    expect(at("c.json", 1)).toBe("x1-c");
  });

  it("prefers app anyOf over defaults, the last default across organizations, and stops at an app match without a schema", () => {
    expect(at("e.json", 1)).toBe("anyof-e");
    expect(at("d.json", 1)).toBe("org2-d");
    expect(at("f.json", 1)).toBeNull();
  });

  it("takes the first shared entry that names a schema", () => {
    expect(at("b.json", 1)).toBe("shared-b");
  });

  it("lets the archive's own metadata.json win over everything", () => {
    expect(at("a.json", 5, new Map([["a.json", "own-a"]]))).toBe("own-a");
    expect(
      selfReferencesOf({ files: [{ filename: "z.json", jsonSchema: "own-z" }, { filename: "n.json" }, "junk"] }),
    ).toEqual(new Map([["z.json", "own-z"]]));
    expect(selfReferencesOf([1, 2])).toEqual(new Map());
  });

  it("treats microphone.json as microphone_levels.json", () => {
    expect(lookupName("microphone.json")).toBe("microphone_levels.json");
    expect(lookupName("motion.json")).toBe("motion.json");
  });
});

describe("schema registry", () => {
  const locations = [{ urlPrefix: SCHEMA_PREFIX, folder: path.join(FIXTURES, "mobile-client-json") }];

  it("maps URLs to local files and never outside the folder", () => {
    expect(localSchemaPath(`${V2}MotionRecord.json#/definitions/x`, locations)).toBe(
      path.join(FIXTURES, "mobile-client-json", "schemas", "v2", "MotionRecord.json"),
    );
    expect(localSchemaPath(`${SCHEMA_PREFIX}../../../etc/passwd`, locations)).toBeNull();
    expect(localSchemaPath("https://example.org/x.json", locations)).toBeNull();
  });

  it("compiles a schema whose relative $ref names a sibling file, and validates the real example", async () => {
    const registry = new SchemaRegistry(locations);
    const weather = await registry.get(`${V2}WeatherResult.json`);
    expect(weather.id).toBe(`${V2}WeatherResult.json`);
    const example = JSON.parse(
      readFileSync(
        path.join(FIXTURES, "mobile-client-json", "examples", "v2", "WeatherResult", "WeatherResult_0.json"),
        "utf8",
      ),
    );
    expect(weather.validate(example)).toBe(true);
    expect(weather.validate({ ...example, weather: { ...example.weather, startDate: 12 } })).toBe(false);
    expect(await registry.get(`${V2}WeatherResult.json`)).toBe(weather);
  });

  it("reports a URL with no local copy by URL, without fetching", async () => {
    const registry = new SchemaRegistry(locations);
    const url =
      "https://raw.githubusercontent.com/MobileToolbox/MobileToolboxSchemas/0.9.8/OldCombinedSchema/taskData_combinedSchema.json";
    const err = await registry.get(url).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SchemaUnavailableError);
    expect((err as SchemaUnavailableError).url).toBe(url);
    const inFolderButMissing = await registry.get(`${V2}Nope.json`).catch((e: unknown) => e);
    expect((inFolderButMissing as Error).message).toMatch(/Nope\.json cannot be resolved: no local copy/);
  });

  it("formats errors with JSON pointers, readable details, and a cap", async () => {
    const registry = new SchemaRegistry(locations);
    const motion = await registry.get(`${V2}MotionRecord.json`);
    const doc = [{ uptime: "x", sensorType: "acceleration" }, { timestamp: "y" }, { uptime: "z" }];
    expect(motion.validate(doc)).toBe(false);
    const all = formatErrors(motion.validate.errors, 10);
    expect(all).toContainEqual({ pointer: "/0/uptime", message: "must be number" });
    expect(all.find((e) => e.pointer === "/0/sensorType")?.message).toMatch(
      /^must be equal to one of the allowed values: "accelerometer", "gyro"/,
    );
    expect(formatErrors(motion.validate.errors, 2)).toHaveLength(2);
  });
});
