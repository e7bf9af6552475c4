/**
 * The real tc program on crafted packets (BPF_PROG_TEST_RUN): exact bytes
 * out for DNAT, reverse NAT, the RST and ICMP rejects, a zero UDP checksum,
 * and packets that are not ours. Checksums are verified from scratch.
 * The object is loaded with its maps pinned under a unique test directory
 * and attached nowhere.
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as C from '../../ts/datapath/codecs';
import { BpfDatapath, openPinned } from '../../ts/datapath/loader';
import { loadShim } from '../../ts/datapath/ffi';
import { VERDICTS } from '../../ts/datapath/verdicts';
import { keyString } from '../../ts/datapath/maps';
import { readServices } from '../../ts/datapath/dump';
import { ClusterStore } from '../../ts/model/store';
import { ObjectKey } from '../../ts/model/types';
import { PORT_WORDS } from '../../ts/reconcile/ports';
import { MapFullError, Reconciler } from '../../ts/reconcile/reconciler';
import { Syncer } from '../../ts/runner/sync';
import { createLogger } from '../../ts/util/log';
import { thrown } from '../unit/thrown';
import { readIp4 } from '../../ts/datapath/codecs';
import { buildPacket, checksumsValid, csum16, readHeaders } from '../../ts/datapath/packet';

const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;
const CLIENT = '10.244.1.20';
const VIP = '10.96.0.10';
const EMPTY_VIP = '10.96.0.11';
const BACKEND = '10.244.1.30';

interface Ctx {
  dp: BpfDatapath;
  root: string;
}
const s = suite<Ctx>('tc program (BPF_PROG_TEST_RUN)');

const packet = buildPacket;
const csum = csum16;

const hdr = readHeaders;

function run(ctx: Ctx, pkt: Buffer): { retval: number; out: Buffer } {
  const r = loadShim().progTestRun(ctx.dp.progFds.pod, pkt, pkt.length + 256);
  return { retval: r.retval, out: r.data };
}

/** Packets counted under verdict `name`, summed over CPUs. */
function verdictCount(ctx: Ctx, name: (typeof VERDICTS)[number]): bigint {
  const idx = VERDICTS.indexOf(name);
  const v = ctx.dp.maps.verdicts.dump().find(([k]) => Buffer.from(k, 'latin1').readUInt32LE(0) === idx)![1];
  let n = 0n;
  for (let c = 0; c < ctx.dp.maps.verdicts.cpus; c++) n += v.readBigUInt64LE(c * 8);
  return n;
}

s.before((ctx) => {
  const root = `/sys/fs/bpf/weir-progtest-${crypto.randomBytes(3).toString('hex')}`;
  ctx.root = root;
  process.on('exit', () => fs.rmSync(root, { recursive: true, force: true }));
  ctx.dp = BpfDatapath.load(loadShim(), ctx.root);
  ctx.dp.writeConfig({ hairpinAddr: '169.254.42.1', snatAddr: '192.168.77.10', masqueradeAll: false, haveClusterCidrs: false });
  const m = ctx.dp.maps;
  const be = (id: number, addr: string, port: number, proto: number): void => m.be.upsert([[keyString(C.u32Key.encode({ value: id })), C.backend.encode({ addr, port, proto, flags: 0 })]]);
  const svc = (addr: string, port: number, proto: number, rev: number, ids: number[]): void => {
    ids.forEach((id, i) => m.svc.upsert([[keyString(C.svcKey.encode({ addr, port, proto, slot: i + 1 })), C.svcVal.encode({ backend_id: id })]]));
    ids.forEach((id) => m.member.upsert([[keyString(C.memberKey.encode({ rev_nat_id: rev, backend_id: id })), C.u32Key.encode({ value: 1 })]]));
    m.revnat.upsert([[keyString(C.u32Key.encode({ value: rev })), C.revnat.encode({ addr, port })]]);
    m.svc.upsert([[keyString(C.svcKey.encode({ addr, port, proto, slot: 0 })), C.svcVal.encode({ count: ids.length, rev_nat_id: rev, flags: C.SVC_F.CLUSTER_IP })]]);
  };
  be(1, BACKEND, 8080, 6);
  be(2, BACKEND, 5353, 17);
  svc(VIP, 80, 6, 1, [1]);
  svc(VIP, 53, 17, 2, [2]);
  svc(EMPTY_VIP, 80, 6, 3, []);
  svc(EMPTY_VIP, 53, 17, 4, []);
  // SCTP (132), port 36412 -> targetPort 38412: the port change moves the CRC32c.
  be(4, BACKEND, 38412, 132);
  svc(VIP, 36412, 132, 6, [4]);
  svc(EMPTY_VIP, 36412, 132, 7, []);
});

s.after((ctx) => {
  ctx.dp?.close();
  if (ctx.root) fs.rmSync(ctx.root, { recursive: true, force: true });
});

s('TCP SYN to a ClusterIP: DNAT to the backend with valid checksums', (ctx) => {
  const { retval, out } = run(ctx, packet({ proto: 'tcp', src: CLIENT, dst: VIP, sport: 40001, dport: 80, payload: 'hello' }));
  assert.is(retval, TC_ACT_OK);
  assert.equal(hdr(out), { src: CLIENT, dst: BACKEND, sport: 40001, dport: 8080, proto: 6 });
  assert.equal(checksumsValid(out), { ip: true, l4: true });
});

