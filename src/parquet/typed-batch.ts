import type { DuckDBConnection } from "@duckdb/node-api";
import type { DatasetSchema } from "../relationalize/model.js";
import {
  candidateProblem,
  covers,
  fitsSchema,
  mergeStructures,
  parseStructure,
  type Requirements,
  readPlan,
  rowStructure,
  type Structure,
} from "../relationalize/structure.js";
import { ident, literal } from "./duckdb.js";
import { typedTableSelects } from "./typed-tables.js";

/**
 * A file of the batch: its key, and its text (small files), a path DuckDB reads it from (large ones), or a
 * piece of its lines (a file larger than a group, read in pieces; `firstLine` is the first one's number).
 */
export interface BatchFile {
  key: string;
  content: Buffer | null;
  localPath: string | undefined;
  piece?: { lines: string[]; firstLine: number };
}

/** A document left to the JavaScript relationalizer. Line is null when DuckDB read the file (lines unknown). */
export interface LeftDocument {
  seq: bigint;
  file: number;
  /** Position among the file's non-blank lines (0-based). */
  ordinal: number;
  line: number | null;
  text: string;
}

/**
 * Text that the structure cannot vouch for: `null` or `{}` anywhere (merging array elements hides them);
 * numbers a double or no 64-bit type may not hold (integers of 16 digits or more, which a DOUBLE column
 * would round; exponents of 100 or more ending a number, so that hex ids rarely match; fractions beginning
 * with 200 zeros), which the JavaScript way types exactly; and what DuckDB reads but JSON does not allow
 * (`NaN`, `Infinity` or `inf` in any case, a comma before `}` or `]`), which the JavaScript way reports as
 * malformed. Text inside strings can match too; that only sends the document the slower way.
 */
const UNSURE_TEXT =
  "\\{\\s*\\}|(^|[^.0-9])[0-9]{16}|[0-9][eE][-+]?0*[1-9][0-9]{2,}[,}\\]\\s]|\\.0{200}|[:,\\[]\\s*[-+]?(?i:nan|inf)|,\\s*[}\\]]";
/** A document's sequence number: its file's place in the batch, then its place in the file. */
const FILE_SHIFT = 2n ** 32n;
/**
 * Files this large DuckDB reads itself, on all cores; smaller ones (intake writes one small file per record)
 * go in from the text already read, as DuckDB opens many small files far slower than Node reads them.
 */
export const DUCKDB_READS_FROM = 64 * 1024;
/** Documents whose structure is sampled to plan the typed read of a batch when no plan is known yet. */
const PLAN_SAMPLE = 32;

/**
 * The DuckDB side of a relationalize batch. The documents of a group of files are loaded into DuckDB and, in
 * one pass, each gets its `json_structure` and is read typed (`json_transform`) with a planned structure.
 * Documents whose structure says everything about them (structure.ts) are written as tables by SQL
 * (typed-tables.ts); the others are left to the JavaScript relationalizer. All documents of a record go one
 * way (the newest wins within each), so the two ways never disagree on which upload is current.
 */
export class TypedBatch {
  private readonly tables: string[] = [];
  /** The lines of the files whose text was given, and the number of the line before the first. */
  private readonly lines = new Map<number, { lines: string[]; before: number }>();
  private plan: Structure | null = null;
  private classes: Structure[] = [];
  private readonly large: Array<{ index: number; path: string }> = [];

  constructor(
    private readonly connection: DuckDBConnection,
    private readonly name: string,
    private readonly recordField: string,
  ) {}

  private table(suffix: string): string {
    const table = ident(`${this.name}_${suffix}`);
    if (!this.tables.includes(table)) this.tables.push(table);
    return table;
  }

