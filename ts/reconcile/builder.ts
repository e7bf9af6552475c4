/**
 * The builder: one service's plan -> its record, the entries it owns in
 * every map, packed as the kernel takes them (./record.ts). Ids come from
 * the allocators (./ids.ts for rev_nat ids, ./backends.ts for backends);
 * slot positions are kept from the service's previous record, or from the
 * kernel for a service a restarted agent has not built yet, so one
 * endpoint change rewrites at most two slots.
 */
import * as C from '../datapath/codecs';
import { Cidr, IPv4, IPv6, ObjectKey, cidrFamily, ipToInt, ipv6Bytes } from '../model/types';
import { L4Proto, ServicePlan, frontendKey } from '../plan/plan';
import { BackendTable } from './backends';
import { BackendId, IdTable, RevNatId } from './ids';
import { SV, backend6Value, pushMember, pushSlots, pushSlots6, writeBackend, writeRevNat, writeRevNat6, writeSvc6Key, writeSvcKey, writeSvcVal } from './entries';
import { S_CIDR, S_CIDR6, S_MASTERS, S_MASTERS6, S_MEMBER, S_REVNAT, S_REVNAT6, S_SLOTS, S_SLOTS6, SECTIONS, SLOT_OFF, SLOT_OFF6, u16At, u32At } from './layout';
import { BackendTable6 } from './backends6';
import { Packed, viewKey } from './packed';
import { ServiceRecord, freezeRecord, sectionView } from './record';
import type { FrontendConflict, TruncatedFrontend } from './reconciler';

/** weir_svc_val.count and weir_svc_key.slot are 16-bit. */
export const MAX_SLOTS = 0xffff;

/** Owner of the cluster CIDRs in the cidr map (frontends own theirs by rev_nat id). */
const CLUSTER_CIDR_OWNER = 0 as const;

const PROTO_NUM: Record<L4Proto, number> = { TCP: C.IPPROTO.TCP, UDP: C.IPPROTO.UDP, SCTP: C.IPPROTO.SCTP };

/** What the builder takes from, and reports to, the reconciler. */
export interface BuildContext {
  readonly be: BackendTable;
  readonly frontendIds: IdTable;
  /** Frontend ("addr:port/PROTO") -> the service that owns it. */
  readonly owners: Map<string, ObjectKey>;
  readonly conflicts: FrontendConflict[];
  readonly truncated: TruncatedFrontend[];
  /** A full comparison with the kernel is due: it looks at every backend, so none needs marking. */
  fullDue(): boolean;
  /** The svc map as adopted, for the slot layouts of frontends no record has yet. */
  kernelSvc(): Map<string, string> | null;
  /** IPv6 backends; null when the maps have no IPv6 twins (nothing of IPv6 is built then). */
  readonly be6?: BackendTable6 | null;
  /** The svc6 map as adopted. */
  kernelSvc6?(): Map<string, string> | null;
}

/** A record's backend rows: IPv4 rows as they are, IPv6 rows as -(row + 1). */
export function v6Row(encoded: number): number {
  return -encoded - 1;
}

export class RecordBuilder {
  /** Reused while building a record. */
  private readonly scratch = SECTIONS.map((s) => new Packed(s.keySize, s.valueSize));
  private readonly scratchRevIds = new Map<string, RevNatId>();
  private readonly scratchMasterKeys = new Set<string>();
  private readonly beValue = Buffer.alloc(C.backend.size);
  private markEpoch = 0;

  constructor(private readonly ctx: BuildContext) {}

  /** The record of the cluster CIDRs (owner 0 in the cidr map). */
  clusterCidrs(cidrs: readonly Cidr[]): ServiceRecord {
    for (const p of this.scratch) p.clear();
    for (const c of cidrs) {
      if (cidrFamily(c) === 4) this.pushCidr(CLUSTER_CIDR_OWNER, c);
      else if (this.ctx.be6) this.pushCidr6(CLUSTER_CIDR_OWNER, c);
    }
    return freezeRecord(this.scratch, [], []);
  }

