/**
 * Crafted packets for running the real programs (BPF_PROG_TEST_RUN): build
 * an Ethernet/IPv4/TCP|UDP|SCTP|ICMP frame with valid checksums, read its
 * headers back, verify checksums from scratch. Used by `weir trace` and by
 * the program tests. An SCTP packet carries one INIT chunk (the payload, if
 * any, after it) and SCTP's CRC32c. The IPv6 builder (buildPacket6) makes
 * Ethernet/IPv6 frames, with extension headers if asked, and ICMPv6.
 */
import { readIp4, readIp6, writeIp4, writeIp6 } from './codecs';

export interface PacketSpec {
  proto: 'tcp' | 'udp' | 'sctp' | 'icmp';
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  /** TCP flags byte (default SYN). */
  flags?: number;
  seq?: number;
  payload?: string;
  /** UDP only: send without a checksum (0). */
  zeroUdpCsum?: boolean;
}

export interface Headers {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  proto: number;
}

/** One's-complement sum of buf[start, end), folded to 16 bits, seeded. */
export function csum16(buf: Buffer, start = 0, end = buf.length, seed = 0): number {
  let sum = seed;
  for (let i = start; i < end; i += 2) sum += (buf[i]! << 8) | (i + 1 < end ? buf[i + 1]! : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

const CRC32C_TABLE = Int32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  return c;
});