  /**
   * Takes in the files: small files' lines and pieces go into DuckDB from their text; larger files DuckDB
   * reads itself when classifying. Returns false when a large file has no local path: the caller then takes
   * the whole group the JavaScript way.
   */
  async load(files: readonly BatchFile[]): Promise<boolean> {
    const small = this.table("small");
    await this.connection.run(`CREATE TEMP TABLE ${small} (seq BIGINT, file INTEGER, json VARCHAR)`);
    const appender = await this.connection.createAppender(`${this.name}_small`);
    let readable = true;
    files.forEach((file, index) => {
      if (!file.piece && (!file.content || (file.content.length >= DUCKDB_READS_FROM && file.localPath))) {
        if (file.localPath) this.large.push({ index, path: file.localPath });
        else readable = false;
        return;
      }
      const lines = file.piece?.lines ?? (file.content as Buffer).toString("utf8").split("\n");
      this.lines.set(index, { lines, before: (file.piece?.firstLine ?? 1) - 1 });
      lines.forEach((line, i) => {
        if (line.trim() === "") return;
        appender.appendBigInt(BigInt(index) * FILE_SHIFT + BigInt(i));
        appender.appendInteger(index);
        appender.appendVarchar(line);
        appender.endRow();
      });
    });
    appender.closeSync();
    return readable;
  }

  /** The large files' documents as DuckDB reads them, in the files' order and each file's line order. */
  private largeRead(): string {
    return `read_ndjson_objects([${this.large.map((l) => literal(l.path)).join(", ")}], filename = true)`;
  }

  /**
   * Gives every document its structure and its typed reading in one pass (DuckDB reads the large files on
   * all cores), with `plan` (the previous batch's, or one sampled from this batch), then decides which
   * documents take the typed way: those of structures the rules allow, that agree with each other and with
   * the dataset's columns. When the plan did not cover them all, they are read again with a plan that does.
   * Returns false when DuckDB could not read a large file (a malformed line): the caller then takes the
   * whole group the JavaScript way, which reports each bad line.
   */
  async classify(required: Requirements, schema: DatasetSchema, plan: Structure | null): Promise<boolean> {
    const guess = plan ?? (await this.samplePlan(required, schema));
    try {
      await this.scan(guess, null);
    } catch {
      return false;
    }
    const rows = await this.connection.runAndReadAll(
      `SELECT s, count(*) AS n FROM ${this.table("meta")} WHERE s IS NOT NULL GROUP BY s ORDER BY n DESC, s`,
    );
    let merged: Structure | null = null;
    const taken: Array<{ text: string; structure: Structure }> = [];
    for (const [text] of rows.getRowsJS()) {
      const structure = parseStructure(String(text));
      if (!allowed(structure, required, schema)) continue;
      const next: Structure | null = merged === null ? structure : mergeStructures(merged, structure);
      if (next === null) continue;
      merged = next;
      taken.push({ text: String(text), structure });
    }
    this.classes = taken.map((t) => t.structure);
    const ok = this.table("ok");
    await this.connection.run(`CREATE TEMP TABLE ${ok} (s VARCHAR)`);
    if (taken.length > 0) {
      await this.connection.run(`INSERT INTO ${ok} VALUES ${taken.map((t) => `(${literal(t.text)})`).join(", ")}`);
    }
    const keep = this.table("keep");
    if (merged === null) {
      this.plan = null;
      await this.connection.run(`CREATE TEMP TABLE ${keep} (seq BIGINT)`);
      await this.connection.run(`CREATE TEMP TABLE ${this.table("typed")} (seq BIGINT)`);
      return true;
    }
    this.plan = guess !== null && taken.every((t) => covers(guess, t.structure)) ? guess : merged;
    if (this.plan !== guess) await this.scan(this.plan, ok);
    // The elements of a top-level array must each have the root fields (the structure merges them).
    const row = rowStructure(this.plan);
    const fields = [required.recordField, ...required.rootFields].filter((f) => row && f in row);
    const complete = Array.isArray(this.plan)
      ? `list_bool_and(list_transform(j, x -> ${fields.map((f) => `struct_extract(x, ${literal(f)}) IS NOT NULL`).join(" AND ")}))`
      : "true";
    const typed = this.table("typed");
    await this.connection.run(
      `CREATE TEMP TABLE ${typed} AS SELECT seq FROM ${this.table("meta")} WHERE s IN (SELECT s FROM ${ok}) AND ${complete}`,
    );
    await this.connection.run(
      `CREATE TEMP TABLE ${keep} AS SELECT seq FROM ${this.table("meta")} WHERE seq IN (SELECT seq FROM ${typed}) QUALIFY row_number() OVER (PARTITION BY rec ORDER BY seq DESC) = 1`,
    );
    return true;
  }

