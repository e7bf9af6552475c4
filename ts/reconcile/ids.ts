/**
 * Stable numeric ids for frontends (rev_nat ids); backends keep theirs in
 * the backend table, by the same rules.
 *
 * Ids are never reused: a conntrack or affinity entry that still names a
 * removed id must miss (and reselect) rather than land on a different
 * frontend or endpoint that inherited the number. The high-water mark is
 * kept in the pinned weir1_ids map, and a restarted agent seeds it from that
 * and from every map that names ids, so this holds across restarts too.
 * (u32 ids: at a hundred new ones a second, they last over a year.)
 */
/**
 * A frontend's rev_nat id, as the svc, revnat, member, cidr, conntrack and
 * affinity maps name it. Branded: an id is not a row index or a count.
 */
export type RevNatId = number & { readonly __brand: 'RevNatId' };
/** A backend's id, as the be, svc (slots), member, conntrack and affinity maps name it. */
export type BackendId = number & { readonly __brand: 'BackendId' };

export class IdTable {
  /** key -> id and the number of references taken on it (0: adopted, not yet claimed). */
  private readonly byKey = new Map<string, { id: RevNatId; refs: number }>();
  private next = 1;

  /** Record an id found in a pinned map. */
  adopt(key: string, id: RevNatId): void {
    this.byKey.set(key, { id, refs: 0 });
    if (id >= this.next) this.next = id + 1;
  }

  /** The next new id is at least `id` (ids below it may still be named somewhere). */
  floor(id: number): void {
    if (id > this.next) this.next = id;
  }

  /** Every id handed out so far is below this. */
  get highWater(): number {
    return this.next;
  }

  peek(key: string): RevNatId | undefined {
    return this.byKey.get(key)?.id;
  }

  /** Take a reference on key, allocating an id on first use. */
  acquire(key: string): RevNatId {
    let e = this.byKey.get(key);
    if (!e) this.byKey.set(key, (e = { id: this.next++ as RevNatId, refs: 0 }));
    e.refs++;
    return e.id;
  }

  /** Drop a reference; the id is forgotten when the last one goes. */
  release(key: string): void {
    const e = this.byKey.get(key);
    if (e && --e.refs <= 0) this.byKey.delete(key);
  }

  /** Forget an adopted id (it was found held by another frontend too). */
  forget(key: string): void {
    this.byKey.delete(key);
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
