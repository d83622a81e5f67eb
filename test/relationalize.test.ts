import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import fc from "fast-check";
import { isLosslessNumber, LosslessNumber, parse, stringify } from "lossless-json";
import { describe, expect, it } from "vitest";
import type { TableRows } from "../src/relationalize/model.js";
import { parseDocument } from "../src/relationalize/parse.js";
import { rebuildDocuments } from "../src/relationalize/rebuild.js";
import { Relationalizer } from "../src/relationalize/relationalize.js";
import { decodeShape } from "../src/relationalize/shape.js";
import { columnType, scalarKind } from "../src/relationalize/types.js";
import { FIXTURES } from "./support/workspace.js";

const PARTITIONS = ["assessmentid", "year", "month", "day"];

/** Table name → rows as objects keyed by column name (the `_shape` column left out). */
function asObjects(tables: TableRows[]): Record<string, Array<Record<string, unknown>>> {
  const out: Record<string, Array<Record<string, unknown>>> = {};
  for (const t of tables) {
    const rows = t.rows.map((r) =>
      Object.fromEntries(t.schema.columns.map((c, i) => [c.name, r[i]]).filter(([name]) => name !== "_shape")),
    );
    out[t.schema.name] = [...(out[t.schema.name] ?? []), ...rows];
  }
  return out;
}

function columnsOf(tables: TableRows[], name: string): string[] {
  return tables.find((t) => t.schema.name === name)?.schema.columns.map((c) => c.name) ?? [];
}

/** Reads a Glue-layout JSON dataset, as the JSON-to-Parquet stage does: partition values from the folder names. */
function readGlueDataset(dataset: string): Array<{ doc: unknown; partition: Record<string, string>; key: string }> {
  const root = path.join(FIXTURES, "glue-json-datasets", `dataset=${dataset}`);
  const out: Array<{ doc: unknown; partition: Record<string, string>; key: string }> = [];
  const walk = (dir: string, partition: Record<string, string>) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        const [k, v] = entry.name.split("=");
        walk(full, { ...partition, [k as string]: v as string });
      } else {
        out.push({ doc: parse(readFileSync(full, "utf8")), partition, key: entry.name });
      }
    }
  };
  walk(root, {});
  return out;
}

