/**
 * Reconcile: service plans -> map entries, written in an order that lets
 * every packet see a whole service at every instant (DESIGN.md §2):
 *
 *   backends, revnat, member, cidr upserts
 *   -> backend slots (slot > 0) upserts
 *   -> master entries (slot 0: count) upserts
 *   -> master deletes -> slot deletes -> cidr, member, revnat, backend deletes
 *
 * Growing a service writes the new slots before the count that exposes them;
 * shrinking lowers the count before the slots behind it go; a backend leaves
 * the maps only after no slot names it.
 *
 * State is kept per service, not per map entry. Every frontend belongs to one
 * service (a second claimant is reported and skipped), so every svc, revnat,
 * member and source-range entry has exactly one owner: a service's record
 * holds its entries packed as the kernel takes them, and a change is the
 * difference between the service's record at the last commit and now. Only
 * backends are shared between services; they alone are refcounted. Ten
 * thousand services are then ten thousand buffers, not a few hundred thousand
 * JavaScript objects, and one endpoint change costs a handful of map
 * operations whatever the number of services.
 *
 * What the kernel holds is read back (a dump) only when it is unknown: at
 * start, where a restarted agent adopts it (keeps ids and slot positions and
 * prunes what no service claims), after a write failed half-way, and when
 * the periodic drift scan finds a map that differs.
 *
 * The parts, each its own module: adopt.ts reads the pinned maps back;
 * builder.ts turns a plan into a service's record, with ids from the
 * allocators (ids.ts, backends.ts); differ.ts finds what to write, record
 * against record or records against the kernel; writes.ts puts the writes
 * in order and submits them; drift.ts is the periodic check by digest.
 * This file holds the state between them and the commit protocol.
 */
import * as C from '../datapath/codecs';
import { IMMEDIATE_WRITES, WriteQueue } from '../datapath/maps';
import { Cidr, ObjectKey } from '../model/types';
import { ServicePlan, familyPlan } from '../plan/plan';
import { ipFamily } from '../model/types';
import { BackendTable } from './backends';
import { BackendTable6 } from './backends6';
import { IdTable } from './ids';
import { Dataplane } from './dataplane';
import { ServiceRecord, entryCount, forEachBackendRow } from './record';
import { DriftScanner } from './drift';
import { AdoptReport, adoptPinned } from './adopt';
import { MapName, ReconcileMaps, SECTIONS, V6_MAPS, hasV6, u32Key } from './layout';
import { PortFilter } from './ports';
import { CommitStats, NO_WRITES, Writes } from './writes';
import { RecordBuilder, v6Row } from './builder';
import { diffAll, diffPending } from './differ';

export type { AdoptReport } from './adopt';
export type { CommitStats } from './writes';

/** Entries a full comparison with the kernel wrote or removed, by map name (only maps that differed). */
export type Repairs = Readonly<Record<string, number>>;

/** Entries the agent keeps in one of the maps it writes, and how many fit. */
export interface MapFill {
  readonly map: string;
  readonly entries: number;
  readonly max: number;
}

/** A frontend with more backends than its entry's count (u16) can name. */
export interface TruncatedFrontend {
  readonly service: ObjectKey;
  readonly frontend: string;
  readonly backends: number;
}

export { MAX_SLOTS } from './builder';

export interface FrontendConflict {
  readonly service: ObjectKey;
  readonly frontend: string;
  /** WEIR_SVC_F_* of the frontend that lost: which field made the claim. */
  readonly flags: number;
  readonly owner: ObjectKey;
}

export { protoName } from './layout';

/**
 * The desired state needs more entries than maps hold. Nothing is lost: the
 * agent keeps it, and each retry compares everything with the kernel, so it
 * lands once it fits: when the cluster shrinks, or after a restart with
 * larger maps (a pinned map keeps its size until it is removed).
 */
export class MapFullError extends Error {
  constructor(
    readonly maps: ReadonlyArray<{ readonly map: string; readonly wanted: number; readonly max: number }>,
    cause: unknown,
  ) {
    super(maps.map((m) => `map ${m.map} is full: ${m.wanted} entries wanted, max_entries ${m.max}`).join('; '), { cause });
    this.name = 'MapFullError';
  }
}

/** The record of the entries no service owns (the cluster CIDRs). */
const STATIC_OWNER = '' as ObjectKey;

