/**
 * Stable numeric ids for backends and frontends (rev_nat ids).
 *
 * Ids are never reused while the agent runs: a conntrack entry that still
 * names a removed backend id must miss (and reselect) rather than land on a
 * different endpoint that inherited the number. After a restart the table is
 * re-seeded from the pinned maps, so existing flows keep their meaning.
 */
export class IdTable {
  private readonly byKey = new Map<string, number>();
  private readonly refs = new Map<string, number>();
  private next = 1;

  /** Record an id found in a pinned map. */
  adopt(key: string, id: number): void {
    this.byKey.set(key, id);
    if (id >= this.next) this.next = id + 1;
  }

  peek(key: string): number | undefined {
    return this.byKey.get(key);
  }

  /** Take a reference on key, allocating an id on first use. */
  acquire(key: string): number {
    let id = this.byKey.get(key);
    if (id === undefined) {
      id = this.next++;
      this.byKey.set(key, id);
    }
    this.refs.set(key, (this.refs.get(key) ?? 0) + 1);
    return id;
  }

  /** Drop a reference; the id is forgotten when the last one goes. */
  release(key: string): void {
    const n = (this.refs.get(key) ?? 0) - 1;
    if (n > 0) {
      this.refs.set(key, n);
      return;
    }
    this.refs.delete(key);
    this.byKey.delete(key);
  }

  /** Forget adopted ids nobody took a reference on (after the first full sync). */
  dropUnreferenced(): void {
    for (const key of this.byKey.keys()) if (!this.refs.has(key)) this.byKey.delete(key);
  }

  get size(): number {
    return this.byKey.size;
  }
}