s('the reply is reverse-NATed to come from the ClusterIP', (ctx) => {
  const { retval, out } = run(ctx, packet({ proto: 'tcp', src: BACKEND, dst: CLIENT, sport: 8080, dport: 40001, flags: 0x12 }));
  assert.is(retval, TC_ACT_OK);
  assert.equal(hdr(out), { src: VIP, dst: CLIENT, sport: 80, dport: 40001, proto: 6 });
  assert.equal(checksumsValid(out), { ip: true, l4: true });
});

s('a reply whose revnat entry is missing is dropped and counted as drop_revnat_missing', (ctx) => {
  // Its own frontend (VIP:81, rev_nat id 5), so deleting its revnat entry touches no other test.
  const m = ctx.dp.maps;
  const revKey = keyString(C.u32Key.encode({ value: 5 }));
  m.be.upsert([[keyString(C.u32Key.encode({ value: 3 })), C.backend.encode({ addr: BACKEND, port: 8181, proto: 6, flags: 0 })]]);
  m.svc.upsert([[keyString(C.svcKey.encode({ addr: VIP, port: 81, proto: 6, slot: 1 })), C.svcVal.encode({ backend_id: 3 })]]);
  m.member.upsert([[keyString(C.memberKey.encode({ rev_nat_id: 5, backend_id: 3 })), C.u32Key.encode({ value: 1 })]]);
  m.revnat.upsert([[revKey, C.revnat.encode({ addr: VIP, port: 81 })]]);
  m.svc.upsert([[keyString(C.svcKey.encode({ addr: VIP, port: 81, proto: 6, slot: 0 })), C.svcVal.encode({ count: 1, rev_nat_id: 5, flags: C.SVC_F.CLUSTER_IP })]]);
  const syn = run(ctx, packet({ proto: 'tcp', src: CLIENT, dst: VIP, sport: 40010, dport: 81 }));
  assert.equal(hdr(syn.out), { src: CLIENT, dst: BACKEND, sport: 40010, dport: 8181, proto: 6 });
  const reply = packet({ proto: 'tcp', src: BACKEND, dst: CLIENT, sport: 8181, dport: 40010, flags: 0x12 });

  const ok = run(ctx, reply);
  assert.is(ok.retval, TC_ACT_OK);
  assert.equal(hdr(ok.out), { src: VIP, dst: CLIENT, sport: 81, dport: 40010, proto: 6 }, 'translated while the entry is there');

  m.revnat.remove([revKey]);
  const before = { missing: verdictCount(ctx, 'drop_revnat_missing'), revnat: verdictCount(ctx, 'revnat') };
  const dropped = run(ctx, reply);
  assert.is(dropped.retval, TC_ACT_SHOT);
  assert.is(verdictCount(ctx, 'drop_revnat_missing'), before.missing + 1n);
  assert.is(verdictCount(ctx, 'revnat'), before.revnat);
});

s('UDP: checksum updated; a zero (absent) checksum stays zero', (ctx) => {
  const withSum = run(ctx, packet({ proto: 'udp', src: CLIENT, dst: VIP, sport: 40002, dport: 53, payload: 'q' }));
  assert.equal(hdr(withSum.out), { src: CLIENT, dst: BACKEND, sport: 40002, dport: 5353, proto: 17 });
  assert.equal(checksumsValid(withSum.out), { ip: true, l4: true });
  const zero = run(ctx, packet({ proto: 'udp', src: CLIENT, dst: VIP, sport: 40003, dport: 53, payload: 'q', zeroUdpCsum: true }));
  assert.is(zero.out.readUInt16BE(40), 0, 'UDP checksum still absent');
  assert.is(hdr(zero.out).dst, BACKEND);
  assert.ok(checksumsValid(zero.out).ip);
});

s('no endpoints, TCP SYN: a RST|ACK from the ClusterIP, sent back out', (ctx) => {
  const { retval, out } = run(ctx, packet({ proto: 'tcp', src: CLIENT, dst: EMPTY_VIP, sport: 40004, dport: 80, seq: 5000 }));
  assert.is(retval, TC_ACT_REDIRECT);
  assert.equal(hdr(out), { src: EMPTY_VIP, dst: CLIENT, sport: 80, dport: 40004, proto: 6 });
  assert.is(out[47], 0x14, 'RST|ACK');
  assert.is(out.readUInt32BE(42), 5001, 'acknowledges the SYN');
  assert.is(out.length, 54, 'no payload');
  assert.equal(out.subarray(0, 6), Buffer.from('020000000002', 'hex'), 'MACs swapped');
  assert.equal(checksumsValid(out), { ip: true, l4: true });
});

s('no endpoints, TCP segment with ACK: RST takes its sequence from the ACK', (ctx) => {
  const pkt = packet({ proto: 'tcp', src: CLIENT, dst: EMPTY_VIP, sport: 40005, dport: 80, flags: 0x10 });
  pkt.writeUInt32BE(777, 42);
  pkt.writeUInt16BE(0, 50);
  const pseudo = Buffer.alloc(12);
  pkt.copy(pseudo, 0, 26, 34);
  pseudo[9] = 6;
  pseudo.writeUInt16BE(20, 10);
  pkt.writeUInt16BE(~csum(pkt, 34, 54, csum(pseudo)) & 0xffff, 50);
  const { out } = run(ctx, pkt);
  assert.is(out[47], 0x04, 'RST only');
  assert.is(out.readUInt32BE(38), 777);
  assert.equal(checksumsValid(out), { ip: true, l4: true });
});

