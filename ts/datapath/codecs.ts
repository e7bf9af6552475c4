/**
 * Byte layouts of the structs in bpf/shared/weir.h.
 *
 * Each codec lists the C fields in order with their C type; offsets follow the
 * C alignment rules. test/unit/codecs.test.ts compares every codec with the
 * BTF of the compiled object (name, offset, size of each member, total size),
 * so a change to weir.h that is not made here fails the tests instead of
 * silently corrupting maps.
 *
 * Value types in TypeScript: `ip4` is a dotted-quad string stored in network
 * order; `ip6` an IPv6 address string (any RFC 4291 text form in, RFC 5952
 * form out) stored as the 16 bytes of a `__be32 [4]`; `be16` a number stored
 * in network order; the rest host order.
 */
export type FieldType = 'u8' | 'u16' | 'u32' | 'u64' | 'be16' | 'ip4' | 'ip6';

type JsType<T extends FieldType> = T extends 'u64' ? bigint : T extends 'ip4' | 'ip6' ? string : number;

export type FieldList = readonly (readonly [string, FieldType])[];
export type Decoded<F extends FieldList> = { [K in F[number] as K[0]]: JsType<K[1]> };

const SIZE: Record<FieldType, number> = { u8: 1, u16: 2, be16: 2, u32: 4, ip4: 4, ip6: 16, u64: 8 };
/** C alignment: an `ip6` is an array of four __be32. */
const ALIGN: Record<FieldType, number> = { ...SIZE, ip6: 4 };

export interface FieldLayout {
  name: string;
  type: FieldType;
  offset: number;
  size: number;
}

export class StructCodec<F extends FieldList> {
  readonly cName: string;
  readonly fields: readonly FieldLayout[];
  readonly size: number;
  /**
   * Byte offset of each field, for hot paths that write fields directly
   * instead of going through encode() (no object per entry). Same layout,
   * so the BTF check covers them too.
   */
  readonly at: { readonly [K in F[number] as K[0]]: number };

  constructor(cName: string, fields: F) {
    this.cName = cName;
    let off = 0;
    let align = 1;
    const out: FieldLayout[] = [];
    for (const [name, type] of fields) {
      const size = SIZE[type];
      off = Math.ceil(off / ALIGN[type]) * ALIGN[type];
      out.push({ name, type, offset: off, size });
      off += size;
      align = Math.max(align, ALIGN[type]);
    }
    this.fields = out;
    this.size = Math.ceil(off / align) * align;
    this.at = Object.fromEntries(out.map((f) => [f.name, f.offset])) as StructCodec<F>['at'];
  }

  /** Encode into `buf` at `offset` (default: a new zeroed buffer from Node's pool). Missing fields are zero. */
  encode(value: Partial<Decoded<F>>, buf: Buffer = Buffer.allocUnsafe(this.size).fill(0), offset = 0): Buffer {
    const v = value as Record<string, number | bigint | string | undefined>;
    for (const f of this.fields) {
      const x = v[f.name];
      const at = offset + f.offset;
      switch (f.type) {
        case 'u8':
          buf.writeUInt8(Number(x ?? 0), at);
          break;
        case 'u16':
          buf.writeUInt16LE(Number(x ?? 0), at);
          break;
        case 'be16':
          buf.writeUInt16BE(Number(x ?? 0), at);
          break;
        case 'u32':
          buf.writeUInt32LE(Number(x ?? 0), at);
          break;
        case 'u64':
          buf.writeBigUInt64LE(BigInt(x ?? 0), at);
          break;
        case 'ip4':
          writeIp4(buf, at, typeof x === 'string' ? x : '0.0.0.0');
          break;
        case 'ip6':
          writeIp6(buf, at, typeof x === 'string' ? x : '::');
          break;
      }
    }
    return buf;
  }

  decode(buf: Buffer, offset = 0): Decoded<F> {
    const out: Record<string, number | bigint | string> = {};
    for (const f of this.fields) {
      const at = offset + f.offset;
      switch (f.type) {
        case 'u8':
          out[f.name] = buf.readUInt8(at);
          break;
        case 'u16':
          out[f.name] = buf.readUInt16LE(at);
          break;
        case 'be16':
          out[f.name] = buf.readUInt16BE(at);
          break;
        case 'u32':
          out[f.name] = buf.readUInt32LE(at);
          break;
        case 'u64':
          out[f.name] = buf.readBigUInt64LE(at);
          break;
        case 'ip4':
          out[f.name] = readIp4(buf, at);
          break;
        case 'ip6':
          out[f.name] = readIp6(buf, at);
          break;
      }
    }
    return out as Decoded<F>;
  }
}

