/**
 * Branded scalar types: an IPv4 or IPv6 string that was validated (IPv6 in
 * its one canonical RFC 5952 text, so equal addresses are equal strings), a
 * port that is in range. The brand makes it a compile error to pass an
 * unchecked string where a checked address is expected.
 */
import { flatKey } from '../util/keys';

export type IPv4 = string & { readonly __brand: 'IPv4' };
export type IPv6 = string & { readonly __brand: 'IPv6' };
/** An address of either family; ipFamily() tells which. */
export type IP = IPv4 | IPv6;
/** An IP family as kube-proxy splits its work: one proxier (here: one half of each plan) per family. */
export type Family = 4 | 6;
export type Port = number & { readonly __brand: 'Port' };
export type Protocol = 'TCP' | 'UDP' | 'SCTP';

export interface Cidr {
  readonly text: string;
  readonly base: IP;
  /** Prefix length: 0-32 for IPv4, 0-128 for IPv6. */
  readonly bits: number;
}

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function parseIPv4(s: unknown): IPv4 | null {
  return typeof s === 'string' && IPV4_RE.test(s) ? (s as IPv4) : null;
}

/** Looks like an IPv6 address (has a colon); parseIPv6 decides whether it is one. */
export function isIPv6(s: unknown): boolean {
  return typeof s === 'string' && s.includes(':');
}

/** An address's family: IPv6 text always has a colon, IPv4 text never. */
export function ipFamily(ip: IP): Family {
  return ip.includes(':') ? 6 : 4;
}

export function familyName(f: Family): 'IPv4' | 'IPv6' {
  return f === 4 ? 'IPv4' : 'IPv6';
}

/**
 * IPv6 text -> its eight 16-bit groups, or null. Accepts "::" compression
 * and a trailing dotted quad (::ffff:10.1.2.3); rejects zone ids
 * (fe80::1%eth0), which name no address a Service can hold.
 */
export function ipv6Groups(s: string): number[] | null {
  if (s.length < 2 || s.length > 45) return null;
  let text = s;
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    // A dotted quad stands for the last two groups: rewrite it as those.
    const v4 = parseIPv4(text.slice(lastColon + 1));
    if (!v4) return null;
    const n = ipToInt(v4);
    text = `${text.slice(0, lastColon + 1)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const part = (h: string): number[] | null => {
    if (h === '') return [];
    const out: number[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = part(halves[0]!);
  const rest = halves.length === 2 ? part(halves[1]!) : [];
  if (!head || !rest) return null;
  const have = head.length + rest.length;
  if (halves.length === 2 ? have > 7 : have !== 8) return null;
  return [...head, ...new Array<number>(8 - have).fill(0), ...rest];
}

/** Eight groups -> RFC 5952 text: lower case, no leading zeros, the first longest run (2+) of zero groups as "::". */
export function formatIPv6(g: readonly number[]): IPv6 {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (a: readonly number[]): string => a.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(g) as IPv6;
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}` as IPv6;
}

/** A valid IPv6 address in canonical text (RFC 5952), or null. */
export function parseIPv6(s: unknown): IPv6 | null {
  if (typeof s !== 'string' || !s.includes(':')) return null;
  const g = ipv6Groups(s);
  return g ? formatIPv6(g) : null;
}

/** An address of either family (IPv6 canonicalised), or null. */
export function parseIP(s: unknown): IP | null {
  return parseIPv4(s) ?? parseIPv6(s);
}

/** An IPv6 address as 16 network-order bytes. */
export function ipv6Bytes(ip: IPv6): Buffer {
  const b = Buffer.alloc(16);
  ipv6Groups(ip)!.forEach((x, i) => b.writeUInt16BE(x, i * 2));
  return b;
}

/** A fixed-width text of an IPv6 address (32 hex digits) whose string order is numeric order. */
export function ipv6SortKey(ip: IPv6): string {
  return ipv6Groups(ip)!
    .map((x) => x.toString(16).padStart(4, '0'))
    .join('');
}

/** Numeric order of two addresses: IPv4 before IPv6, then by value. */
export function compareIP(a: IP, b: IP): number {
  const fa = ipFamily(a);
  const fb = ipFamily(b);
  if (fa !== fb) return fa - fb;
  if (fa === 4) return ipToInt(a as IPv4) - ipToInt(b as IPv4);
  const ka = ipv6SortKey(a as IPv6);
  const kb = ipv6SortKey(b as IPv6);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
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

/** A CIDR of either family ("10.0.0.0/8", "fd00::/64"); a bare address is a host route (/32, /128). */
export function parseCidr(s: unknown): Cidr | null {
  if (typeof s !== 'string') return null;
  const [addr, bitsText, extra] = s.trim().split('/');
  const base = parseIP(addr);
  if (!base) return null;
  const max = ipFamily(base) === 4 ? 32 : 128;
  const bits = bitsText === undefined ? max : Number(bitsText);
  if (extra !== undefined || !Number.isInteger(bits) || bits < 0 || bits > max) return null;
  if (bitsText !== undefined && !/^\d+$/.test(bitsText)) return null;
  return { text: `${base}/${bits}`, base, bits };
}

export function cidrFamily(c: Cidr): Family {
  return ipFamily(c.base);
}

/** Whether the CIDR holds the address; never across families. */
export function cidrContains(c: Cidr, ip: IP): boolean {
  const f = ipFamily(ip);
  if (f !== ipFamily(c.base)) return false;
  if (c.bits === 0) return true;
  if (f === 4) {
    const mask = (0xffffffff << (32 - c.bits)) >>> 0;
    return (ipToInt(c.base as IPv4) & mask) === (ipToInt(ip as IPv4) & mask);
  }
  const a = ipv6Groups(c.base)!;
  const b = ipv6Groups(ip)!;
  for (let i = 0, left = c.bits; left > 0; i++, left -= 16) {
    const mask = left >= 16 ? 0xffff : (0xffff << (16 - left)) & 0xffff;
    if ((a[i]! & mask) !== (b[i]! & mask)) return false;
  }
  return true;
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