s("a TCP segment that is no SYN, of a connection weir never saw open, passes unchanged for the stack's conntrack (pass_midflow)", (ctx) => {
  const before = { midflow: verdictCount(ctx, 'pass_midflow'), forward: verdictCount(ctx, 'forward') };
  for (const flags of [0x10, 0x18, 0x11, 0x04]) {
    const pkt = packet({ proto: 'tcp', src: CLIENT, dst: VIP, sport: 40020, dport: 80, flags });
    const { retval, out } = run(ctx, pkt);
    assert.is(retval, TC_ACT_OK);
    assert.equal(out, pkt, `flags ${flags.toString(16)}: untouched`);
  }
  assert.is(verdictCount(ctx, 'pass_midflow'), before.midflow + 4n);
  assert.is(verdictCount(ctx, 'forward'), before.forward);
  // A connection weir opened keeps its translation for every later segment.
  run(ctx, packet({ proto: 'tcp', src: CLIENT, dst: VIP, sport: 40021, dport: 80 }));
  const ack = run(ctx, packet({ proto: 'tcp', src: CLIENT, dst: VIP, sport: 40021, dport: 80, flags: 0x10 }));
  assert.is(hdr(ack.out).dst, BACKEND);
});

s('draining: new flows pass unchanged (pass_draining); flows weir carries keep their backend', (ctx) => {
  const cfgKey = keyString(C.u32Key.encode({ value: 0 }));
  const cfg = (flags: number): void => ctx.dp.maps.cfg.upsert([[cfgKey, C.config.encode({ hairpin_addr: '169.254.42.1', snat_addr: '192.168.77.10', flags })]]);
  run(ctx, packet({ proto: 'tcp', src: CLIENT, dst: VIP, sport: 40030, dport: 80 }));
  cfg(C.CFG_F.DRAIN);
  try {
    const before = verdictCount(ctx, 'pass_draining');
    for (const pkt of [packet({ proto: 'tcp', src: CLIENT, dst: VIP, sport: 40031, dport: 80 }), packet({ proto: 'udp', src: CLIENT, dst: VIP, sport: 40031, dport: 53, payload: 'q' })]) {
      const { retval, out } = run(ctx, pkt);
      assert.is(retval, TC_ACT_OK);
      assert.equal(out, pkt, 'new flow untouched');
    }
    assert.is(verdictCount(ctx, 'pass_draining'), before + 2n);
    const carried = run(ctx, packet({ proto: 'tcp', src: CLIENT, dst: VIP, sport: 40030, dport: 80, flags: 0x10 }));
    assert.is(hdr(carried.out).dst, BACKEND, "weir's own flow still translated");
  } finally {
    cfg(0);
  }
});

s('no endpoints, UDP: ICMP port unreachable quoting the original header', (ctx) => {
  const orig = packet({ proto: 'udp', src: CLIENT, dst: EMPTY_VIP, sport: 40006, dport: 53, payload: 'some payload' });
  const { retval, out } = run(ctx, orig);
  assert.is(retval, TC_ACT_REDIRECT);
  assert.is(out.length, 14 + 20 + 8 + 20 + 8);
  assert.equal({ src: readIp4(out, 26), dst: readIp4(out, 30), proto: out[23] }, { src: EMPTY_VIP, dst: CLIENT, proto: 1 });
  assert.equal([out[34], out[35]], [3, 3], 'destination unreachable / port unreachable');
  assert.equal(out.subarray(42, 70), orig.subarray(14, 42), 'quotes IP header + 8 bytes');
  assert.equal(checksumsValid(out), { ip: true, l4: true });
});

s('port filter: once on, only marked ports are looked up; marking brings the frontend and its replies back', (ctx) => {
  const word = (w: number, v: bigint): void => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v);
    ctx.dp.maps.ports.upsert([[keyString(C.u32Key.encode({ value: w })), b]]);
  };
  const bit = (port: number): bigint => 1n << BigInt(port & 63);
  try {
    word(0, 1n); // on, nothing marked
    const syn = packet({ proto: 'tcp', src: CLIENT, dst: VIP, sport: 40090, dport: 80 });
    assert.equal(run(ctx, syn).out, syn, 'port 80 unmarked: no frontend lookup, untouched');
    word(80 >> 6, bit(80));
    assert.is(hdr(run(ctx, syn).out).dst, BACKEND, 'port 80 marked: DNAT');
    const reply = packet({ proto: 'tcp', src: BACKEND, dst: CLIENT, sport: 8080, dport: 40090, flags: 0x12 });
    assert.equal(run(ctx, reply).out, reply, 'backend port 8080 unmarked: no reply lookup, untouched');
    word(PORT_WORDS + (8080 >> 6), bit(8080));
    assert.is(hdr(run(ctx, reply).out).src, VIP, 'backend port 8080 marked: reverse NAT');
  } finally {
    for (const w of [0, 80 >> 6, PORT_WORDS + (8080 >> 6)]) word(w, 0n); // off again, for the other tests
  }
});

s('packets that are not ours pass untouched', (ctx) => {
  for (const pkt of [
    packet({ proto: 'tcp', src: CLIENT, dst: BACKEND, sport: 40007, dport: 8080 }),
    packet({ proto: 'udp', src: CLIENT, dst: VIP, sport: 40008, dport: 80 }),
    packet({ proto: 'icmp', src: CLIENT, dst: VIP }),
  ]) {
    const { retval, out } = run(ctx, pkt);
    assert.is(retval, TC_ACT_OK);
    assert.equal(out, pkt);
  }
});