export function writeIp4(buf: Buffer, at: number, ip: string): void {
  // Hand-parsed: the reconciler writes a few hundred thousand of these per full sync.
  let octet = 0;
  let i = 0;
  for (let k = 0; k < ip.length && i < 4; k++) {
    const c = ip.charCodeAt(k);
    if (c === 46 /* . */) {
      buf[at + i++] = octet & 0xff;
      octet = 0;
    } else octet = octet * 10 + (c - 48);
  }
  for (; i < 4; i++, octet = 0) buf[at + i] = octet & 0xff;
}

export function readIp4(buf: Buffer, at: number): string {
  return `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`;
}

/**
 * Write an IPv6 address (full, `::`-compressed or with a trailing dotted
 * quad) as 16 bytes. Throws on text that is not one, naming it: an address
 * written wrong would be a frontend nobody reaches.
 */
export function writeIp6(buf: Buffer, at: number, ip: string): void {
  const bad = (): Error => new Error(`not an IPv6 address: ${JSON.stringify(ip)}`);
  const halves = ip.split('::');
  if (halves.length > 2) throw bad();
  const words = (part: string): number[] => {
    if (part === '') return [];
    const out: number[] = [];
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        const q = g.split('.').map(Number);
        if (q.length !== 4 || q.some((n) => !Number.isInteger(n) || n < 0 || n > 255)) throw bad();
        out.push((q[0]! << 8) | q[1]!, (q[2]! << 8) | q[3]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw bad();
        out.push(parseInt(g, 16));
      }
    }
    return out;
  };
  const head = words(halves[0]!);
  const tail = halves.length === 2 ? words(halves[1]!) : [];
  const fill = 8 - head.length - tail.length;
  if ((halves.length === 2 && fill < 1) || (halves.length === 1 && fill !== 0)) throw bad();
  const all = [...head, ...Array<number>(fill).fill(0), ...tail];
  for (let i = 0; i < 8; i++) buf.writeUInt16BE(all[i]!, at + 2 * i);
}

/** 16 bytes as an IPv6 address in RFC 5952 form (lower case, the longest run of two or more zero groups as `::`). */
export function readIp6(buf: Buffer, at: number): string {
  const w = Array.from({ length: 8 }, (_, i) => buf.readUInt16BE(at + 2 * i));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number[]): string => a.map((x) => x.toString(16)).join(':');
  return best < 0 ? hex(w) : `${hex(w.slice(0, best))}::${hex(w.slice(best + bestLen))}`;
}

/** A map key/value codec pair that is a plain scalar (u32 ids, u64 counters). */
export const u32Key = new StructCodec('__u32', [['value', 'u32']] as const);
export const u64Value = new StructCodec('__u64', [['value', 'u64']] as const);

export const svcKey = new StructCodec('weir_svc_key', [
  ['addr', 'ip4'],
  ['port', 'be16'],
  ['proto', 'u8'],
  ['scope', 'u8'],
  ['slot', 'u16'],
  ['pad', 'u16'],
] as const);

export const svcVal = new StructCodec('weir_svc_val', [
  ['backend_id', 'u32'],
  ['count', 'u16'],
  ['flags', 'u16'],
  ['rev_nat_id', 'u32'],
  ['affinity_timeout', 'u32'],
] as const);

export const backend = new StructCodec('weir_backend', [
  ['addr', 'ip4'],
  ['port', 'be16'],
  ['proto', 'u8'],
  ['flags', 'u8'],
] as const);

export const revnat = new StructCodec('weir_revnat', [
  ['addr', 'ip4'],
  ['port', 'be16'],
  ['pad', 'u16'],
] as const);

export const ctKey = new StructCodec('weir_ct_key', [
  ['saddr', 'ip4'],
  ['daddr', 'ip4'],
  ['sport', 'be16'],
  ['dport', 'be16'],
  ['proto', 'u8'],
  ['dir', 'u8'],
  ['pad', 'u16'],
] as const);

