/**
 * Export metrics as the reference keeps them: counters, distinct-value counters (only their size is ever
 * shown, so participant ids never appear), and value sets per key. Everything prints sorted.
 */
export class ExportMetrics {
  private readonly counters = new Map<string, number>();
  private readonly distinct = new Map<string, Set<string>>();
  private readonly values = new Map<string, Set<string>>();

  increment(name: string, by = 1): void {
    this.counters.set(name, (this.counters.get(name) ?? 0) + by);
  }

  /** Counts distinct values without keeping them visible (for example participant ids per study). */
  addDistinct(name: string, value: string): void {
    const set = this.distinct.get(name) ?? new Set<string>();
    set.add(value);
    this.distinct.set(name, set);
  }

  addValue(name: string, value: string): void {
    const set = this.values.get(name) ?? new Set<string>();
    set.add(value);
    this.values.set(name, set);
  }

  counter(name: string): number {
    return this.counters.get(name) ?? 0;
  }

  toJSON(): {
    counters: Record<string, number>;
    distinctCounts: Record<string, number>;
    values: Record<string, string[]>;
  } {
    const sorted = <T>(entries: Iterable<[string, T]>) =>
      Object.fromEntries([...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    return {
      counters: sorted(this.counters),
      distinctCounts: sorted([...this.distinct].map(([k, v]) => [k, v.size] as [string, number])),
      values: sorted([...this.values].map(([k, v]) => [k, [...v].sort()] as [string, string[]])),
    };
  }
}
