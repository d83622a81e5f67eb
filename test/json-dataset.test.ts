import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { DatasetMapping, datasetIdFor, SchemaMapping } from "../src/bucket/dataset-id.js";
import { DocumentShapeError, datasetFileName, datasetKey, datasetLine } from "../src/bucket/json-dataset.js";
import { FIXTURES } from "./support/workspace.js";

const ctx = {
  datasetId: "MotionRecord_v1",
  recordId: "rec",
  assessmentId: "spelling",
  date: { year: 2022, month: 2, day: 15 },
  uploadMetadata: { recordid: "rec", uploadedon: "2022-02-15T18:48:15.890Z" },
};

describe("JSON dataset files", () => {
  it("lays keys out as the reference does, unpadded, with a 0 before names Glue would hide", () => {
    expect(datasetKey("MotionRecord_v1", "spelling", { year: 2022, month: 2, day: 5 }, "abc")).toBe(
      "dataset=MotionRecord_v1/assessmentid=spelling/year=2022/month=2/day=5/abc.ndjson",
    );
    expect(datasetFileName("_WmIJ")).toBe("0_WmIJ.ndjson");
    expect(datasetFileName(".x")).toBe("0.x.ndjson");
  });

  it("adds the partition fields to an object, keeping number text exactly", () => {
    const line = datasetLine('{ "a" : 1.0, "b": 0.59999999999999998, "c": 1.647799492759E9, "d": "é" }', ctx);
    expect(line).toBe(
      '{"a":1.0,"b":0.59999999999999998,"c":1.647799492759E9,"d":"é","assessmentid":"spelling","year":2022,"month":2,"day":15,"recordid":"rec"}',
    );
  });

  it("adds them to each element of a top-level array, and refuses arrays of non-objects", () => {
    const line = datasetLine('[{"x":1},{"x":2}]', ctx);
    expect(JSON.parse(line)).toEqual([
      { x: 1, assessmentid: "spelling", year: 2022, month: 2, day: 15, recordid: "rec" },
      { x: 2, assessmentid: "spelling", year: 2022, month: 2, day: 15, recordid: "rec" },
    ]);
    expect(() => datasetLine("[1,2]", ctx)).toThrow(DocumentShapeError);
    expect(() => datasetLine('"text"', ctx)).toThrow(DocumentShapeError);
  });

  it("gives ArchiveMetadata documents the date parts and every upload-metadata field instead", () => {
    const line = datasetLine('{"appName":"A","recordid":"old"}', { ...ctx, datasetId: "ArchiveMetadata_v1" });
    expect(JSON.parse(line)).toEqual({
      appName: "A",
      recordid: "rec",
      year: 2022,
      month: 2,
      day: 15,
      uploadedon: "2022-02-15T18:48:15.890Z",
    });
  });

  it("maps datasets with the reference's own mappings (its test's cases)", () => {
    const dir = path.join(FIXTURES, "bridgedownstream-config");
    const schemas = SchemaMapping.parse(JSON.parse(readFileSync(path.join(dir, "schema_mapping.json"), "utf8")));
    const legacy = DatasetMapping.parse(JSON.parse(readFileSync(path.join(dir, "dataset_mapping.json"), "utf8")));
    const id = (schemaId: string | undefined, a: string, r: string, f: string) =>
      datasetIdFor(schemas, legacy, schemaId, a, r, f);
    expect(
      id(
        "https://sage-bionetworks.github.io/mobile-client-json/schemas/v2/ArchiveMetadata.json",
        "x",
        "1",
        "metadata.json",
      ),
    ).toBe("ArchiveMetadata_v1");
    expect(id(undefined, "dccs", "5", "motion.json")).toBe("MotionRecord_v1");
    expect(id(undefined, "jellybeanz", "5", "motion.json")).toBeNull();
    expect(id(undefined, "dccs", "-1", "motion.json")).toBeNull();
    expect(id(undefined, "dccs", "5", "jellybeanz.json")).toBeNull();
    expect(id("https://unknown/schema.json", "dccs", "5", "weather.json")).toBe("WeatherResult_v1");
  });
});
