import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { InvalidKeyError, LocalObjectStore, type ObjectInfo } from "../src/storage/object-store.js";
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

  it("lists objects with the size and modification time a head gives, in key order, a folder at a time", async () => {
    const s = await store();
    await s.put("d/b.ndjson", "{}\n");
    await s.put("d/a.ndjson", '{"x":12}\n');
    // A file named like a folder and a dash sorts before it ('-' < '/'); the walk must still give key order.
    for (const key of ["d/x/1.ndjson", "d/x-y.ndjson", "d/x/0.ndjson", "d/w/9.ndjson", "d/x0.ndjson"])
      await s.put(key, "{}\n");
    await writeFile(path.join(s.location, "d", "c.ndjson.tmp-abc"), "{");
    const pages: Array<Array<[string, ObjectInfo]>> = [];
    for await (const page of s.entries("d/")) pages.push(page);
    const keys = pages.flat().map(([key]) => key);
    expect(keys).toEqual([...keys].sort());
    expect(keys).toEqual([
      "d/a.ndjson",
      "d/b.ndjson",
      "d/w/9.ndjson",
      "d/x-y.ndjson",
      "d/x/0.ndjson",
      "d/x/1.ndjson",
      "d/x0.ndjson",
    ]);
    // One page per run of files in a folder, never the whole listing at once.
    expect(pages.map((p) => p.length)).toEqual([2, 1, 1, 2, 1]);
    for (const [key, info] of pages.flat()) expect(info).toEqual(await s.head(key));
    expect(pages[0]?.[0]?.[1].sizeBytes).toBe(9);
    expect(await s.list("d/")).toEqual(keys);
    const none: unknown[] = [];
    for await (const page of s.entries("none/")) none.push(page);
    expect(none).toEqual([]);
  });

  it("lists the folders directly under a prefix", async () => {
    const s = await store();
    for (const key of ["dataset=b/x=1/r.ndjson", "dataset=a/r.ndjson", "dataset.txt", "other/z", "datasets/q"])
      await s.put(key, "{}\n");
    expect(await s.folders("dataset=")).toEqual(["dataset=a/", "dataset=b/"]);
    expect(await s.folders()).toEqual(["dataset=a/", "dataset=b/", "datasets/", "other/"]);
    expect(await s.folders("dataset=b/")).toEqual(["dataset=b/x=1/"]);
    expect(await s.folders("none/")).toEqual([]);
    await expect(s.folders("../")).rejects.toBeInstanceOf(InvalidKeyError);
  });
});
