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
 * Two mirrors make writes minimal: `desired` (what the plans say, refcounted
 * because backends are shared between services) and `applied` (what the
 * kernel maps hold). Only keys touched since the last commit are compared,
 * so one endpoint change costs a handful of map operations whatever the
 * number of services. `applied` starts as a dump of the pinned maps: a
 * restarted agent adopts what is there, keeps ids and slot positions, and
 * prunes only after its first full sync.
 */
import * as C from '../datapath/codecs';
import { MapIO, ServiceMaps, keyBuffer, keyString } from '../datapath/maps';
import { Cidr, IPv4, ObjectKey } from '../model/types';
import { L4Proto, ServicePlan, backendKey, frontendKey } from '../plan/plan';
import { IdTable } from './ids';
import { Dataplane } from './dataplane';

type MapName = keyof ServiceMaps;
const MAP_NAMES: readonly MapName[] = ['svc', 'be', 'revnat', 'member', 'cidr'];

interface Entry {
  value: Buffer;
  refs: number;
}

interface Owned {
  readonly keys: Record<MapName, string[]>;
  readonly backends: string[];
  readonly frontends: string[];
  readonly masters: string[];
}

export interface CommitStats {
  readonly upserts: number;
  readonly deletes: number;
}

export interface FrontendConflict {
  readonly service: ObjectKey;
  readonly frontend: string;
  /** WEIR_SVC_F_* of the frontend that lost: which field made the claim. */
  readonly flags: number;
  readonly owner: ObjectKey;
}

const PROTO_NUM: Record<L4Proto, number> = { TCP: C.IPPROTO.TCP, UDP: C.IPPROTO.UDP };
export function protoName(n: number): L4Proto | `proto${number}` {
  return n === C.IPPROTO.TCP ? 'TCP' : n === C.IPPROTO.UDP ? 'UDP' : `proto${n}`;
}

const MEMBER_ACTIVE = C.u32Key.encode({ value: C.MEMBER_F.ACTIVE });
const CIDR_PRESENT = C.u32Key.encode({ value: 1 });
/** Owner of the cluster CIDRs in the cidr map (frontends own theirs by rev_nat id). */
const CLUSTER_CIDR_OWNER = 0;
const STATIC_OWNER = '' as ObjectKey;

function cidrEntry(owner: number, c: Cidr): string {
  return keyString(C.cidrKey.encode({ prefixlen: 32 + c.bits, owner, addr: c.base }));
}
const MEMBER_ONLY = C.u32Key.encode({ value: 0 });

function emptyRecord<T>(make: () => T): Record<MapName, T> {
  return { svc: make(), be: make(), revnat: make(), member: make(), cidr: make() };
}

/** Slot number of an encoded services key (u16 little-endian at offset 8). */
function slotOf(key: string): number {
  return key.charCodeAt(8) | (key.charCodeAt(9) << 8);
}

export class Reconciler implements Dataplane {
  private readonly maps: ServiceMaps;
  private readonly desired = emptyRecord(() => new Map<string, Entry>());
  private readonly applied = emptyRecord(() => new Map<string, Buffer>());
  private readonly touched = emptyRecord(() => new Set<string>());
  private readonly owned = new Map<ObjectKey, Owned>();
  private readonly masterOwner = new Map<string, ObjectKey>();
  private readonly backendIds = new IdTable();
  private readonly frontendIds = new IdTable();
  private fullDiff = true;
  private resync = false;
  private adoptedIdsPending = false;
  readonly conflicts: FrontendConflict[] = [];

  constructor(maps: ServiceMaps) {
    this.maps = maps;
  }

  /** Read what the pinned maps hold: ids, slot layouts, and what to prune later. */
  adopt(): { frontends: number; backends: number } {
    this.refreshApplied();
    let frontends = 0;
    for (const [k, v] of this.applied.svc) {
      const key = C.svcKey.decode(keyBuffer(k));
      if (key.slot !== 0) continue;
      const val = C.svcVal.decode(v);
      this.frontendIds.adopt(frontendKey({ addr: key.addr as IPv4, port: key.port, proto: protoName(key.proto) as L4Proto }), val.rev_nat_id);
      frontends++;
    }
    for (const [k, v] of this.applied.be) {
      const b = C.backend.decode(v);
      this.backendIds.adopt(backendKey({ addr: b.addr as IPv4, port: b.port, proto: protoName(b.proto) as L4Proto }), C.u32Key.decode(keyBuffer(k)).value);
    }
    this.adoptedIdsPending = true;
    this.fullDiff = true;
    return { frontends, backends: this.applied.be.size };
  }

  /** The cluster CIDRs the programs use to tell pods from outside clients. */
  setClusterCidrs(cidrs: readonly Cidr[]): void {
    const o: Owned = { keys: emptyRecord(() => [] as string[]), backends: [], frontends: [], masters: [] };
    for (const c of cidrs) this.put(o, 'cidr', cidrEntry(CLUSTER_CIDR_OWNER, c), CIDR_PRESENT);
    const old = this.owned.get(STATIC_OWNER);
    if (old) this.disown(STATIC_OWNER, old, new Set());
    this.owned.set(STATIC_OWNER, o);
  }