export class Reconciler implements Dataplane {
  private readonly maps: ReconcileMaps;
  private readonly writes: WriteQueue;
  private readonly records = new Map<ObjectKey, ServiceRecord>();
  /** Services changed since the last commit, with their record as of that commit. */
  private readonly pending = new Map<ObjectKey, ServiceRecord | null>();
  /** How many pending services had a record before (0: every pending service is new). */
  private pendingReplaced = 0;
  /** Writes flush() queued since the last commit, counted into its stats. */
  private flushed: CommitStats = NO_WRITES;
  /**
   * The buffers of flush()'s last writes, reused by the next flush once the
   * queue has drained: a cold start flushes twenty times, and fresh buffers
   * each time were fresh memory to fault in.
   */
  private flushWrites: Writes | null = null;
  private readonly be = new BackendTable();
  /** IPv6 backends, when the maps have the IPv6 twins (docs/ipv6.md); else IPv6 halves of plans are not programmed. */
  private readonly be6: BackendTable6 | null;
  private readonly frontendIds = new IdTable();
  private readonly owners = new Map<string, ObjectKey>();
  /** The next commit compares everything with the kernel (after adopt() or a failed write). */
  private full = false;
  /**
   * The svc map as adopt() found it (latin1 key -> latin1 value), for the
   * slot layouts of frontends no record has yet; gone after the first
   * commit. The other maps are read one at a time when they are compared.
   */
  private kernelSvc: Map<string, string> | null = null;
  /** The svc6 map as adopt() found it, likewise. */
  private kernelSvc6: Map<string, string> | null = null;
  private resync = false;
  private adoptedIdsPending = false;
  private readonly drift = new DriftScanner({
    maps: () => this.maps,
    records: () => this.records.values(),
    backends: () => this.be,
    backends6: () => this.be6,
    // A failed write's retry is due: it compares everything itself.
    unsettled: () => this.pending.size > 0 || this.full || this.resync,
    portsDiffer: () => this.ports.differing().length > 0,
  });
  /** What the last full comparison wrote, by map (read by repairDrift). */
  private lastRepairs: Record<string, number> = {};
  /** The high-water marks as last written to the ids map. */
  private savedIds = { rev: 1, be: 1 };
  readonly conflicts: FrontendConflict[] = [];
  readonly truncated: TruncatedFrontend[] = [];
  private readonly builder: RecordBuilder;
  private readonly ports: PortFilter;

  /** writes: where flush() hands its batches (a KernelWriteQueue lets the kernel insert while the next ones are built). */
  constructor(maps: ReconcileMaps, writes: WriteQueue = IMMEDIATE_WRITES) {
    this.maps = maps;
    this.writes = writes;
    this.be6 = hasV6(maps) ? new BackendTable6(this.be) : null;
    this.ports = new PortFilter(maps.ports);
    this.builder = new RecordBuilder({
      be: this.be,
      be6: this.be6,
      frontendIds: this.frontendIds,
      owners: this.owners,
      conflicts: this.conflicts,
      truncated: this.truncated,
      fullDue: () => this.full,
      kernelSvc: () => this.kernelSvc,
      kernelSvc6: () => this.kernelSvc6,
    });
  }

  /**
   * Read what the pinned maps hold: ids, slot layouts, and what to prune
   * later (./adopt.ts). The first commit then compares everything, unless
   * the maps are empty (a fresh node).
   */
  adopt(): AdoptReport {
    const a = adoptPinned(this.maps, this.frontendIds, this.be, this.be6);
    this.kernelSvc = a.kernelSvc;
    this.kernelSvc6 = a.kernelSvc6;
    this.full = a.nonEmpty;
    this.savedIds = a.savedIds;
    this.adoptedIdsPending = true;
    this.ports.adopt(this.maps, a);
    return a.report;
  }

  /** Persist the high-water marks when ids were handed out since the last time (before the writes that use them). */
  private saveIds(): void {
    const rev = this.frontendIds.highWater;
    const be = this.be.highWater;
    if (!this.maps.ids || (rev === this.savedIds.rev && be === this.savedIds.be)) return;
    this.maps.ids.upsert([[u32Key(0), C.ids.encode({ next_rev_nat_id: rev, next_backend_id: be })]]);
    this.savedIds = { rev, be };
  }

  /** The cluster CIDRs the programs use to tell pods from outside clients. */
  setClusterCidrs(cidrs: readonly Cidr[]): void {
    this.setRecord(STATIC_OWNER, this.records.get(STATIC_OWNER) ?? null, this.builder.clusterCidrs(cidrs));
  }

  expectBackends(n: number): void {
    this.be.reserve(n);
  }

  /** Replace one service's contribution (null: the service is gone). */
  setService(service: ObjectKey, plan: ServicePlan | null): void {
    // Take the new references before dropping the old ones, so ids of
    // backends and frontends that stay are never released and reallocated.
    const old = this.records.get(service) ?? null;
    // Each family into its own maps; the IPv6 half only where the datapath has IPv6 maps.
    let next: ServiceRecord | null = null;
    if (plan) {
      const v6 = hasIPv6(plan);
      next = this.builder.build(service, v6 ? familyPlan(plan, 4) : plan, old, v6 && this.be6 ? familyPlan(plan, 6) : null);
    }
    if (old) this.release(service, old, next);
    this.setRecord(service, old, next);
  }

