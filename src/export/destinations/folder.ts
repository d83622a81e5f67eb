import path from "node:path";
import { LocalObjectStore } from "../../storage/object-store.js";
import type { TableRef } from "../tables.js";
import { formatTable, parseRows, type TextFormat } from "../tsv.js";
import type { Destination, TableWrite } from "./destination.js";

/** A file or folder name from an id: characters outside `[A-Za-z0-9_.-]` become `_`, as the reference's TSV names. */
function safeName(id: string): string {
  return id.replace(/[^A-Za-z0-9_.-]/g, "_").replace(/^\.+/, "_");
}

/**
 * Researcher tables as folders of text files: `<study>/<table>/part-<export>.<tsv|csv>`, one file per export
 * with its own header (so a table that gained columns keeps its earlier files as they were), each written
 * atomically; attachments under `attachments/`. A redrive rewrites the earlier files that held its records.
 */
export class FolderDestination implements Destination {
  private readonly store: LocalObjectStore;

  constructor(
    readonly root: string,
    private readonly format: TextFormat,
  ) {
    this.store = new LocalObjectStore(root);
  }

  private folder(table: TableRef): string {
    return `${safeName(table.studyId)}/${safeName(table.title)}`;
  }

  private part(table: TableRef, exportId: string): string {
    return `${this.folder(table)}/part-${exportId}.${this.format}`;
  }

  locate(table: TableRef): string {
    return path.join(this.root, ...this.folder(table).split("/"));
  }

  written(exportId: string, table: TableRef): Promise<boolean> {
    return this.store.exists(this.part(table, exportId));
  }

  async writeTable(write: TableWrite): Promise<void> {
    for (const [key, json] of write.attachments) {
      const target = `attachments/${key}`;
      if (!(await this.store.exists(target))) await this.store.put(target, json);
    }
    if (write.replace.recordIds.length > 0) await this.removeRecords(write);
    const names = write.columns.map((c) => c.name);
    await this.store.put(this.part(write.table, write.exportId), formatTable(this.format, names, write.rows), {
      durable: true,
    });
  }

  /** Rewrites the earlier files that hold rows of the replaced records, without those rows. */
  private async removeRecords(write: TableWrite): Promise<void> {
    const replaced = new Set(write.replace.recordIds);
    for (const exportId of new Set(write.replace.fromExports)) {
      const key = this.part(write.table, exportId);
      if (exportId === write.exportId || !(await this.store.exists(key))) continue;
      const [header, ...rows] = parseRows(this.format, (await this.store.get(key)).toString("utf8"));
      const at = header?.indexOf("recordId") ?? -1;
      if (!header || at < 0) continue;
      const kept = rows.filter((row) => !replaced.has(row[at] ?? ""));
      if (kept.length === rows.length) continue;
      const names = header.map((h) => h ?? "");
      const text = formatTable(
        this.format,
        names,
        kept.map((row) => Object.fromEntries(names.map((n, i) => [n, row[i] ?? null]))),
      );
      await this.store.put(key, text, { durable: true });
    }
  }

  async close(): Promise<void> {}
}
