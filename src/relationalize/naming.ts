/**
 * Names safe for SQL and Parquet: letters, digits and `_` (anything else becomes `_`), never starting with a
 * digit. Nested keys join with `_` (`a.b` → `a_b`). SQL folds case, so names are compared without case: when
 * two paths want the same name (`a_b` and `a.b`, or `Name` and `name`), a key that is already a safe name keeps
 * it, otherwise the path that sorts first does, and the next gets `_2`, then `_3` (child tables likewise: see
 * Relationalizer's nameNewTables). Names, once given, are kept in the dataset schema and never change.
 */
export function safeName(raw: string): string {
  let name = raw.replace(/[^A-Za-z0-9_]/g, "_");
  if (name === "") name = "_";
  if (/^[0-9]/.test(name)) name = `_${name}`;
  return name;
}

export class NameRegistry {
  private readonly taken = new Set<string>();

  constructor(names: Iterable<string> = []) {
    for (const name of names) this.taken.add(name.toLowerCase());
  }

  claim(raw: string): string {
    const base = safeName(raw);
    let name = base;
    for (let i = 2; this.taken.has(name.toLowerCase()); i++) name = `${base}_${i}`;
    this.taken.add(name.toLowerCase());
    return name;
  }
}