describe("conformance with the reference pipeline's fixtures", () => {
  it("glue flat dataset: 3 rows of recordid + the 4 partition fields, no child tables", () => {
    const r = Relationalizer.create("dataset_pytest_flat_table", {
      recordField: "recordid",
      inherit: ["recordid", ...PARTITIONS],
    });
    for (const { doc, partition, key } of readGlueDataset("pytest_flat_table"))
      r.add(doc, { recordKey: key, partition });
    const { tables } = r.flush();
    expect(tables.map((t) => t.schema.name)).toEqual(["dataset_pytest_flat_table"]);
    expect(columnsOf(tables, "dataset_pytest_flat_table")).toEqual([
      "recordid",
      "assessmentid",
      "year",
      "month",
      "day",
      "_shape",
    ]);
    const rows = asObjects(tables).dataset_pytest_flat_table!;
    expect(rows.map((x) => x.recordid).sort()).toEqual(["one", "three", "two"]);
    expect(rows.find((x) => x.recordid === "three")).toMatchObject({
      assessmentid: "exampleassessment",
      year: "2022",
      month: "09",
      day: "02",
    });
  });

  it("glue nested dataset: root and child columns and child values as the reference's test asserts", () => {
    const r = Relationalizer.create("dataset_pytest_nested_table", {
      recordField: "recordid",
      inherit: ["recordid", ...PARTITIONS],
    });
    for (const { doc, partition, key } of readGlueDataset("pytest_nested_table"))
      r.add(doc, { recordKey: key, partition });
    const { tables } = r.flush();
    const root = "dataset_pytest_nested_table";
    const child = `${root}_arrayofobjectsfield`;
    expect(tables.map((t) => t.schema.name)).toEqual([root, child]);
    expect(new Set(columnsOf(tables, root))).toEqual(
      new Set([
        "recordid",
        "arrayofobjectsfield",
        "objectfield_filename",
        "objectfield_timestamp",
        "assessmentid",
        "year",
        "month",
        "day",
        "_shape",
      ]),
    );
    expect(new Set(columnsOf(tables, child))).toEqual(
      new Set(["id", "index", "filename", "timestamp", "recordid", "assessmentid", "year", "month", "day", "_shape"]),
    );
    const objects = asObjects(tables);
    const childRows = objects[child]!.map((x) => [
      x.filename,
      x.timestamp,
      x.assessmentid,
      x.year,
      x.month,
      x.day,
      x.recordid,
    ]).sort((a, b) => String(a[6]).localeCompare(String(b[6])));
    expect(childRows).toEqual([
      ["one", "one", "exampleassessment", "2022", "09", "01", "one"],
      ["three", "three", "exampleassessment", "2022", "09", "02", "three"],
      ["two", "two", "exampleassessment", "2022", "09", "01", "two"],
    ]);
    // Every child row's id is the join key its parent row holds; index is the element's position.
    for (const parent of objects[root]!) {
      const kids = objects[child]!.filter((c) => c.id === parent.arrayofobjectsfield);
      expect(kids.map((k) => [k.index, k.recordid])).toEqual([[0n, parent.recordid]]);
    }
  });

  it("recover nested data type: children inherit the index fields and cohort, case is kept", () => {
    const dir = path.join(FIXTURES, "recover-ndjson");
    const r = Relationalizer.create("TestNestedDataType", {
      recordField: "GlobalKey",
      inherit: ["GlobalKey", "cohort"],
    });
    for (const file of ["TestNestedDataType_20230512.ndjson", "TestNestedDataType_20230612.ndjson"]) {
      r.add(parse(readFileSync(path.join(dir, file), "utf8")), { recordKey: file });
    }
    const { tables } = r.flush();
    expect(columnsOf(tables, "TestNestedDataType")).toEqual([
      "GlobalKey",
      "ArrayOfObjectsField",
      "ObjectField_filename",
      "ObjectField_timestamp",
      "export_end_date",
      "cohort",
      "_shape",
    ]);
    const child = "TestNestedDataType_ArrayOfObjectsField";
    expect(columnsOf(tables, child)).toEqual(["id", "index", "filename", "timestamp", "GlobalKey", "cohort", "_shape"]);
    const rows = asObjects(tables)[child]!;
    expect(rows).toHaveLength(2);
    for (const row of rows)
      expect(row).toMatchObject({
        index: 0n,
        filename: "test.json",
        timestamp: "999",
        GlobalKey: "123456789",
        cohort: "adults_v1",
      });
  });

  it("recover flat data types: 3 fields, and 4 with InsertedDate", () => {
    const dir = path.join(FIXTURES, "recover-ndjson");
    for (const [type, fields] of [
      ["TestFlatDataType", ["GlobalKey", "export_end_date", "cohort"]],
      ["TestFlatInsertedDateDataType", ["GlobalKey", "export_end_date", "InsertedDate", "cohort"]],
    ] as const) {
      const r = Relationalizer.create(type, { recordField: "GlobalKey", inherit: ["GlobalKey", "cohort"] });
      for (const date of ["20230512", "20230612"]) {
        r.add(parse(readFileSync(path.join(dir, `${type}_${date}.ndjson`), "utf8")), { recordKey: date });
      }
      const { tables } = r.flush();
      expect(columnsOf(tables, type)).toEqual([...fields, "_shape"]);
      expect(tables[0]?.rows).toHaveLength(2);
    }
  });
});

