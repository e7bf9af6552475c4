/**
 * Backends (address, port, protocol), shared by every service that lists
 * them and refcounted by those services' records.
 *
 * One row per backend, its fields in typed-array columns, found through an
 * open-addressing index on the numeric identity (address, port, protocol).
 * At ten thousand services there are a hundred thousand backends: an object
 * each was about 11 MB of heap that every garbage collection walked, and a
 * Map keyed by "addr:port/PROTO" strings cost ~2 µs per new backend (string
 * hashing and the table's regrowth). Rows are reused once a backend is gone;
 * backend ids, which the maps and conntrack entries hold, are not (ids.ts).
 *
 * The value of a backend's map entry (struct weir_backend, 8 bytes) is kept
 * as two int32 words: desired (v0, v1) and what the kernel holds (a0, a1).
 */
import type { BackendId } from './ids';

export class BackendTable {
  /** Open addressing with linear probing: row + 1 per slot, 0 = empty. Kept at most half full. */
  private index = new Int32Array(1024);
  private readonly free: number[] = [];
  private used = 0;
  private nextId = 1;
  /** Rows in use (referenced or not). */
  private size = 0;
  /** Backends some service references. */
  live = 0;

  /** Identity: IPv4 address (host order) and port << 8 | protocol. */
  addr = new Uint32Array(0);
  portProto = new Int32Array(0);
  id = new Uint32Array(0);
  refs = new Int32Array(0);
  v0 = new Int32Array(0);
  v1 = new Int32Array(0);
  a0 = new Int32Array(0);
  a1 = new Int32Array(0);
  /** 1 when the kernel holds this backend (a0, a1 are its value). */
  applied = new Uint8Array(0);
  /** 1 while the row is in use. */
  inUse = new Uint8Array(0);
  /** Scratch while a record is built: the frontend group that may choose it. */
  mark = new Int32Array(0);
  /** 1 while the row is in `pending`. */
  private pendingFlag = new Uint8Array(0);
  /**
   * Rows whose references or value changed since the last commit, each once.
   * A column and a list rather than a Set: a cold start marks a hundred
   * thousand rows.
   */
  private readonly pending: number[] = [];

  markPending(row: number): void {
    if (this.pendingFlag[row]) return;
    this.pendingFlag[row] = 1;
    this.pending.push(row);
  }

  /** The rows marked since clearPending(), in marking order (the table's own list: read it before clearPending()). */
  pendingRows(): readonly number[] {
    return this.pending;
  }

  clearPending(): void {
    const rows = this.pending;
    for (let i = 0; i < rows.length; i++) this.pendingFlag[rows[i]!] = 0;
    // Emptied in place: V8 treats a field never reassigned as a constant in
    // optimised code, and reassigning it discarded backendRef's and
    // markPending's code at the first flush of a cold start.
    rows.length = 0;
  }

  /**
   * Make room for `rows` backends at once. A cold start at ten thousand
   * services inserts a hundred thousand: growing by doubling reallocated
   * every column and the index eight times, and each new array is fresh
   * memory to fault in (about half of what inserting them cost).
   */
  reserve(rows: number): void {
    if (rows > this.id.length) this.grow(rows);
    if (rows * 2 > this.index.length) this.rehash(pow2AtLeast(rows * 2));
  }

  /** Row of a backend, allocating a row and a new id if it is new. */
  rowFor(addr: number, port: number, proto: number): number {
    const r = this.find(addr, port, proto);
    return r >= 0 ? r : this.insert(addr, (port << 8) | proto, this.nextId++);
  }

  /** Row of a backend, or -1. */
  find(addr: number, port: number, proto: number): number {
    const pp = (port << 8) | proto;
    const mask = this.index.length - 1;
    let i = hash(addr, pp) & mask;
    for (let s = this.index[i]!; s !== 0; s = this.index[i]!) {
      if (this.addr[s - 1] === addr && this.portProto[s - 1] === pp) return s - 1;
      i = (i + 1) & mask;
    }
    return -1;
  }

  /**
   * A backend found in the pinned map: its id and value, as applied. Returns
   * false for a second id of a backend already adopted (the entry is then
   * claimed by nobody, and the first full comparison removes it).
   */
  adopt(addr: number, port: number, proto: number, id: BackendId, v0: number, v1: number): boolean {
    if (id >= this.nextId) this.nextId = id + 1;
    if (this.find(addr, port, proto) >= 0) return false;
    const r = this.insert(addr, (port << 8) | proto, id);
    this.v0[r] = this.a0[r] = v0;
    this.v1[r] = this.a1[r] = v1;
    this.applied[r] = 1;
    return true;
  }

