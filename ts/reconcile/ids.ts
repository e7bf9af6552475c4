/**
 * Stable numeric ids for backends and frontends (rev_nat ids).
 *
 * Ids are never reused while the agent runs: a conntrack entry that still
 * names a removed backend id must miss (and reselect) rather than land on a
 * different endpoint that inherited the number. After a restart the table is
 * re-seeded from the pinned maps, so existing flows keep their meaning.
 */
export class IdTable {
  /** key -> id and the number of references taken on it (0: adopted, not yet claimed). */
  private readonly byKey = new Map<string, { id: number; refs: number }>();
  private next = 1;

  /** Record an id found in a pinned map. */
  adopt(key: string, id: number): void {
    this.byKey.set(key, { id, refs: 0 });
    if (id >= this.next) this.next = id + 1;
  }

  peek(key: string): number | undefined {
    return this.byKey.get(key)?.id;
  }

  /** Take a reference on key, allocating an id on first use. */
  acquire(key: string): number {
    let e = this.byKey.get(key);
    if (!e) this.byKey.set(key, (e = { id: this.next++, refs: 0 }));
    e.refs++;
    return e.id;
  }

  /** Drop a reference; the id is forgotten when the last one goes. */
  release(key: string): void {
    const e = this.byKey.get(key);
    if (e && --e.refs <= 0) this.byKey.delete(key);
  }

  /** Forget adopted ids nobody took a reference on (after the first full sync). */
  dropUnreferenced(): void {
    this.byKey.forEach((e, key) => {
      if (e.refs <= 0) this.byKey.delete(key);
    });
  }

  get size(): number {
    return this.byKey.size;
  }
}
