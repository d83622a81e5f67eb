/** Rows per statement when writing or matching many at once: well under every database's parameter limit. */
const CHUNK = 500;

export function chunks<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += CHUNK) out.push(items.slice(i, i + CHUNK));
  return out;
}

/** Looks many values up a chunk at a time, the chunks side by side, and joins their rows in chunk order. */
export async function lookUpInChunks<T, R>(items: readonly T[], lookUp: (part: T[]) => Promise<R[]>): Promise<R[]> {
  return (await Promise.all(chunks(items).map(lookUp))).flat();
}
