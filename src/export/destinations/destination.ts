import type { Column } from "../columns.js";
import type { Cells, TableRef } from "../tables.js";

/** One table's share of an export: written all at once, or not at all. */
export interface TableWrite {
  exportId: string;
  table: TableRef;
  /** The table's columns after this export (existing ones first, in their order). */
  columns: readonly Column[];
  /** The columns the destination had before, if the table existed (to alter it). */
  previousColumns: readonly Column[] | undefined;
  rows: readonly Cells[];
  /** Rows of these records are removed first (a redrive replaces them); `fromExports` wrote them. */
  replace: { recordIds: readonly string[]; fromExports: readonly string[] };
  /** Attachments the rows reference: key → JSON text. */
  attachments: ReadonlyMap<string, string>;
}

/** Where researcher tables go: a folder of TSV or CSV files, or a PostgreSQL database. */
export interface Destination {
  /** How a user finds the table: a folder path or a qualified table name. */
  locate(table: TableRef): string;
  /** Whether this export already wrote this table (it was cut off after writing and before recording it). */
  written(exportId: string, table: TableRef): Promise<boolean>;
  writeTable(write: TableWrite): Promise<void>;
  close(): Promise<void>;
}