  /**
   * The record of one service: its entries for every map, packed, with
   * ids taken from the allocators (new references before old ones are
   * released, so ids that stay are never reallocated).
   */
  build(service: ObjectKey, plan: ServicePlan, old: ServiceRecord | null, plan6: ServicePlan | null = null): ServiceRecord {
    for (const p of this.scratch) p.clear();
    const be = this.ctx.be;
    /** Backend row of each plan backend, by its index in the plan. */
    const backends = new Array<number>(plan.backends.length);
    const bv = this.beValue;
    for (let i = 0; i < plan.backends.length; i++) {
      const b = plan.backends[i]!;
      const proto = PROTO_NUM[b.proto];
      writeBackend(bv, 0, b.ip, b.port, proto, (b.local ? C.BE_F.LOCAL : 0) | (b.terminating ? C.BE_F.TERMINATING : 0));
      const r = this.backendRef(b.ip, b.port, proto);
      const v0 = bv.readInt32LE(0);
      const v1 = bv.readInt32LE(4);
      if (be.v0[r] !== v0 || be.v1[r] !== v1) {
        // Shared backends take the flags of the service planned last.
        be.v0[r] = v0;
        be.v1[r] = v1;
        if (!this.ctx.fullDue()) be.markPending(r);
      }
      backends[i] = r;
    }

    const frontends: string[] = [];
    // Frontends repeated within the service and scopes sharing a rev_nat id
    // need lookups only with several frontends; most services have one.
    const several = plan.frontends.length > 1;
    const revIds = this.scratchRevIds;
    const masterKeys = this.scratchMasterKeys;
    if (several) {
      revIds.clear();
      masterKeys.clear();
    }
    // The master key as a string serves those lookups and the slot layout of a service seen before.
    const keyed = several || old !== null || (this.ctx.kernelSvc()?.size ?? 0) > 0;
    // Membership is per frontend (both scopes share the rev_nat id): every
    // endpoint of the port, active if some scope may choose it. The scopes of
    // one frontend are consecutive in the plan; a group's choosable backends
    // carry its mark.
    let group = null as { fk: string; revId: RevNatId; members: readonly number[]; mark: number } | null;
    const masters = this.scratch[S_MASTERS]!;
    const slotsOut = this.scratch[S_SLOTS]!;
    for (const fe of plan.frontends) {
      const fk = frontendKey(fe);
      const owner = this.ctx.owners.get(fk);
      if (owner !== undefined && owner !== service) {
        if (fe.scope === C.SCOPE_ALL) this.ctx.conflicts.push({ service, frontend: fk, flags: fe.flags, owner });
        continue;
      }
      const addr = ipToInt(fe.addr as IPv4); // the reconciler gives this builder one family's plan: IPv4
      const proto = PROTO_NUM[fe.proto];
      const mi = masters.push();
      const mOff = mi * masters.keySize;
      writeSvcKey(masters.keys, mOff, addr, fe.port, proto, fe.scope, 0);
      const masterKey = keyed ? masters.key(mi) : '';
      if (several) {
        if (masterKeys.has(masterKey)) {
          masters.count--; // the same frontend twice in one service: the first one stands
          continue;
        }
        masterKeys.add(masterKey);
      }
      let revId = several ? revIds.get(fk) : undefined;
      if (revId === undefined) {
        this.ctx.owners.set(fk, service);
        revId = this.ctx.frontendIds.acquire(fk);
        if (several) revIds.set(fk, revId);
        frontends.push(fk);
        const r = this.scratch[S_REVNAT]!;
        const ri = r.push();
        r.keys.writeUInt32LE(revId, ri * r.keySize);
        writeRevNat(r.values, ri * r.valueSize, addr, fe.port);
        for (const c of fe.sourceRanges) this.pushCidr(revId, c);
      }
      if (group?.fk !== fk) {
        if (group) this.pushMembers(group.revId, group.members, group.mark, backends);
        group = { fk, revId, members: fe.members, mark: ++this.markEpoch };
      }
      const chosen = fe.backends;
      const ids = new Array<BackendId>(chosen.length);
      for (let i = 0; i < chosen.length; i++) {
        const r = backends[chosen[i]!]!;
        be.mark[r] = group.mark;
        ids[i] = be.idOf(r);
      }
      const slots = this.layout(old, masterKey, ids);
      if (slots.length > MAX_SLOTS) {
        // The first MAX_SLOTS slots serve; every endpoint stays a member (established flows keep theirs).
        this.ctx.truncated.push({ service, frontend: fk, backends: slots.length });
        slots.length = MAX_SLOTS;
      }
      pushSlots(slotsOut, addr, fe.port, proto, fe.scope, slots);
      writeSvcVal(masters.values, mi * masters.valueSize, 0, slots.length, fe.flags, revId, fe.affinityTimeout);
    }
    if (group) this.pushMembers(group.revId, group.members, group.mark, backends);
    if (plan6 && plan6.frontends.length > 0 && this.ctx.be6) this.build6(service, plan6, old, frontends, backends);
    return freezeRecord(this.scratch, backends, frontends);
  }

