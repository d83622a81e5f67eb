import { describe, expect, it } from "vitest";
import { effectiveScope, filterRecord, parseScope, type SharingMode, type SharingScope } from "../src/export/filter.js";
import { ExportMetrics } from "../src/export/metrics.js";
import { parseExportRequest } from "../src/export/request.js";
import { columnsOf, parseTimestamp, sanitize, serializeField } from "../src/export/serialize.js";
import { tsvRow, tsvTable } from "../src/export/tsv.js";

const NO: SharingScope = "NO_SHARING";
const SP: SharingScope = "SPONSORS_AND_PARTNERS";
const ALL: SharingScope = "ALL_QUALIFIED_RESEARCHERS";

describe("sharing scope", () => {
  // The reference's RecordFilterHelperTest matrix: record scope × participant scope → effective scope,
  // then each sharing mode's accepted set.
  const effective: Array<[SharingScope, SharingScope, SharingScope]> = [
    [NO, NO, NO],
    [NO, SP, NO],
    [NO, ALL, NO],
    [SP, NO, NO],
    [SP, SP, SP],
    [SP, ALL, SP],
    [ALL, NO, NO],
    [ALL, SP, SP],
    [ALL, ALL, ALL],
  ];
  const accepts: Record<SharingMode, SharingScope[]> = { ALL: [NO, SP, ALL], SHARED: [SP, ALL], PUBLIC_ONLY: [ALL] };

  for (const [record, participant, scope] of effective) {
    for (const mode of ["ALL", "SHARED", "PUBLIC_ONLY"] as SharingMode[]) {
      const accepted = accepts[mode].includes(scope);
      it(`record ${record}, participant ${participant}, mode ${mode}: ${accepted ? "accepted" : "excluded"} as ${scope}`, () => {
        const metrics = new ExportMetrics();
        const excluded = filterRecord(
          { studyId: "s", schemaId: "x", schemaRevision: 1, recordScope: record, participantScope: participant },
          { sharingMode: mode },
          metrics,
        );
        expect(excluded).toEqual(accepted ? [] : ["sharing"]);
        expect(metrics.toJSON().counters).toEqual({ [`${accepted ? "accepted" : "excluded"}[${scope}]`]: 1 });
      });
    }
  }

  it("counts a missing, blank or unknown scope, or an unknown participant, as no sharing", () => {
    expect(parseScope(undefined)).toBe(NO);
    expect(parseScope("")).toBe(NO);
    expect(parseScope("everyone")).toBe(NO);
    expect(parseScope("sponsors_and_partners")).toBe(SP);
    expect(parseScope("all-qualified-researchers")).toBe(ALL);
    expect(effectiveScope(ALL, undefined)).toBe(NO);
  });
});

describe("whitelists", () => {
  it("evaluates every rule and counts each outcome", () => {
    const metrics = new ExportMetrics();
    const settings = {
      sharingMode: "SHARED" as const,
      studyWhitelist: new Set(["study1"]),
      tableWhitelist: [{ studyId: "study1", schemaId: "walk", revision: 2 }],
      exportableStudies: new Set(["study1", "study2"]),
    };
    const base = { recordScope: ALL, participantScope: ALL };
    expect(
      filterRecord({ ...base, studyId: "study1", schemaId: "walk", schemaRevision: 2 }, settings, metrics),
    ).toEqual([]);
    expect(
      filterRecord({ ...base, studyId: "study1", schemaId: "walk", schemaRevision: 3 }, settings, metrics),
    ).toEqual(["table-whitelist"]);
    expect(
      filterRecord({ ...base, studyId: "study1", schemaId: null, schemaRevision: null }, settings, metrics),
    ).toEqual(["table-whitelist"]);
    expect(
      filterRecord(
        { recordScope: NO, participantScope: ALL, studyId: "study3", schemaId: "walk", schemaRevision: 2 },
        settings,
        metrics,
      ),
    ).toEqual(["sharing", "study-whitelist", "table-whitelist", "study-not-exported"]);
    expect(metrics.toJSON().counters).toEqual({
      "accepted[ALL_QUALIFIED_RESEARCHERS]": 3,
      "excluded[NO_SHARING]": 1,
      "accepted[study1]": 3,
      "excluded[study3]": 1,
      "accepted[study1-walk-v2]": 1,
      "excluded[study1-walk-v3]": 1,
      "excluded[study1-default]": 1,
      "excluded[study3-walk-v2]": 1,
      "excluded[study-not-exported]": 1,
    });
  });

  it("keeps distinct counts without showing the values", () => {
    const metrics = new ExportMetrics();
    for (const p of ["p1", "p2", "p1"]) metrics.addDistinct("uniqueHealthCodes[study1]", p);
    metrics.addValue("uniqueAppVersions[study1]", "73");
    metrics.addValue("uniqueAppVersions[study1]", "12");
    expect(metrics.toJSON()).toEqual({
      counters: {},
      distinctCounts: { "uniqueHealthCodes[study1]": 2 },
      values: { "uniqueAppVersions[study1]": ["12", "73"] },
    });
    expect(JSON.stringify(metrics)).not.toContain("p1");
  });
});

