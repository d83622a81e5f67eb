/** An upload time as UTC ISO text, so that times compare as text in SQL; null when absent or unreadable. */
export function utcInstant(value: string | undefined): string | null {
  if (!value) return null;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : new Date(ms).toISOString();
}
