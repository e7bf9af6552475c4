/**
 * Adoption: what a restarted agent reads back from the pinned maps before
 * its first sync. Ids and slot layouts are kept (established flows keep
 * their meaning), new ids start above every id any map still names, and
 * what an earlier writer left inconsistent is found and reported.
 */
import * as C from '../datapath/codecs';
import { MapIO, PackedDump, keyBuffer } from '../datapath/maps';
import { IPv4, IPv6 } from '../model/types';
import { L4Proto, frontendKey } from '../plan/plan';
import { BackendTable } from './backends';
import { BackendTable6 } from './backends6';
import { BackendId, IdTable, RevNatId } from './ids';
import { ReconcileMaps, be16At, be32At, dumpStrings, i32At, intToIp, protoName, slotOf, slotOf6, u32At, u32Key } from './layout';
import { SV } from './entries';

export interface AdoptReport {
  readonly frontends: number;
  readonly backends: number;
  /** Inconsistencies found in the pinned maps and how the first commit repairs them, one line each. */
  readonly repaired: readonly string[];
}

export interface Adopted {
  readonly report: AdoptReport;
  /** The svc map as found (latin1 key -> value): slot layouts of frontends no record has yet. */
  readonly kernelSvc: Map<string, string>;
  /** The svc6 map likewise (null without IPv6 twins). */
  readonly kernelSvc6: Map<string, string> | null;
  /** Anything was pinned: the first commit compares everything (and prunes). */
  readonly nonEmpty: boolean;
  /** The id high-water marks as the ids map holds them. */
  readonly savedIds: { rev: number; be: number };
  /** Conntrack as read for the ids (the largest maps: read once, the port filter's marks come from it too). */
  readonly conntrack: { readonly ct?: PackedDump; readonly ct6?: PackedDump };
}

/**
 * Read what the pinned maps hold: ids, slot layouts, and what to prune
 * later. New ids start above every id any map still names and above the
 * pinned high-water marks. A rev_nat id held by two frontends (two
 * writers once shared these maps) stays with the one its revnat entry
 * names; the others get new ids at the first commit, which also rewrites
 * revnat entries that are missing or name another frontend. Each such
 * repair is returned, naming the frontends.
 */
export function adoptPinned(maps: ReconcileMaps, frontendIds: IdTable, backends: BackendTable, backends6: BackendTable6 | null = null): Adopted {
  const repaired: string[] = [];
  const revnat = dumpStrings(maps.revnat);
  const svc = dumpStrings(maps.svc);
  const v6 = backends6 !== null && maps.svc6 !== undefined && maps.revnat6 !== undefined && maps.be6 !== undefined;
  const revnat6 = v6 ? dumpStrings(maps.revnat6) : new Map<string, string>();
  const svc6 = v6 ? dumpStrings(maps.svc6) : null;
  const idOwner = new Map<number, string>();
  let frontends = 0;
  // Masters of both families: rev_nat ids are one space (docs/ipv6.md), so a clash across families is found too.
  const masters: Array<{ fk: string; v: string; named: () => string | null }> = [];
  for (const [k, v] of svc) {
    if (slotOf(k) !== 0) continue;
    const key = C.svcKey.decode(keyBuffer(k));
    const fk = frontendKey({ addr: key.addr as IPv4, port: key.port, proto: protoName(key.proto) as L4Proto });
    const id = u32At(v, SV.rev_nat_id);
    masters.push({ fk, v, named: () => named4(revnat.get(u32Key(id))) });
  }
  for (const [k, v] of svc6 ?? []) {
    if (slotOf6(k) !== 0) continue;
    const key = C.svc6Key.decode(keyBuffer(k));
    const fk = frontendKey({ addr: key.addr as IPv6, port: key.port, proto: protoName(key.proto) as L4Proto });
    const id = u32At(v, SV.rev_nat_id);
    masters.push({ fk, v, named: () => named6(revnat6.get(u32Key(id))) });
  }
  for (const { fk, v, named: name } of masters) {
    const id = u32At(v, SV.rev_nat_id) as RevNatId;
    frontendIds.floor(id + 1);
    const holder = idOwner.get(id);
    const named = name();
    const mine = named !== null && fk.startsWith(`${named}/`);
    if (holder !== undefined && holder !== fk) {
      // The id stays with the frontend its revnat entry names.
      const [keep, lose] = mine ? [fk, holder] : [holder, fk];
      repaired.push(`rev_nat id ${id} was held by ${keep} and ${lose}: ${lose} gets a new id`);
      if (lose === holder) frontendIds.forget(holder);
      if (lose === fk) continue;
    } else if (holder === undefined && !mine) {
      repaired.push(`${fk}: its revnat entry (id ${id}) ${named === null ? 'is missing' : `names ${named}`}; rewritten`);
    }
    idOwner.set(id, fk);
    frontendIds.adopt(fk, id);
    frontends++;
  }
  const be = dumpStrings(maps.be);
  for (const [k, v] of be) {
    // The identity straight from the value bytes: no dotted address to build and parse again.
    const BE = C.backend.at;
    const id = u32At(k, 0) as BackendId;
    if (!backends.adopt(be32At(v, BE.addr), be16At(v, BE.port), v.charCodeAt(BE.proto), id, i32At(v, 0), i32At(v, 4))) {
      repaired.push(`backend id ${id} duplicates another id's ${intToIp(be32At(v, BE.addr))}:${be16At(v, BE.port)}: removed`);
    }
  }
  let adopted6 = 0;
  if (v6) {
    for (const [k, v] of dumpStrings(maps.be6)) {
      const id = u32At(k, 0) as BackendId;
      adopted6++;
      if (!backends6.adopt(v, id)) repaired.push(`IPv6 backend id ${id} duplicates another id's endpoint: removed`);
    }
  }
  const { savedIds, conntrack } = seedIds(maps, frontendIds, backends);
  // Empty maps (a fresh node) hold nothing to compare or prune: the first
  // commit then writes only what changed, and flush() may start early.
  const nonEmpty =
    svc.size > 0 ||
    be.size > 0 ||
    revnat.size > 0 ||
    (['member', 'cidr'] as const).some((m) => maps[m].dumpPacked().count > 0) ||
    (svc6?.size ?? 0) > 0 ||
    revnat6.size > 0 ||
    adopted6 > 0 ||
    (v6 && (maps.cidr6?.dumpPacked().count ?? 0) > 0);
  return { report: { frontends, backends: be.size + adopted6, repaired }, kernelSvc: svc, kernelSvc6: svc6, nonEmpty, savedIds, conntrack };
}

