import { describe, expect, it } from "vitest";
import { ChangedFiles } from "../src/parquet/changed-files.js";
import { openDuckDB } from "../src/parquet/duckdb.js";

describe("the changed files of a relationalize call", () => {
  it("gives the data files in upload order (time, then key) a slice at a time, and the deletion files apart", async () => {
    const duck = await openDuckDB();
    try {
      const files = await ChangedFiles.create(duck.connection);
      const at = (ms: number) => ({ sizeBytes: ms * 10, modifiedMs: 1_700_000_000_000 + ms });
      files.add("dataset=d/b", at(2), false);
      files.add("dataset=d/c", at(1), false);
      files.add("dataset=x/gone", at(0), true);
      files.add("dataset=d/a", at(2), false);
      files.add("dataset=d/é", at(3), false);
      await files.finish();
      expect(() => files.add("dataset=d/late", at(9), false)).toThrow(/already listed/);
      expect([files.size, files.dataFiles]).toEqual([5, 4]);
      expect(await files.slice(0, 2)).toEqual([
        ["dataset=d/c", at(1)],
        ["dataset=d/a", at(2)],
      ]);
      expect((await files.slice(2, 2)).map(([key]) => key)).toEqual(["dataset=d/b", "dataset=d/é"]);
      expect(await files.slice(4, 2)).toEqual([]);
      expect(await files.deletions()).toEqual([["dataset=x/gone", at(0)]]);
    } finally {
      duck.close();
    }
  });
});