  /** The id of the backend in a row. */
  idOf(row: number): BackendId {
    return this.id[row]! as BackendId;
  }

  /** The next new backend gets an id of at least `id` (ids below it may still be named somewhere). */
  floor(id: number): void {
    if (id > this.nextId) this.nextId = id;
  }

  /** Every id handed out so far is below this. */
  get highWater(): number {
    return this.nextId;
  }

  remove(row: number): void {
    const mask = this.index.length - 1;
    let i = hash(this.addr[row]!, this.portProto[row]!) & mask;
    while (this.index[i] !== row + 1) i = (i + 1) & mask;
    // Backward-shift deletion: move later entries of the probe run into the
    // hole, so lookups never need tombstones.
    for (let j = (i + 1) & mask; this.index[j] !== 0; j = (j + 1) & mask) {
      const s = this.index[j]!;
      const home = hash(this.addr[s - 1]!, this.portProto[s - 1]!) & mask;
      // Move s into the hole at i unless its home lies cyclically in (i, j].
      if (((j - home) & mask) >= ((j - i) & mask)) {
        this.index[i] = s;
        i = j;
      }
    }
    this.index[i] = 0;
    this.inUse[row] = 0;
    this.refs[row] = 0;
    this.applied[row] = 0;
    this.free.push(row);
    this.size--;
  }

  /** Every row in use, in row order (a snapshot: removing rows meanwhile is safe). */
  rows(): number[] {
    const out: number[] = [];
    for (let r = 0; r < this.used; r++) if (this.inUse[r]) out.push(r);
    return out;
  }

  private insert(addr: number, pp: number, id: number): number {
    if ((this.size + 1) * 2 > this.index.length) this.rehash(this.index.length * 2);
    let r = this.free.pop();
    if (r === undefined) {
      if (this.used === this.id.length) this.grow();
      r = this.used++;
    }
    this.addr[r] = addr;
    this.portProto[r] = pp;
    this.id[r] = id;
    this.refs[r] = 0;
    this.v0[r] = this.v1[r] = this.a0[r] = this.a1[r] = 0;
    this.applied[r] = 0;
    this.inUse[r] = 1;
    this.mark[r] = 0;
    this.place(r);
    this.size++;
    return r;
  }

  private place(r: number): void {
    const mask = this.index.length - 1;
    let i = hash(this.addr[r]!, this.portProto[r]!) & mask;
    while (this.index[i] !== 0) i = (i + 1) & mask;
    this.index[i] = r + 1;
  }

  private rehash(capacity: number): void {
    this.index = new Int32Array(capacity);
    for (let r = 0; r < this.used; r++) if (this.inUse[r]) this.place(r);
  }

  private grow(atLeast = 0): void {
    const n = Math.max(1024, this.id.length * 2, atLeast);
    const more = <T extends Uint32Array | Int32Array | Uint8Array>(a: T, make: (n: number) => T): T => {
      const b = make(n);
      b.set(a);
      return b;
    };
    this.addr = more(this.addr, (k) => new Uint32Array(k));
    this.portProto = more(this.portProto, (k) => new Int32Array(k));
    this.id = more(this.id, (k) => new Uint32Array(k));
    this.refs = more(this.refs, (k) => new Int32Array(k));
    this.v0 = more(this.v0, (k) => new Int32Array(k));
    this.v1 = more(this.v1, (k) => new Int32Array(k));
    this.a0 = more(this.a0, (k) => new Int32Array(k));
    this.a1 = more(this.a1, (k) => new Int32Array(k));
    this.applied = more(this.applied, (k) => new Uint8Array(k));
    this.inUse = more(this.inUse, (k) => new Uint8Array(k));
    this.mark = more(this.mark, (k) => new Int32Array(k));
    this.pendingFlag = more(this.pendingFlag, (k) => new Uint8Array(k));
  }
}

function pow2AtLeast(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** Mixes both words (murmur3's finalizer): consecutive pod addresses spread over the table. */
function hash(addr: number, pp: number): number {
  let h = Math.imul(addr ^ Math.imul(pp, 0x9e3779b1), 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}