/** "addr:port" of a revnat entry, as frontendKey begins (null: none). */
function named4(rn: string | undefined): string | null {
  return rn === undefined ? null : `${intToIp(be32At(rn, C.revnat.at.addr))}:${be16At(rn, C.revnat.at.port)}`;
}

function named6(rn: string | undefined): string | null {
  if (rn === undefined) return null;
  const r = C.revnat6.decode(Buffer.from(rn, 'latin1'));
  return `[${r.addr}]:${r.port}`;
}

/**
 * Raise both id tables above every id the maps still name: the pinned
 * high-water marks, and conntrack, affinity, socket rev-NAT, membership
 * and source-range entries (a flow may outlive its frontend's entries;
 * its id must not come back as someone else's).
 */
function seedIds(maps: ReconcileMaps, frontendIds: IdTable, backends: BackendTable): { savedIds: { rev: number; be: number }; conntrack: { ct?: PackedDump; ct6?: PackedDump } } {
  let rev = 0;
  let bid = 0;
  const conntrack: { ct?: PackedDump; ct6?: PackedDump } = {};
  const scan = (m: MapIO | undefined, fields: ReadonlyArray<readonly ['k' | 'v', number, 'rev' | 'be']>): PackedDump | undefined => {
    if (!m) return undefined;
    const dump = m.dumpPacked();
    const { keys, values, count } = dump;
    for (let i = 0; i < count; i++) {
      for (const [where, off, kind] of fields) {
        const n = where === 'k' ? keys.readUInt32LE(i * m.keySize + off) : values.readUInt32LE(i * m.valueSize + off);
        if (kind === 'rev') rev = Math.max(rev, n);
        else bid = Math.max(bid, n);
      }
    }
    return dump;
  };
  conntrack.ct = scan(maps.ct, [
    ['v', C.ctVal.at.rev_nat_id, 'rev'],
    ['v', C.ctVal.at.backend_id, 'be'],
  ]);
  scan(maps.aff, [
    ['k', C.affKey.at.rev_nat_id, 'rev'],
    ['v', C.affVal.at.backend_id, 'be'],
  ]);
  scan(maps.skrevnat, [['v', C.skVal.at.rev_nat_id, 'rev']]);
  scan(maps.member, [
    ['k', C.memberKey.at.rev_nat_id, 'rev'],
    ['k', C.memberKey.at.backend_id, 'be'],
  ]);
  scan(maps.cidr, [['k', C.cidrKey.at.owner, 'rev']]);
  scan(maps.revnat, [['k', 0, 'rev']]);
  // The IPv6 twins name ids of the same space.
  conntrack.ct6 = scan(maps.ct6, [
    ['v', C.ct6Val.at.rev_nat_id, 'rev'],
    ['v', C.ct6Val.at.backend_id, 'be'],
  ]);
  scan(maps.aff6, [
    ['k', C.aff6Key.at.rev_nat_id, 'rev'],
    ['v', C.affVal.at.backend_id, 'be'],
  ]);
  scan(maps.cidr6, [['k', C.cidr6Key.at.owner, 'rev']]);
  scan(maps.skrevnat6, [['v', C.sk6Val.at.rev_nat_id, 'rev']]);
  scan(maps.revnat6, [['k', 0, 'rev']]);
  scan(maps.be6, [['k', 0, 'be']]);
  const saved = maps.ids?.lookup(u32Key(0));
  // An array map's one entry always exists: zeros until an agent writes it.
  const hw = saved ? C.ids.decode(saved) : { next_rev_nat_id: 0, next_backend_id: 0 };
  rev = Math.max(rev, hw.next_rev_nat_id - 1);
  bid = Math.max(bid, hw.next_backend_id - 1);
  frontendIds.floor(rev + 1);
  backends.floor(bid + 1);
  // What the map holds: the first commit writes the marks if they moved.
  return { savedIds: { rev: hw.next_rev_nat_id, be: hw.next_backend_id }, conntrack };
}
