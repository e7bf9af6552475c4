/**
 * The writes of one commit, per record section plus the backend map, and
 * the order they go to the kernel in (DESIGN.md §2): make before break.
 */
import * as C from '../datapath/codecs';
import { MapIO, WriteQueue } from '../datapath/maps';
import { MapName, ReconcileMaps, SECTIONS } from './layout';
import { Packed, PackedView, viewKey, viewValue } from './packed';

export interface CommitStats {
  readonly upserts: number;
  readonly deletes: number;
}

export const NO_WRITES: CommitStats = { upserts: 0, deletes: 0 };

/** Writes of one commit, per record section plus the backend map. */
export class Writes {
  readonly ups = SECTIONS.map((s) => new Packed(s.keySize, s.valueSize));
  readonly dels = SECTIONS.map((s) => new Packed(s.keySize, 0));
  readonly beUps = new Packed(C.u32Key.size, C.backend.size);
  readonly beDels = new Packed(C.u32Key.size, 0);
  readonly be6Ups = new Packed(C.u32Key.size, C.backend6.size);
  readonly be6Dels = new Packed(C.u32Key.size, 0);
  /** Maps whose deletes go first: too full for their new keys otherwise (Reconciler.roomFirst). */
  readonly roomFirst = new Set<MapName>();

  /** Empty, keeping the buffers' capacity. */
  clear(): void {
    for (const p of [...this.ups, ...this.dels, this.beUps, this.beDels, this.be6Ups, this.be6Dels]) p.clear();
    this.roomFirst.clear();
  }

  /** Keys one service drops and another takes in the same commit stay. */
  dropRewritten(): void {
    SECTIONS.forEach((_, s) => {
      const dels = this.dels[s]!;
      const ups = this.ups[s]!;
      if (dels.count === 0 || ups.count === 0) return;
      const written = new Set<string>();
      for (let i = 0; i < ups.count; i++) written.add(ups.key(i));
      const keep = new Packed(dels.keySize, 0, dels.count);
      for (let i = 0; i < dels.count; i++) {
        if (!written.has(dels.key(i))) keep.pushKey(dels.key(i));
      }
      this.dels[s] = keep;
    });
  }

  /** Writes and deletes per map name (for the drift counts of a full comparison). */
  byMap(maps: ReconcileMaps): Record<string, number> {
    const out: Record<string, number> = {};
    const add = (m: MapName, n: number): void => {
      const name = maps[m]?.name;
      if (n > 0 && name) out[name] = (out[name] ?? 0) + n;
    };
    SECTIONS.forEach((sec, s) => add(sec.map, this.ups[s]!.count + this.dels[s]!.count));
    add('be', this.beUps.count + this.beDels.count);
    add('be6', this.be6Ups.count + this.be6Dels.count);
    return out;
  }

  /** Queue every write in the order of DESIGN.md §2 (the queue keeps it), but a roomFirst map's deletes before everything. */
  submit(maps: ReconcileMaps, q: WriteQueue): CommitStats {
    const first = (m: MapName): boolean => this.roomFirst.has(m);
    // A map the datapath lacks (IPv6 twins) has no entries to write: the builder made none.
    const map = (m: MapName): MapIO => maps[m]!;
    const del = (s: number): void => {
      if (this.dels[s]!.count > 0) this.dels[s]!.removeFrom(map(SECTIONS[s]!.map), q);
    };
    for (let s = SECTIONS.length - 1; s >= 0; s--) if (first(SECTIONS[s]!.map)) del(s);
    if (first('be')) this.beDels.removeFrom(maps.be, q);
    if (first('be6') && this.be6Dels.count > 0) this.be6Dels.removeFrom(map('be6'), q);
    this.beUps.writeTo(maps.be, q);
    if (this.be6Ups.count > 0) this.be6Ups.writeTo(map('be6'), q);
    SECTIONS.forEach((sec, s) => {
      if (this.ups[s]!.count > 0) this.ups[s]!.writeTo(map(sec.map), q);
    });
    for (let s = SECTIONS.length - 1; s >= 0; s--) if (!first(SECTIONS[s]!.map)) del(s);
    if (!first('be')) this.beDels.removeFrom(maps.be, q);
    if (!first('be6') && this.be6Dels.count > 0) this.be6Dels.removeFrom(map('be6'), q);
    const sum = (ps: Packed[]): number => ps.reduce((n, p) => n + p.count, 0);
    return { upserts: sum(this.ups) + this.beUps.count + this.be6Ups.count, deletes: sum(this.dels) + this.beDels.count + this.be6Dels.count };
  }
}

/** One section of one service: what to write and what to remove between two records. */
export function diffSection(w: Writes, s: number, old: PackedView | undefined, next: PackedView | undefined): void {
  const ups = w.ups[s]!;
  const dels = w.dels[s]!;
  if (!old || old.count === 0) {
    if (next) ups.pushAll(next);
    return;
  }
  if (!next || next.count === 0) {
    dels.pushAll(old);
    return;
  }
  const before = new Map<string, string>();
  for (let i = 0; i < old.count; i++) before.set(viewKey(old, i), viewValue(old, i));
  for (let i = 0; i < next.count; i++) {
    const k = viewKey(next, i);
    if (before.get(k) !== viewValue(next, i)) ups.pushFrom(next, i);
    before.delete(k);
  }
  for (const k of before.keys()) dels.pushKey(k);
}