  /**
   * The IPv6 half of a service into the record's IPv6 sections: the same
   * steps as the IPv4 frontends above, with the IPv6 structs, and member
   * entries in the shared member section. Its backend rows are appended to
   * `rows` as -(row + 1).
   */
  private build6(service: ObjectKey, plan: ServicePlan, old: ServiceRecord | null, frontends: string[], rows: number[]): void {
    const be6 = this.ctx.be6!;
    const own = new Array<number>(plan.backends.length);
    for (let i = 0; i < plan.backends.length; i++) {
      const b = plan.backends[i]!;
      const value = backend6Value(ipv6Bytes(b.addr as IPv6), b.port, PROTO_NUM[b.proto], (b.local ? C.BE_F.LOCAL : 0) | (b.terminating ? C.BE_F.TERMINATING : 0));
      const r = be6.rowFor(value);
      if (be6.refs[r]!++ === 0) {
        be6.live++;
        if (!this.ctx.fullDue()) be6.markPending(r);
      }
      if (be6.want[r] !== value) {
        // Shared backends take the flags of the service planned last.
        be6.want[r] = value;
        if (!this.ctx.fullDue()) be6.markPending(r);
      }
      own[i] = r;
      rows.push(-r - 1);
    }
    const revIds = new Map<string, RevNatId>();
    const masterKeys = new Set<string>();
    const masters = this.scratch[S_MASTERS6]!;
    const slotsOut = this.scratch[S_SLOTS6]!;
    let group = null as { fk: string; revId: RevNatId; members: readonly number[]; mark: number } | null;
    for (const fe of plan.frontends) {
      const fk = frontendKey(fe);
      const owner = this.ctx.owners.get(fk);
      if (owner !== undefined && owner !== service) {
        if (fe.scope === C.SCOPE_ALL) this.ctx.conflicts.push({ service, frontend: fk, flags: fe.flags, owner });
        continue;
      }
      const addr = ipv6Bytes(fe.addr as IPv6);
      const proto = PROTO_NUM[fe.proto];
      const mi = masters.push();
      writeSvc6Key(masters.keys, mi * masters.keySize, addr, fe.port, proto, fe.scope, 0);
      const masterKey = masters.key(mi);
      if (masterKeys.has(masterKey)) {
        masters.count--; // the same frontend twice in one service: the first one stands
        continue;
      }
      masterKeys.add(masterKey);
      let revId = revIds.get(fk);
      if (revId === undefined) {
        this.ctx.owners.set(fk, service);
        revId = this.ctx.frontendIds.acquire(fk);
        revIds.set(fk, revId);
        frontends.push(fk);
        const rn = this.scratch[S_REVNAT6]!;
        const ri = rn.push();
        rn.keys.writeUInt32LE(revId, ri * rn.keySize);
        writeRevNat6(rn.values, ri * rn.valueSize, addr, fe.port);
        for (const c of fe.sourceRanges) this.pushCidr6(revId, c);
      }
      if (group?.fk !== fk) {
        if (group) this.pushMembers6(group.revId, group.members, group.mark, own);
        group = { fk, revId, members: fe.members, mark: ++this.markEpoch };
      }
      const mark = group.mark;
      const ids = fe.backends.map((i) => {
        be6.mark[own[i]!] = mark;
        return be6.idOf(own[i]!);
      });
      const slots = this.layoutFrom(this.previousSlots6(old, masterKey), ids);
      if (slots.length > MAX_SLOTS) {
        this.ctx.truncated.push({ service, frontend: fk, backends: slots.length });
        slots.length = MAX_SLOTS;
      }
      pushSlots6(slotsOut, addr, fe.port, proto, fe.scope, slots);
      writeSvcVal(masters.values, mi * masters.valueSize, 0, slots.length, fe.flags, revId, fe.affinityTimeout);
    }
    if (group) this.pushMembers6(group.revId, group.members, group.mark, own);
  }