export const ctVal = new StructCodec('weir_ct_val', [
  ['last_seen', 'u64'],
  ['backend_id', 'u32'],
  ['rev_nat_id', 'u32'],
  ['nat_addr', 'ip4'],
  ['nat_port', 'be16'],
  ['flags', 'u16'],
] as const);

export const affKey = new StructCodec('weir_aff_key', [
  ['client', 'ip4'],
  ['rev_nat_id', 'u32'],
] as const);

export const affVal = new StructCodec('weir_aff_val', [
  ['last_used', 'u64'],
  ['backend_id', 'u32'],
  ['pad', 'u32'],
] as const);

export const memberKey = new StructCodec('weir_member_key', [
  ['rev_nat_id', 'u32'],
  ['backend_id', 'u32'],
] as const);

export const config = new StructCodec('weir_config', [
  ['hairpin_addr', 'ip4'],
  ['snat_addr', 'ip4'],
  ['flags', 'u32'],
  ['pad', 'u32'],
  ['ct_tcp_established_s', 'u32'],
  ['ct_tcp_close_wait_s', 'u32'],
  ['ct_udp_s', 'u32'],
  ['ct_udp_stream_s', 'u32'],
  ['host_netns', 'u64'],
] as const);

export const cidrKey = new StructCodec('weir_cidr_key', [
  ['prefixlen', 'u32'],
  ['owner', 'u32'],
  ['addr', 'ip4'],
] as const);

export const skKey = new StructCodec('weir_sk_key', [
  ['cookie', 'u64'],
  ['addr', 'ip4'],
  ['port', 'be16'],
  ['pad', 'u16'],
] as const);

export const skVal = new StructCodec('weir_sk_val', [
  ['addr', 'ip4'],
  ['port', 'be16'],
  ['pad', 'u16'],
  ['rev_nat_id', 'u32'],
] as const);

export const ids = new StructCodec('weir_ids', [
  ['next_rev_nat_id', 'u32'],
  ['next_backend_id', 'u32'],
] as const);

export const fragKey = new StructCodec('weir_frag_key', [
  ['saddr', 'ip4'],
  ['daddr', 'ip4'],
  ['id', 'be16'],
  ['proto', 'u8'],
  ['pad', 'u8'],
] as const);

export const fragPorts = new StructCodec('weir_frag_ports', [
  ['first_seen', 'u64'],
  ['sport', 'be16'],
  ['dport', 'be16'],
  ['pad', 'u32'],
] as const);

/*
 * IPv6 (weir.h: separate maps per family; values weir_svc_val and
 * weir_aff_val, and the member map, are shared).
 */
export const svc6Key = new StructCodec('weir_svc6_key', [
  ['addr', 'ip6'],
  ['port', 'be16'],
  ['proto', 'u8'],
  ['scope', 'u8'],
  ['slot', 'u16'],
  ['pad', 'u16'],
] as const);

export const backend6 = new StructCodec('weir_backend6', [
  ['addr', 'ip6'],
  ['port', 'be16'],
  ['proto', 'u8'],
  ['flags', 'u8'],
] as const);

export const revnat6 = new StructCodec('weir_revnat6', [
  ['addr', 'ip6'],
  ['port', 'be16'],
  ['pad', 'u16'],
] as const);

export const ct6Key = new StructCodec('weir_ct6_key', [
  ['saddr', 'ip6'],
  ['daddr', 'ip6'],
  ['sport', 'be16'],
  ['dport', 'be16'],
  ['proto', 'u8'],
  ['dir', 'u8'],
  ['pad', 'u16'],
] as const);

export const ct6Val = new StructCodec('weir_ct6_val', [
  ['last_seen', 'u64'],
  ['backend_id', 'u32'],
  ['rev_nat_id', 'u32'],
  ['nat_addr', 'ip6'],
  ['nat_port', 'be16'],
  ['flags', 'u16'],
  ['pad', 'u32'],
] as const);

export const aff6Key = new StructCodec('weir_aff6_key', [
  ['client', 'ip6'],
  ['rev_nat_id', 'u32'],
] as const);

export const cidr6Key = new StructCodec('weir_cidr6_key', [
  ['prefixlen', 'u32'],
  ['owner', 'u32'],
  ['addr', 'ip6'],
] as const);