  /** Replace one service's contribution (null: the service is gone). */
  setService(service: ObjectKey, plan: ServicePlan | null): void {
    // Take the new references before dropping the old ones, so ids of
    // backends and frontends that stay are never released and reallocated.
    const old = this.owned.get(service);
    const next = plan ? this.own(service, plan) : null;
    if (old) this.disown(service, old, new Set(next?.masters ?? []));
    if (next) this.owned.set(service, next);
    else this.owned.delete(service);
  }

  /**
   * Write what changed. The first commit after adopt() compares everything,
   * which prunes entries of services that vanished while no agent ran.
   */
  commit(): CommitStats {
    if (this.resync) {
      this.refreshApplied();
      this.fullDiff = true;
      this.resync = false;
    }
    const ups = emptyRecord(() => [] as Array<[string, Buffer]>);
    const dels = emptyRecord(() => [] as string[]);
    for (const m of MAP_NAMES) {
      if (this.fullDiff) {
        // Everything desired, then everything applied that is not desired:
        // no union of a few hundred thousand keys materialized.
        for (const [k, d] of this.desired[m]) {
          const a = this.applied[m].get(k);
          if (!a || !a.equals(d.value)) ups[m].push([k, d.value]);
        }
        for (const k of this.applied[m].keys()) if (!this.desired[m].has(k)) dels[m].push(k);
        continue;
      }
      for (const k of this.touched[m]) {
        const d = this.desired[m].get(k);
        const a = this.applied[m].get(k);
        if (d && (!a || !a.equals(d.value))) ups[m].push([k, d.value]);
        else if (!d && a) dels[m].push(k);
      }
    }
    const slotUps = ups.svc.filter(([k]) => slotOf(k) > 0);
    const masterUps = ups.svc.filter(([k]) => slotOf(k) === 0);
    const masterDels = dels.svc.filter((k) => slotOf(k) === 0);
    const slotDels = dels.svc.filter((k) => slotOf(k) > 0);

    try {
      this.write('be', ups.be);
      this.write('revnat', ups.revnat);
      this.write('member', ups.member);
      // Source ranges before the master entry whose flag turns the filter on.
      this.write('cidr', ups.cidr);
      this.write('svc', slotUps);
      this.write('svc', masterUps);
      this.erase('svc', masterDels);
      this.erase('svc', slotDels);
      this.erase('cidr', dels.cidr);
      this.erase('member', dels.member);
      this.erase('revnat', dels.revnat);
      this.erase('be', dels.be);
    } catch (e) {
      // The mirror may be off for the batch that failed: re-read the maps and
      // compare everything on the retry. Touched sets stay as they are.
      this.resync = true;
      throw e;
    }
    for (const m of MAP_NAMES) this.touched[m].clear();
    this.fullDiff = false;
    if (this.adoptedIdsPending) {
      this.backendIds.dropUnreferenced();
      this.frontendIds.dropUnreferenced();
      this.adoptedIdsPending = false;
    }
    const count = (r: Record<MapName, unknown[]>): number => MAP_NAMES.reduce((n, m) => n + r[m].length, 0);
    return { upserts: count(ups), deletes: count(dels) };
  }

  /** Frontends (master entries) currently owned by services. */
  frontendCount(): number {
    return this.masterOwner.size;
  }

  backendCount(): number {
    return this.desired.be.size;
  }

  /** Entries currently desired, per map (for gauges). */
  sizes(): Record<MapName, number> {
    return { svc: this.desired.svc.size, be: this.desired.be.size, revnat: this.desired.revnat.size, member: this.desired.member.size, cidr: this.desired.cidr.size };
  }

  private write(m: MapName, entries: Array<[string, Buffer]>): void {
    if (entries.length === 0) return;
    (this.maps[m] as MapIO).upsert(entries);
    for (const [k, v] of entries) this.applied[m].set(k, v);
  }

  private erase(m: MapName, keys: string[]): void {
    if (keys.length === 0) return;
    this.maps[m].remove(keys);
    for (const k of keys) this.applied[m].delete(k);
  }

  private refreshApplied(): void {
    for (const m of MAP_NAMES) {
      this.applied[m].clear();
      for (const [k, v] of this.maps[m].dump()) this.applied[m].set(k, v);
    }
  }

  private put(o: Owned, m: MapName, k: string, v: Buffer): void {
    const e = this.desired[m].get(k);
    if (e) {
      e.refs++;
      e.value = v;
    } else this.desired[m].set(k, { value: v, refs: 1 });
    // While a full comparison is pending (cold start, after adoption or a
    // failure) every key is compared anyway: skip the bookkeeping.
    if (!this.fullDiff) this.touched[m].add(k);
    o.keys[m].push(k);
  }