const ip4Bytes = (a: string): Buffer => Buffer.from(a.split('.').map(Number));

/**
 * An ICMP error (type, code, the header's last 4 bytes `word`) from src to
 * dst quoting `orig` (an Ethernet frame) as a router does: its IPv4 header
 * and 8 bytes after it.
 */
function icmpError(o: { src: string; dst: string; type: number; code: number; word?: number; orig: Buffer }): Buffer {
  const ihl = (o.orig[14]! & 0x0f) * 4;
  const icmp = Buffer.concat([Buffer.alloc(8), o.orig.subarray(14, 14 + ihl + 8)]);
  icmp[0] = o.type;
  icmp[1] = o.code;
  icmp.writeUInt32BE(o.word ?? 0, 4);
  icmp.writeUInt16BE(~csum(icmp) & 0xffff, 2);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + icmp.length, 2);
  ip[8] = 64;
  ip[9] = 1;
  ip4Bytes(o.src).copy(ip, 12);
  ip4Bytes(o.dst).copy(ip, 16);
  ip.writeUInt16BE(~csum(ip) & 0xffff, 10);
  return Buffer.concat([o.orig.subarray(0, 14), ip, icmp]);
}

/** The quote of an ICMP error from the tc program (20-byte outer header): its tuple, and whether its own IPv4 header checksum verifies. */
function quoteOf(out: Buffer): { tuple: ReturnType<typeof hdr>; ipValid: boolean } {
  return { tuple: hdr(Buffer.concat([out.subarray(0, 14), out.subarray(42)])), ipValid: csum(out, 42, 62) === 0xffff };
}

const NODE = '192.168.77.10';
const ROUTER = '192.168.77.1';

function egress(ctx: Ctx, pkt: Buffer): { retval: number; out: Buffer } {
  const r = loadShim().progTestRun(ctx.dp.egressFd, pkt, pkt.length + 256);
  return { retval: r.retval, out: r.data };
}

s('egress: fragmentation needed this node sent about a DNATed request reaches the client quoting the ClusterIP (icmp_local)', (ctx) => {
  // The flow of the first tests: CLIENT:40001 -> VIP:80, forwarded as CLIENT:40001 -> BACKEND:8080,
  // which did not fit the next link: the node's own error quotes the forwarded packet.
  const fwd = packet({ proto: 'tcp', src: CLIENT, dst: BACKEND, sport: 40001, dport: 8080, flags: 0x10, payload: 'x'.repeat(64) });
  fwd.writeUInt16BE(0x4000, 20); // DF
  fwd.writeUInt16BE(0, 24);
  fwd.writeUInt16BE(~csum(fwd, 14, 34) & 0xffff, 24);
  const err = icmpError({ src: NODE, dst: CLIENT, type: 3, code: 4, word: 1280, orig: fwd });
  const before = verdictCount(ctx, 'icmp_local');
  const { retval, out } = egress(ctx, err);
  assert.is(retval, TC_ACT_OK);
  assert.equal({ src: readIp4(out, 26), dst: readIp4(out, 30), proto: out[23] }, { src: NODE, dst: CLIENT, proto: 1 }, 'the error still goes to the client');
  assert.equal([out[34], out[35], out.readUInt16BE(40)], [3, 4, 1280], 'still fragmentation needed, same MTU');
  assert.equal(quoteOf(out), { tuple: { src: CLIENT, dst: VIP, sport: 40001, dport: 80, proto: 6 }, ipValid: true }, 'the quote is the packet as the client sent it');
  assert.equal(checksumsValid(out), { ip: true, l4: true });
  assert.is(verdictCount(ctx, 'icmp_local'), before + 1n);
});

s('egress: an error this node sent about a reply (to the ClusterIP) is readdressed to the backend (icmp_local_redirect)', (ctx) => {
  const reply = packet({ proto: 'tcp', src: VIP, dst: CLIENT, sport: 80, dport: 40001, flags: 0x10, payload: 'x'.repeat(64) });
  const before = verdictCount(ctx, 'icmp_local_redirect');
  const { out } = egress(ctx, icmpError({ src: NODE, dst: VIP, type: 11, code: 0, orig: reply }));
  assert.equal({ src: readIp4(out, 26), dst: readIp4(out, 30) }, { src: NODE, dst: BACKEND });
  assert.equal(quoteOf(out), { tuple: { src: BACKEND, dst: CLIENT, sport: 8080, dport: 40001, proto: 6 }, ipValid: true }, 'the quote is the reply as the backend sent it');
  assert.equal(checksumsValid(out), { ip: true, l4: true });
  assert.is(verdictCount(ctx, 'icmp_local_redirect'), before + 1n);
});

s('ingress: an ICMP error from a router about a reply (sent to the ClusterIP) goes to the backend, quote translated back', (ctx) => {
  const reply = packet({ proto: 'tcp', src: VIP, dst: CLIENT, sport: 80, dport: 40001, flags: 0x10, payload: 'x'.repeat(64) });
  const before = verdictCount(ctx, 'forward');
  const r = loadShim().progTestRun(ctx.dp.progFds.ext, icmpError({ src: ROUTER, dst: VIP, type: 3, code: 4, word: 1280, orig: reply }), 200);
  assert.is(r.retval, TC_ACT_OK);
  assert.equal({ src: readIp4(r.data, 26), dst: readIp4(r.data, 30) }, { src: ROUTER, dst: BACKEND });
  assert.equal(quoteOf(r.data), { tuple: { src: BACKEND, dst: CLIENT, sport: 8080, dport: 40001, proto: 6 }, ipValid: true });
  assert.equal(checksumsValid(r.data), { ip: true, l4: true });
  assert.is(verdictCount(ctx, 'forward'), before + 1n);
});

