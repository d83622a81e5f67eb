import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { InvalidKeyError, LocalObjectStore } from "../src/storage/object-store.js";
import { tempDir } from "./support/workspace.js";

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

async function store(): Promise<LocalObjectStore> {
  const dir = await tempDir();
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return new LocalObjectStore(dir);
}

describe("the local object store", () => {
  it("puts, gets, heads and deletes objects; a missing one is reported, never thrown synchronously", async () => {
    const s = await store();
    await s.put("a/b/one.json", '{"x":1}\n', { durable: true });
    expect((await s.get("a/b/one.json")).toString()).toBe('{"x":1}\n');
    expect(await s.head("a/b/one.json")).toMatchObject({ sizeBytes: 8 });
    expect(await s.exists("a/b/one.json")).toBe(true);
    expect(await s.exists("a/b")).toBe(false);
    expect(await s.head("a/b")).toBeUndefined();
    await s.delete("a/b/one.json");
    expect(await s.head("a/b/one.json")).toBeUndefined();
    const missing = s.get("a/b/one.json");
    await expect(missing).rejects.toMatchObject({ code: "ENOENT" });
    await expect(s.get("../outside")).rejects.toBeInstanceOf(InvalidKeyError);
  });

  it("lists the keys under a prefix, sorted, walking only the prefix's folder, without unfinished puts", async () => {
    const s = await store();
    for (const key of ["dataset=ab/x=1/r2.ndjson", "dataset=a/x=2/r1.ndjson", "dataset=a/x=1/r1.ndjson", "other/z"]) {
      await s.put(key, "{}\n");
    }
    await writeFile(path.join(s.location, "dataset=a", "x=1", "r3.ndjson.tmp-abc"), "{");
    expect(await s.list("dataset=a/")).toEqual(["dataset=a/x=1/r1.ndjson", "dataset=a/x=2/r1.ndjson"]);
    expect(await s.list("dataset=a")).toEqual([
      "dataset=a/x=1/r1.ndjson",
      "dataset=a/x=2/r1.ndjson",
      "dataset=ab/x=1/r2.ndjson",
    ]);
    expect(await s.list("dataset=a/x=1/r")).toEqual(["dataset=a/x=1/r1.ndjson"]);
    expect(await s.list()).toHaveLength(4);
    expect(await s.list("dataset=none/")).toEqual([]);
    await expect(s.list("../")).rejects.toBeInstanceOf(InvalidKeyError);
    // A file where the prefix expects a folder lists nothing rather than failing.
    await mkdir(path.join(s.location, "empty"), { recursive: true });
    expect(await s.list("empty/")).toEqual([]);
    expect(await s.list("other/z/")).toEqual([]);
  });

  it("lists objects with the size and modification time a head gives, in key order", async () => {
    const s = await store();
    await s.put("d/b.ndjson", "{}\n");
    await s.put("d/a.ndjson", '{"x":12}\n');
    await writeFile(path.join(s.location, "d", "c.ndjson.tmp-abc"), "{");
    const entries = await s.entries("d/");
    expect([...entries.keys()]).toEqual(["d/a.ndjson", "d/b.ndjson"]);
    for (const [key, info] of entries) expect(info).toEqual(await s.head(key));
    expect(entries.get("d/a.ndjson")?.sizeBytes).toBe(9);
    expect(await s.entries("none/")).toEqual(new Map());
  });
});