  /**
   * Builds `meta` (seq, file, structure `s`, typed reading `j`, and the text of large files' documents
   * whose structure is unknown) with a read plan; with `only`, reads typed just the documents of its structures.
   */
  private async scan(plan: Structure | null, only: string | null): Promise<void> {
    const read = plan === null ? "NULL" : `TRY(json_transform(json, ${literal(JSON.stringify(readPlan(plan)))}))`;
    const j = only === null ? read : `CASE WHEN s IN (SELECT s FROM ${only}) THEN ${read} END`;
    // The record key, for typed documents (whose structure says it is a string).
    const first = Array.isArray(plan) ? "j[1]" : "j";
    const rec =
      plan === null
        ? "NULL::VARCHAR"
        : `CASE WHEN s IS NOT NULL THEN struct_extract(${first}, ${literal(this.recordField)}) END`;
    const structure = `CASE WHEN contains(json, 'null') OR regexp_matches(json, ${literal(UNSURE_TEXT)}) THEN NULL ELSE TRY(json_structure(json)) END`;
    const small = this.table("metaSmall");
    await this.connection.run(
      `CREATE OR REPLACE TEMP TABLE ${small} AS SELECT seq, file, s, j, ${rec} AS rec FROM (SELECT seq, file, s, ${j} AS j FROM (SELECT seq, file, json, ${structure} AS s FROM ${this.table("small")}))`,
    );
    const parts = [`SELECT seq, file, s, j, rec, NULL AS text FROM ${small}`];
    if (this.large.length > 0) {
      // Rows keep the files' order and each file's line order: a document's place in its file is its row
      // number minus the file's first.
      const large = this.table("metaLarge");
      await this.connection.run(
        `CREATE OR REPLACE TEMP TABLE ${large} AS SELECT filename, s, j, ${rec} AS rec, text FROM (SELECT filename, s, ${j} AS j, CASE WHEN s IS NULL THEN json END AS text FROM (SELECT filename, json, ${structure} AS s FROM ${this.largeRead()}))`,
      );
      const first = this.table("first");
      const fileOf = `CASE filename ${this.large.map((l) => `WHEN ${literal(l.path)} THEN ${l.index}`).join(" ")} END`;
      await this.connection.run(
        `CREATE OR REPLACE TEMP TABLE ${first} AS SELECT filename, ${fileOf} AS file, min(rowid) AS first FROM ${large} GROUP BY filename`,
      );
      parts.push(
        `SELECT CAST(f.file AS BIGINT) * ${FILE_SHIFT} + (m.rowid - f.first), f.file, m.s, m.j, m.rec, m.text FROM ${large} m JOIN ${first} f USING (filename)`,
      );
    }
    await this.connection.run(`CREATE OR REPLACE TEMP VIEW ${this.table("meta")} AS ${parts.join(" UNION ALL ")}`);
  }

  /** The plan this batch read documents with: the next batch starts from it. */
  get readWith(): Structure | null {
    return this.plan;
  }

  private async samplePlan(required: Requirements, schema: DatasetSchema): Promise<Structure | null> {
    // The first large file alone: DuckDB reads the others in parallel otherwise, all for a few documents.
    const first = this.large[0];
    const source = first
      ? `SELECT json FROM ${this.table("small")} UNION ALL SELECT json FROM read_ndjson_objects(${literal(first.path)})`
      : `SELECT json FROM ${this.table("small")}`;
    const rows = await this.connection
      .runAndReadAll(
        `SELECT TRY(json_structure(json)) FROM (${source}) WHERE NOT contains(json, 'null') LIMIT ${PLAN_SAMPLE}`,
      )
      .catch(() => null);
    let plan: Structure | null = null;
    for (const [text] of rows?.getRowsJS() ?? []) {
      if (typeof text !== "string") continue;
      const structure = parseStructure(text);
      if (!allowed(structure, required, schema)) continue;
      plan = plan === null ? structure : (mergeStructures(plan, structure) ?? plan);
    }
    return plan;
  }