/** CRC32c (Castagnoli), as SCTP uses it: reflected, initial and final value ~0. */
export function crc32c(buf: Buffer, start = 0, end = buf.length): number {
  let c = ~0;
  for (let i = start; i < end; i++) c = CRC32C_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** SCTP's checksum of the SCTP packet at buf[start, end), with its checksum field taken as zero. */
export function sctpChecksum(buf: Buffer, start = 0, end = buf.length): number {
  const copy = Buffer.from(buf.subarray(start, end));
  copy.writeUInt32LE(0, 8);
  return crc32c(copy);
}

function pseudoHeader(pkt: Buffer, proto: number, l4len: number): number {
  const ph = Buffer.alloc(12);
  pkt.copy(ph, 0, 26, 34);
  ph[9] = proto;
  ph.writeUInt16BE(l4len, 10);
  return csum16(ph);
}

export function buildPacket(spec: PacketSpec): Buffer {
  const payload = Buffer.from(spec.payload ?? '');
  const proto = spec.proto === 'tcp' ? 6 : spec.proto === 'udp' ? 17 : spec.proto === 'sctp' ? 132 : 1;
  const l4len = (spec.proto === 'tcp' ? 20 : spec.proto === 'sctp' ? 32 : 8) + payload.length;
  const pkt = Buffer.alloc(14 + 20 + l4len);
  Buffer.from('020000000001020000000002', 'hex').copy(pkt, 0); // dst MAC, src MAC
  pkt.writeUInt16BE(0x0800, 12);
  pkt[14] = 0x45;
  pkt.writeUInt16BE(20 + l4len, 16);
  pkt[22] = 64;
  pkt[23] = proto;
  writeIp4(pkt, 26, spec.src);
  writeIp4(pkt, 30, spec.dst);
  pkt.writeUInt16BE(~csum16(pkt, 14, 34) & 0xffff, 24);
  const l4 = 34;
  if (spec.proto === 'icmp') {
    pkt[l4] = 8; // echo request
    payload.copy(pkt, l4 + 8);
    pkt.writeUInt16BE(~csum16(pkt, l4) & 0xffff, l4 + 2);
    return pkt;
  }
  pkt.writeUInt16BE(spec.sport ?? 40000, l4);
  pkt.writeUInt16BE(spec.dport ?? 80, l4 + 2);
  if (spec.proto === 'sctp') {
    // Verification tag 0 (an INIT's), then an INIT chunk: type 1, length 20,
    // initiate tag, a_rwnd, outbound/inbound streams, initial TSN.
    pkt[l4 + 12] = 1;
    pkt.writeUInt16BE(20, l4 + 14);
    pkt.writeUInt32BE(spec.seq ?? 1000, l4 + 16);
    pkt.writeUInt32BE(65536, l4 + 20);
    pkt.writeUInt16BE(1, l4 + 24);
    pkt.writeUInt16BE(1, l4 + 26);
    pkt.writeUInt32BE(spec.seq ?? 1000, l4 + 28);
    payload.copy(pkt, l4 + 32);
    pkt.writeUInt32LE(sctpChecksum(pkt, l4), l4 + 8);
    return pkt;
  }
  if (spec.proto === 'tcp') {
    pkt.writeUInt32BE(spec.seq ?? 1000, l4 + 4);
    pkt[l4 + 12] = 0x50;
    pkt[l4 + 13] = spec.flags ?? 0x02;
    pkt.writeUInt16BE(65535, l4 + 14);
    payload.copy(pkt, l4 + 20);
  } else {
    pkt.writeUInt16BE(l4len, l4 + 4);
    payload.copy(pkt, l4 + 8);
  }
  if (spec.proto === 'udp' && spec.zeroUdpCsum) return pkt;
  const c = ~csum16(pkt, l4, pkt.length, pseudoHeader(pkt, proto, l4len)) & 0xffff;
  // In UDP a computed 0 is sent as 0xffff: 0 means "no checksum".
  pkt.writeUInt16BE(c === 0 && proto === 17 ? 0xffff : c, l4 + (proto === 6 ? 16 : 6));
  return pkt;
}

export function readHeaders(pkt: Buffer): Headers {
  const l4 = 14 + (pkt[14]! & 0x0f) * 4;
  return { src: readIp4(pkt, 26), dst: readIp4(pkt, 30), sport: pkt.readUInt16BE(l4), dport: pkt.readUInt16BE(l4 + 2), proto: pkt[23]! };
}

/** Whether the IPv4 header and the TCP/UDP/ICMP checksums verify. */
export function checksumsValid(pkt: Buffer): { ip: boolean; l4: boolean } {
  const ihl = (pkt[14]! & 0x0f) * 4;
  const ip = csum16(pkt, 14, 14 + ihl) === 0xffff;
  const proto = pkt[23]!;
  const l4 = pkt.subarray(14 + ihl, 14 + pkt.readUInt16BE(16));
  if (proto === 1) return { ip, l4: csum16(l4) === 0xffff };
  if (proto === 132) return { ip, l4: l4.readUInt32LE(8) === sctpChecksum(l4) };
  if (proto === 17 && l4.readUInt16BE(6) === 0) return { ip, l4: true };
  return { ip, l4: csum16(l4, 0, l4.length, pseudoHeader(pkt, proto, l4.length)) === 0xffff };
}

export interface Packet6Spec {
  proto: 'tcp' | 'udp' | 'sctp' | 'icmp6';
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  /** TCP flags byte (default SYN). */
  flags?: number;
  seq?: number;
  payload?: string | Buffer;
  /** ICMPv6 type and code (default echo request, 128/0). */
  icmpType?: number;
  icmpCode?: number;
  /** ICMPv6: the header's last 4 bytes (Packet Too Big: the MTU). */
  icmpWord?: number;
  /** Extension headers before the L4 header, in order: each is its next-header number (0 hop-by-hop, 43 routing, 60 destination options), 8 bytes of padding options. */
  ext?: readonly number[];
  hopLimit?: number;
}

export interface Headers6 extends Headers {
  /** Offset of the L4 header (after extension headers). */
  l4: number;
}

const IP6_HDR_OFF = 14;
const IP6_L4_OFF = 54;

/** The IPv6 pseudo header's sum (RFC 8200 8.1) for an L4 length and next header, over the addresses at pkt[22, 54). */
function pseudoHeader6(pkt: Buffer, proto: number, l4len: number, at = IP6_HDR_OFF): number {
  const ph = Buffer.alloc(40);
  pkt.copy(ph, 0, at + 8, at + 40);
  ph.writeUInt32BE(l4len, 32);
  ph[39] = proto;
  return csum16(ph);
}

const L4_NUM = { tcp: 6, udp: 17, sctp: 132, icmp6: 58 } as const;

/** An Ethernet/IPv6 frame (optionally with extension headers) with valid L4 checksums. */
export function buildPacket6(spec: Packet6Spec): Buffer {
  const payload = typeof spec.payload === 'string' || spec.payload === undefined ? Buffer.from(spec.payload ?? '') : spec.payload;
  const proto = L4_NUM[spec.proto];
  const ext = spec.ext ?? [];
  const l4len = (spec.proto === 'tcp' ? 20 : spec.proto === 'sctp' ? 32 : 8) + payload.length;
  const l4 = IP6_L4_OFF + 8 * ext.length;
  const pkt = Buffer.alloc(l4 + l4len);
  Buffer.from('020000000001020000000002', 'hex').copy(pkt, 0);
  pkt.writeUInt16BE(0x86dd, 12);
  pkt.writeUInt32BE(0x60000000, 14);
  pkt.writeUInt16BE(8 * ext.length + l4len, 18);
  pkt[20] = ext.length ? ext[0]! : proto;
  pkt[21] = spec.hopLimit ?? 64;
  writeIp6(pkt, 22, spec.src);
  writeIp6(pkt, 38, spec.dst);
  ext.forEach((_, i) => {
    const at = IP6_L4_OFF + 8 * i;
    pkt[at] = i + 1 < ext.length ? ext[i + 1]! : proto;
    pkt[at + 1] = 0; // 8 bytes: next header, length 0, a PadN option of 4 bytes
    pkt[at + 2] = 1;
    pkt[at + 3] = 4;
  });
  if (spec.proto === 'icmp6') {
    pkt[l4] = spec.icmpType ?? 128;
    pkt[l4 + 1] = spec.icmpCode ?? 0;
    pkt.writeUInt32BE(spec.icmpWord ?? 0, l4 + 4);
    payload.copy(pkt, l4 + 8);
  } else {
    pkt.writeUInt16BE(spec.sport ?? 40000, l4);
    pkt.writeUInt16BE(spec.dport ?? 80, l4 + 2);
    if (spec.proto === 'sctp') {
      // As buildPacket: verification tag 0, one INIT chunk, then the payload; CRC32c, no pseudo header.
      pkt[l4 + 12] = 1;
      pkt.writeUInt16BE(20, l4 + 14);
      pkt.writeUInt32BE(spec.seq ?? 1000, l4 + 16);
      pkt.writeUInt32BE(65536, l4 + 20);
      pkt.writeUInt16BE(1, l4 + 24);
      pkt.writeUInt16BE(1, l4 + 26);
      pkt.writeUInt32BE(spec.seq ?? 1000, l4 + 28);
      payload.copy(pkt, l4 + 32);
      pkt.writeUInt32LE(sctpChecksum(pkt, l4), l4 + 8);
      return pkt;
    }
    if (spec.proto === 'tcp') {
      pkt.writeUInt32BE(spec.seq ?? 1000, l4 + 4);
      pkt[l4 + 12] = 0x50;
      pkt[l4 + 13] = spec.flags ?? 0x02;
      pkt.writeUInt16BE(65535, l4 + 14);
      payload.copy(pkt, l4 + 20);
    } else {
      pkt.writeUInt16BE(l4len, l4 + 4);
      payload.copy(pkt, l4 + 8);
    }
  }
  const c = ~csum16(pkt, l4, pkt.length, pseudoHeader6(pkt, proto, l4len)) & 0xffff;
  pkt.writeUInt16BE(c === 0 && proto === 17 ? 0xffff : c, l4 + (proto === 6 ? 16 : proto === 17 ? 6 : 2));
  return pkt;
}

/** Offset and number of the upper-layer header of the IPv6 packet at `at`, past hop-by-hop, routing and destination options headers. */
export function ip6UpperLayer(pkt: Buffer, at = IP6_HDR_OFF): { off: number; proto: number } {
  let nh = pkt[at + 6]!;
  let off = at + 40;
  while (nh === 0 || nh === 43 || nh === 60) {
    nh = pkt[off]!;
    off += (pkt[off + 1]! + 1) * 8;
  }
  return { off, proto: nh };
}

export function readHeaders6(pkt: Buffer): Headers6 {
  const { off, proto } = ip6UpperLayer(pkt);
  const ports = proto === 6 || proto === 17 || proto === 132;
  return { src: readIp6(pkt, 22), dst: readIp6(pkt, 38), sport: ports ? pkt.readUInt16BE(off) : 0, dport: ports ? pkt.readUInt16BE(off + 2) : 0, proto, l4: off };
}

/** Whether the L4 (TCP, UDP, ICMPv6; SCTP's CRC32c) checksum of the Ethernet/IPv6 frame verifies over its pseudo header, and the payload length matches the frame. */
export function checksumsValid6(pkt: Buffer): { len: boolean; l4: boolean } {
  const len = pkt.readUInt16BE(18) === pkt.length - IP6_L4_OFF;
  const { off, proto } = ip6UpperLayer(pkt);
  const l4len = pkt.length - off;
  if (proto === 132) return { len, l4: pkt.readUInt32LE(off + 8) === sctpChecksum(pkt, off) };
  return { len, l4: csum16(pkt, off, pkt.length, pseudoHeader6(pkt, proto, l4len)) === 0xffff };
}
