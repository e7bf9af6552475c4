/**
 * Backends (address, port, protocol), shared by every service that lists
 * them and refcounted by those services' records.
 *
 * One row per backend, its fields in typed-array columns: at ten thousand
 * services there are a hundred thousand backends, and an object each was
 * about 11 MB of heap that every garbage collection walked. Rows are reused
 * once a backend is gone; backend ids, which the maps and conntrack entries
 * hold, are not (see ids.ts).
 *
 * The value of a backend's map entry (struct weir_backend, 8 bytes) is kept
 * as two int32 words: desired (v0, v1) and what the kernel holds (a0, a1).
 */
export class BackendTable {
  private readonly rowOf = new Map<string, number>();
  private keys: string[] = [];
  private readonly free: number[] = [];
  private used = 0;
  private nextId = 1;
  /** Backends some service references. */
  live = 0;

  id = new Uint32Array(0);
  refs = new Int32Array(0);
  v0 = new Int32Array(0);
  v1 = new Int32Array(0);
  a0 = new Int32Array(0);
  a1 = new Int32Array(0);
  /** 1 when the kernel holds this backend (a0, a1 are its value). */
  applied = new Uint8Array(0);
  /** Scratch while a record is built: the frontend group that may choose it. */
  mark = new Int32Array(0);

  row(key: string): number | undefined {
    return this.rowOf.get(key);
  }

  /** Row of key, allocating a new id if the backend is new. */
  rowFor(key: string): number {
    const r = this.rowOf.get(key);
    return r !== undefined ? r : this.insert(key, this.nextId++);
  }

  /** A backend found in the pinned map: its id and value, as applied. */
  adopt(key: string, id: number, v0: number, v1: number): void {
    const r = this.insert(key, id);
    this.v0[r] = this.a0[r] = v0;
    this.v1[r] = this.a1[r] = v1;
    this.applied[r] = 1;
    if (id >= this.nextId) this.nextId = id + 1;
  }

  remove(row: number): void {
    this.rowOf.delete(this.keys[row]!);
    this.keys[row] = '';
    this.refs[row] = 0;
    this.applied[row] = 0;
    this.free.push(row);
  }

  /** Rows of every backend known (referenced or not). Removing the current row while iterating is safe. */
  rows(): IterableIterator<number> {
    return this.rowOf.values();
  }

  private insert(key: string, id: number): number {
    let r = this.free.pop();
    if (r === undefined) {
      if (this.used === this.id.length) this.grow();
      r = this.used++;
    }
    this.rowOf.set(key, r);
    this.keys[r] = key;
    this.id[r] = id;
    this.refs[r] = 0;
    this.v0[r] = this.v1[r] = this.a0[r] = this.a1[r] = 0;
    this.applied[r] = 0;
    this.mark[r] = 0;
    return r;
  }

  private grow(): void {
    const n = Math.max(1024, this.id.length * 2);
    const more = <T extends Uint32Array | Int32Array | Uint8Array>(a: T, make: (n: number) => T): T => {
      const b = make(n);
      b.set(a);
      return b;
    };
    this.id = more(this.id, (k) => new Uint32Array(k));
    this.refs = more(this.refs, (k) => new Int32Array(k));
    this.v0 = more(this.v0, (k) => new Int32Array(k));
    this.v1 = more(this.v1, (k) => new Int32Array(k));
    this.a0 = more(this.a0, (k) => new Int32Array(k));
    this.a1 = more(this.a1, (k) => new Int32Array(k));
    this.applied = more(this.applied, (k) => new Uint8Array(k));
    this.mark = more(this.mark, (k) => new Int32Array(k));
  }
}