  private pushMembers6(revId: RevNatId, members: readonly number[], mark: number, rows: readonly number[]): void {
    const mem = this.scratch[S_MEMBER]!;
    const be6 = this.ctx.be6!;
    mem.reserve(members.length);
    for (const m of members) {
      const r = rows[m]!;
      pushMember(mem, revId, be6.idOf(r), be6.mark[r] === mark);
    }
  }

  private pushCidr6(owner: RevNatId | typeof CLUSTER_CIDR_OWNER, c: Cidr): void {
    const p = this.scratch[S_CIDR6]!;
    const i = p.push();
    C.cidr6Key.encode({ prefixlen: 32 + c.bits, owner, addr: c.base }, p.keys, i * p.keySize);
    p.values.writeUInt32LE(1, i * p.valueSize);
  }

  /** Backend ids by slot an IPv6 frontend had: in the service's record, else in the adopted svc6 map. */
  private previousSlots6(old: ServiceRecord | null, masterKey: string): BackendId[] {
    const prefix = masterKey.slice(0, SLOT_OFF6);
    const tail = masterKey.slice(SLOT_OFF6 + 2);
    if (old) {
      const slots = sectionView(old, SECTIONS, S_SLOTS6);
      const out: BackendId[] = [];
      for (let i = 0; i < slots.count; i++) {
        const k = viewKey(slots, i);
        if (!k.startsWith(prefix)) continue;
        const slot = k.charCodeAt(SLOT_OFF6) | (k.charCodeAt(SLOT_OFF6 + 1) << 8);
        out[slot - 1] = slots.buf.readUInt32LE(slots.valOff + i * slots.valueSize) as BackendId;
      }
      if (out.length > 0) return out.filter((id) => id !== undefined);
    }
    const kernelSvc6 = this.ctx.kernelSvc6?.() ?? null;
    const master = kernelSvc6?.get(masterKey);
    if (!kernelSvc6 || !master) return [];
    const count = u16At(master, SV.count);
    const out: BackendId[] = [];
    for (let slot = 1; slot <= count; slot++) {
      const v = kernelSvc6.get(prefix + String.fromCharCode(slot & 0xff, slot >> 8) + tail);
      if (v) out.push(u32At(v, SV.backend_id) as BackendId);
    }
    return out;
  }

  /** Member entries of one frontend: its endpoints (plan indices into `rows`), active where they carry the group's mark. */
  private pushMembers(revId: RevNatId, members: readonly number[], mark: number, rows: readonly number[]): void {
    const mem = this.scratch[S_MEMBER]!;
    const be = this.ctx.be;
    mem.reserve(members.length);
    for (const m of members) {
      const r = rows[m]!;
      pushMember(mem, revId, be.idOf(r), be.mark[r] === mark);
    }
  }