export const frag6Key = new StructCodec('weir_frag6_key', [
  ['saddr', 'ip6'],
  ['daddr', 'ip6'],
  ['id', 'u32'],
  ['proto', 'u8'],
  ['pad', 'u8'],
  ['pad2', 'u16'],
] as const);

export const sockterm = new StructCodec('weir_sockterm', [
  ['addr', 'ip6'],
  ['port', 'be16'],
  ['family', 'u16'],
] as const);

export const sk6Key = new StructCodec('weir_sk6_key', [
  ['cookie', 'u64'],
  ['addr', 'ip6'],
  ['port', 'be16'],
  ['pad', 'u16'],
  ['pad2', 'u32'],
] as const);

export const sk6Val = new StructCodec('weir_sk6_val', [
  ['addr', 'ip6'],
  ['port', 'be16'],
  ['pad', 'u16'],
  ['rev_nat_id', 'u32'],
] as const);

export const config6 = new StructCodec('weir_config6', [
  ['snat_addr', 'ip6'],
  ['hairpin_addr', 'ip6'],
  ['flags', 'u32'],
  ['pad', 'u32'],
] as const);

export type SvcKey = Decoded<typeof svcKey extends StructCodec<infer F> ? F : never>;
export type SvcVal = Decoded<typeof svcVal extends StructCodec<infer F> ? F : never>;
export type BackendVal = Decoded<typeof backend extends StructCodec<infer F> ? F : never>;
export type RevNatVal = Decoded<typeof revnat extends StructCodec<infer F> ? F : never>;
export type CtKey = Decoded<typeof ctKey extends StructCodec<infer F> ? F : never>;
export type CtVal = Decoded<typeof ctVal extends StructCodec<infer F> ? F : never>;
export type MemberKey = Decoded<typeof memberKey extends StructCodec<infer F> ? F : never>;

/** Every struct codec that mirrors weir.h, for the BTF check. */
export const SHARED_STRUCTS = [
  svcKey,
  svcVal,
  backend,
  revnat,
  ctKey,
  ctVal,
  affKey,
  affVal,
  memberKey,
  config,
  cidrKey,
  skKey,
  skVal,
  ids,
  fragKey,
  fragPorts,
  svc6Key,
  backend6,
  revnat6,
  ct6Key,
  ct6Val,
  aff6Key,
  cidr6Key,
  config6,
  frag6Key,
  sk6Key,
  sk6Val,
];

/** Structs of maps only the socket programs (sock.o) have. */
export const SOCK_STRUCTS = [sockterm];

/** Constants mirrored from weir.h (checked against the header by a unit test). */
export const SCOPE_ALL = 0;
export const SCOPE_LOCAL = 1;
export const SVC_F = {
  CLUSTER_IP: 1 << 0,
  NODE_PORT: 1 << 1,
  EXTERNAL_IP: 1 << 2,
  LOAD_BALANCER: 1 << 3,
  AFFINITY: 1 << 4,
  ETP_LOCAL: 1 << 5,
  ITP_LOCAL: 1 << 6,
  SRC_RANGES: 1 << 7,
  DROP_EMPTY: 1 << 8,
  TOPO_ZONE: 1 << 9,
  TOPO_NODE: 1 << 10,
} as const;
export const CFG_F = { MASQUERADE_ALL: 1 << 0, CLUSTER_CIDR: 1 << 1, DRAIN: 1 << 2, LOCAL_DEVICES: 1 << 3, SOCK_HOSTNS_ONLY: 1 << 4 } as const;
/** weir_config6.flags (masqueradeAll, drain and the device detector stay in weir_config.flags, for both families). */
export const CFG6_F = { CLUSTER_CIDR: 1 << 0 } as const;
export const MEMBER_F = { ACTIVE: 1 << 0 } as const;
export const BE_F = { LOCAL: 1 << 0, TERMINATING: 1 << 1 } as const;
export const CT_DIR = { FWD: 0, REV: 1 } as const;
export const CT_F = { SNAT: 1 << 0, CLOSING: 1 << 1, REDIRECT: 1 << 2, REPLIED: 1 << 4 } as const;
export const IPPROTO = { TCP: 6, UDP: 17, SCTP: 132 } as const;