  private own(service: ObjectKey, plan: ServicePlan): Owned {
    const o: Owned = { keys: emptyRecord(() => [] as string[]), backends: [], frontends: [], masters: [] };
    const idOf = new Map<string, number>();
    const membership = new Map<number, Map<number, boolean>>();
    for (const [bk, b] of plan.backends) {
      const id = this.backendIds.acquire(bk);
      o.backends.push(bk);
      idOf.set(bk, id);
      const flags = (b.local ? C.BE_F.LOCAL : 0) | (b.terminating ? C.BE_F.TERMINATING : 0);
      this.put(o, 'be', keyString(C.u32Key.encode({ value: id })), C.backend.encode({ addr: b.addr, port: b.port, proto: PROTO_NUM[b.proto], flags }));
    }
    for (const fe of plan.frontends) {
      const base = { addr: fe.addr, port: fe.port, proto: PROTO_NUM[fe.proto], scope: fe.scope };
      const master = keyString(C.svcKey.encode({ ...base, slot: 0 }));
      const owner = this.masterOwner.get(master);
      if (owner !== undefined && owner !== service) {
        this.conflicts.push({ service, frontend: frontendKey(fe), flags: fe.flags, owner });
        continue;
      }
      this.masterOwner.set(master, service);
      o.masters.push(master);
      const fk = frontendKey(fe);
      const revId = this.frontendIds.acquire(fk);
      o.frontends.push(fk);
      this.put(o, 'revnat', keyString(C.u32Key.encode({ value: revId })), C.revnat.encode({ addr: fe.addr, port: fe.port }));
      const slots = this.layout(master, fe.backends.map((bk) => idOf.get(bk)!));
      slots.forEach((id, i) => {
        this.put(o, 'svc', keyString(C.svcKey.encode({ ...base, slot: i + 1 })), C.svcVal.encode({ backend_id: id }));
      });
      this.put(
        o,
        'svc',
        master,
        C.svcVal.encode({ count: slots.length, flags: fe.flags, rev_nat_id: revId, affinity_timeout: fe.affinityTimeout }),
      );
      // Membership is per frontend (both scopes share the rev_nat id):
      // every endpoint of the port, active if some scope may choose it.
      let m = membership.get(revId);
      if (!m) membership.set(revId, (m = new Map()));
      for (const bk of fe.members) if (!m.has(idOf.get(bk)!)) m.set(idOf.get(bk)!, false);
      for (const id of slots) m.set(id, true);
      for (const c of fe.sourceRanges) this.put(o, 'cidr', cidrEntry(revId, c), CIDR_PRESENT);
    }
    for (const [revId, m] of membership) {
      for (const [id, active] of m) {
        this.put(o, 'member', keyString(C.memberKey.encode({ rev_nat_id: revId, backend_id: id })), active ? MEMBER_ACTIVE : MEMBER_ONLY);
      }
    }
    return o;
  }

  private disown(service: ObjectKey, o: Owned, keepMasters: ReadonlySet<string>): void {
    for (const m of MAP_NAMES) {
      for (const k of o.keys[m]) {
        const e = this.desired[m].get(k);
        if (!e) continue;
        if (--e.refs <= 0) this.desired[m].delete(k);
        if (!this.fullDiff) this.touched[m].add(k);
      }
    }
    for (const bk of o.backends) this.backendIds.release(bk);
    for (const fk of o.frontends) this.frontendIds.release(fk);
    for (const mk of o.masters) if (!keepMasters.has(mk) && this.masterOwner.get(mk) === service) this.masterOwner.delete(mk);
  }

  /**
   * Slot layout for a frontend: keep every surviving backend in the slot it
   * had in the maps, put new backends into freed slots, then close remaining
   * holes by moving the last slot into them. One endpoint change therefore
   * rewrites at most two slots, not every slot after it.
   */
  private layout(masterKey: string, ids: readonly number[]): number[] {
    const prev: number[] = [];
    const master = this.applied.svc.get(masterKey);
    if (master) {
      const count = C.svcVal.decode(master).count;
      const base = keyBuffer(masterKey);
      for (let slot = 1; slot <= count; slot++) {
        base.writeUInt16LE(slot, 8);
        const v = this.applied.svc.get(keyString(base));
        if (v) prev.push(C.svcVal.decode(v).backend_id);
      }
    }
    const want = new Set(ids);
    const placed = new Set<number>();
    const out: Array<number | undefined> = prev.map((id) => {
      if (!want.has(id) || placed.has(id)) return undefined;
      placed.add(id);
      return id;
    });
    const fresh = ids.filter((id) => !placed.has(id));
    let f = 0;
    for (let i = 0; i < out.length && f < fresh.length; i++) if (out[i] === undefined) out[i] = fresh[f++];
    for (let i = 0; i < out.length; ) {
      if (out[i] !== undefined) {
        i++;
        continue;
      }
      const last = out.pop();
      if (i < out.length) out[i] = last;
    }
    return [...(out as number[]), ...fresh.slice(f)];
  }
}
