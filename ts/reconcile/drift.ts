/**
 * The periodic drift check: do the maps hold exactly what the agent wants
 * there? Compared by digest (./digest.ts), in steps between which the agent
 * goes on serving changes; only a map found different gets the full
 * comparison (Reconciler.repairDrift) that writes the repair.
 */
import { MapIO, PackedDump } from '../datapath/maps';
import { BackendTable } from './backends';
import { BackendTable6 } from './backends6';
import { Digest, KeyedDigest } from './digest';
import { MAP_ORDER, MapName, ReconcileMaps, SECTIONS } from './layout';
import { Packed } from './packed';
import { ServiceRecord, sectionView } from './record';
import { Writes } from './writes';

/** What the scanner reads of the reconciler. */
export interface DriftHost {
  maps(): ReconcileMaps;
  records(): Iterable<ServiceRecord>;
  backends(): BackendTable;
  /** The IPv6 backends (null: the maps have no IPv6 twins). */
  backends6?(): BackendTable6 | null;
  /** True while the kernel may hold an unknown part of a write. */
  unsettled(): boolean;
  /** Does the port filter (./ports.ts) hold other words than the agent wrote? */
  portsDiffer?(): boolean;
}

export class DriftScanner {
  /** Keys written to each map while a scan walks it. */
  private readonly touched = new Map<MapName, Set<string>>();
  /** Per-section digests of records (records never change once built). */
  private readonly digests = new WeakMap<ServiceRecord, Digest[]>();

  constructor(private readonly host: DriftHost) {}

  /**
   * Whether the maps hold exactly the desired entries, compared by digest
   * (./digest.ts) in steps: each next() of this generator does a bounded
   * part, so the agent serves changes between them. First the records'
   * digests are computed, a thousand services per step (each record's once:
   * records never change once built); then each map is walked, a few
   * thousand entries per step. A key this agent writes while a map is walked
   * may be read in either state, so what the walk read of it is taken back
   * out and its entry read again, with the desired digest, in the walk's
   * last step: the two sides then describe one moment. Returns the names of the maps that differ
   * (Reconciler.repairDrift() then finds and writes the entries), or null
   * while the host is unsettled (a failed write awaits its retry, which
   * compares everything anyway).
   */
  *scan(recordsPerStep = 1000, entriesPerStep = 4096): Generator<void, string[] | null, void> {
    let n = 0;
    for (const r of this.host.records()) {
      this.recordDigests(r);
      if (++n % recordsPerStep === 0) yield;
    }
    const differ: string[] = [];
    try {
      for (const m of MAP_ORDER) {
        const map = this.host.maps()[m];
        if (!map) continue; // an IPv6 twin the datapath lacks
        const touched = new Set<string>();
        this.touched.set(m, touched);
        const have = new KeyedDigest();
        // The LPM trie has no batched lookups, and a key walk restarts when
        // its last key is deleted under it: it is small, read in one step.
        const walk = m === 'cidr' || m === 'cidr6' ? undefined : map.walk?.(entriesPerStep);
        for (let done = false; !done;) {
          yield;
          if (this.host.unsettled()) return null;
          const step = walk ? walk.next() : { ...map.dumpPacked(), done: true };
          digestEntries(have, map, step);
          done = step.done;
        }
        // Keys written during the walk: whatever it read of them goes, what they hold now comes in.
        have.takeBack(touched, map.keySize);
        for (const k of touched) {
          const v = map.lookup(k);
          if (v) digestEntries(have, map, { keys: Buffer.from(k, 'latin1'), values: v, count: 1 });
        }
        const want = new Digest();
        if (m === 'be') this.backendDigest(want);
        else if (m === 'be6') this.backend6Digest(want);
        else {
          for (const r of this.host.records()) {
            const per = this.recordDigests(r);
            for (let s = 0; s < SECTIONS.length; s++) if (SECTIONS[s]!.map === m) want.addAll(per[s]!);
          }
        }
        if (!have.equals(want)) differ.push(map.name);
        this.touched.delete(m);
      }
      // 2,048 words, read in one step; only the agent writes them, so they equal its own copy between syncs.
      const ports = this.host.maps().ports;
      if (ports && this.host.portsDiffer?.()) differ.push(ports.name);
    } finally {
      this.touched.clear();
    }
    return differ;
  }

  /** Remember the keys of these writes for drift scans walking their maps. */
  noteWrites(w: Writes): void {
    if (this.touched.size === 0) return;
    const note = (m: MapName, ps: readonly Packed[]): void => {
      const t = this.touched.get(m);
      if (t) for (const p of ps) for (let i = 0; i < p.count; i++) t.add(p.key(i));
    };
    SECTIONS.forEach((sec, s) => note(sec.map, [w.ups[s]!, w.dels[s]!]));
    note('be', [w.beUps, w.beDels]);
    note('be6', [w.be6Ups, w.be6Dels]);
  }

  /** Digest of the IPv6 backend entries the kernel should hold. */
  private backend6Digest(into: Digest): void {
    const be6 = this.host.backends6?.();
    if (!be6) return;
    const key = Buffer.alloc(4);
    for (const r of be6.rows()) {
      if (be6.refs[r] === 0) continue;
      key.writeUInt32LE(be6.id[r]!, 0);
      const v = Buffer.from(be6.want[r]!, 'latin1');
      into.add(key, 0, 4, v, 0, v.length);
    }
  }

  /** Digest of the backend entries the kernel should hold: id -> (v0, v1) of every referenced backend. */
  private backendDigest(into: Digest): void {
    const be = this.host.backends();
    // Key (the id, host order) then value (the two words the table keeps), as the kernel's entry.
    const entry = Buffer.alloc(12);
    for (const r of be.rows()) {
      if (be.refs[r] === 0) continue;
      entry.writeUInt32LE(be.id[r]!, 0);
      entry.writeInt32LE(be.v0[r]!, 4);
      entry.writeInt32LE(be.v1[r]!, 8);
      into.add(entry, 0, 4, entry, 4, 8);
    }
  }

  /** Per-section digests of a record (records never change once frozen, so computed once). */
  private recordDigests(r: ServiceRecord): Digest[] {
    let d = this.digests.get(r);
    if (!d) {
      d = SECTIONS.map((sec, s) => {
        const g = new Digest();
        const v = sectionView(r, SECTIONS, s);
        g.addPacked(v.buf, v.keyOff, v.buf, v.valOff, v.count, sec.keySize, sec.valueSize);
        return g;
      });
      this.digests.set(r, d);
    }
    return d;
  }
}

/** Add packed entries to a digest. */
function digestEntries(d: Digest, map: MapIO, e: PackedDump): void {
  d.addPacked(e.keys, 0, e.values, 0, e.count, map.keySize, map.valueSize);
}
