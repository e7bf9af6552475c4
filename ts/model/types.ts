/**
 * Branded scalar types: an IPv4 string that was validated, a port that is in
 * range. The brand makes it a compile error to pass an unchecked string where
 * a checked address is expected.
 */
import { flatKey } from '../util/keys';

export type IPv4 = string & { readonly __brand: 'IPv4' };
export type Port = number & { readonly __brand: 'Port' };
export type Protocol = 'TCP' | 'UDP' | 'SCTP';

export interface Cidr {
  readonly text: string;
  readonly base: IPv4;
  readonly bits: number;
}

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function parseIPv4(s: unknown): IPv4 | null {
  return typeof s === 'string' && IPV4_RE.test(s) ? (s as IPv4) : null;
}

export function isIPv6(s: unknown): boolean {
  return typeof s === 'string' && s.includes(':');
}

export function parsePort(n: unknown): Port | null {
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 65535 ? (n as Port) : null;
}

/** A dotted quad as a host-order u32 (no allocation: planning calls this for every endpoint). */
export function ipToInt(ip: IPv4): number {
  let acc = 0;
  let octet = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 46 /* . */) {
      acc = acc * 256 + octet;
      octet = 0;
    } else octet = octet * 10 + (c - 48);
  }
  return acc * 256 + octet;
}

/** A host-order u32 as a dotted quad. */
export function intToIp(n: number): IPv4 {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}` as IPv4;
}

export function parseCidr(s: unknown): Cidr | null {
  if (typeof s !== 'string') return null;
  const [addr, bitsText, extra] = s.trim().split('/');
  const base = parseIPv4(addr);
  const bits = bitsText === undefined ? 32 : Number(bitsText);
  if (!base || extra !== undefined || !Number.isInteger(bits) || bits < 0 || bits > 32) return null;
  if (bitsText !== undefined && !/^\d+$/.test(bitsText)) return null;
  return { text: `${base}/${bits}`, base, bits };
}

export function cidrContains(c: Cidr, ip: IPv4): boolean {
  if (c.bits === 0) return true;
  const mask = (0xffffffff << (32 - c.bits)) >>> 0;
  return (ipToInt(c.base) & mask) === (ipToInt(ip) & mask);
}

/** Namespace/name of an object, the key everything is joined on. */
export type ObjectKey = string & { readonly __brand: 'ObjectKey' };
export function objectKey(namespace: string, name: string): ObjectKey {
  return flatKey(namespace, '/', name) as ObjectKey;
}

/** One shared empty list, for models and plans that keep one. */
export const EMPTY: readonly never[] = Object.freeze([]);

/**
 * A list as the store keeps it. The store holds every object's lists for as
 * long as the object lives (ten thousand services hold fifty thousand), so
 * an empty list is one shared array, and a filled one has no spare room
 * (an array grown by push() keeps room for 16 more).
 */
export function kept<T>(list: readonly T[]): readonly T[] {
  return list.length === 0 ? EMPTY : list.slice();
}

/**
 * A problem with one field of one object. Bad input is reported with exactly
 * this much context and never stops the rest of the state from applying.
 */
export interface FieldError {
  readonly kind: string;
  readonly object: string;
  readonly field: string;
  readonly message: string;
}

export type Result<T> = { ok: true; value: T } | { ok: false; errors: FieldError[] };
