/** Error codes of failures that may pass: the network, a busy resource, a database restarting. */
const TRANSIENT_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EAI_AGAIN",
  "EBUSY",
  "EAGAIN",
  "EMFILE",
  "ENFILE",
  "EIO",
  "SQLITE_BUSY",
  "SQLITE_BUSY_SNAPSHOT",
  "SQLITE_BUSY_RECOVERY",
  "SQLITE_LOCKED",
  // PostgreSQL: connection failures, serialization failures, deadlocks, shutdowns.
  "08000",
  "08003",
  "08006",
  "40001",
  "40P01",
  "57P01",
  "57P03",
]);

/**
 * A failure worth another attempt later (I/O, a connection, or an error that says so with `transient: true`);
 * anything else (bad data, a bug) is permanent.
 */
export function isTransient(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e && depth < 5; depth++) {
    const { code, transient } = e as { code?: unknown; transient?: unknown };
    if (transient === true || (typeof code === "string" && TRANSIENT_CODES.has(code))) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/** Seconds to wait before attempt `attempt + 1`: doubling from `base`, at most an hour. */
export function backoffSeconds(attempt: number, base: number): number {
  return Math.min(3600, base * 2 ** Math.max(0, attempt - 1));
}