describe("relationalize rules", () => {
  const make = () => Relationalizer.create("t", { recordField: "recordid", inherit: ["recordid"] });

  it("infers types across documents and reports conflicts", () => {
    const r = make();
    r.add(parse('{"recordid":"a","n":1,"x":1,"b":true,"s":"x","m":1,"nul":null}'), { recordKey: "a" });
    r.add(parse('{"recordid":"b","n":2,"x":2.5,"b":false,"s":"y","m":"one"}'), { recordKey: "b" });
    const { tables, conflicts } = r.flush();
    const types = Object.fromEntries(tables[0]!.schema.columns.map((c) => [c.name, c.type]));
    expect(types).toMatchObject({ n: "BIGINT", x: "DOUBLE", b: "BOOLEAN", s: "VARCHAR", m: "VARCHAR", nul: "VARCHAR" });
    expect(conflicts).toEqual([{ table: "t", column: "m", kinds: ["integer", "string"], resolvedAs: "VARCHAR" }]);
    expect(columnType(["integer", "bignum"])).toBe("VARCHAR");
    expect(scalarKind(new LosslessNumber("9007199254740993"))).toBe("long");
    expect(scalarKind(new LosslessNumber("9007199254740992"))).toBe("integer");
    expect([columnType(["long", "integer"]), columnType(["long", "double"])]).toEqual(["BIGINT", "VARCHAR"]);
    // A decimal no double holds is kept as its text, as an integer beyond 64 bits is.
    expect(scalarKind(new LosslessNumber("1e400"))).toBe("bignum");
    expect(scalarKind(new LosslessNumber("-2.5E-999"))).toBe("bignum");
    expect(scalarKind(new LosslessNumber(`0.${"0".repeat(400)}1`))).toBe("bignum");
    expect(scalarKind(new LosslessNumber("0.0e-400"))).toBe("double");
    // The fast parse leaves such a number to the lossless parser.
    const tiny = parseDocument(`{"v":0.${"0".repeat(400)}1}`) as { v: LosslessNumber };
    expect(scalarKind(tiny.v)).toBe("bignum");
    expect(scalarKind(new LosslessNumber("2.5e-320"))).toBe("double");
    expect(scalarKind(new LosslessNumber("1.7976931348623157e308"))).toBe("double");
    expect(columnType(["boolean", "integer"])).toBe("VARCHAR");
  });

  it("refuses a document that is not an object or an array of objects, and keeps nothing of it", () => {
    const r = make();
    r.add(parse('{"recordid":"a"}'), { recordKey: "a" });
    expect(() => r.add(parse('[{"recordid":"b"},3]'), { recordKey: "b" })).toThrow(
      "element 1 of the top-level array is not an object",
    );
    expect(() => r.add(parse("5"), { recordKey: "c" })).toThrow("neither an object nor an array of objects");
    const table = r.flush().tables[0]!;
    const at = table.schema.columns.findIndex((c) => c.name === "recordid");
    expect(table.rows.map((row) => row[at])).toEqual(["a"]);
  });

  it("keeps a timestamp's local offset exactly as sent", () => {
    const r = make();
    r.add(parse('{"recordid":"a","at":"2022-04-08T13:02:48.724-07:00"}'), { recordKey: "a" });
    expect(asObjects(r.flush().tables).t![0]!.at).toBe("2022-04-08T13:02:48.724-07:00");
  });

  /** The schema after one batch of these documents, added in this order. */
  const flushed = (docs: readonly string[]) => {
    const r = make();
    for (const [i, d] of docs.entries()) r.add(parse(d), { recordKey: String(i) });
    return r.flush();
  };

  it("makes names safe and resolves collisions without regard to document order", () => {
    const docs = [
      '{"recordid":"a","a_b":1}',
      '{"recordid":"b","a":{"b":2}}',
      '{"recordid":"c","A B":3,"9lives":4,"Name":5,"name":6}',
    ];
    const names = (order: string[]) =>
      Object.fromEntries(flushed(order).tables[0]!.schema.columns.map((c) => [JSON.stringify(c.path), c.name]));
    const forward = names(docs);
    expect(names([...docs].reverse())).toEqual(forward);
    // `a_b`, `a.b` and `A B` all want `a_b` (SQL ignores case): the key that is already a safe name keeps it.
    expect(forward).toMatchObject({
      '["a_b"]': "a_b",
      '["A B"]': "A_B_2",
      '["a","b"]': "a_b_3",
      '["9lives"]': "_9lives",
      '["Name"]': "Name",
      '["name"]': "name_2",
    });
  });

  it("names child tables that want the same name without regard to document order, parents first", () => {
    const docs = [
      '{"recordid":"a","x":{"y":[{"z":[1]}]}}',
      '{"recordid":"b","x_y":[{"q":1}]}',
      '{"recordid":"c","X Y":[2],"x_y_z":[3]}',
    ];
    const tables = (order: string[]) =>
      Object.fromEntries(flushed(order).schema.tables.map((t) => [JSON.stringify([t.parent, t.path]), t.name]));
    const forward = tables(docs);
    for (const order of [[...docs].reverse(), [docs[1], docs[2], docs[0]] as string[]])
      expect(tables(order)).toEqual(forward);
    // Keys that are already safe names keep theirs; the others follow by path; a grandchild is named after its parent.
    expect(forward).toEqual({
      "[null,[]]": "t",
      '["t",["x_y"]]': "t_x_y",
      '["t",["x_y_z"]]': "t_x_y_z",
      '["t",["X Y"]]': "t_X_Y_2",
      '["t",["x","y"]]': "t_x_y_3",
      '["t_x_y_3",["z"]]': "t_x_y_3_z",
    });
  });

  it("gives arrays of scalars a val column, recurses into arrays inside elements and structs, and names grandchildren", () => {
    const r = make();
    r.add(parse('{"recordid":"a","tags":["x","y"],"s":{"list":[{"deep":[1,2]}]},"grid":[[1,2],[3]],"empty":[]}'), {
      recordKey: "a",
    });
    const { tables } = r.flush();
    const t = asObjects(tables);
    expect(Object.keys(t).sort()).toEqual(
      ["t", "t_empty", "t_grid", "t_grid_val", "t_s_list", "t_s_list_deep", "t_tags"].filter((n) => n !== "t_empty"),
    );
    expect(t.t_tags!.map((x) => [x.index, x.val, x.recordid])).toEqual([
      [0n, "x", "a"],
      [1n, "y", "a"],
    ]);
    expect(t.t_s_list_deep!.map((x) => x.val)).toEqual([1n, 2n]);
    expect(t.t_grid_val!.map((x) => x.val)).toEqual([1n, 2n, 3n]);
    // The empty array keeps a join key in its parent and has no child rows.
    expect(t.t![0]!.empty).toBe("a/empty");
    // Keys are deterministic: derived from the record key and the path.
    expect(t.t![0]!.s_list).toBe("a/s.list");
    expect(t.t_s_list_deep![0]!.id).toBe("a/s.list[0]/deep");
  });

  it("keeps names and types stable from one batch to the next", () => {
    const r = make();
    r.add(parse('{"recordid":"a","x":1}'), { recordKey: "a" });
    const first = r.flush();
    const again = new Relationalizer(first.schema);
    again.add(parse('{"recordid":"b","y":true,"x":2.5}'), { recordKey: "b" });
    const second = again.flush();
    expect(second.tables[0]!.schema.columns.map((c) => `${c.name}:${c.type}`)).toEqual([
      "recordid:VARCHAR",
      "x:DOUBLE",
      "y:BOOLEAN",
      "_shape:VARCHAR",
    ]);
  });

  it("marks explicit nulls, empty objects and synthetic fields in _shape, and leaves ordinary rows without one", () => {
    const r = make();
    r.add(parse('{"recordid":"a","x":null,"o":{}}'), { recordKey: "a" });
    r.add(parse('{"recordid":"b","x":1}'), { recordKey: "b" });
    r.add(parse('{"x":2}'), { recordKey: "c", partition: { year: "2022" } });
    const { tables } = r.flush();
    const shapeAt = tables[0]!.schema.columns.findIndex((c) => c.name === "_shape");
    expect(tables[0]!.rows.map((row) => decodeShape(row[shapeAt]))).toEqual([
      { n: [["x"]], o: [["o"]] },
      {},
      { p: ["recordid", "year"] },
    ]);
    expect(tables[0]!.rows[1]![shapeAt]).toBeNull();
  });
});

