import { describe, expect, it } from "vitest";
import {
  MetadataError,
  mergeMetadata,
  metadataFromFileName,
  parseMetadata,
  uploadDateParts,
} from "../src/intake/metadata.js";

const complete = {
  recordid: "r1",
  healthcode: "p1",
  assessmentid: "spelling",
  assessmentrevision: "5",
  uploadedon: "2022-02-15T18:48:15.890Z",
  appid: "mobile-toolbox",
};

describe("upload metadata", () => {
  it("reads record id and assessment from a Bridge archive name, even when the id holds '-'", () => {
    expect(metadataFromFileName("OCJByUtSrVTYtqObYp7XZV_J-mtbSpelling.zip")).toEqual({
      recordid: "OCJByUtSrVTYtqObYp7XZV_J",
      assessmentid: "mtbSpelling",
    });
    expect(metadataFromFileName("aZJfKCutJD42m-Ly9jx9tY1R-memory-for-sequences.zip")).toEqual({
      recordid: "aZJfKCutJD42m-Ly9jx9tY1R",
      assessmentid: "memory-for-sequences",
    });
    expect(metadataFromFileName("short-walk.zip")).toEqual({ recordid: "short", assessmentid: "walk" });
    expect(metadataFromFileName("plain.zip")).toEqual({ recordid: "plain" });
  });

  it("lets later sources win and lower-cases keys", () => {
    const merged = mergeMetadata(
      { recordid: "fromName", assessmentid: "mtbSpelling" },
      { AssessmentId: "spelling" },
      { recordid: "flag", x: 3 },
    );
    expect(merged).toEqual({ recordid: "flag", assessmentid: "spelling", x: "3" });
  });

  it("names a missing required field", () => {
    const { healthcode: _, ...rest } = complete;
    expect(() => parseMetadata(rest)).toThrow(new MetadataError("metadata: missing required field 'healthcode'"));
  });

  it("names a malformed field and what it got", () => {
    expect(() => parseMetadata({ ...complete, uploadedon: "yesterday" })).toThrow(
      /field 'uploadedon'.*\(got 'yesterday'\)/,
    );
    expect(() => parseMetadata({ ...complete, assessmentrevision: "five" })).toThrow(
      /'assessmentrevision' must be a whole number/,
    );
    expect(() => parseMetadata({ ...complete, recordid: "../etc" })).toThrow(/'recordid' may hold only/);
  });

  it("keeps unknown keys and accepts time zones other than Z", () => {
    const parsed = parseMetadata({ ...complete, uploadedon: "2022-02-15T23:30:00-08:00", sessionguid: "s" });
    expect(parsed.sessionguid).toBe("s");
    expect(uploadDateParts(parsed.uploadedon)).toEqual({ year: 2022, month: 2, day: 16 });
  });
});