s('egress: everything but an ICMP error about a flow of ours leaves untouched and counted nowhere', (ctx) => {
  const before = VERDICTS.map((v) => verdictCount(ctx, v));
  const stranger = packet({ proto: 'tcp', src: CLIENT, dst: BACKEND, sport: 49999, dport: 8080 });
  for (const pkt of [
    packet({ proto: 'tcp', src: BACKEND, dst: CLIENT, sport: 8080, dport: 40001, flags: 0x10 }),
    packet({ proto: 'udp', src: VIP, dst: CLIENT, sport: 53, dport: 40002 }),
    packet({ proto: 'icmp', src: NODE, dst: CLIENT }),
    icmpError({ src: NODE, dst: CLIENT, type: 3, code: 4, word: 1280, orig: stranger }),
  ]) {
    const { retval, out } = egress(ctx, pkt);
    assert.is(retval, TC_ACT_OK);
    assert.equal(out, pkt);
  }
  assert.equal(
    VERDICTS.map((v) => verdictCount(ctx, v)),
    before,
  );
});

/**
 * Split an Ethernet/IPv4 packet (20-byte header) into IPv4 fragments of
 * `chunk` payload bytes (a multiple of 8), all with IP id `id`, as a
 * sender's kernel does for a datagram larger than the MTU.
 */
function fragments(pkt: Buffer, id: number, chunk: number): Buffer[] {
  const data = pkt.subarray(34);
  const out: Buffer[] = [];
  for (let off = 0; off < data.length; off += chunk) {
    const part = data.subarray(off, off + chunk);
    const f = Buffer.concat([pkt.subarray(0, 34), part]);
    f.writeUInt16BE(20 + part.length, 16);
    f.writeUInt16BE(id, 18);
    f.writeUInt16BE((off + chunk < data.length ? 0x2000 : 0) | (off / 8), 20);
    f.writeUInt16BE(0, 24);
    f.writeUInt16BE(~csum(f, 14, 34) & 0xffff, 24);
    out.push(f);
  }
  return out;
}

/** The datagram the receiver's kernel reassembles from fragments (given in offset order). */
function reassemble(frags: Buffer[]): Buffer {
  const data = Buffer.concat(frags.map((f) => f.subarray(34)));
  const pkt = Buffer.concat([frags[0]!.subarray(0, 34), data]);
  pkt.writeUInt16BE(20 + data.length, 16);
  pkt.writeUInt16BE(0, 20);
  pkt.writeUInt16BE(0, 24);
  pkt.writeUInt16BE(~csum(pkt, 14, 34) & 0xffff, 24);
  return pkt;
}

const ipHeaderValid = (f: Buffer): boolean => csum(f, 14, 34) === 0xffff;
const PAYLOAD = 'a datagram too large for one packet, sent in three fragments';

s('a fragmented UDP datagram to a ClusterIP: every fragment is DNATed, and the datagram reassembles with a valid checksum', (ctx) => {
  // kube-proxy: conntrack defragments before the nat table, so the whole datagram is DNATed.
  const frags = fragments(packet({ proto: 'udp', src: CLIENT, dst: VIP, sport: 40020, dport: 53, payload: PAYLOAD }), 0x1234, 24);
  assert.is(frags.length, 3);
  const before = verdictCount(ctx, 'forward');
  // The first, then the last before the middle one: once the first was seen, order does not matter.
  const out = [frags[0]!, frags[2]!, frags[1]!].map((f) => run(ctx, f));
  for (const r of out) assert.is(r.retval, TC_ACT_OK);
  const [first, last, middle] = out.map((r) => r.out);
  assert.equal(hdr(first!), { src: CLIENT, dst: BACKEND, sport: 40020, dport: 5353, proto: 17 });
  for (const f of [middle!, last!]) {
    assert.is(readIp4(f, 30), BACKEND, 'later fragment DNATed');
    assert.ok(ipHeaderValid(f), 'IPv4 header checksum');
  }
  // Only the destination address and the IPv4 checksum change in a later fragment: its bytes after the header are payload.
  const unchanged = (f: Buffer): Buffer => Buffer.concat([f.subarray(0, 24), f.subarray(26, 30), f.subarray(34)]);
  assert.equal(unchanged(middle!), unchanged(frags[1]!));
  const whole = reassemble([first!, middle!, last!]);
  assert.equal(hdr(whole), { src: CLIENT, dst: BACKEND, sport: 40020, dport: 5353, proto: 17 });
  assert.equal(checksumsValid(whole), { ip: true, l4: true });
  assert.is(whole.subarray(42).toString(), PAYLOAD);
  assert.is(verdictCount(ctx, 'forward'), before + 3n);

  // The backend's fragmented reply: every fragment comes back from the ClusterIP.
  const reply = fragments(packet({ proto: 'udp', src: BACKEND, dst: CLIENT, sport: 5353, dport: 40020, payload: PAYLOAD }), 0x4321, 24);
  const back = reply.map((f) => run(ctx, f));
  for (const r of back) {
    assert.is(r.retval, TC_ACT_OK);
    assert.is(readIp4(r.out, 26), VIP, 'reply fragment reverse-NATed');
    assert.ok(ipHeaderValid(r.out));
  }
  const answer = reassemble(back.map((r) => r.out));
  assert.equal(hdr(answer), { src: VIP, dst: CLIENT, sport: 53, dport: 40020, proto: 17 });
  assert.equal(checksumsValid(answer), { ip: true, l4: true });
});

