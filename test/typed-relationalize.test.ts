import { mkdir, readdir, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { stringify } from "lossless-json";
import { afterEach, describe, expect, it } from "vitest";
import { Catalog } from "../src/parquet/catalog.js";
import { openDuckDB } from "../src/parquet/duckdb.js";
import { RelationalizeStage } from "../src/parquet/stage.js";
import { Relationalizer } from "../src/relationalize/relationalize.js";
import {
  candidateProblem,
  fitsSchema,
  mergeStructures,
  parseStructure,
  representative,
} from "../src/relationalize/structure.js";
import { LocalObjectStore } from "../src/storage/object-store.js";
import { listFiles } from "../src/storage/walk.js";
import { prng } from "../src/synth/generate.js";
import { FIXTURES, makeWorkspace, type TestWorkspace, tempDir } from "./support/workspace.js";

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

const required = { recordField: "recordid", rootFields: ["assessmentid"] };

describe("document structures (pure)", () => {
  it("takes objects whose structure says everything, and says why it refuses the others", () => {
    const ok = parseStructure(
      '{"recordid":"VARCHAR","assessmentid":"VARCHAR","a":{"b":[{"c":"DOUBLE"}]},"e":["NULL"]}',
    );
    expect(candidateProblem(ok, required)).toBeNull();
    expect(candidateProblem(["VARCHAR"], required)).toMatch(/neither an object nor a non-empty array of objects/);
    expect(candidateProblem(["NULL"], required)).toMatch(/neither an object/);
    expect(candidateProblem([{ recordid: "VARCHAR", assessmentid: "VARCHAR", x: "DOUBLE" }], required)).toBeNull();
    expect(candidateProblem({ assessmentid: "VARCHAR" }, required)).toBe("no string 'recordid'");
    expect(candidateProblem({ recordid: "UBIGINT", assessmentid: "VARCHAR" }, required)).toBe("no string 'recordid'");
    expect(candidateProblem({ recordid: "VARCHAR" }, required)).toBe("no 'assessmentid'");
    const base = { recordid: "VARCHAR", assessmentid: "VARCHAR" };
    expect(candidateProblem({ ...base, x: "JSON" }, required)).toBe("a value of type JSON");
    expect(candidateProblem({ ...base, x: "NULL" }, required)).toBe("a value of type NULL");
    expect(candidateProblem({ ...base, x: {} }, required)).toBe("an empty object");
    expect(candidateProblem({ ...base, x: { a: "VARCHAR", A: "VARCHAR" } }, required)).toMatch(/differ only in case/);
  });

  it("merges structures as the column type rule does, and refuses a disagreement", () => {
    expect(mergeStructures({ a: "UBIGINT" }, { a: "DOUBLE", b: ["VARCHAR"] })).toEqual({ a: "DOUBLE", b: ["VARCHAR"] });
    expect(mergeStructures({ a: ["NULL"] }, { a: [{ x: "BIGINT" }] })).toEqual({ a: [{ x: "BIGINT" }] });
    expect(mergeStructures({ a: "UBIGINT" }, { a: "VARCHAR" })).toBeNull();
    expect(mergeStructures({ a: "BOOLEAN" }, { a: "DOUBLE" })).toBeNull();
    expect(mergeStructures({ a: { x: "VARCHAR" } }, { a: ["VARCHAR"] })).toBeNull();
  });

  it("fits a structure to the dataset's columns: a column made text by a conflict takes no numbers", () => {
    const relationalizer = Relationalizer.create("t", { recordField: "recordid", inherit: ["recordid"] });
    const structure = parseStructure('{"recordid":"VARCHAR","n":"UBIGINT","s":[{"v":"DOUBLE"}]}');
    expect(fitsSchema(structure, relationalizer.currentSchema)).toBe(false);
    expect(fitsSchema(structure, relationalizer.currentSchema, { lenient: true })).toBe(true);
    relationalizer.observe(representative(structure), { recordKey: "x" });
    const observed = relationalizer.flush();
    expect(observed.tables).toEqual([]);
    expect(fitsSchema(structure, observed.schema)).toBe(true);
    relationalizer.add({ recordid: "r1", n: "text", s: [{ v: 1.5 }] }, { recordKey: "r1" });
    const { schema } = relationalizer.flush();
    expect(fitsSchema(structure, schema)).toBe(false);
    expect(fitsSchema(parseStructure('{"recordid":"VARCHAR","n":"VARCHAR"}'), schema)).toBe(true);
  });
});

/** Generated documents: regular ones of a few shapes, and irregular ones of every kind the typed way refuses. */
function documents(seed: number, count: number): object[] {
  const next = prng(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;
  const out: object[] = [];
  for (let i = 0; i < count; i++) {
    const record = `rec${Math.floor(next() * count * 0.8)}`;
    const doc: Record<string, unknown> = { recordid: record, assessmentid: pick(["a1", "a2"]) };
    doc.year = 2022;
    if (next() > 0.3) doc["odd key.é"] = pick(["x", "y ", ""]);
    if (next() > 0.3) doc.n = next() > 0.5 ? Math.floor(next() * 1000) - 500 : next() * 10;
    if (next() > 0.3) doc.flag = next() > 0.5;
    if (next() > 0.3) doc.nested = { deep: { v: Math.floor(next() * 9) }, s: pick(["p", "q"]) };
    if (next() > 0.3) doc.tags = Array.from({ length: Math.floor(next() * 3) }, () => pick(["t1", "t2", "t3"]));
    if (next() > 0.3)
      doc.samples = Array.from({ length: Math.floor(next() * 4) }, (_, s) => ({
        t: s * 0.5,
        ...(next() > 0.3 ? { x: next() - 0.5 } : {}),
        ...(next() > 0.5 ? { points: [[s, s + 1], []] } : {}),
      }));
    // Arrays whose child tables want the same name: which is met first must not matter.
    if (next() > 0.85) doc.x_y = [{ q: Math.floor(next() * 9) }];
    if (next() > 0.85) doc.x = { y: [{ z: "w" }] };
    const irregular = next();
    if (irregular < 0.05) doc.n = null;
    else if (irregular < 0.1) doc.nested = {};
    else if (irregular < 0.15) doc.mixed = next() > 0.5 ? "text" : 7;
    else if (irregular < 0.18) doc.samples = [{ t: 1 }, { t: null }];
    else if (irregular < 0.2) doc.big = "12345678901234567890123";
    else if (irregular < 0.22) delete doc.recordid;
    out.push(doc);
  }
  return out;
}

/** Generated sensor files: a top-level array of samples, each carrying the record's fields, as intake writes them. */
function sensorFiles(seed: number, count: number): object[] {
  const next = prng(seed);
  return Array.from({ length: count }, (_, i) => {
    const record = { recordid: `rec${Math.floor(next() * count * 0.8)}`, assessmentid: "a1", year: 2022 };
    const samples: Array<Record<string, unknown>> = Array.from({ length: 1 + Math.floor(next() * 20) }, (_, s) => ({
      timestamp: s * 0.01,
      ...(s === 0 ? { stepPath: "Form 1" } : { sensorType: s % 2 ? "gyro" : "accel", x: next() - 0.5, y: next() }),
      ...record,
    }));
    const irregular = next();
    if (irregular < 0.05) delete samples[samples.length - 1]?.recordid;
    else if (irregular < 0.1) (samples[0] as Record<string, unknown>).x = null;
    else if (irregular < 0.12) return [];
    return Object.assign(samples, { assessmentid: "a1", index: i });
  });
}

/**
 * Generated document texts, written as an app or a person might: every number form (exponents, `1.0`, `-0`,
 * 17 significant digits, integers past 2^53), escapes, keys that flatten to the same name, a few values of
 * another kind than the rest of their field, and top-level arrays of objects.
 */
function texts(seed: number, count: number): string[] {
  const next = prng(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;
  const numbers = ["0", "-0", "-17", "1.0", "2.50", "-0.0", "1e3", "1E-7", "1.5e+10", "123456789012345678"];
  numbers.push("9007199254740993", "0.30000000000000004", "1e308", "5e-324", "12345.678e-2");
  const strings = ['""', '"a\\"b"', '"\\u00e9"', '"tab\\t"', '"é"', '"\\\\"', '"1"', '"true"', '"\\u0000"'];
  const keys = ["a", "b", "B2", "c d", "é", "x.y", "x_y", "_1", "1a", 'k\\"q'];
  const kinds = new Map<string, string>();
  const value = (kind: string, depth: number): string => {
    if (kind === "number") return pick(numbers);
    if (kind === "string") return pick(strings);
    if (kind === "boolean") return pick(["true", "false"]);
    if (kind === "array")
      return `[${Array.from({ length: Math.floor(next() * 3) }, () => value(pick(["number", "string", "object"]), depth + 1)).join(",")}]`;
    return object(depth + 1);
  };
  const object = (depth: number): string => {
    const fields = new Map<string, string>();
    for (let i = 0; i < 1 + Math.floor(next() * 4); i++) {
      const key = pick(keys);
      const place = `${depth}:${key}`;
      if (!kinds.has(place))
        kinds.set(
          place,
          pick(depth > 2 ? ["number", "string", "boolean"] : ["number", "string", "boolean", "array", "object"]),
        );
      const kind = next() < 0.005 ? pick(["number", "string"]) : (kinds.get(place) as string);
      if (!fields.has(key)) fields.set(key, `"${key}":${value(kind, depth)}`);
    }
    return `{${[...fields.values()].join(",")}}`;
  };
  return Array.from({ length: count }, () => {
    const record = `"recordid":"r${Math.floor(next() * 1000)}","assessmentid":"a1","year":2022`;
    const element = () => object(0).replace(/^\{/, `{${record},`).replace(",}", "}");
    return next() < 0.2 ? `[${Array.from({ length: 1 + Math.floor(next() * 3) }, element).join(",")}]` : element();
  });
}

type Layout = "per-record" | "ndjson" | "large ndjson";

/** One file per document, three small NDJSON files, or two NDJSON files large enough for DuckDB to read them itself (with blank lines). */
async function writeDataset(root: string, docs: readonly object[], layout: Layout): Promise<void> {
  for (const [i, doc] of docs.entries()) {
    const assessment = layout === "large ndjson" ? "all" : (doc as { assessmentid: string }).assessmentid;
    const folder = path.join(root, "dataset=gen", `assessmentid=${assessment}`, "year=2022");
    await mkdir(folder, { recursive: true });
    const pad = "x".repeat(32_000);
    const padded =
      layout !== "large ndjson"
        ? doc
        : Array.isArray(doc)
          ? doc.map((element) => ({ ...element, pad: pad.slice(0, 4_000) }))
          : { ...doc, pad };
    let text = `${JSON.stringify(padded).replace('"12345678901234567890123"', "12345678901234567890123")}\n`;
    if (layout === "per-record") await writeFile(path.join(folder, `doc${String(i).padStart(4, "0")}.ndjson`), text);
    else {
      if (layout === "large ndjson" && i % 50 === 7) text += "\n  \n";
      await writeFile(path.join(folder, `part${i % (layout === "ndjson" ? 3 : 2)}.ndjson`), text, { flag: "a" });
    }
  }
}

/** The sizes of the files below a folder. */
async function sizes(root: string): Promise<number[]> {
  return Promise.all((await listFiles(root)).map(async (f) => (await stat(path.join(root, f))).size));
}

/** Every table of a workspace, as sorted rows with their column names and types. */
async function tables(t: TestWorkspace): Promise<Record<string, { columns: string[]; rows: string[] }>> {
  const root = path.join(t.root, "parquet");
  const duck = await openDuckDB();
  try {
    const out: Record<string, { columns: string[]; rows: string[] }> = {};
    for (const table of (await readdir(root)).filter((d) => !d.startsWith("_")).sort()) {
      const source = `read_parquet('${path.join(root, table)}/**/*.parquet', union_by_name = true, hive_partitioning = false)`;
      const reader = await duck.connection.runAndReadAll(`SELECT * FROM ${source}`);
      const columns = reader
        .columnNames()
        .map((name, i) => `${name}:${reader.columnTypes()[i]}`)
        .sort();
      const rows = reader.getRowObjectsJson().map((row) => JSON.stringify(Object.entries(row).sort()));
      out[table] = { columns, rows: rows.sort() };
    }
    return out;
  } finally {
    duck.close();
  }
}

async function relationalize(input: string, typed: boolean, dataset: string, settings: { groupBytes?: number } = {}) {
  const t = await makeWorkspace({ relationalize: { typed, ...settings } as never });
  cleanups.push(() => t.cleanup());
  const progress: Array<[number, number]> = [];
  const report = await new RelationalizeStage(t.ws, new LocalObjectStore(input)).run(dataset, {
    onFiles: (done, total) => progress.push([done, total]),
  });
  return { t, report, progress };
}

describe("the typed way (DuckDB reads and relationalizes)", () => {
  for (const layout of ["per-record", "ndjson", "large ndjson"] as const) {
    it(`gives exactly the tables the JavaScript way gives, for generated documents (${layout})`, async () => {
      for (const seed of [1, 2]) {
        const input = await tempDir();
        cleanups.push(() => rm(input, { recursive: true, force: true }));
        await writeDataset(input, documents(seed, 300), layout);
        const typed = await relationalize(input, true, "gen");
        const plain = await relationalize(input, false, "gen");
        // Both ways were taken: most documents typed, the irregular ones (and any record they share) in JavaScript.
        expect(typed.report.typedDocuments).toBeGreaterThan(typed.report.documents / 2);
        expect(typed.report.typedDocuments).toBeLessThan(typed.report.documents);
        expect(plain.report.typedDocuments).toBe(0);
        expect(typed.report.records).toBe(plain.report.records);
        expect(typed.report.conflicts.map((c) => c.column).sort()).toEqual(
          plain.report.conflicts.map((c) => c.column).sort(),
        );
        const ours = await tables(typed.t);
        const reference = await tables(plain.t);
        expect(Object.keys(ours)).toEqual(Object.keys(reference));
        for (const name of Object.keys(reference)) {
          expect(ours[name]?.columns, name).toEqual(reference[name]?.columns);
          expect(ours[name]?.rows, name).toEqual(reference[name]?.rows);
        }
      }
    });
  }

  it("reads elements of an array that the documents sampled for the plan only had empty", async () => {
    const input = await tempDir();
    cleanups.push(() => rm(input, { recursive: true, force: true }));
    const folder = path.join(input, "dataset=gen", "assessmentid=a1", "year=2022");
    await mkdir(folder, { recursive: true });
    // The plan is guessed from the first documents; the last has what they never showed: tags' elements.
    for (let i = 0; i < 40; i++) {
      const tags = i === 39 ? '["x"]' : "[]";
      await writeFile(
        path.join(folder, `d${String(i).padStart(2, "0")}.ndjson`),
        `{"recordid":"r${i}","assessmentid":"a1","year":2022,"tags":${tags}}\n`,
      );
    }
    const typed = await relationalize(input, true, "gen");
    const plain = await relationalize(input, false, "gen");
    expect(typed.report.typedDocuments).toBe(40);
    expect(await tables(typed.t)).toEqual(await tables(plain.t));
    expect(JSON.stringify((await tables(typed.t)).gen_tags?.rows)).toContain('[\\"val\\",\\"x\\"]');
  });

  it("gives exactly the tables the JavaScript way gives, for document texts of every number form, escape and colliding key", async () => {
    for (const seed of [1, 4]) {
      const input = await tempDir();
      cleanups.push(() => rm(input, { recursive: true, force: true }));
      const folder = path.join(input, "dataset=gen", "assessmentid=a1", "year=2022");
      await mkdir(folder, { recursive: true });
      for (const [i, text] of texts(seed, 120).entries())
        await writeFile(path.join(folder, `d${String(i).padStart(3, "0")}.ndjson`), `${text}\n`);
      const typed = await relationalize(input, true, "gen");
      const plain = await relationalize(input, false, "gen");
      expect(typed.report.typedDocuments).toBeGreaterThan(0);
      expect(typed.report.typedDocuments).toBeLessThan(typed.report.documents);
      expect(typed.report.unreadable).toEqual([]);
      expect(await tables(typed.t)).toEqual(await tables(plain.t));
    }
  });

  for (const layout of ["per-record", "large ndjson"] as const) {
    it(`gives exactly the tables the JavaScript way gives, for sensor files of top-level arrays (${layout})`, async () => {
      const input = await tempDir();
      cleanups.push(() => rm(input, { recursive: true, force: true }));
      await writeDataset(input, sensorFiles(5, 200), layout);
      const typed = await relationalize(input, true, "gen");
      const plain = await relationalize(input, false, "gen");
      expect(typed.report.typedDocuments).toBeGreaterThan(typed.report.documents / 2);
      expect(typed.report.typedDocuments).toBeLessThan(typed.report.documents);
      expect(await tables(typed.t)).toEqual(await tables(plain.t));
    });
  }

  it("reads in groups of at most relationalize.groupBytes, with the same tables, and a file larger than a group in pieces", async () => {
    const input = await tempDir();
    cleanups.push(() => rm(input, { recursive: true, force: true }));
    // Records repeat across groups, so later groups replace rows earlier ones wrote.
    await writeDataset(input, documents(3, 300), "per-record");
    const plain = await relationalize(input, false, "gen");
    const oneGroup = await relationalize(input, true, "gen");
    const small = await relationalize(input, true, "gen", { groupBytes: 8 * 1024 });
    expect(oneGroup.report.groups).toBe(1);
    const bytes = (await sizes(input)).reduce((sum, size) => sum + size, 0);
    expect(small.report.groups).toBeGreaterThanOrEqual(Math.ceil(bytes / (8 * 1024)));
    // Progress is heard after each group, counting its files, up to every file of the run.
    expect(small.progress).toHaveLength(small.report.groups);
    expect(small.progress.every(([done], i) => i === 0 || done > (small.progress[i - 1]?.[0] ?? 0))).toBe(true);
    expect(small.progress.at(-1)).toEqual([small.report.filesRead, small.report.filesRead]);
    expect(plain.progress).toHaveLength(plain.report.filesRead);
    expect(small.report.typedDocuments).toBeGreaterThan(small.report.documents / 2);
    expect(small.report.records).toBe(plain.report.records);
    expect(await tables(small.t)).toEqual(await tables(plain.t));

    const large = await tempDir();
    cleanups.push(() => rm(large, { recursive: true, force: true }));
    await writeDataset(large, documents(3, 100), "large ndjson");
    const [smaller, larger] = (await sizes(large)).sort((x, y) => x - y);
    expect(smaller).toBeLessThan(larger as number);
    const pieces = await relationalize(large, true, "gen", { groupBytes: smaller });
    // The smaller file is one group; the larger, read line by line, is at least two.
    expect(pieces.report.groups).toBeGreaterThanOrEqual(3);
    expect(pieces.report.filesRead).toBe(2);
    expect(pieces.report.typedDocuments).toBeGreaterThan(pieces.report.documents / 2);
    const plainLarge = await relationalize(large, false, "gen");
    expect(pieces.report.records).toBe(plainLarge.report.records);
    expect(await tables(pieces.t)).toEqual(await tables(plainLarge.t));
  });

  it("gives the reference fixture datasets the same tables either way", async () => {
    const input = path.join(FIXTURES, "glue-json-datasets");
    for (const dataset of ["pytest_flat_table", "pytest_nested_table"]) {
      const names = await readdir(input);
      if (!names.includes(`dataset=${dataset}`)) continue;
      const typed = await relationalize(input, true, dataset);
      const plain = await relationalize(input, false, dataset);
      expect(typed.report.documents).toBe(plain.report.documents);
      expect(await tables(typed.t)).toEqual(await tables(plain.t));
    }
  });
});

describe("the typed way with unreadable lines", () => {
  it("reports what DuckDB reads but JSON does not allow as malformed, as the JavaScript way does, and keeps numbers no double holds as text", async () => {
    const input = await tempDir();
    cleanups.push(() => rm(input, { recursive: true, force: true }));
    const folder = path.join(input, "dataset=gen", "assessmentid=a1", "year=2022");
    await mkdir(folder, { recursive: true });
    const head = (record: string) => `{"recordid":"${record}","assessmentid":"a1","year":2022,"pad":"PAD"`;
    const notJson = [
      ',"v":NaN}',
      ',"v":-Infinity}',
      ',"v": inf}',
      ',"s":[1,2,]}',
      ',"o":{"a":1,}}',
      ',"s":[{"a":1},]}',
    ];
    const outOfRange = [',"v":1e400}', ',"v":-2.5E-999}', ',"s":[1.5e+400]}'];
    const regular = documents(6, 40).map((doc) => ({ ...doc, assessmentid: "a1" }));
    // One file per document, and the same documents in one file large enough for DuckDB to read it itself.
    const lines = [
      ...regular.slice(0, 20).map((doc) => JSON.stringify({ ...doc, pad: "PAD" })),
      ...notJson.map((tail, i) => `${head(`bad${i}`)}${tail}`),
      ...outOfRange.map((tail, i) => `${head(`far${i}`)}${tail}`),
      ...regular.slice(20).map((doc) => JSON.stringify({ ...doc, pad: "PAD" })),
    ];
    for (const [i, line] of lines.entries())
      await writeFile(path.join(folder, `d${String(i).padStart(2, "0")}.ndjson`), `${line.replace("PAD", "p")}\n`);
    const large = path.join(input, "dataset=big", "assessmentid=a1", "year=2022");
    await mkdir(large, { recursive: true });
    await writeFile(
      path.join(large, "all.ndjson"),
      `${lines.map((l) => l.replace("PAD", "y".repeat(4_000))).join("\n")}\n`,
    );
    for (const dataset of ["gen", "big"]) {
      const typed = await relationalize(input, true, dataset);
      const plain = await relationalize(input, false, dataset);
      expect(typed.report.typedDocuments, dataset).toBeGreaterThan(0);
      expect(typed.report.unreadable, dataset).toEqual(plain.report.unreadable);
      expect(typed.report.unreadable.length, dataset).toBe(notJson.length);
      expect(await tables(typed.t)).toEqual(await tables(plain.t));
      const catalog = await Catalog.open(typed.t.ws);
      try {
        expect(await catalog.rebuild(dataset, "bad0")).toBeUndefined();
        for (const [i, tail] of outOfRange.entries()) {
          const text = stringify(await catalog.rebuild(dataset, `far${i}`)) as string;
          expect(text, dataset).toContain(tail.slice(0, -1));
        }
      } finally {
        catalog.close();
      }
    }
  });

  it("reports each malformed line, small file or large, exactly as the JavaScript way does, and reads the rest", async () => {
    const input = await tempDir();
    cleanups.push(() => rm(input, { recursive: true, force: true }));
    const folder = path.join(input, "dataset=gen", "assessmentid=a1", "year=2022");
    await mkdir(folder, { recursive: true });
    const docs = documents(4, 120);
    const line = (doc: object) => JSON.stringify({ ...doc, assessmentid: "a1", pad: "y".repeat(40_000) });
    // A small file with a broken line between good ones, and a large file (read by DuckDB) with one.
    await writeFile(
      path.join(folder, "a-small.ndjson"),
      `${JSON.stringify(docs[0])}\n{"recordid": "x",\n[1,2]\n5\n[{"recordid":"z","assessmentid":"a1"},3]\n${JSON.stringify(docs[1])}\n`,
    );
    const large = docs.slice(2).map(line);
    large.splice(30, 0, "not json at all");
    await writeFile(path.join(folder, "b-large.ndjson"), `${large.join("\n")}\n`);
    const typed = await relationalize(input, true, "gen");
    const plain = await relationalize(input, false, "gen");
    expect(typed.report.unreadable).toEqual(plain.report.unreadable);
    expect(typed.report.unreadable.map((u) => [path.basename(u.key), u.line, u.message])).toEqual([
      ["a-small.ndjson", 2, expect.any(String)],
      ["a-small.ndjson", 3, "element 0 of the top-level array is not an object"],
      ["a-small.ndjson", 4, "the document is neither an object nor an array of objects"],
      ["a-small.ndjson", 5, "element 1 of the top-level array is not an object"],
      ["b-large.ndjson", 31, expect.any(String)],
    ]);
    expect(JSON.stringify(await tables(typed.t))).not.toContain('"z"');
    expect(typed.report.documents).toBe(plain.report.documents);
    expect(await tables(typed.t)).toEqual(await tables(plain.t));
    // Read in pieces of a few lines, the large file's bad line keeps its number.
    const pieces = await relationalize(input, true, "gen", { groupBytes: 200_000 });
    expect(pieces.report.groups).toBeGreaterThan(10);
    expect(pieces.report.unreadable).toEqual(plain.report.unreadable);
    expect(await tables(pieces.t)).toEqual(await tables(plain.t));

    // Without the large file, the rest of the small files' documents still take the typed way.
    await rm(path.join(folder, "b-large.ndjson"));
    for (const [i, doc] of docs.slice(2, 40).entries()) {
      await writeFile(path.join(folder, `c${i}.ndjson`), `${JSON.stringify({ ...doc, assessmentid: "a1" })}\n`);
    }
    const typedSmall = await relationalize(input, true, "gen");
    const plainSmall = await relationalize(input, false, "gen");
    expect(typedSmall.report.typedDocuments).toBeGreaterThan(0);
    expect(typedSmall.report.unreadable).toEqual(plainSmall.report.unreadable);
    expect(typedSmall.report.unreadable.map((u) => u.line)).toEqual([2, 3, 4, 5]);
    expect(await tables(typedSmall.t)).toEqual(await tables(plainSmall.t));
  });
});
