/**
 * `weir check`: the invariants that make every packet correct, verified
 * over what the maps hold at one instant, without knowing how an agent got
 * there (DESIGN.md §8). They hold between syncs; a check taken while an
 * agent writes may see one service half-way (make-before-break keeps that
 * safe for packets, not for this check), so callers check a settled agent.
 *
 *  - each master entry's rev_nat id names that frontend alone (the scopes
 *    of one frontend share it), and its revnat entry holds the frontend's
 *    address and port, so a reply is rewritten to what the client used;
 *  - slots 1..count exist and name backends that exist and are active
 *    members of the frontend, so a new flow never lands on a stranger;
 *  - nothing without an owner: no slot beyond its master's count, no
 *    member, cidr or revnat entry of a rev_nat id no master holds, no
 *    member naming a missing backend, no backend nothing names;
 *  - every id any map names is below the pinned high-water marks, so none
 *    is handed out twice while conntrack or affinity may hold it;
 *  - the port filter, once on, marks every frontend port, backend port and
 *    reply-direction conntrack source port (bpf/lib/ports.h).
 */
import * as C from '../datapath/codecs';
import { MapIO, ServiceMaps, keyBuffer } from '../datapath/maps';
import { PORT_WORDS, PortFilter } from '../reconcile/ports';

export interface Violation {
  /** The map the offending entry is in (weir1_svc, ...). */
  readonly map: string;
  /** The entry's key, readable. */
  readonly key: string;
  /** Which invariant it breaks, and how. */
  readonly rule: string;
}

/**
 * The maps checked: the ones the agent writes, the id marks, and conntrack
 * and affinity (ids they name); with the IPv6 twins when the datapath has
 * them. The member map and the ids are one space for both families.
 */
export type CheckedMaps = ServiceMaps & {
  readonly svc6?: MapIO;
  readonly be6?: MapIO;
  readonly revnat6?: MapIO;
  readonly cidr6?: MapIO;
  readonly ct6?: MapIO;
  readonly aff6?: MapIO;
  readonly ports?: MapIO;
};

const proto = (n: number): string => (n === C.IPPROTO.TCP ? 'TCP' : n === C.IPPROTO.UDP ? 'UDP' : n === C.IPPROTO.SCTP ? 'SCTP' : `proto${n}`);
const scope = (n: number): string => (n === C.SCOPE_LOCAL ? 'local' : 'all');
/** An address as frontend names print it: IPv6 in brackets. */
const host = (addr: string): string => (addr.includes(':') ? `[${addr}]` : addr);