s('a later fragment whose first fragment was not seen passes unchanged and is counted as frag_unmatched', (ctx) => {
  const frags = fragments(packet({ proto: 'udp', src: CLIENT, dst: VIP, sport: 40021, dport: 53, payload: PAYLOAD }), 0x2345, 24);
  const before = verdictCount(ctx, 'frag_unmatched');
  const r = run(ctx, frags[1]!);
  assert.is(r.retval, TC_ACT_OK);
  assert.equal(r.out, frags[1]!);
  assert.is(verdictCount(ctx, 'frag_unmatched'), before + 1n);
});

s("a later fragment does not take the ports of an older datagram that had the same IP id (the entry's lifetime is the stack's ipfrag_time)", (ctx) => {
  const frags = fragments(packet({ proto: 'udp', src: CLIENT, dst: VIP, sport: 40024, dport: 53, payload: PAYLOAD }), 0x2346, 24);
  const key = keyString(C.fragKey.encode({ saddr: CLIENT, daddr: VIP, id: 0x2346, proto: 17, pad: 0 }));
  // What a datagram with this id left behind a minute ago (timestamps are CLOCK_MONOTONIC ns).
  const minuteAgo = process.hrtime.bigint() - 60_000_000_000n;
  const frag = openPinned(loadShim(), ctx.root, ['frag']).frag;
  frag.upsert([[key, C.fragPorts.encode({ first_seen: minuteAgo, sport: 40999, dport: 53, pad: 0 })]]);
  const before = verdictCount(ctx, 'frag_unmatched');
  const r = run(ctx, frags[1]!);
  assert.equal(r.out, frags[1]!, 'passed unchanged');
  assert.is(verdictCount(ctx, 'frag_unmatched'), before + 1n);
  // Recorded now, the same entry matches.
  frag.upsert([[key, C.fragPorts.encode({ first_seen: process.hrtime.bigint(), sport: 40024, dport: 53, pad: 0 })]]);
  assert.equal(hdr(run(ctx, frags[1]!).out).dst, BACKEND);
});

s('fragments of a datagram that is no service traffic pass untouched and count nowhere', (ctx) => {
  const frags = fragments(packet({ proto: 'udp', src: CLIENT, dst: BACKEND, sport: 40022, dport: 5353, payload: PAYLOAD }), 0x3456, 24);
  const before = VERDICTS.map((v) => verdictCount(ctx, v));
  for (const f of frags) {
    const r = run(ctx, f);
    assert.is(r.retval, TC_ACT_OK);
    assert.equal(r.out, f);
  }
  assert.equal(
    VERDICTS.map((v) => verdictCount(ctx, v)),
    before,
  );
});

s('no endpoints, fragmented UDP: one ICMP port unreachable for the first fragment, the later ones dropped', (ctx) => {
  // Like the REJECT target, which answers the (defragmented) datagram once.
  const frags = fragments(packet({ proto: 'udp', src: CLIENT, dst: EMPTY_VIP, sport: 40023, dport: 53, payload: PAYLOAD }), 0x4567, 24);
  const first = run(ctx, frags[0]!);
  assert.is(first.retval, TC_ACT_REDIRECT);
  assert.equal([first.out[23], first.out[34], first.out[35]], [1, 3, 3], 'ICMP port unreachable');
  const before = verdictCount(ctx, 'drop_no_endpoints');
  for (const f of frags.slice(1)) assert.is(run(ctx, f).retval, TC_ACT_SHOT);
  assert.is(verdictCount(ctx, 'drop_no_endpoints'), before + 2n);
});

s('SCTP INIT to a ClusterIP: DNAT to the backend port, CRC32c updated (valid from scratch) at every packet length', (ctx) => {
  // kube-proxy: the same DNAT (netfilter recomputes the CRC32c when a NAT changes an SCTP port).
  for (const [i, len] of [0, 3, 100, 1403].entries()) {
    const sport = 40030 + i;
    const init = packet({ proto: 'sctp', src: CLIENT, dst: VIP, sport, dport: 36412, payload: 'x'.repeat(len) });
    const fwd = run(ctx, init);
    assert.is(fwd.retval, TC_ACT_OK);
    assert.equal(hdr(fwd.out), { src: CLIENT, dst: BACKEND, sport, dport: 38412, proto: 132 });
    assert.equal(checksumsValid(fwd.out), { ip: true, l4: true }, `length ${len}`);
    const ack = run(ctx, packet({ proto: 'sctp', src: BACKEND, dst: CLIENT, sport: 38412, dport: sport, payload: 'y'.repeat(len) }));
    assert.is(ack.retval, TC_ACT_OK);
    assert.equal(hdr(ack.out), { src: VIP, dst: CLIENT, sport: 36412, dport: sport, proto: 132 });
    assert.equal(checksumsValid(ack.out), { ip: true, l4: true }, `reply length ${len}`);
  }
});