/** JSON values with numbers as exact text, keys chosen to collide, and every shape the tables must keep apart. */
const key = fc.constantFrom(
  "a",
  "b",
  "a_b",
  "A",
  "id",
  "index",
  "val",
  "_shape",
  "x.y",
  "x",
  "y",
  "__proto__",
  "recordid2",
);
const number = fc.oneof(
  fc.integer({ min: -(2 ** 53) + 1, max: 2 ** 53 - 1 }).map((n) => new LosslessNumber(String(n))),
  fc
    .double({ noNaN: true, noDefaultInfinity: true })
    .map((d) => new LosslessNumber(/[.e]/.test(String(d)) ? String(d) : `${d}.0`)),
  fc.bigInt({ min: 2n ** 64n, max: 2n ** 70n }).map((n) => new LosslessNumber(n.toString())),
  // Integers a BIGINT holds but a DOUBLE would round, as the same field's doubles would make it.
  fc
    .bigInt({ min: 2n ** 53n + 1n, max: 2n ** 63n - 1n })
    .map((n) => new LosslessNumber((n * (n % 2n ? -1n : 1n)).toString())),
  // Decimals beyond a double's range: read as numbers they would become Infinity or 0.
  fc
    .tuple(fc.integer({ min: 1, max: 99 }), fc.integer({ min: 309, max: 999 }), fc.boolean())
    .map(([m, e, small]) => new LosslessNumber(`${m / 10}e${small ? "-" : ""}${e + 16}`)),
);
const scalar = fc.oneof(fc.constant(null), fc.boolean(), fc.string({ maxLength: 6 }), number);
const { value } = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: "small", withCrossShrink: true }, scalar, tie("array"), tie("object")),
  array: fc.array(tie("value"), { maxLength: 4 }),
  object: fc.dictionary(key, tie("value"), { maxKeys: 5 }),
}));
const document = fc.dictionary(key, value, { maxKeys: 6 });