  /** The structures of the documents on the typed way. */
  get typedClasses(): readonly Structure[] {
    return this.classes;
  }

  /**
   * The documents left to JavaScript, in order: those not on the typed way, and the typed documents of any
   * record that also has one of those (so each record goes one way), which leave the typed way.
   * `recordOf` gives a document's record key from its text, as the JavaScript way reads it.
   */
  async leftDocuments(recordOf: (text: string) => string | undefined): Promise<LeftDocument[]> {
    const meta = this.table("meta");
    if (this.plan === null) return this.fetch(`SELECT seq FROM ${meta}`);
    const notTyped = await this.fetch(
      `SELECT seq FROM ${meta} WHERE seq NOT IN (SELECT seq FROM ${this.table("typed")})`,
    );
    const records = [...new Set(notTyped.flatMap((d) => recordOf(d.text) ?? []))];
    const moved = await this.move(records);
    return [...notTyped, ...moved].sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0));
  }

  /**
   * Takes the documents of these structures off the typed way, with every other typed document of their
   * records; returns them in order, for JavaScript.
   */
  async demote(structures: readonly Structure[]): Promise<LeftDocument[]> {
    if (structures.length === 0) return [];
    const texts = new Set(structures.map((s) => JSON.stringify(s)));
    const rows = await this.connection.runAndReadAll(
      `SELECT DISTINCT s, rec FROM ${this.table("meta")} WHERE seq IN (SELECT seq FROM ${this.table("typed")})`,
    );
    const records = rows
      .getRowsJS()
      .filter(([s]) => texts.has(JSON.stringify(parseStructure(String(s)))))
      .map(([, rec]) => String(rec));
    this.classes = this.classes.filter((c) => !texts.has(JSON.stringify(c)));
    return this.move(records);
  }

  /** Takes every typed document of these records off the typed way, and returns them in order. */
  async move(records: readonly string[]): Promise<LeftDocument[]> {
    if (records.length === 0) return [];
    const moving = this.table("moving");
    await this.connection.run(`CREATE OR REPLACE TEMP TABLE ${moving} (rec VARCHAR)`);
    const appender = await this.connection.createAppender(`${this.name}_moving`);
    for (const record of records) {
      appender.appendVarchar(record);
      appender.endRow();
    }
    appender.closeSync();
    const typed = this.table("typed");
    const seqs = `SELECT seq FROM ${this.table("meta")} WHERE seq IN (SELECT seq FROM ${typed}) AND rec IN (SELECT rec FROM ${moving})`;
    const moved = await this.fetch(seqs);
    await this.connection.run(`DELETE FROM ${this.table("keep")} WHERE seq IN (${seqs})`);
    await this.connection.run(`DELETE FROM ${typed} WHERE seq IN (${seqs})`);
    return moved;
  }

  /** The documents with these sequence numbers, in order, with their text. */
  private async fetch(seqs: string): Promise<LeftDocument[]> {
    const rows = await this.connection.runAndReadAll(
      `SELECT seq, file, text FROM ${this.table("meta")} WHERE seq IN (${seqs}) ORDER BY seq`,
    );
    const documents: LeftDocument[] = [];
    const missing = new Map<number, LeftDocument[]>();
    for (const [seq, file, text] of rows.getRowsJS()) {
      const ordinal = Number(BigInt(seq as bigint) % FILE_SHIFT);
      const given = this.lines.get(Number(file));
      // Small files and pieces were split here, so the position gives the line; DuckDB skipped blank lines of large files.
      const document: LeftDocument = {
        seq: BigInt(seq as bigint),
        file: Number(file),
        ordinal,
        line: given ? given.before + ordinal + 1 : null,
        text: given ? (given.lines[ordinal] ?? "") : typeof text === "string" ? text : "",
      };
      if (!given && typeof text !== "string")
        missing.set(document.file, [...(missing.get(document.file) ?? []), document]);
      documents.push(document);
    }
    for (const [file, wanted] of missing) {
      const path = this.large.find((l) => l.index === file)?.path as string;
      const again = this.table("again");
      await this.connection.run(
        `CREATE OR REPLACE TEMP TABLE ${again} AS SELECT json FROM read_ndjson_objects(${literal(path)})`,
      );
      const texts = await this.connection.runAndReadAll(
        `SELECT rowid, json FROM ${again} WHERE rowid IN (${wanted.map((d) => d.ordinal).join(", ")})`,
      );
      const byOrdinal = new Map(texts.getRowsJS().map(([rowid, json]) => [Number(rowid), String(json)]));
      for (const document of wanted) document.text = byOrdinal.get(document.ordinal) ?? "";
    }
    return documents;
  }

  /**
   * The typed documents' records, with the file each came from and the text of some root fields (null
   * where missing), in order. Undefined when one of those fields is not text in this batch: DuckDB would
   * write a number or boolean otherwise than JavaScript does, so the caller reads them the JavaScript way.
   */
  async records(
    fields: readonly string[] = [],
  ): Promise<Array<{ record: string; file: number; values: Array<string | null> }> | undefined> {
    if (this.plan === null) return [];
    const row = rowStructure(this.plan) ?? {};
    if (fields.some((f) => f in row && row[f] !== "VARCHAR")) return undefined;
    const root = Array.isArray(this.plan) ? "j[1]" : "j";
    const values = fields.map((f) => (f in row ? `struct_extract(${root}, ${literal(f)})` : "NULL::VARCHAR"));
    const rows = await this.connection.runAndReadAll(
      `SELECT rec, file${values.map((v) => `, ${v}`).join("")} FROM ${this.table("meta")} WHERE seq IN (SELECT seq FROM ${this.table("keep")}) ORDER BY seq`,
    );
    return rows.getRowsJS().map(([record, file, ...rest]) => ({
      record: String(record),
      file: Number(file),
      values: rest.map((v) => (v === null || v === undefined ? null : String(v))),
    }));
  }

  /** Records with more than one typed document in this batch. */
  async repeatedRecords(): Promise<string[]> {
    if (this.plan === null) return [];
    const rows = await this.connection.runAndReadAll(
      `SELECT rec FROM ${this.table("meta")} WHERE seq IN (SELECT seq FROM ${this.table("typed")}) GROUP BY rec HAVING count(*) > 1`,
    );
    return rows.getRowsJS().map(([record]) => String(record));
  }

  /** How many documents the typed way read (older copies of a record it kept included). */
  async documents(): Promise<number> {
    if (this.plan === null) return 0;
    const meta = this.table("meta");
    const rows = await this.connection.runAndReadAll(
      `SELECT count(*) FROM ${meta} WHERE seq IN (SELECT seq FROM ${this.table("typed")})`,
    );
    return Number(rows.getRowsJS()[0]?.[0] ?? 0);
  }

  /**
   * The batch's last step: the SELECT giving each table's rows for the typed documents, in the schema's columns
   * and types. The documents kept are gathered once for all the tables (each table's SELECT computed `meta`'s
   * union, join and filter again before), and every other reading is let go before DuckDB writes the tables,
   * so a group holds its typed readings once.
   */
  async selects(schema: DatasetSchema): Promise<Map<string, string>> {
    if (this.plan === null) return new Map();
    const rows = this.table("rows");
    await this.connection.run(
      `CREATE OR REPLACE TEMP TABLE ${rows} AS SELECT seq, rec, j FROM ${this.table("meta")} WHERE seq IN (SELECT seq FROM ${this.table("keep")})`,
    );
    await this.connection.run(`DROP VIEW ${this.table("meta")}`);
    for (const read of ["metaSmall", "metaLarge"])
      await this.connection.run(`DROP TABLE IF EXISTS ${this.table(read)}`);
    return typedTableSelects(schema, this.plan, rows);
  }

  async close(): Promise<void> {
    const meta = this.table("meta");
    for (const table of this.tables.splice(0)) {
      await this.connection.run(table === meta ? `DROP VIEW IF EXISTS ${table}` : `DROP TABLE IF EXISTS ${table}`);
    }
  }
}

/** Whether documents of this structure may take the typed way, as far as the dataset's columns so far say. */
function allowed(structure: Structure, required: Requirements, schema: DatasetSchema): boolean {
  return candidateProblem(structure, required) === null && fitsSchema(structure, schema, { lenient: true });
}