describe("value serialization", () => {
  it("sanitizes strings as the reference's tests assert", () => {
    const cases: Array<[string, number | undefined, string]> = [
      ["<b>bold text</b>", undefined, "bold text"],
      ["imbalanced</i> <p>tags", undefined, "imbalanced tags"],
      ["newlines\n\n\nCRLF\r\ntabs\t\ttabs", undefined, "newlines CRLF tabs tabs"],
      ['quote"quote', undefined, 'quote"quote'],
      ['escaped\\"quote', undefined, 'escaped\\"quote'],
      ["1234567890", 4, "1234"],
      ["<p>123 456</p>", 5, "123 4"],
      ["asdf\njkl;\tlorem ipsum dolor", 10, "asdf jkl; "],
      ['<a href="sagebase.org">link</a>', undefined, "link"],
      ["a & b < c", undefined, "a &amp; b &lt; c"],
    ];
    for (const [input, max, expected] of cases) expect(sanitize(input, max).value).toBe(expected);
    expect(sanitize("1234567890", 4).truncated).toBe(true);
    expect(sanitize("1234", 4).truncated).toBe(false);
  });

  it("takes booleans only from JSON booleans, integers and floats only from numbers", () => {
    const cell = (type: "BOOLEAN" | "INT" | "FLOAT", v: unknown) =>
      serializeField({ name: "f", type }, v).cells.f ?? null;
    expect([cell("BOOLEAN", true), cell("BOOLEAN", false), cell("BOOLEAN", "true"), cell("BOOLEAN", 1)]).toEqual([
      "true",
      "false",
      null,
      null,
    ]);
    expect([cell("INT", 42), cell("INT", -13.9), cell("INT", 13.9), cell("INT", "42")]).toEqual([
      "42",
      "-13",
      "13",
      null,
    ]);
    expect([cell("FLOAT", 3.14), cell("FLOAT", 42), cell("FLOAT", "3.14")]).toEqual(["3.14", "42", null]);
    expect(serializeField({ name: "f", type: "INT" }, null).cells).toEqual({});
  });

  it("cleans and cuts string kinds to their maximum length, writing other values as JSON", () => {
    const long = "x".repeat(150);
    expect(serializeField({ name: "s", type: "STRING" }, long)).toMatchObject({
      cells: { s: "x".repeat(100) },
      truncated: true,
    });
    expect(serializeField({ name: "s", type: "STRING", maxLength: 5 }, "<i>hello world</i>").cells.s).toBe("hello");
    expect(serializeField({ name: "s", type: "STRING", unboundedText: true }, long).cells.s).toBe(long);
    expect(serializeField({ name: "d", type: "CALENDAR_DATE" }, "2022-02-15 and more").cells.d).toBe("2022-02-15");
    expect(serializeField({ name: "j", type: "INLINE_JSON_BLOB" }, { a: [1, "b"] }).cells.j).toBe('{"a":[1,"b"]}');
  });

  it("expands a multi-choice answer to one boolean column per choice plus .other", () => {
    const field = {
      name: "q",
      type: "MULTI_CHOICE" as const,
      multiChoiceAnswerList: ["foo", "bar", "true"],
      allowOtherChoices: true,
    };
    expect(columnsOf(field)).toEqual(["q.foo", "q.bar", "q.true", "q.other"]);
    expect(serializeField(field, ["bar", true, "zed", "baz", 42]).cells).toEqual({
      "q.foo": "false",
      "q.bar": "true",
      "q.true": "true",
      "q.other": "42, baz, zed",
    });
    expect(serializeField({ ...field, allowOtherChoices: false }, ["zed"])).toMatchObject({ dropped: ["zed"] });
    expect(serializeField(field, "foo").cells).toEqual({});
  });

  it("writes a timestamp as epoch milliseconds plus its zone offset", () => {
    const field = { name: "t", type: "TIMESTAMP" as const };
    expect(columnsOf(field)).toEqual(["t", "t.timezone"]);
    expect(serializeField(field, "2022-02-15T12:47:36.270-08:00").cells).toEqual({
      t: "1644958056270",
      "t.timezone": "-0800",
    });
    expect(serializeField(field, "2022-02-15T20:47:36.270Z").cells).toEqual({
      t: "1644958056270",
      "t.timezone": "+0000",
    });
    expect(serializeField(field, 1644958056270).cells).toEqual({ t: "1644958056270", "t.timezone": "+0000" });
    expect(serializeField(field, "yesterday").cells).toEqual({});
    expect(parseTimestamp("2022-02-15T12:47:36+0530")).toEqual({
      epochMs: Date.parse("2022-02-15T12:47:36+05:30"),
      zone: "+0530",
    });
  });
});