s('SCTP with a zero checksum field (CRC offloaded, computed later) keeps it zero', (ctx) => {
  const init = packet({ proto: 'sctp', src: CLIENT, dst: VIP, sport: 40040, dport: 36412 });
  init.writeUInt32LE(0, 42);
  const { out } = run(ctx, init);
  assert.equal(hdr(out), { src: CLIENT, dst: BACKEND, sport: 40040, dport: 38412, proto: 132 });
  assert.is(out.readUInt32LE(42), 0);
});

s('no endpoints, SCTP: ICMP port unreachable from the ClusterIP (the REJECT target answers SCTP so)', (ctx) => {
  const orig = packet({ proto: 'sctp', src: CLIENT, dst: EMPTY_VIP, sport: 40041, dport: 36412 });
  const { retval, out } = run(ctx, orig);
  assert.is(retval, TC_ACT_REDIRECT);
  assert.equal({ src: readIp4(out, 26), dst: readIp4(out, 30), proto: out[23] }, { src: EMPTY_VIP, dst: CLIENT, proto: 1 });
  assert.equal([out[34], out[35]], [3, 3]);
  assert.equal(out.subarray(42, 70), orig.subarray(14, 42), 'quotes IP header + 8 bytes (the ports and verification tag)');
});

function runHost(ctx: Ctx, pkt: Buffer): { retval: number; out: Buffer } {
  const r = loadShim().progTestRun(ctx.dp.progFds.host, pkt, pkt.length + 256);
  return { retval: r.retval, out: r.data };
}

s('a 127/8 source on a pod or external device is dropped as drop_loopback_source, never NATed', (ctx) => {
  const before = verdictCount(ctx, 'drop_loopback_source');
  const spoofed = packet({ proto: 'udp', src: '127.0.0.1', dst: VIP, sport: 53000, dport: 53, payload: 'x' });
  assert.is(run(ctx, spoofed).retval, TC_ACT_SHOT);
  assert.is(loadShim().progTestRun(ctx.dp.progFds.ext, spoofed, spoofed.length + 256).retval, TC_ACT_SHOT);
  assert.is(verdictCount(ctx, 'drop_loopback_source') - before, 2n);
});

s('loopback path: a node socket bound to 127.0.0.1 is masqueraded to the node IP; its reply goes back to lo', (ctx) => {
  const m = ctx.dp.maps;
  // NodePorts on 127.0.0.1: 30080 (rev_nat id 8) and 30081 (id 9), both to the TCP backend.
  for (const [port, rev] of [
    [30080, 8],
    [30081, 9],
  ] as const) {
    m.svc.upsert([[keyString(C.svcKey.encode({ addr: '127.0.0.1', port, proto: 6, slot: 1 })), C.svcVal.encode({ backend_id: 1 })]]);
    m.member.upsert([[keyString(C.memberKey.encode({ rev_nat_id: rev, backend_id: 1 })), C.u32Key.encode({ value: 1 })]]);
    m.revnat.upsert([[keyString(C.u32Key.encode({ value: rev })), C.revnat.encode({ addr: '127.0.0.1', port })]]);
    m.svc.upsert([[keyString(C.svcKey.encode({ addr: '127.0.0.1', port, proto: 6, slot: 0 })), C.svcVal.encode({ count: 1, rev_nat_id: rev, flags: C.SVC_F.NODE_PORT })]]);
  }
  // The client's own port (30081) is a frontend port too: its reply must not be taken for a new connection.
  const fwd = runHost(ctx, packet({ proto: 'tcp', src: '127.0.0.1', dst: '127.0.0.1', sport: 30081, dport: 30080 }));
  const h = hdr(fwd.out);
  assert.equal({ ...h, sport: 0 }, { src: '192.168.77.10', dst: BACKEND, sport: 0, dport: 8080, proto: 6 });
  assert.ok(h.sport >= 61000, `masquerade port ${h.sport}`);
  assert.equal(checksumsValid(fwd.out), { ip: true, l4: true });

  const before = verdictCount(ctx, 'revnat_host');
  const reply = run(ctx, packet({ proto: 'tcp', src: BACKEND, dst: '192.168.77.10', sport: 8080, dport: h.sport, flags: 0x12 }));
  assert.is(reply.retval, TC_ACT_REDIRECT, 'handed to loopback ingress');
  assert.equal(hdr(reply.out), { src: '127.0.0.1', dst: '127.0.0.1', sport: 30080, dport: 30081, proto: 6 });
  assert.equal(checksumsValid(reply.out), { ip: true, l4: true });
  assert.equal([...reply.out.subarray(0, 12)], new Array<number>(12).fill(0), "lo's all-zero MACs");
  assert.is(verdictCount(ctx, 'revnat_host') - before, 1n);

  // On lo the reply passes weir_tc_host once more, untouched.
  const again = runHost(ctx, reply.out.subarray(0, fwd.out.length));
  assert.is(again.retval, TC_ACT_OK);
  assert.equal(hdr(again.out), hdr(reply.out));

  // An ICMP error about the masqueraded request goes to the node process by lo too, quoting what it sent.
  const err = run(ctx, icmpError({ src: ROUTER, dst: '192.168.77.10', type: 3, code: 4, word: 1280, orig: fwd.out }));
  assert.is(err.retval, TC_ACT_REDIRECT, 'error handed to loopback ingress');
  assert.equal({ src: readIp4(err.out, 26), dst: readIp4(err.out, 30) }, { src: ROUTER, dst: '127.0.0.1' });
  assert.equal(quoteOf(err.out), { tuple: { src: '127.0.0.1', dst: '127.0.0.1', sport: 30081, dport: 30080, proto: 6 }, ipValid: true });
  assert.equal(checksumsValid(err.out), { ip: true, l4: true });
  assert.is(verdictCount(ctx, 'revnat_host') - before, 2n);
});