  /**
   * Write what changed. The first commit after adopt() compares everything,
   * which prunes entries of services that vanished while no agent ran.
   */
  commit(): CommitStats {
    if (this.resync) {
      this.full = true;
      this.resync = false;
    }
    const w = new Writes();
    const full = this.full;
    if (full) diffAll(w, { records: this.records, be: this.be, maps: this.maps, kernelSvc: this.kernelSvc, be6: this.be6, kernelSvc6: this.kernelSvc6 });
    else diffPending(w, { pending: this.pending, records: this.records, be: this.be, be6: this.be6 });
    if (full) this.lastRepairs = w.byMap(this.maps);
    let stats: CommitStats;
    try {
      // The parts flush() handed over land first; this commit's own writes
      // then go on this thread: a small sync (one endpoint) pays no thread
      // hand-off, which on a busy 2-vCPU machine added milliseconds to its p99.
      this.writes.drain();
      this.saveIds();
      const portWords = this.ports.cover(w, full);
      if (portWords > 0) this.lastRepairs[this.maps.ports!.name] = portWords;
      stats = w.submit(this.maps, IMMEDIATE_WRITES);
      this.drift.noteWrites(w);
    } catch (e) {
      // Some of the batches (this commit's or a flush's) may be in the
      // kernel: read the maps back and compare everything on the retry.
      this.writeFailed();
      throw this.fullMapError(e) ?? e;
    }
    if (!full) this.settleBackends();
    this.be.clearPending();
    this.be6?.clearPending();
    this.clearPending();
    this.full = false;
    this.kernelSvc = null;
    this.kernelSvc6 = null;
    if (this.adoptedIdsPending) {
      this.frontendIds.dropUnreferenced();
      this.adoptedIdsPending = false;
    }
    stats = { upserts: stats.upserts + this.flushed.upserts, deletes: stats.deletes + this.flushed.deletes };
    this.flushed = NO_WRITES;
    return stats;
  }

  /**
   * Compare every map with the desired state and write what differs: drift
   * from another writer, a hand edit with bpftool, or a write whose failure
   * went unseen. Call it between syncs (with nothing pending, everything
   * written is drift). Returns what was repaired, by map; throws like
   * commit() if a write fails (the next commit then compares everything again).
   */
  repairDrift(): Repairs {
    if (this.pending.size > 0) throw new Error('repairDrift: changes are pending; commit them first');
    this.full = true;
    this.commit();
    const repairs = this.lastRepairs;
    this.lastRepairs = {};
    return repairs;
  }

  /** See DriftScanner.scan. */
  driftScan(recordsPerStep?: number, entriesPerStep?: number): Generator<void, string[] | null, void> {
    return this.drift.scan(recordsPerStep, entriesPerStep);
  }

  /**
   * Start writing the services set so far while more are planned; commit()
   * waits for these writes and writes the rest. Only when that is exactly
   * what the commit would do: every pending service is new (so nothing is
   * deleted, and no key one service drops can be another's in the same
   * commit) and no full comparison with the kernel is due. A cold start on a
   * fresh node is that case, with the most to write.
   */
  flush(): void {
    if (this.full || this.resync || this.pendingReplaced > 0 || this.pending.size === 0) return;
    let stats: CommitStats;
    try {
      // The previous flush's writes must be done before their buffers are
      // reused. Usually they are; in a cold start at 10k x 10 the main thread
      // waited here 20-80 ms in all, as long as a second set of buffers
      // would have saved nothing (the kernel's inserts were the bottleneck).
      this.writes.drain();
      const w = this.flushWrites ?? (this.flushWrites = new Writes());
      w.clear();
      diffPending(w, { pending: this.pending, records: this.records, be: this.be, be6: this.be6 });
      this.saveIds();
      this.ports.cover(w, false);
      stats = w.submit(this.maps, this.writes);
      this.drift.noteWrites(w);
    } catch {
      // A part did not land. Throwing here would end the sync half-planned;
      // instead no more parts are handed over, and this sync's commit
      // compares everything with the kernel (what a retry after a failed
      // write does), which throws if the failure persists.
      this.writeFailed();
      return;
    }
    this.flushed = { upserts: this.flushed.upserts + stats.upserts, deletes: this.flushed.deletes + stats.deletes };
    // Settled as if written: should a queued write fail, the next flush or
    // the commit sees it, and everything is compared with the kernel.
    this.settleBackends();
    this.be.clearPending();
    this.be6?.clearPending();
    this.clearPending();
  }

