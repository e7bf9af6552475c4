/**
 * The differ: what to write and remove. Between a service's records at the
 * last commit and now (one change: a handful of entries), or between every
 * record and what the kernel holds (after adoption, a failed write, or
 * drift: everything the maps should hold and nothing more).
 */
import * as C from '../datapath/codecs';
import { ObjectKey } from '../model/types';
import { BackendTable } from './backends';
import { BackendTable6 } from './backends6';
import { pushBackend } from './entries';
import { MapName, ReconcileMaps, S_MASTERS, S_MASTERS6, S_SLOTS, S_SLOTS6, SECTIONS, dumpStrings, i32At, slotOf, slotOf6, u32Key } from './layout';
import { viewKey, viewValue } from './packed';
import { ServiceRecord, entryCount, sectionView } from './record';
import { Writes, diffSection } from './writes';

/** Only the services and backends changed since the last commit. */
export function diffPending(
  w: Writes,
  st: { pending: ReadonlyMap<ObjectKey, ServiceRecord | null>; records: ReadonlyMap<ObjectKey, ServiceRecord>; be: BackendTable; be6?: BackendTable6 | null },
): void {
  // forEach, not for-of: destructured entries allocate until the loop is optimised.
  st.pending.forEach((old, service) => {
    const next = st.records.get(service) ?? null;
    if (!old && next) {
      // A new service (every service of a cold start): all of it is written.
      for (let s = 0; s < SECTIONS.length; s++) w.ups[s]!.pushAll(sectionView(next, SECTIONS, s));
      return;
    }
    for (let s = 0; s < SECTIONS.length; s++) {
      diffSection(w, s, old ? sectionView(old, SECTIONS, s) : undefined, next ? sectionView(next, SECTIONS, s) : undefined);
    }
  });
  w.dropRewritten();
  const be = st.be;
  const rows = be.pendingRows();
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    if (be.refs[r]! > 0) {
      if (!be.applied[r] || be.a0[r] !== be.v0[r] || be.a1[r] !== be.v1[r]) pushBackend(w.beUps, be, r);
    } else if (be.applied[r]) w.beDels.keys.writeUInt32LE(be.id[r]!, w.beDels.push() * w.beDels.keySize);
  }
  const be6 = st.be6;
  if (!be6) return;
  for (const r of be6.pendingRows()) {
    if (be6.refs[r]! > 0) {
      if (be6.have[r] !== be6.want[r]) pushBackend6(w, be6, r);
    } else if (be6.have[r] !== null) w.be6Dels.pushKey(u32Key(be6.id[r]!));
  }
}

function pushBackend6(w: Writes, be6: BackendTable6, r: number): void {
  const i = w.be6Ups.push();
  w.be6Ups.keys.writeUInt32LE(be6.id[r]!, i * w.be6Ups.keySize);
  w.be6Ups.values.write(be6.want[r]!, i * w.be6Ups.valueSize, 'latin1');
}

/**
 * Everything desired against everything the kernel holds, one map at a
 * time (only one map's contents are in memory at once). Backends are
 * settled here as they are compared: if the write fails, the retry
 * compares everything against the kernel again, so nothing relies on what
 * this pass marked applied.
 */