  private pushCidr(owner: RevNatId | typeof CLUSTER_CIDR_OWNER, c: Cidr): void {
    const p = this.scratch[S_CIDR]!;
    const i = p.push();
    C.cidrKey.encode({ prefixlen: 32 + c.bits, owner, addr: c.base }, p.keys, i * p.keySize);
    p.values.writeUInt32LE(1, i * p.valueSize);
  }

  private backendRef(addr: number, port: number, proto: number): number {
    const be = this.ctx.be;
    const r = be.rowFor(addr, port, proto);
    if (be.refs[r]!++ === 0) {
      be.live++;
      // While a full comparison is pending, commit() looks at every backend anyway.
      if (!this.ctx.fullDue()) be.markPending(r);
    }
    return r;
  }

  /**
   * Slot layout for a frontend: keep every surviving backend in the slot it
   * had, put new backends into freed slots, then close remaining holes by
   * moving the last slot into them. One endpoint change therefore rewrites
   * at most two slots, not every slot after it.
   */
  private layout(old: ServiceRecord | null, masterKey: string, ids: readonly BackendId[]): BackendId[] {
    return this.layoutFrom(this.previousSlots(old, masterKey), ids);
  }

  /** The slot layout given the ids by slot the frontend had (see layout). */
  private layoutFrom(prev: readonly BackendId[], ids: readonly BackendId[]): BackendId[] {
    if (prev.length === 0) return ids as BackendId[];
    const want = new Set(ids);
    const placed = new Set<BackendId>();
    const out: Array<BackendId | undefined> = prev.map((id) => {
      if (!want.has(id) || placed.has(id)) return undefined;
      placed.add(id);
      return id;
    });
    const fresh = ids.filter((id) => !placed.has(id));
    let f = 0;
    for (let i = 0; i < out.length && f < fresh.length; i++) if (out[i] === undefined) out[i] = fresh[f++];
    for (let i = 0; i < out.length;) {
      if (out[i] !== undefined) {
        i++;
        continue;
      }
      const last = out.pop();
      if (i < out.length) out[i] = last;
    }
    return [...(out as BackendId[]), ...fresh.slice(f)];
  }

  /** Backend ids by slot (index 0 = slot 1) this frontend had: in the service's record, else in the kernel. */
  private previousSlots(old: ServiceRecord | null, masterKey: string): BackendId[] {
    const kernelSvc = this.ctx.kernelSvc();
    if (!old && !kernelSvc?.size) return []; // a new service on a fresh node: every cold-start frontend
    const prefix = masterKey.slice(0, SLOT_OFF);
    const tail = masterKey.slice(SLOT_OFF + 2);
    if (old) {
      const slots = sectionView(old, SECTIONS, S_SLOTS);
      const out: BackendId[] = [];
      for (let i = 0; i < slots.count; i++) {
        const k = viewKey(slots, i);
        if (!k.startsWith(prefix)) continue;
        const slot = k.charCodeAt(SLOT_OFF) | (k.charCodeAt(SLOT_OFF + 1) << 8);
        out[slot - 1] = slots.buf.readUInt32LE(slots.valOff + i * slots.valueSize) as BackendId;
      }
      if (out.length > 0) return out.filter((id) => id !== undefined);
    }
    const master = kernelSvc?.get(masterKey);
    if (!kernelSvc || !master) return [];
    const count = u16At(master, SV.count);
    const out: BackendId[] = [];
    for (let slot = 1; slot <= count; slot++) {
      const v = kernelSvc.get(prefix + String.fromCharCode(slot & 0xff, slot >> 8) + tail);
      if (v) out.push(u32At(v, SV.backend_id) as BackendId);
    }
    return out;
  }
}