s('bpftool prints the pinned maps with named fields (BTF)', (ctx) => {
  const out = execFileSync('bpftool', ['-j', 'map', 'dump', 'pinned', `${ctx.root}/weir1_svc`], { encoding: 'utf8' });
  type Named = { key: Record<string, number>; value: Record<string, number> };
  const entries = (JSON.parse(out) as Array<{ formatted: Named }>).map((e) => e.formatted);
  // Port 80 in network byte order, read as a host u16 by bpftool.
  const vip = Buffer.from([10, 96, 0, 10]).readUInt32LE(0); // 10.96.0.10 as bpftool prints a __be32
  const master = entries.find((e) => e.key.addr === vip && e.key.slot === 0 && e.key.port === 0x5000 && e.key.proto === 6);
  assert.ok(master, out.slice(0, 400));
  assert.equal(Object.keys(master.key), ['addr', 'port', 'proto', 'scope', 'slot', 'pad']);
  assert.equal(Object.keys(master.value), ['backend_id', 'count', 'flags', 'rev_nat_id', 'affinity_timeout']);
  assert.is(master.value.count, 1);
});

s('maps are created at the requested sizes; a pinned one keeps its size', (ctx) => {
  const root = `${ctx.root}-sized`;
  try {
    const first = BpfDatapath.load(loadShim(), root, { ct: 4096, aff: 1024, skrevnat: 1024, svc: 2048, member: 2048 });
    assert.is(first.maps.ct.maxEntries, 4096);
    assert.is(first.maps.aff.maxEntries, 1024);
    assert.is(first.maps.svc.maxEntries, 2048);
    assert.is(first.maps.member.maxEntries, 2048);
    first.close();
    // A restart asking for other sizes adopts the pins (and their entries) as they are.
    const again = BpfDatapath.load(loadShim(), root, { ct: 8192, aff: 1024, skrevnat: 1024, svc: 4096, member: 4096 });
    assert.is(again.maps.ct.maxEntries, 4096);
    assert.equal(again.sizes, { ct: 4096, aff: 1024, skrevnat: 1024, svc: 2048, member: 2048 });
    again.close();
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

s('a service map too small: the error names the maps and counts, and the state lands once it fits', (ctx) => {
  const root = `${ctx.root}-full`;
  try {
    const dp = BpfDatapath.load(loadShim(), root, { ct: 1024, aff: 1024, skrevnat: 1024, svc: 64, member: 64 });
    const store = new ClusterStore(() => assert.unreachable('valid objects'));
    const syncer = new Syncer({ store, reconciler: new Reconciler(dp.maps, dp.writes), log: createLogger('error', () => undefined), ctx: { nodeName: 'n1', nodePortAddrs: [] } });
    // Four services of 20 endpoints: 4 x (1 + 20) svc entries and 4 x 20 members, in maps of 64.
    for (let i = 0; i < 4; i++) {
      store.upsertService({ metadata: { name: `s${i}`, namespace: 'full' }, spec: { clusterIP: `10.96.7.${i}`, ports: [{ port: 80 }] } }, 'test');
      const endpoints = Array.from({ length: 20 }, (_, j) => ({ addresses: [`10.244.7.${i * 20 + j}`] }));
      store.upsertSlice({ metadata: { name: `s${i}-1`, namespace: 'full', labels: { 'kubernetes.io/service-name': `s${i}` } }, addressType: 'IPv4', ports: [{ port: 8080 }], endpoints }, 'test');
    }
    const err = thrown(() => syncer.sync());
    assert.instance(err, MapFullError);
    assert.equal((err as MapFullError).maps, [
      { map: 'weir1_svc', wanted: 84, max: 64 },
      { map: 'weir1_member', wanted: 80, max: 64 },
    ]);
    assert.match((err as Error).message, /map weir1_svc is full: 84 entries wanted, max_entries 64/);
    // The first failed write filled the membership map with s0's, s1's and
    // part of s2's entries. s0 and s1 go: the retry must delete theirs before
    // it has room for the rest of s2's and s3's (make-before-break order
    // would fail the same way forever), and nothing else is left behind.
    store.deleteService('full/s0' as ObjectKey);
    store.deleteService('full/s1' as ObjectKey);
    syncer.sync();
    const { frontends, backends } = readServices(dp.maps);
    assert.equal(frontends.map((f) => `${f.addr}:${f.port}/${f.proto} ${f.backends.filter((b) => b !== null).length}`).sort(), ['10.96.7.2:80/TCP 20', '10.96.7.3:80/TCP 20']);
    assert.is(backends.length, 40);
    assert.is(dp.maps.svc.dump().length, 42);
    assert.is(dp.maps.member.dump().length, 40);
    dp.close();
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

s('verdicts are counted per reason', (ctx) => {
  assert.ok(verdictCount(ctx, 'forward') >= 3n, 'forward');
  assert.ok(verdictCount(ctx, 'revnat') >= 1n, 'revnat');
  assert.ok(verdictCount(ctx, 'reject_no_endpoints') >= 3n, 'reject_no_endpoints');
});

s.run();
