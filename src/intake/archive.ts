import type { Readable } from "node:stream";
import { crc32, inflateRawSync } from "node:zlib";
import yauzl from "yauzl";
import type { Limits } from "../config/config.js";

export interface ArchiveEntry {
  /** The entry's full path inside the archive. */
  path: string;
  data: Buffer;
}

/** Why an archive cannot be read. Every case is final for that archive: the raw bytes are kept, nothing is written. */
export type ArchiveProblem =
  | "corrupt"
  | "unsafe-path"
  | "duplicate-entry"
  | "too-large"
  | "bomb"
  | "empty"
  | "encrypted"
  | "unsupported";

export class ArchiveError extends Error {
  override name = "ArchiveError";
  constructor(
    readonly problem: ArchiveProblem,
    message: string,
  ) {
    super(message);
  }
}

const ONE_MIB = 1024 * 1024;
const STORED = 0;
const DEFLATED = 8;

/**
 * Reads every file of a ZIP archive into memory, refusing anything unsafe before inflating it:
 * lying or oversized headers, paths that escape the archive, duplicate names, bombs, bad CRCs.
 * Directories are skipped. Entries come back in central-directory order.
 */
export async function readArchive(buffer: Buffer, limits: Limits): Promise<ArchiveEntry[]> {
  if (buffer.length > limits.maxArchiveBytes) {
    throw new ArchiveError(
      "too-large",
      `archive is ${buffer.length} bytes, over the limit of ${limits.maxArchiveBytes}`,
    );
  }
  const zip = await openZip(buffer);
  try {
    return await readEntries(zip, limits);
  } finally {
    zip.close();
  }
}

function openZip(buffer: Buffer): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => {
    yauzl.fromBuffer(buffer, { lazyEntries: true, validateEntrySizes: true, strictFileNames: false }, (err, zip) => {
      if (err || !zip) reject(classify(err ?? new Error("unreadable archive")));
      else resolve(zip);
    });
  });
}

function readEntries(zip: yauzl.ZipFile, limits: Limits): Promise<ArchiveEntry[]> {
  return new Promise((resolve, reject) => {
    const entries: ArchiveEntry[] = [];
    const seen = new Set<string>();
    let inflatedTotal = 0;
    let settled = false;
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      reject(err instanceof ArchiveError ? err : classify(err as Error));
    };
    zip.on("error", fail);
    zip.on("end", () => {
      if (settled) return;
      settled = true;
      if (entries.length === 0) reject(new ArchiveError("empty", "archive holds no files"));
      else resolve(entries);
    });
    zip.on("entry", (entry: yauzl.Entry) => {
      try {
        if (entry.fileName.endsWith("/")) {
          zip.readEntry();
          return;
        }
        checkEntry(entry, seen, limits);
        if (zip.entryCount > limits.maxEntries) {
          throw new ArchiveError(
            "too-large",
            `archive has ${zip.entryCount} entries, over the limit of ${limits.maxEntries}`,
          );
        }
        inflatedTotal += entry.uncompressedSize;
        if (inflatedTotal > limits.maxInflatedBytes) {
          throw new ArchiveError(
            "bomb",
            `archive inflates to more than ${limits.maxInflatedBytes} bytes (limit maxInflatedBytes)`,
          );
        }
      } catch (err) {
        fail(err);
        return;
      }
      // Raw bytes (inflated here, with a cap) for deflated entries; yauzl accepts the option only for those.
      const options = entry.compressionMethod === DEFLATED ? { decompress: false } : {};
      try {
        zip.openReadStream(entry, options, (err, stream) => {
          if (err || !stream) {
            fail(err ?? new Error("cannot open entry"));
            return;
          }
          collect(stream)
            .then((compressed) => {
              entries.push({ path: entry.fileName, data: inflate(entry, compressed) });
              zip.readEntry();
            })
            .catch(fail);
        });
      } catch (err) {
        fail(err);
      }
    });
    zip.readEntry();
  });
}

function checkEntry(entry: yauzl.Entry, seen: Set<string>, limits: Limits): void {
  const name = entry.fileName;
  if (seen.has(name)) throw new ArchiveError("duplicate-entry", `archive holds '${name}' twice`);
  seen.add(name);
  if (entry.isEncrypted()) throw new ArchiveError("encrypted", `entry '${name}' is encrypted`);
  if (entry.compressionMethod !== STORED && entry.compressionMethod !== DEFLATED) {
    throw new ArchiveError("unsupported", `entry '${name}' uses compression method ${entry.compressionMethod}`);
  }
  if (entry.uncompressedSize > limits.maxEntryBytes) {
    throw new ArchiveError(
      "bomb",
      `entry '${name}' inflates to ${entry.uncompressedSize} bytes, over the limit of ${limits.maxEntryBytes}`,
    );
  }
  const ratio = entry.uncompressedSize / Math.max(1, entry.compressedSize);
  if (entry.uncompressedSize > ONE_MIB && ratio > limits.maxCompressionRatio) {
    throw new ArchiveError(
      "bomb",
      `entry '${name}' has a compression ratio of ${Math.round(ratio)}, over the limit of ${limits.maxCompressionRatio}`,
    );
  }
}

/** Inflates with the declared size as a hard cap, then checks the size and CRC the headers promised. */
function inflate(entry: yauzl.Entry, compressed: Buffer): Buffer {
  const name = entry.fileName;
  let data: Buffer;
  if (entry.compressionMethod === STORED) {
    data = compressed;
  } else {
    try {
      // One byte over the declared size is enough to catch a header that lies.
      data = inflateRawSync(compressed, { maxOutputLength: Math.max(1, entry.uncompressedSize + 1) });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ERR_BUFFER_TOO_LARGE") {
        throw new ArchiveError(
          "bomb",
          `entry '${name}' inflates past the ${entry.uncompressedSize} bytes its header declares`,
        );
      }
      throw new ArchiveError("corrupt", `entry '${name}' cannot be inflated: ${(err as Error).message}`);
    }
  }
  if (data.length !== entry.uncompressedSize) {
    throw new ArchiveError(
      "corrupt",
      `entry '${name}' holds ${data.length} bytes but its header declares ${entry.uncompressedSize}`,
    );
  }
  if (crc32(data) !== entry.crc32) throw new ArchiveError("corrupt", `entry '${name}' fails its CRC check`);
  return data;
}

function collect(stream: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", reject);
    stream.on("end", () => resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)));
  });
}

function classify(err: Error): ArchiveError {
  const message = err.message;
  if (/invalid relative path|absolute path|invalid characters in fileName/i.test(message)) {
    return new ArchiveError("unsafe-path", `unsafe entry path: ${message}`);
  }
  return new ArchiveError("corrupt", `not a readable ZIP archive: ${message}`);
}
