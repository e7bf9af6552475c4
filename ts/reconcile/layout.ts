/**
 * The byte layout the reconciler works in: which map each section of a
 * service record goes to (in write order), and readers for fields of
 * entries held as latin1 strings (one char per byte), as map dumps are kept
 * for comparison.
 */
import * as C from '../datapath/codecs';
import type { MapIO, ServiceMaps } from '../datapath/maps';
import type { L4Proto } from '../plan/plan';

/** The maps the reconciler writes entries of (ids holds only its marks). */
export type MapName = 'svc' | 'be' | 'revnat' | 'member' | 'cidr' | V6MapName;

/** The IPv6 twins of the maps whose entries hold an address (docs/ipv6.md); weir1_member and the ids are shared. */
export type V6MapName = 'svc6' | 'be6' | 'revnat6' | 'cidr6';
export const V6_MAPS: readonly V6MapName[] = ['svc6', 'be6', 'revnat6', 'cidr6'];

/**
 * The maps the reconciler writes. The IPv6 twins are optional: without
 * them (a datapath or in-memory twin from before IPv6) the IPv6 half of a
 * plan is not programmed, as before.
 */
export type ReconcileMaps = ServiceMaps & { readonly [K in V6MapName]?: MapIO } & { readonly ct6?: MapIO; readonly aff6?: MapIO; readonly skrevnat6?: MapIO };

/** Whether the maps include every IPv6 twin. */
export function hasV6(maps: ReconcileMaps): boolean {
  return V6_MAPS.every((m) => maps[m] !== undefined);
}

/** The sections of a service record, in write order (deletes go in reverse). */
export const S_REVNAT = 0;
export const S_MEMBER = 1;
export const S_CIDR = 2;
export const S_SLOTS = 3;
export const S_MASTERS = 4;
/*
 * The IPv6 sections come after every IPv4 one. Upserts go in section order
 * and deletes in reverse, so IPv6 keeps the same order within itself
 * (revnat6, cidr6, slots6, masters6 up; masters6 down first), and shared
 * member entries are written before any IPv6 master and removed after.
 */
export const S_REVNAT6 = 5;
export const S_CIDR6 = 6;
export const S_SLOTS6 = 7;
export const S_MASTERS6 = 8;
export const SECTIONS: ReadonlyArray<{ map: MapName; keySize: number; valueSize: number }> = [
  { map: 'revnat', keySize: C.u32Key.size, valueSize: C.revnat.size },
  { map: 'member', keySize: C.memberKey.size, valueSize: C.u32Key.size },
  { map: 'cidr', keySize: C.cidrKey.size, valueSize: C.u32Key.size },
  { map: 'svc', keySize: C.svcKey.size, valueSize: C.svcVal.size },
  { map: 'svc', keySize: C.svcKey.size, valueSize: C.svcVal.size },
  { map: 'revnat6', keySize: C.u32Key.size, valueSize: C.revnat6.size },
  { map: 'cidr6', keySize: C.cidr6Key.size, valueSize: C.u32Key.size },
  { map: 'svc6', keySize: C.svc6Key.size, valueSize: C.svcVal.size },
  { map: 'svc6', keySize: C.svc6Key.size, valueSize: C.svcVal.size },
];
/** Offset of the slot number (u16 LE) in a weir_svc_key; the bytes before it name the frontend. */
export const SLOT_OFF = 8;
/** The same in a weir_svc6_key. */
export const SLOT_OFF6 = C.svc6Key.at.slot;

/** Little-endian integers inside a latin1 string (one char per byte), as the kernel snapshot holds them. */
export function u16At(s: string, off: number): number {
  return s.charCodeAt(off) | (s.charCodeAt(off + 1) << 8);
}

export function i32At(s: string, off: number): number {
  return s.charCodeAt(off) | (s.charCodeAt(off + 1) << 8) | (s.charCodeAt(off + 2) << 16) | (s.charCodeAt(off + 3) << 24);
}

/** Network-order (big-endian) fields, as addresses and ports are stored. */
export function be16At(s: string, off: number): number {
  return (s.charCodeAt(off) << 8) | s.charCodeAt(off + 1);
}

export function be32At(s: string, off: number): number {
  return ((s.charCodeAt(off) << 24) | (s.charCodeAt(off + 1) << 16) | (s.charCodeAt(off + 2) << 8) | s.charCodeAt(off + 3)) >>> 0;
}

export function u32At(s: string, off: number): number {
  return i32At(s, off) >>> 0;
}

/** The maps in the order a drift scan reads them (the IPv6 ones when the datapath has them). */
export const MAP_ORDER: readonly MapName[] = ['revnat', 'member', 'cidr', 'svc', 'be', 'revnat6', 'cidr6', 'svc6', 'be6'];

/** A u32 map key (host order) as a latin1 string. */
export function u32Key(n: number): string {
  return String.fromCharCode(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24);
}

export function intToIp(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

/** Slot number of an encoded weir_svc_key given as a latin1 string. */
export function slotOf(key: string): number {
  return u16At(key, SLOT_OFF);
}

/** Slot number of an encoded weir_svc6_key given as a latin1 string. */
export function slotOf6(key: string): number {
  return u16At(key, SLOT_OFF6);
}

/** One map's entries as latin1 key -> latin1 value. */
export function dumpStrings(map: MapIO): Map<string, string> {
  const { keys, values, count } = map.dumpPacked();
  const out = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    out.set(keys.toString('latin1', i * map.keySize, (i + 1) * map.keySize), values.toString('latin1', i * map.valueSize, (i + 1) * map.valueSize));
  }
  return out;
}

export function protoName(n: number): L4Proto | `proto${number}` {
  return n === C.IPPROTO.TCP ? 'TCP' : n === C.IPPROTO.UDP ? 'UDP' : n === C.IPPROTO.SCTP ? 'SCTP' : `proto${n}`;
}