describe("TSV", () => {
  it("quotes every value, doubles quotes and backslashes, leaves nulls empty and keeps newlines and tabs", () => {
    expect(tsvRow(["a", null, 'say "hi"', "back\\slash", "two\nlines\tand tab", ""])).toBe(
      '"a"\t\t"say ""hi"""\t"back\\\\slash"\t"two\nlines\tand tab"\t""\n',
    );
    expect(tsvTable(["recordId", "x"], [{ recordId: "r1", x: "1" }, { recordId: "r2" }])).toBe(
      '"recordId"\t"x"\n"r1"\t"1"\n"r2"\t\n',
    );
  });
});

describe("export requests", () => {
  it("accepts exactly one record source and fills defaults", () => {
    expect(parseExportRequest({ date: "2026-11-23" })).toMatchObject({
      date: "2026-11-23",
      sharingMode: "SHARED",
      tag: "(no tag)",
    });
    expect(parseExportRequest({ recordIds: ["a", "b"], sharingMode: "PUBLIC_ONLY" }).recordIds).toEqual(["a", "b"]);
    expect(parseExportRequest({ sinceLastExport: true, endDateTime: "2026-11-24T08:00:00Z" }).sinceLastExport).toBe(
      true,
    );
  });

  it("refuses a malformed or self-contradictory request, naming the field", () => {
    const refusal = (input: unknown) => {
      try {
        parseExportRequest(input);
        return "accepted";
      } catch (err) {
        return (err as Error).message;
      }
    };
    expect(refusal({ date: "2026-11-23", recordIds: ["a"] })).toBe(
      "export request: recordIds: names date and recordIds: a request takes exactly one record source",
    );
    expect(refusal({})).toBe(
      "export request: date: name one record source: date, startDateTime, sinceLastExport, recordIds",
    );
    expect(refusal({ startDateTime: "2026-11-23T00:00:00Z" })).toBe(
      "export request: endDateTime: is required with startDateTime",
    );
    expect(refusal({ startDateTime: "2026-11-24T00:00:00Z", endDateTime: "2026-11-23T00:00:00Z" })).toBe(
      "export request: startDateTime: must be before endDateTime",
    );
    expect(refusal({ date: "23/11/2026" })).toMatch(/^export request: date: /);
    expect(refusal({ date: "2026-11-23", studyWhitelist: [] })).toBe(
      "export request: studyWhitelist: must name at least one study when given",
    );
    expect(refusal({ date: "2026-11-23", sharingMode: "EVERYONE" })).toMatch(/^export request: sharingMode: /);
    expect(refusal({ date: "2026-11-23", colour: "blue" })).toMatch(/^export request: .*colour/);
  });
});
