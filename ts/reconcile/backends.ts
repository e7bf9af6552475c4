/**
 * Backends (address, port, protocol), shared by every service that lists
 * them and refcounted by those services' records.
 *
 * One row per backend, its fields in typed-array columns (at ten thousand
 * services there are a hundred thousand backends, and an object each is
 * heap every garbage collection walks), found by a Map keyed by the
 * backend's identity as one number. Rows are reused once a backend is gone;
 * backend ids, which the maps and conntrack entries hold, are not (ids.ts).
 *
 * The value of a backend's map entry (struct weir_backend, 8 bytes) is kept
 * as two int32 words: desired (v0, v1) and what the kernel holds (a0, a1).
 */
import * as C from '../datapath/codecs';
import type { BackendId } from './ids';

export class BackendTable {
  /** identity(addr, port, proto) -> row. */
  private readonly index = new Map<number, number>();
  private readonly free: number[] = [];
  private used = 0;
  private nextId = 1;
  /** Backends some service references. */
  live = 0;

  /** Fields of the identity: IPv4 address (host order) and port << 8 | protocol. */
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
    rows.length = 0;
  }

  /** Make room for `rows` backends at once (a cold start knows how many it plans). */
  reserve(rows: number): void {
    if (rows > this.id.length) this.grow(rows);
  }

  /** Row of a backend, allocating a row and a new id if it is new. */
  rowFor(addr: number, port: number, proto: number): number {
    const r = this.find(addr, port, proto);
    return r >= 0 ? r : this.insert(addr, port, proto, this.nextId++);
  }

  /** Row of a backend, or -1. */
  find(addr: number, port: number, proto: number): number {
    return this.index.get(identity(addr, port, proto)) ?? -1;
  }

  /**
   * A backend found in the pinned map: its id and value, as applied. Returns
   * false for a second id of a backend already adopted, or a protocol weir
   * does not program (the entry is then claimed by nobody, and the first
   * full comparison removes it).
   */
  adopt(addr: number, port: number, proto: number, id: BackendId, v0: number, v1: number): boolean {
    if (id >= this.nextId) this.nextId = id + 1;
    if (!PROTO_CODE.has(proto) || this.find(addr, port, proto) >= 0) return false;
    const r = this.insert(addr, port, proto, id);
    this.v0[r] = this.a0[r] = v0;
    this.v1[r] = this.a1[r] = v1;
    this.applied[r] = 1;
    return true;
  }

  /** A new backend id (IPv6 backends take theirs here too: one id space for both families, docs/ipv6.md). */
  allocateId(): BackendId {
    return this.nextId++ as BackendId;
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
    this.index.delete(identity(this.addr[row]!, this.portProto[row]! >> 8, this.portProto[row]! & 0xff));
    this.inUse[row] = 0;
    this.refs[row] = 0;
    this.applied[row] = 0;
    this.free.push(row);
  }

  /** Every row in use, in row order (a snapshot: removing rows meanwhile is safe). */
  rows(): number[] {
    const out: number[] = [];
    for (let r = 0; r < this.used; r++) if (this.inUse[r]) out.push(r);
    return out;
  }

  private insert(addr: number, port: number, proto: number, id: number): number {
    let r = this.free.pop();
    if (r === undefined) {
      if (this.used === this.id.length) this.grow();
      r = this.used++;
    }
    this.addr[r] = addr;
    this.portProto[r] = (port << 8) | proto;
    this.id[r] = id;
    this.refs[r] = 0;
    this.v0[r] = this.v1[r] = this.a0[r] = this.a1[r] = 0;
    this.applied[r] = 0;
    this.inUse[r] = 1;
    this.mark[r] = 0;
    this.index.set(identity(addr, port, proto), r);
    return r;
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

/** The protocols weir programs. */
const PROTO_CODE = new Map<number, number>([
  [C.IPPROTO.TCP, 0],
  [C.IPPROTO.UDP, 1],
  [C.IPPROTO.SCTP, 2],
]);

/** (address, port, protocol) as one exact number (< 2^50). */
function identity(addr: number, port: number, proto: number): number {
  const code = PROTO_CODE.get(proto);
  if (code === undefined) throw new Error(`backend protocol ${proto} is not TCP, UDP or SCTP`);
  return addr * 0x40000 + port * 4 + code;
}
