import type { DuckDBAppender, DuckDBConnection } from "@duckdb/node-api";
import type { Bookmark } from "../state/relationalize-state.js";

/**
 * The new and changed files a relationalize call found, kept in a DuckDB table rather than in JavaScript: a
 * first run over a study's history can find hundreds of thousands, and the runs take them a slice at a time,
 * in upload order (oldest first, then by key).
 */
export class ChangedFiles {
  private appender: DuckDBAppender | undefined;
  private counts = { data: 0, deletions: 0 };

  private constructor(private readonly connection: DuckDBConnection) {}

  static async create(connection: DuckDBConnection): Promise<ChangedFiles> {
    await connection.run(
      "CREATE OR REPLACE TEMP TABLE changed_files (key VARCHAR, size_bytes BIGINT, modified_ms BIGINT, deletion BOOLEAN)",
    );
    const files = new ChangedFiles(connection);
    files.appender = await connection.createAppender("changed_files");
    return files;
  }

  add(key: string, info: Bookmark, deletion: boolean): void {
    const appender = this.appender;
    if (!appender) throw new Error("changed files are already listed");
    appender.appendVarchar(key);
    appender.appendBigInt(BigInt(info.sizeBytes));
    appender.appendBigInt(BigInt(info.modifiedMs));
    appender.appendBoolean(deletion);
    appender.endRow();
    if (deletion) this.counts.deletions++;
    else this.counts.data++;
  }

  /** Ends the listing and numbers the data files in upload order. */
  async finish(): Promise<void> {
    this.appender?.closeSync();
    this.appender = undefined;
    await this.connection.run(
      "CREATE OR REPLACE TEMP TABLE changed_order AS SELECT row_number() OVER (ORDER BY modified_ms, key) - 1 AS n, key, size_bytes, modified_ms FROM changed_files WHERE NOT deletion",
    );
  }

  get dataFiles(): number {
    return this.counts.data;
  }

  get size(): number {
    return this.counts.data + this.counts.deletions;
  }

  /** The deletion export's files (all of them: the first run takes them). */
  async deletions(): Promise<Array<[string, Bookmark]>> {
    if (this.counts.deletions === 0) return [];
    return this.read("SELECT key, size_bytes, modified_ms FROM changed_files WHERE deletion ORDER BY modified_ms, key");
  }

  /** Data files `start` to `start + count` in upload order. */
  async slice(start: number, count: number): Promise<Array<[string, Bookmark]>> {
    return this.read(
      `SELECT key, size_bytes, modified_ms FROM changed_order WHERE n >= ${start} AND n < ${start + count} ORDER BY n`,
    );
  }

  private async read(sql: string): Promise<Array<[string, Bookmark]>> {
    const rows = await this.connection.runAndReadAll(sql);
    return rows
      .getRowsJS()
      .map(([key, size, modified]) => [String(key), { sizeBytes: Number(size), modifiedMs: Number(modified) }]);
  }
}