export function diffAll(
  w: Writes,
  st: {
    records: ReadonlyMap<ObjectKey, ServiceRecord>;
    be: BackendTable;
    maps: ReconcileMaps;
    kernelSvc: Map<string, string> | null;
    be6?: BackendTable6 | null;
    kernelSvc6?: Map<string, string> | null;
  },
): void {
  const total = SECTIONS.map(() => 0);
  for (const r of st.records.values()) SECTIONS.forEach((_, s) => (total[s]! += entryCount(r, s)));
  total.forEach((n, s) => w.ups[s]!.reserve(n));
  for (const m of ['revnat', 'member', 'cidr', 'svc', 'revnat6', 'cidr6', 'svc6'] as const) {
    const map = st.maps[m];
    if (!map) continue; // no IPv6 twins: the records hold nothing for them
    // The svc map as adopted, if the commit after adoption: consumed here (matched keys are deleted from it).
    const adopted = m === 'svc' ? st.kernelSvc : m === 'svc6' ? st.kernelSvc6 : null;
    const have = adopted ?? dumpStrings(map);
    const held = have.size;
    let added = 0;
    const sections = SECTIONS.map((sec, s) => (sec.map === m ? s : -1)).filter((s) => s >= 0);
    for (const r of st.records.values()) {
      for (const s of sections) {
        const out = w.ups[s]!;
        const v = sectionView(r, SECTIONS, s);
        if (have.size === 0) {
          added += v.count;
          out.pushAll(v); // nothing in the kernel to compare with
          continue;
        }
        for (let i = 0; i < v.count; i++) {
          const k = viewKey(v, i);
          const cur = have.get(k);
          if (cur !== viewValue(v, i)) out.pushFrom(v, i);
          if (cur === undefined) added++;
          else have.delete(k);
        }
      }
    }
    // Whatever is left, no service claims.
    for (const k of have.keys()) w.dels[m === 'svc' ? (slotOf(k) ? S_SLOTS : S_MASTERS) : m === 'svc6' ? (slotOf6(k) ? S_SLOTS6 : S_MASTERS6) : sections[0]!]!.pushKey(k);
    roomFirst(w, st.maps, m, held, added);
  }
  if (st.be6 && st.maps.be6) diffAllBackends6(w, st.be6, st.maps);
  const have = dumpStrings(st.maps.be);
  const held = have.size;
  let added = 0;
  const key = Buffer.alloc(C.u32Key.size);
  const be = st.be;
  w.beUps.reserve(be.live);
  for (const r of be.rows()) {
    if (be.refs[r] === 0) {
      be.remove(r); // adopted or released, claimed by no service
      continue;
    }
    if (have.size > 0) {
      key.writeUInt32LE(be.id[r]!);
      const k = key.toString('latin1');
      const cur = have.get(k);
      if (cur === undefined || i32At(cur, 0) !== be.v0[r] || i32At(cur, 4) !== be.v1[r]) pushBackend(w.beUps, be, r);
      if (cur === undefined) added++;
      else have.delete(k);
    } else {
      added++;
      pushBackend(w.beUps, be, r);
    }
    be.applied[r] = 1;
    be.a0[r] = be.v0[r]!;
    be.a1[r] = be.v1[r]!;
  }
  for (const k of have.keys()) w.beDels.pushKey(k);
  roomFirst(w, st.maps, 'be', held, added);
}

/**
 * A map that cannot take its new keys while it still holds the stale ones
 * (a write that failed on a full map left it so) has its deletes written
 * first. Otherwise the order stays make-before-break, and a retry would
 * fail the same way forever.
 */
function roomFirst(w: Writes, maps: ReconcileMaps, m: MapName, held: number, added: number): void {
  const max = maps[m]?.maxEntries;
  if (max !== undefined && held + added > max) w.roomFirst.add(m);
}

/** The IPv6 backends against the be6 map, as diffAll does the IPv4 ones. */
function diffAllBackends6(w: Writes, be6: BackendTable6, maps: ReconcileMaps): void {
  const have = dumpStrings(maps.be6!);
  const held = have.size;
  let added = 0;
  for (const r of be6.rows()) {
    if (be6.refs[r] === 0) {
      be6.remove(r);
      continue;
    }
    const k = u32Key(be6.id[r]!);
    const cur = have.get(k);
    if (cur !== be6.want[r]) pushBackend6(w, be6, r);
    if (cur === undefined) added++;
    else have.delete(k);
    be6.have[r] = be6.want[r]!;
  }
  for (const k of have.keys()) w.be6Dels.pushKey(k);
  roomFirst(w, maps, 'be6', held, added);
}