export function checkMaps(maps: CheckedMaps): Violation[] {
  const out: Violation[] = [];
  const bad = (map: MapIO, key: string, rule: string): void => void out.push({ map: map.name, key, rule });
  const u32 = (k: string): number => C.u32Key.decode(keyBuffer(k)).value;

  // Backend and rev_nat ids are one space: each id with the family (map) that holds it.
  const backends = new Map<number, MapIO>();
  for (const [k] of maps.be.dump()) backends.set(u32(k), maps.be);
  if (maps.be6) for (const [k] of maps.be6.dump()) backends.set(u32(k), maps.be6);
  const revnat = new Map<number, { addr: string; port: number; map: MapIO }>();
  for (const [k, v] of maps.revnat.dump()) revnat.set(u32(k), { ...C.revnat.decode(v), map: maps.revnat });
  if (maps.revnat6) for (const [k, v] of maps.revnat6.dump()) revnat.set(u32(k), { ...C.revnat6.decode(v), map: maps.revnat6 });
  const members = new Map<string, number>();
  for (const [k, v] of maps.member.dump()) {
    const m = C.memberKey.decode(keyBuffer(k));
    members.set(`${m.rev_nat_id}/${m.backend_id}`, v.readUInt32LE(0));
  }

  // Masters and slots, by frontend and scope, of both families.
  type Entry = { addr: string; port: number; proto: number; slot: number; val: C.SvcVal; map: MapIO; be: MapIO; revnat: MapIO };
  const masters = new Map<string, Entry>();
  const slots = new Map<string, Map<number, Entry>>();
  const collect = (svc: MapIO, decode: (b: Buffer) => { addr: string; port: number; proto: number; scope: number; slot: number }, be: MapIO, rn: MapIO): void => {
    for (const [k, v] of svc.dump()) {
      const key = decode(keyBuffer(k));
      const e: Entry = { addr: key.addr, port: key.port, proto: key.proto, slot: key.slot, val: C.svcVal.decode(v), map: svc, be, revnat: rn };
      const fe = `${host(key.addr)}:${key.port}/${proto(key.proto)} ${scope(key.scope)}`;
      if (key.slot === 0) masters.set(fe, e);
      else {
        let m = slots.get(fe);
        if (!m) slots.set(fe, (m = new Map<number, Entry>()));
        m.set(key.slot, e);
      }
    }
  };
  collect(maps.svc, (b) => C.svcKey.decode(b), maps.be, maps.revnat);
  if (maps.svc6 && maps.be6 && maps.revnat6) collect(maps.svc6, (b) => C.svc6Key.decode(b), maps.be6, maps.revnat6);

  /** rev_nat id -> the frontend holding it, and the revnat map its entry belongs in. */
  const revOwner = new Map<number, { frontend: string; revnat: MapIO; svc: MapIO }>();
  const named = new Set<number>(); // backend ids some slot or member names
  for (const [fe, { addr, port, proto: p, val, map, be, revnat: rnMap }] of masters) {
    const frontend = `${host(addr)}:${port}/${proto(p)}`;
    const id = val.rev_nat_id;
    const other = revOwner.get(id);
    if (other !== undefined && other.frontend !== frontend) bad(map, `${fe} slot 0`, `rev_nat id ${id} is also held by ${other.frontend}`);
    else revOwner.set(id, { frontend, revnat: rnMap, svc: map });
    const rn = revnat.get(id);
    if (!rn || rn.map !== rnMap) bad(map, `${fe} slot 0`, `revnat entry for its rev_nat id ${id} is missing`);
    else if (rn.addr !== addr || rn.port !== port) bad(rn.map, `${id}`, `holds ${host(rn.addr)}:${rn.port}, but rev_nat id ${id} names ${frontend}`);
    const mine = slots.get(fe) ?? new Map<number, Entry>();
    for (let slot = 1; slot <= val.count; slot++) {
      const s = mine.get(slot);
      if (!s) {
        bad(map, `${fe} slot ${slot}`, `missing (count ${val.count})`);
        continue;
      }
      const b = s.val.backend_id;
      named.add(b);
      if (backends.get(b) !== be) bad(map, `${fe} slot ${slot}`, `names backend ${b}, which does not exist`);
      const flags = members.get(`${id}/${b}`);
      if (flags === undefined) bad(map, `${fe} slot ${slot}`, `backend ${b} is not a member of rev_nat id ${id}`);
      else if (!(flags & C.MEMBER_F.ACTIVE)) bad(maps.member, `${id}/${b}`, `backend ${b} is in a slot of ${fe} but not active`);
    }
    for (const slot of mine.keys()) if (slot > val.count) bad(map, `${fe} slot ${slot}`, `beyond its master's count ${val.count}`);
  }
  for (const [fe, mine] of slots) {
    if (!masters.has(fe)) for (const [slot, e] of mine) bad(e.map, `${fe} slot ${slot}`, 'no master entry (slot 0) owns it');
  }

  for (const [id, rn] of revnat) if (revOwner.get(id)?.revnat !== rn.map) bad(rn.map, `${id}`, 'no master entry holds this rev_nat id');
  for (const [k] of members) {
    const [rev, b] = k.split('/').map(Number) as [number, number];
    named.add(b);
    if (!revOwner.has(rev)) bad(maps.member, k, `no master entry holds rev_nat id ${rev}`);
    if (!backends.has(b)) bad(maps.member, k, `backend ${b} does not exist`);
  }
  for (const [k] of maps.cidr.dump()) {
    const c = C.cidrKey.decode(keyBuffer(k));
    if (c.owner !== 0 && !revOwner.has(c.owner)) bad(maps.cidr, `${c.owner} ${c.addr}/${c.prefixlen - 32}`, `no master entry holds rev_nat id ${c.owner}`);
  }
  if (maps.cidr6) {
    for (const [k] of maps.cidr6.dump()) {
      const c = C.cidr6Key.decode(keyBuffer(k));
      if (c.owner !== 0 && !revOwner.has(c.owner)) bad(maps.cidr6, `${c.owner} ${c.addr}/${c.prefixlen - 32}`, `no master entry holds rev_nat id ${c.owner}`);
    }
  }
  for (const [id, map] of backends) if (!named.has(id)) bad(map, `${id}`, 'no slot or member names this backend');

  // Conntrack is the largest map: read once, by the id and the port checks alike.
  const once = <T>(read: () => T): (() => T) => {
    let v: T | undefined;
    return () => (v ??= read());
  };
  const ctEntries = once(() => maps.ct?.dump() ?? []);
  const ct6Entries = once(() => maps.ct6?.dump() ?? []);
  const hwEntry = maps.ids?.dump()[0]?.[1];
  const hw = hwEntry ? C.ids.decode(hwEntry) : null;
  // Zeros: no agent has written the marks yet (an array map's entry always exists).
  if (hw && (hw.next_rev_nat_id > 0 || hw.next_backend_id > 0)) {
    const { next_rev_nat_id: rev, next_backend_id: be } = hw;
    const above = (map: MapIO, key: string, kind: string, id: number, limit: number): void => {
      if (id >= limit) bad(map, key, `${kind} id ${id} is not below the high-water mark ${limit}`);
    };
    for (const [id, o] of revOwner) above(o.svc, `rev_nat id ${id}`, 'rev_nat', id, rev);
    for (const [id, map] of backends) above(map, `${id}`, 'backend', id, be);
    const { ct, aff, ct6, aff6 } = maps;
    if (ct)
      for (const [k, v] of ctEntries()) {
        const val = C.ctVal.decode(v);
        const key = C.ctKey.decode(keyBuffer(k));
        const name = `${key.saddr}:${key.sport} -> ${key.daddr}:${key.dport}/${proto(key.proto)} ${key.dir === C.CT_DIR.REV ? 'rev' : 'fwd'}`;
        above(ct, name, 'rev_nat', val.rev_nat_id, rev);
        above(ct, name, 'backend', val.backend_id, be);
      }
    if (ct6)
      for (const [k, v] of ct6Entries()) {
        const val = C.ct6Val.decode(v);
        const key = C.ct6Key.decode(keyBuffer(k));
        const name = `[${key.saddr}]:${key.sport} -> [${key.daddr}]:${key.dport}/${proto(key.proto)} ${key.dir === C.CT_DIR.REV ? 'rev' : 'fwd'}`;
        above(ct6, name, 'rev_nat', val.rev_nat_id, rev);
        above(ct6, name, 'backend', val.backend_id, be);
      }
    if (aff)
      for (const [k, v] of aff.dump()) {
        const key = C.affKey.decode(keyBuffer(k));
        above(aff, `${key.client} rev_nat ${key.rev_nat_id}`, 'rev_nat', key.rev_nat_id, rev);
        above(aff, `${key.client} rev_nat ${key.rev_nat_id}`, 'backend', C.affVal.decode(v).backend_id, be);
      }
    if (aff6)
      for (const [k, v] of aff6.dump()) {
        const key = C.aff6Key.decode(keyBuffer(k));
        above(aff6, `${key.client} rev_nat ${key.rev_nat_id}`, 'rev_nat', key.rev_nat_id, rev);
        above(aff6, `${key.client} rev_nat ${key.rev_nat_id}`, 'backend', C.affVal.decode(v).backend_id, be);
      }
  }
  if (maps.ports) {
    const rev = [...ctEntries().map(([k]) => C.ctKey.decode(keyBuffer(k))), ...ct6Entries().map(([k]) => C.ct6Key.decode(keyBuffer(k)))].filter((k) => k.dir === C.CT_DIR.REV);
    checkPorts(maps, maps.ports, [...masters.values(), ...[...slots.values()].flatMap((m) => [...m.values()])], rev, bad);
  }
  return out;
}