  /**
   * After a failed write the kernel holds an unknown part of it: the next
   * commit reads every map back and compares everything. That includes the
   * service map, whose snapshot from adopt() no longer says what it holds
   * (comparing against it left the entries of a half-written commit in
   * place for good).
   */
  private writeFailed(): void {
    this.resync = true;
    this.kernelSvc = null;
    this.kernelSvc6 = null;
    this.flushed = NO_WRITES;
  }

  /**
   * A write the kernel refused with E2BIG (a hash map holds max_entries at
   * most) as the maps the desired state does not fit in, or null if it fits
   * in every map (then the error was something else, or a transient peak:
   * upserts are written before deletes).
   */
  private fullMapError(e: unknown): MapFullError | null {
    if ((e as { code?: unknown }).code !== 'E2BIG') return null;
    const full = this.fill().filter((f) => f.entries > f.max);
    return full.length
      ? new MapFullError(
          full.map((f) => ({ map: f.map, wanted: f.entries, max: f.max })),
          e,
        )
      : null;
  }

  /** Pending backends are now as desired in the kernel (or gone from it). */
  private settleBackends(): void {
    const be = this.be;
    const rows = be.pendingRows();
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i]!;
      if (be.refs[r]! > 0) {
        be.applied[r] = 1;
        be.a0[r] = be.v0[r]!;
        be.a1[r] = be.v1[r]!;
      } else be.remove(r);
    }
    const be6 = this.be6;
    if (!be6) return;
    for (const r of be6.pendingRows()) {
      if (be6.refs[r]! > 0) be6.have[r] = be6.want[r]!;
      else be6.remove(r);
    }
  }

  private clearPending(): void {
    this.pending.clear();
    this.pendingReplaced = 0;
  }

  frontendOwner(frontend: string): ObjectKey | undefined {
    return this.owners.get(frontend);
  }

  /** Frontends (service address, port, protocol) currently owned by services. */
  frontendCount(): number {
    return this.owners.size;
  }

  backendCount(): number {
    return this.be.live + (this.be6?.live ?? 0);
  }

  /** Entries currently desired, per map (for gauges and tests); the IPv6 twins only when the maps have them. */
  sizes(): Partial<Record<MapName, number>> {
    const out: Partial<Record<MapName, number>> = { svc: 0, be: this.be.live, revnat: 0, member: 0, cidr: 0 };
    if (this.be6) Object.assign(out, { svc6: 0, be6: this.be6.live, revnat6: 0, cidr6: 0 });
    for (const r of this.records.values()) SECTIONS.forEach((sec, s) => (out[sec.map] = (out[sec.map] ?? 0) + entryCount(r, s)));
    if (!this.be6) for (const m of V6_MAPS) delete out[m];
    return out;
  }

  /** Desired entries against room, for each map that has a limit (kernel maps; the in-memory twin has none). */
  fill(): MapFill[] {
    const wanted = this.sizes();
    const out: MapFill[] = [];
    for (const m of Object.keys(wanted) as MapName[]) {
      const map = this.maps[m];
      if (map?.maxEntries !== undefined) out.push({ map: map.name, entries: wanted[m]!, max: map.maxEntries });
    }
    return out;
  }

  private release(service: ObjectKey, old: ServiceRecord, next: ServiceRecord | null): void {
    const be = this.be;
    const be6 = this.be6;
    forEachBackendRow(old, SECTIONS, (r) => {
      if (r < 0) {
        // An IPv6 backend (./builder.ts v6Row).
        const r6 = v6Row(r);
        if (--be6!.refs[r6]! === 0) {
          be6!.live--;
          be6!.markPending(r6);
        }
      } else if (--be.refs[r]! === 0) {
        be.live--;
        this.be.markPending(r);
      }
    });
    const keep = new Set(next?.frontends ?? []);
    for (const fk of old.frontends) {
      this.frontendIds.release(fk);
      if (!keep.has(fk) && this.owners.get(fk) === service) this.owners.delete(fk);
    }
  }

  private setRecord(service: ObjectKey, old: ServiceRecord | null, next: ServiceRecord | null): void {
    if (!this.pending.has(service)) {
      this.pending.set(service, old);
      if (old) this.pendingReplaced++;
    }
    if (next) this.records.set(service, next);
    else this.records.delete(service);
  }
}

/** Whether a plan has an IPv6 frontend (nearly every plan has none: then it is used as it is). */
function hasIPv6(plan: ServicePlan): boolean {
  for (let i = 0; i < plan.frontends.length; i++) if (ipFamily(plan.frontends[i]!.addr) === 6) return true;
  return false;
}
