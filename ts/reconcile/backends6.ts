/**
 * IPv6 backends, shared by every service that lists them and refcounted by
 * those services' records, as ./backends.ts keeps the IPv4 ones. A backend
 * is its weir_backend6 entry: the address, port and protocol (the first 19
 * bytes, its identity) and its flags. Kept as latin1 strings per row:
 * IPv6 endpoints are few next to IPv4 ones in today's clusters, so plain
 * arrays serve. Ids come from the IPv4 table's counter (one id space).
 */
import * as C from '../datapath/codecs';
import type { BackendTable } from './backends';
import type { BackendId } from './ids';

/** Bytes of a weir_backend6 value that name the backend (all but the flags). */
const IDENTITY = C.backend6.at.flags;

export class BackendTable6 {
  private readonly index = new Map<string, number>();
  private readonly free: number[] = [];
  /** Backends some service references. */
  live = 0;
  readonly id: number[] = [];
  readonly refs: number[] = [];
  /** Desired value (latin1, 20 bytes) and what the kernel holds (null: nothing). */
  readonly want: string[] = [];
  readonly have: Array<string | null> = [];
  readonly inUse: boolean[] = [];
  /** Scratch while a record is built: the frontend group that may choose it. */
  readonly mark: number[] = [];
  private readonly pendingFlag: boolean[] = [];
  private readonly pending: number[] = [];

  constructor(private readonly ids: BackendTable) {}

  /** Row of a backend (its value as latin1), allocating a row and an id if it is new. */
  rowFor(value: string): number {
    const r = this.index.get(value.slice(0, IDENTITY));
    return r ?? this.insert(value, this.ids.allocateId(), null);
  }

  /** A backend found in the pinned map; false for a second id of a backend already adopted. */
  adopt(value: string, id: BackendId): boolean {
    this.ids.floor(id + 1);
    if (this.index.has(value.slice(0, IDENTITY))) return false;
    this.insert(value, id, value);
    return true;
  }

  idOf(row: number): BackendId {
    return this.id[row]! as BackendId;
  }

  markPending(row: number): void {
    if (this.pendingFlag[row]) return;
    this.pendingFlag[row] = true;
    this.pending.push(row);
  }

  pendingRows(): readonly number[] {
    return this.pending;
  }

  clearPending(): void {
    for (const r of this.pending) this.pendingFlag[r] = false;
    this.pending.length = 0;
  }

  remove(row: number): void {
    this.index.delete(this.want[row]!.slice(0, IDENTITY));
    this.inUse[row] = false;
    this.refs[row] = 0;
    this.have[row] = null;
    this.free.push(row);
  }

  /** Every row in use (a snapshot). */
  rows(): number[] {
    const out: number[] = [];
    for (let r = 0; r < this.inUse.length; r++) if (this.inUse[r]) out.push(r);
    return out;
  }

  private insert(value: string, id: number, have: string | null): number {
    const r = this.free.pop() ?? this.inUse.length;
    this.id[r] = id;
    this.refs[r] = 0;
    this.want[r] = value;
    this.have[r] = have;
    this.inUse[r] = true;
    this.mark[r] = 0;
    this.pendingFlag[r] = false;
    this.index.set(value.slice(0, IDENTITY), r);
    return r;
  }
}
