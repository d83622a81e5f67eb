import fc from "fast-check";
import { DateTime } from "luxon";
import sanitizeHtml from "sanitize-html";
import { describe, expect, it } from "vitest";
import { Config } from "../src/config/config.js";
import { type Column, canChange, mergeColumns, widen } from "../src/export/columns.js";
import { effectiveScope, filterRecord, parseScope, type SharingMode, type SharingScope } from "../src/export/filter.js";
import { inferFields } from "../src/export/infer.js";
import { ExportMetrics } from "../src/export/metrics.js";
import { parseExportRequest } from "../src/export/request.js";
import { columnsOf, parseExportDocument, parseTimestamp, sanitize, serializeField } from "../src/export/serialize.js";
import { calendarDay, commonCells } from "../src/export/tables.js";
import { formatRow, parseRows, tsvRow, tsvTable } from "../src/export/tsv.js";
import { TransformConfig } from "../src/lake/models.js";

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

  it("gives what sanitize-html gives for any text, with or without markup", () => {
    const reference = (text: string) =>
      sanitizeHtml(text, { allowedTags: [], allowedAttributes: {} })
        .replace(/\u00a0/g, "&nbsp;")
        .replace(/\s+/g, " ")
        .trim();
    const unit = fc.constantFrom(
      "a",
      "Z",
      "é",
      "日",
      " ",
      "\t",
      "\n",
      "\u00a0",
      '"',
      "'",
      "\\",
      "=",
      ";",
      "<",
      ">",
      "&",
      "/",
      "b",
    );
    fc.assert(
      fc.property(fc.string({ unit, maxLength: 40 }), (text) => {
        expect(sanitize(text).value).toBe(reference(text));
      }),
      { numRuns: 2000 },
    );
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

  it("keeps every digit of an integer a double cannot hold, in number columns, JSON and inferred types", () => {
    const text =
      '{"ns":1649448168724000123,"huge":123456789012345678901,"small":17,"f":1.5,"samples":[{"t":1649448168724000123}]}';
    const doc = parseExportDocument(text) as Record<string, unknown>;
    // JSON.parse would make the first 1649448168724000000.
    expect(JSON.parse(text).ns).not.toBe(1649448168724000123n);
    expect(doc).toMatchObject({ ns: 1649448168724000123n, small: 17, f: 1.5 });
    const cell = (type: "INT" | "FLOAT" | "STRING", v: unknown) =>
      serializeField({ name: "f", type }, v).cells.f ?? null;
    expect([cell("INT", doc.ns), cell("FLOAT", doc.ns), cell("STRING", doc.ns), cell("INT", doc.huge)]).toEqual([
      "1649448168724000123",
      "1649448168724000123",
      "1649448168724000123",
      null,
    ]);
    const attached: string[] = [];
    serializeField({ name: "samples", type: "ATTACHMENT_JSON_BLOB" }, doc.samples, (json) => {
      attached.push(json);
      return "key";
    });
    expect(attached).toEqual(['[{"t":1649448168724000123}]']);
    expect(inferFields([doc], [], new Set()).find((f) => f.name === "ns")).toEqual({ name: "ns", type: "INT" });
    // Without such a number, the document is read by JSON.parse as before.
    expect(parseExportDocument('{"a":1.0,"b":[2]}')).toEqual({ a: 1, b: [2] });
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
    expect(columnsOf(field)).toEqual([
      { name: "q.foo", type: "BOOLEAN" },
      { name: "q.bar", type: "BOOLEAN" },
      { name: "q.true", type: "BOOLEAN" },
      { name: "q.other", type: "LARGETEXT" },
    ]);
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
    expect(columnsOf(field).map((c) => c.name)).toEqual(["t", "t.timezone"]);
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

describe("TSV bytes as the reference's TsvInfoTest", () => {
  it("writes the header, a row, an extra key ignored, a missing value, and raw newlines, tabs, quotes, backslashes", () => {
    const text = tsvTable(
      ["foo", "bar"],
      [
        { foo: "foo value", bar: "bar value" },
        { foo: "second foo value", bar: "second bar value", extra: "ignored" },
        { bar: "has bar but not foo" },
        { foo: "newlines\n\ncrlf\r\ntabs\t\tend of line", bar: 'quotes"escaped quotes\\"end of line' },
      ],
    );
    expect(text).toBe(
      [
        '"foo"\t"bar"\n',
        '"foo value"\t"bar value"\n',
        '"second foo value"\t"second bar value"\n',
        '\t"has bar but not foo"\n',
        '"newlines\n\ncrlf\r\ntabs\t\tend of line"\t"quotes""escaped quotes\\\\""end of line"\n',
      ].join(""),
    );
  });

  it("reads back exactly what it writes, in TSV and CSV, nulls included", () => {
    const cell = fc.option(fc.string({ unit: fc.constantFrom("a", "\\", '"', "\t", "\n", "\r", ",", " ", "é") }), {
      nil: null,
    });
    fc.assert(
      fc.property(fc.array(fc.array(cell, { minLength: 2, maxLength: 2 }), { maxLength: 5 }), (rows) => {
        for (const format of ["tsv", "csv"] as const) {
          const text = rows.map((r) => formatRow(format, r)).join("");
          expect(parseRows(format, text)).toEqual(rows);
        }
      }),
    );
    expect(formatRow("csv", ["a,b", 'q"', "back\\", null])).toBe('"a,b","q""","back\\",\n');
  });
});

describe("table columns", () => {
  const col = (type: Column["type"], maxLength?: number): Column =>
    maxLength === undefined ? { name: "c", type } : { name: "c", type, maxLength };

  it("allows the reference's type changes and no others", () => {
    expect(canChange(col("INTEGER"), col("DOUBLE"))).toBe(true);
    expect(canChange(col("DOUBLE"), col("INTEGER"))).toBe(false);
    expect(canChange(col("DATE"), col("INTEGER"))).toBe(true);
    expect(canChange(col("INTEGER"), col("DATE"))).toBe(true);
    expect(canChange(col("STRING", 10), col("STRING", 20))).toBe(true);
    expect(canChange(col("STRING", 20), col("STRING", 10))).toBe(false);
    expect(canChange(col("DOUBLE"), col("STRING", 21))).toBe(false);
    expect(canChange(col("DOUBLE"), col("STRING", 23))).toBe(true);
    expect(canChange(col("INTEGER"), col("STRING", 19))).toBe(false);
    expect(canChange(col("INTEGER"), col("STRING", 21))).toBe(true);
    for (const from of ["STRING", "INTEGER", "DOUBLE"] as const) {
      expect(canChange(col(from, from === "STRING" ? 100 : undefined), col("LARGETEXT"))).toBe(true);
    }
    expect(canChange(col("LARGETEXT"), col("STRING", 1000))).toBe(false);
    expect(canChange(col("FILEHANDLEID"), col("STRING", 100))).toBe(false);
  });

  it("widens to the narrowest column holding both, and refuses what cannot be held", () => {
    expect(widen(col("DOUBLE"), col("INTEGER"))).toEqual(col("DOUBLE"));
    expect(widen(col("INTEGER"), col("DOUBLE"))).toEqual(col("DOUBLE"));
    expect(widen(col("BOOLEAN"), col("INTEGER"))).toEqual(col("STRING", 20));
    expect(widen(col("STRING", 100), col("DOUBLE"))).toEqual(col("STRING", 100));
    expect(() => widen(col("FILEHANDLEID"), col("BOOLEAN"))).toThrow(/column 'c' is FILEHANDLEID/);
  });

  it("keeps existing columns in place, appends new ones, widens changed ones, never drops any", () => {
    const existing: Column[] = [
      { name: "a", type: "INTEGER" },
      { name: "b", type: "STRING", maxLength: 100 },
    ];
    const merged = mergeColumns(existing, [
      { name: "c", type: "BOOLEAN" },
      { name: "a", type: "DOUBLE" },
    ]);
    expect(merged.columns).toEqual([
      { name: "a", type: "DOUBLE" },
      { name: "b", type: "STRING", maxLength: 100 },
      { name: "c", type: "BOOLEAN" },
    ]);
    expect(merged).toMatchObject({ added: ["c"], changed: ["a"] });
    expect(mergeColumns(merged.columns, [{ name: "a", type: "INTEGER" }])).toMatchObject({ added: [], changed: [] });
  });
});

describe("inferred fields", () => {
  const exclude = new Set(["recordid", "year"]);

  it("types each top-level key by its values, leaving out added keys, nulls and non-object documents", () => {
    const fields = inferFields(
      [
        { b: true, i: 3, f: 1, t: "2022-02-15T12:00:00Z", s: "x", o: { deep: 1 }, n: null, recordid: "r", year: 2022 },
        { b: false, i: -4, f: 2.5, t: "2022-02-15T12:00:00-08:00", s: "y".repeat(150), o: [1] },
        [{ sample: 1 }],
      ],
      [],
      exclude,
    );
    expect(fields).toEqual([
      { name: "b", type: "BOOLEAN" },
      { name: "i", type: "INT" },
      { name: "f", type: "FLOAT" },
      { name: "t", type: "TIMESTAMP" },
      { name: "s", type: "STRING", maxLength: 1000 },
      { name: "o", type: "ATTACHMENT_JSON_BLOB" },
    ]);
  });

  it("keeps known fields in order and only widens them", () => {
    const previous = inferFields([{ i: 1, s: "short", t: "2022-02-15T12:00:00Z" }], [], exclude);
    const next = inferFields([{ n: true, i: 1.5, s: "x".repeat(2000), t: "not a time" }], previous, exclude);
    expect(next).toEqual([
      { name: "i", type: "FLOAT" },
      { name: "s", type: "STRING", unboundedText: true },
      { name: "t", type: "TIMESTAMP" },
      { name: "n", type: "BOOLEAN" },
    ]);
    expect(inferFields([{ i: "text now" }], [{ name: "i", type: "INT" }], exclude)).toEqual([
      { name: "i", type: "STRING", maxLength: 100 },
    ]);
  });
});

describe("common columns", () => {
  it("takes app version and phone from client info, sorts data groups, cleans and cuts free text", () => {
    const { cells, truncated } = commonCells(
      {
        recordId: "r1",
        healthCode: "hc",
        uploadedOn: "2022-02-15T06:30:00.000Z",
        metadata: {
          clientinfo:
            "ClientInfo [appName=App, appVersion=73, deviceName=iPhone 7 Plus, osName=iPhone OS, osVersion=15.1]",
          datagroups: "b_group, a_group",
          externalid: `<b>ext</b> ${"x".repeat(200)}`,
          sharingscope: "all_qualified_researchers",
          assessmentrevision: "5",
        },
      },
      { exportDate: "2022-02-16", timezone: "America/Los_Angeles" },
    );
    expect(cells).toMatchObject({
      recordId: "r1",
      appVersion: "73",
      phoneInfo: "iPhone 7 Plus; iPhone OS 15.1",
      uploadDate: "2022-02-14",
      exportDate: "2022-02-16",
      dataGroups: "a_group,b_group",
      createdOn: String(Date.parse("2022-02-15T06:30:00.000Z")),
      createdOnTimeZone: "+0000",
      userSharingScope: "ALL_QUALIFIED_RESEARCHERS",
      assessmentRevision: "5",
    });
    expect(cells.externalId).toHaveLength(128);
    expect(cells.externalId?.startsWith("ext x")).toBe(true);
    expect(truncated).toBe(1);
    expect(cells).not.toHaveProperty("dayInStudy");
  });

  it("dates an upload by its calendar day in the export's zone, as luxon does, across offsets and DST changes", () => {
    const zones = [
      "America/Los_Angeles",
      "UTC",
      "Asia/Kolkata",
      "Pacific/Chatham",
      "Australia/Lord_Howe",
      "America/St_Johns",
    ];
    const from = Date.parse("1999-12-25T00:00:00Z");
    const to = Date.parse("2031-01-05T00:00:00Z");
    fc.assert(
      fc.property(fc.integer({ min: from, max: to }), fc.constantFrom(...zones), (ms, zone) => {
        const instant = new Date(ms).toISOString();
        expect(calendarDay(instant, zone)).toBe(DateTime.fromMillis(ms, { zone }).toISODate());
      }),
      { numRuns: 3000 },
    );
    // The last millisecond before and the first after midnight of a DST change in Los Angeles.
    expect(calendarDay("2022-03-13T07:59:59.999Z", "America/Los_Angeles")).toBe("2022-03-12");
    expect(calendarDay("2022-03-13T08:00:00.000Z", "America/Los_Angeles")).toBe("2022-03-13");
    // Newfoundland fell back at 00:01 until 2011: one quarter hour holds two days (00:00 NDT, then 23:01 NST).
    for (const instant of ["2010-11-07T02:30:30Z", "2010-11-07T02:31:30Z", "2010-11-07T02:30:59.999Z"]) {
      const expected = DateTime.fromISO(instant, { zone: "America/St_Johns" }).toISODate();
      expect(calendarDay(instant, "America/St_Johns"), instant).toBe(expected);
    }
    expect(calendarDay("2010-11-07T02:31:30Z", "America/St_Johns")).toBe("2010-11-06");
    expect(calendarDay("not a time", "UTC")).toBeNull();
  });

  it("refuses a time zone the runtime does not know, in the export settings, schedules and transformations", () => {
    const bad = Config.safeParse({ export: { timezone: "America/Nowhere" } });
    expect(bad.success).toBe(false);
    expect(bad.error?.issues[0]).toMatchObject({
      path: ["export", "timezone"],
      message: expect.stringMatching(/IANA time zone/),
    });
    const schedule = { name: "daily", cron: "0 2 * * *", timezone: "Mars/Olympus", kind: "export" };
    expect(Config.safeParse({ pipeline: { schedules: [schedule] } }).error?.issues[0]?.path).toEqual([
      "pipeline",
      "schedules",
      0,
      "timezone",
    ]);
    expect(Config.safeParse({ pipeline: { schedules: [{ ...schedule, timezone: "UTC" }] } }).success).toBe(true);
    expect(Config.safeParse({ export: { timezone: "Asia/Kolkata" } }).success).toBe(true);
    const transform = { owner: "ana", inputs: ["visits"], output: { dataset: "daily" } };
    const unknownZone = { ...transform, schedule: { cron: "0 3 * * *", timezone: "Mars/Olympus" } };
    expect(TransformConfig.safeParse(unknownZone).error?.issues[0]?.path).toEqual(["schedule", "timezone"]);
    const knownZone = { ...transform, schedule: { cron: "0 3 * * *", timezone: "Europe/Paris" } };
    expect(TransformConfig.safeParse(knownZone).success).toBe(true);
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