/** A canonical form for comparing values: sorted keys, numbers by value (beyond a double's range, by text). */
function canonical(v: unknown): unknown {
  if (isLosslessNumber(v)) {
    if (!/[.eE]/.test(v.value)) return `n:${BigInt(v.value)}`;
    const n = Number(v.value);
    const beyond = !Number.isFinite(n) || (n === 0 && /[1-9]/.test(v.value.split(/[eE]/)[0] as string));
    return beyond ? `n:${v.value}` : `n:${n}`;
  }
  if (typeof v === "number") return `n:${v}`;
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === "object") {
    return Object.keys(v)
      .sort()
      .map((k) => [k, canonical((v as Record<string, unknown>)[k])]);
  }
  return v;
}

describe("lossless: flatten then rebuild returns the input", () => {
  it("for random nested documents, in one batch or many", () => {
    fc.assert(
      fc.property(
        fc.array(document, { minLength: 1, maxLength: 6 }),
        fc.integer({ min: 1, max: 3 }),
        (docs, batches) => {
          let schema = Relationalizer.create("r", { recordField: "recordid", inherit: ["recordid"] }).flush().schema;
          const tables: TableRows[] = [];
          const originals = new Map<string, unknown>();
          docs.forEach((doc, i) => {
            const record = `rec${i}`;
            // Through JSON text and a lossless parse, as documents arrive from the JSON datasets.
            const text = stringify({ ...doc, recordid: record }) as string;
            originals.set(record, parse(text));
          });
          const records = [...originals.keys()];
          for (let b = 0; b < batches; b++) {
            const r = new Relationalizer(schema);
            for (const record of records.filter((_, i) => i % batches === b))
              r.add(originals.get(record), { recordKey: record });
            const flushed = r.flush();
            schema = flushed.schema;
            tables.push(...flushed.tables);
          }
          const rebuilt = rebuildDocuments(schema, tables);
          expect(new Set(rebuilt.keys())).toEqual(new Set(records));
          for (const record of records)
            expect(canonical(rebuilt.get(record))).toEqual(canonical(originals.get(record)));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("through the fast parse path too, which must agree with the lossless parser", () => {
    fc.assert(
      fc.property(fc.array(document, { minLength: 1, maxLength: 5 }), (docs) => {
        let schema = Relationalizer.create("r", { recordField: "recordid", inherit: ["recordid"] }).flush().schema;
        const r = new Relationalizer(schema);
        const originals = new Map<string, unknown>();
        docs.forEach((doc, i) => {
          const text = stringify({ ...doc, recordid: `rec${i}` }) as string;
          originals.set(`rec${i}`, parse(text));
          r.add(parseDocument(text), { recordKey: `rec${i}` });
        });
        const flushed = r.flush();
        schema = flushed.schema;
        const rebuilt = rebuildDocuments(schema, flushed.tables);
        for (const [record, original] of originals) expect(canonical(rebuilt.get(record))).toEqual(canonical(original));
        // Kinds, and so types, are the same as the lossless parser gives.
        const lossless = Relationalizer.create("r", { recordField: "recordid", inherit: ["recordid"] });
        for (const [record, original] of originals) lossless.add(original, { recordKey: record });
        const types = (tables: TableRows[]) => tables.map((t) => t.schema.columns.map((c) => `${c.name}:${c.type}`));
        expect(types(flushed.tables)).toEqual(types(lossless.flush().tables));
      }),
      { numRuns: 300 },
    );
  });

  it("for top-level arrays of objects, as sensor files are", () => {
    fc.assert(
      fc.property(fc.array(document, { minLength: 1, maxLength: 5 }), (elements) => {
        const doc = parse(stringify(elements.map((e) => ({ ...e, recordid: "r1" }))) as string);
        const r = Relationalizer.create("m", { recordField: "recordid", inherit: ["recordid"] });
        r.add(doc, { recordKey: "r1" });
        const { tables, schema } = r.flush();
        expect(canonical(rebuildDocuments(schema, tables).get("r1"))).toEqual(canonical(doc));
      }),
      { numRuns: 150 },
    );
  });
});