/**
 * The port filter (bpf/lib/ports.h) marks every port a frontend, backend
 * or reply-direction conntrack entry uses; an unmarked one is a service the
 * programs cannot see, or replies they leave untranslated.
 */
function checkPorts(
  maps: CheckedMaps,
  ports: MapIO,
  frontends: ReadonlyArray<{ port: number; map: MapIO }>,
  replies: ReadonlyArray<{ sport: number }>,
  bad: (map: MapIO, key: string, rule: string) => void,
): void {
  const words = Buffer.alloc(2 * PORT_WORDS * 8);
  for (const [k, v] of ports.dump()) {
    const w = C.u32Key.decode(keyBuffer(k)).value;
    if (w < 2 * PORT_WORDS) v.copy(words, w * 8, 0, 8);
  }
  const missing = new Set<string>();
  const need = (half: 'frontend' | 'backend', port: number, from: string): void => {
    const key = `${half} port ${port}`;
    if (PortFilter.marked(words, half, port) || missing.has(key)) return;
    missing.add(key);
    bad(ports, key, `not marked, but ${from} uses it: the programs skip its ${half === 'frontend' ? 'frontend' : 'reply'} lookups`);
  };
  for (const f of frontends) need('frontend', f.port, f.map.name);
  for (const [be, codec] of [
    [maps.be, C.backend],
    [maps.be6, C.backend6],
  ] as const) {
    if (be) for (const [, v] of be.dump()) need('backend', codec.decode(v).port, be.name);
  }
  for (const r of replies) need('backend', r.sport, 'a reply-direction conntrack entry');
}

export function formatViolations(vs: readonly Violation[]): string {
  return vs.map((v) => `${v.map} ${v.key}: ${v.rule}\n`).join('');
}
