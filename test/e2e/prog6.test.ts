/**
 * The real tc program on crafted IPv6 packets (BPF_PROG_TEST_RUN): DNAT and
 * reverse NAT with the L4 checksum over the IPv6 pseudo header, masquerade,
 * hairpin, the RST and ICMPv6 rejects, ICMPv6 errors about a NATed flow
 * translated back, extension headers, and what must pass untouched
 * (neighbour discovery, other traffic). Checksums are verified from
 * scratch. Maps are written directly; the object is loaded with its maps
 * pinned under a unique test directory and attached nowhere.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as C from '../../ts/datapath/codecs';
import { BpfDatapath } from '../../ts/datapath/loader';
import { loadShim } from '../../ts/datapath/ffi';
import { VERDICTS, Verdict, verdictIndex } from '../../ts/datapath/verdicts';
import { keyString } from '../../ts/datapath/maps';
import { buildPacket, buildPacket6, checksumsValid6, readHeaders6 } from '../../ts/datapath/packet';

const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;
const CLIENT = 'fd00:244:1::20';
const VIP = 'fd00:96::a';
const EMPTY_VIP = 'fd00:96::b';
const NODEPORT_VIP = 'fd00:77::10'; // a node address carrying a NodePort
const LB_VIP = 'fd00:99::1'; // a LoadBalancer IP with loadBalancerSourceRanges
const BACKEND = 'fd00:244:1::30';
const SNAT = 'fd00:77::10';
const HAIRPIN = 'fd00:a9fe::1';
const ROUTER = 'fd00:1::1';

interface Ctx {
  dp: BpfDatapath;
  root: string;
}
const s = suite<Ctx>('tc program, IPv6 (BPF_PROG_TEST_RUN)');

type Prog = 'pod' | 'ext' | 'host';
function run(ctx: Ctx, pkt: Buffer, prog: Prog = 'pod'): { retval: number; out: Buffer } {
  const r = loadShim().progTestRun(ctx.dp.progFds[prog], pkt, pkt.length + 256);
  return { retval: r.retval, out: r.data };
}

const hdr = (pkt: Buffer): { src: string; dst: string; sport: number; dport: number; proto: number } => {
  const { l4: _l4, ...h } = readHeaders6(pkt);
  return h;
};

/** Packets counted under a reason in a family, summed over CPUs. */
function verdictCount(ctx: Ctx, reason: Verdict, family: 4 | 6 = 6): bigint {
  const idx = verdictIndex(reason, family);
  const v = ctx.dp.maps.verdicts.dump().find(([k]) => Buffer.from(k, 'latin1').readUInt32LE(0) === idx)![1];
  let n = 0n;
  for (let c = 0; c < ctx.dp.maps.verdicts.cpus; c++) n += v.readBigUInt64LE(c * 8);
  return n;
}

function allCounts(ctx: Ctx, family: 4 | 6): bigint[] {
  return VERDICTS.map((v) => verdictCount(ctx, v, family));
}

s.before((ctx) => {
  const root = `/sys/fs/bpf/weir-progtest6-${crypto.randomBytes(3).toString('hex')}`;
  ctx.root = root;
  process.on('exit', () => fs.rmSync(root, { recursive: true, force: true }));
  ctx.dp = BpfDatapath.load(loadShim(), ctx.root);
  ctx.dp.writeConfig({ hairpinAddr: '169.254.42.1', snatAddr: '192.168.77.10', masqueradeAll: false, haveClusterCidrs: false });
  ctx.dp.writeConfig6({ hairpinAddr: HAIRPIN, snatAddr: SNAT, haveClusterCidrs: false });
  const m = ctx.dp.maps;
  const be = (id: number, addr: string, port: number, proto: number): void => m.be6.upsert([[keyString(C.u32Key.encode({ value: id })), C.backend6.encode({ addr, port, proto, flags: 0 })]]);
  const svc = (addr: string, port: number, proto: number, rev: number, ids: number[], flags: number = C.SVC_F.CLUSTER_IP): void => {
    ids.forEach((id, i) => m.svc6.upsert([[keyString(C.svc6Key.encode({ addr, port, proto, slot: i + 1 })), C.svcVal.encode({ backend_id: id })]]));
    ids.forEach((id) => m.member.upsert([[keyString(C.memberKey.encode({ rev_nat_id: rev, backend_id: id })), C.u32Key.encode({ value: 1 })]]));
    m.revnat6.upsert([[keyString(C.u32Key.encode({ value: rev })), C.revnat6.encode({ addr, port })]]);
    m.svc6.upsert([[keyString(C.svc6Key.encode({ addr, port, proto, slot: 0 })), C.svcVal.encode({ count: ids.length, rev_nat_id: rev, flags })]]);
  };
  // Ids from the same space as IPv4's (the prog tests of IPv4 use small ones; these would coexist).
  be(101, BACKEND, 8080, 6);
  be(102, BACKEND, 5353, 17);
  svc(VIP, 80, 6, 101, [101]);
  svc(VIP, 53, 17, 102, [102]);
  svc(EMPTY_VIP, 80, 6, 103, []);
  svc(EMPTY_VIP, 53, 17, 104, []);
  svc(NODEPORT_VIP, 30080, 6, 105, [101], C.SVC_F.NODE_PORT);
  svc(LB_VIP, 80, 6, 106, [101], C.SVC_F.LOAD_BALANCER | C.SVC_F.SRC_RANGES);
  // loadBalancerSourceRanges of rev_nat id 106: fd00:244::/32 only.
  m.cidr6.upsert([[keyString(C.cidr6Key.encode({ prefixlen: 32 + 32, owner: 106, addr: 'fd00:244::' })), C.u32Key.encode({ value: 1 })]]);
});

s.after((ctx) => {
  ctx.dp?.close();
  if (ctx.root) fs.rmSync(ctx.root, { recursive: true, force: true });
});

s('TCP SYN to an IPv6 ClusterIP: DNAT to the backend, checksum valid over the new pseudo header', (ctx) => {
  const before = verdictCount(ctx, 'forward');
  const { retval, out } = run(ctx, buildPacket6({ proto: 'tcp', src: CLIENT, dst: VIP, sport: 40001, dport: 80, payload: 'hello' }));
  assert.is(retval, TC_ACT_OK);
  assert.equal(hdr(out), { src: CLIENT, dst: BACKEND, sport: 40001, dport: 8080, proto: 6 });
  assert.equal(checksumsValid6(out), { len: true, l4: true });
  assert.is(verdictCount(ctx, 'forward'), before + 1n);
});

s('the reply is reverse-NATed to come from the ClusterIP', (ctx) => {
  const before = verdictCount(ctx, 'revnat');
  const { retval, out } = run(ctx, buildPacket6({ proto: 'tcp', src: BACKEND, dst: CLIENT, sport: 8080, dport: 40001, flags: 0x12, payload: 'world' }));
  assert.is(retval, TC_ACT_OK);
  assert.equal(hdr(out), { src: VIP, dst: CLIENT, sport: 80, dport: 40001, proto: 6 });
  assert.equal(checksumsValid6(out), { len: true, l4: true });
  assert.is(verdictCount(ctx, 'revnat'), before + 1n);
  // Later segments of the flow keep their backend.
  const ack = run(ctx, buildPacket6({ proto: 'tcp', src: CLIENT, dst: VIP, sport: 40001, dport: 80, flags: 0x10 }));
  assert.is(hdr(ack.out).dst, BACKEND);
  assert.equal(checksumsValid6(ack.out), { len: true, l4: true });
});

s('UDP to an IPv6 ClusterIP and back: both checksums valid', (ctx) => {
  const q = run(ctx, buildPacket6({ proto: 'udp', src: CLIENT, dst: VIP, sport: 40002, dport: 53, payload: 'query' }));
  assert.equal(hdr(q.out), { src: CLIENT, dst: BACKEND, sport: 40002, dport: 5353, proto: 17 });
  assert.equal(checksumsValid6(q.out), { len: true, l4: true });
  const a = run(ctx, buildPacket6({ proto: 'udp', src: BACKEND, dst: CLIENT, sport: 5353, dport: 40002, payload: 'answer!' }));
  assert.equal(hdr(a.out), { src: VIP, dst: CLIENT, sport: 53, dport: 40002, proto: 17 });
  assert.equal(checksumsValid6(a.out), { len: true, l4: true });
});

s('extension headers (hop-by-hop, destination options) are walked: DNAT behind them, headers kept', (ctx) => {
  const pkt = buildPacket6({ proto: 'tcp', src: CLIENT, dst: VIP, sport: 40003, dport: 80, ext: [0, 60], payload: 'x' });
  const { retval, out } = run(ctx, pkt);
  assert.is(retval, TC_ACT_OK);
  const h = readHeaders6(out);
  assert.is(h.l4, 14 + 40 + 16, 'two extension headers still there');
  assert.equal(hdr(out), { src: CLIENT, dst: BACKEND, sport: 40003, dport: 8080, proto: 6 });
  assert.equal(out.subarray(54, 70), pkt.subarray(54, 70), 'extension headers unchanged');
  assert.equal(checksumsValid6(out), { len: true, l4: true });
});

s('NodePort from outside: masqueraded to the node IPv6 address from a high port; the reply is translated back', (ctx) => {
  const fwd = run(ctx, buildPacket6({ proto: 'tcp', src: 'fd00:5::7', dst: NODEPORT_VIP, sport: 40004, dport: 30080 }), 'ext');
  const h = hdr(fwd.out);
  assert.equal({ ...h, sport: 0 }, { src: SNAT, dst: BACKEND, sport: 0, dport: 8080, proto: 6 });
  assert.ok(h.sport >= 61000, `masquerade port ${h.sport}`);
  assert.equal(checksumsValid6(fwd.out), { len: true, l4: true });
  assert.ok(verdictCount(ctx, 'forward_redirect') >= 1n, 'sent by FIB redirect');

  const reply = run(ctx, buildPacket6({ proto: 'tcp', src: BACKEND, dst: SNAT, sport: 8080, dport: h.sport, flags: 0x12 }), 'pod');
  assert.equal(hdr(reply.out), { src: NODEPORT_VIP, dst: 'fd00:5::7', sport: 30080, dport: 40004, proto: 6 });
  assert.equal(checksumsValid6(reply.out), { len: true, l4: true });
  assert.ok(verdictCount(ctx, 'revnat_redirect') >= 1n);
});

s('hairpin: a pod reaching itself through its ClusterIP gets the hairpin source', (ctx) => {
  const { out } = run(ctx, buildPacket6({ proto: 'tcp', src: BACKEND, dst: VIP, sport: 40005, dport: 80 }));
  const h = hdr(out);
  assert.equal({ ...h, sport: 0 }, { src: HAIRPIN, dst: BACKEND, sport: 0, dport: 8080, proto: 6 });
  assert.equal(checksumsValid6(out), { len: true, l4: true });
  const reply = run(ctx, buildPacket6({ proto: 'tcp', src: BACKEND, dst: HAIRPIN, sport: 8080, dport: h.sport, flags: 0x12 }));
  assert.equal(hdr(reply.out), { src: VIP, dst: BACKEND, sport: 80, dport: 40005, proto: 6 });
  assert.equal(checksumsValid6(reply.out), { len: true, l4: true });
});

s('loadBalancerSourceRanges: a source inside is NATed, one outside dropped as drop_source_range', (ctx) => {
  const inside = run(ctx, buildPacket6({ proto: 'tcp', src: 'fd00:244:9::1', dst: LB_VIP, sport: 40006, dport: 80 }), 'ext');
  assert.is(hdr(inside.out).dst, BACKEND);
  const before = verdictCount(ctx, 'drop_source_range');
  const outside = run(ctx, buildPacket6({ proto: 'tcp', src: 'fd00:245::1', dst: LB_VIP, sport: 40006, dport: 80 }), 'ext');
  assert.is(outside.retval, TC_ACT_SHOT);
  assert.is(verdictCount(ctx, 'drop_source_range'), before + 1n);
});

s('no endpoints, TCP SYN: a RST|ACK from the ClusterIP, checksum valid, sent back out', (ctx) => {
  const before = verdictCount(ctx, 'reject_no_endpoints');
  const { retval, out } = run(ctx, buildPacket6({ proto: 'tcp', src: CLIENT, dst: EMPTY_VIP, sport: 40007, dport: 80, seq: 5000, payload: 'data' }));
  assert.is(retval, TC_ACT_REDIRECT);
  assert.equal(hdr(out), { src: EMPTY_VIP, dst: CLIENT, sport: 80, dport: 40007, proto: 6 });
  assert.is(out.length, 14 + 40 + 20, 'no payload');
  assert.is(out[54 + 13], 0x14, 'RST|ACK');
  assert.is(out.readUInt32BE(54 + 8), 5000 + 4 + 1, 'acknowledges the SYN and its data');
  assert.equal(out.subarray(0, 6), Buffer.from('020000000002', 'hex'), 'MACs swapped');
  assert.equal(checksumsValid6(out), { len: true, l4: true });
  assert.is(verdictCount(ctx, 'reject_no_endpoints'), before + 1n);
});

s('no endpoints, TCP with extension headers: the RST carries none', (ctx) => {
  const { retval, out } = run(ctx, buildPacket6({ proto: 'tcp', src: CLIENT, dst: EMPTY_VIP, sport: 40008, dport: 80, ext: [60] }));
  assert.is(retval, TC_ACT_REDIRECT);
  assert.is(out.length, 14 + 40 + 20);
  assert.is(out[20], 6, 'next header TCP');
  assert.equal(hdr(out), { src: EMPTY_VIP, dst: CLIENT, sport: 80, dport: 40008, proto: 6 });
  assert.equal(checksumsValid6(out), { len: true, l4: true });
});

s('no endpoints, UDP: ICMPv6 port unreachable from the ClusterIP quoting the datagram', (ctx) => {
  const orig = buildPacket6({ proto: 'udp', src: CLIENT, dst: EMPTY_VIP, sport: 40009, dport: 53, payload: 'some payload' });
  const { retval, out } = run(ctx, orig);
  assert.is(retval, TC_ACT_REDIRECT);
  assert.is(out.length, 14 + 40 + 8 + 40 + 8);
  const h = readHeaders6(out);
  assert.equal({ src: h.src, dst: h.dst, proto: h.proto }, { src: EMPTY_VIP, dst: CLIENT, proto: 58 });
  assert.equal([out[54], out[55]], [1, 4], 'destination unreachable / port unreachable');
  assert.equal(out.subarray(62), orig.subarray(14, 14 + 48), 'quotes the IPv6 header + 8 bytes');
  assert.equal(checksumsValid6(out), { len: true, l4: true });
});

s('ICMPv6 Packet Too Big about a reply (sent to the ClusterIP) goes to the backend, quote translated back', (ctx) => {
  // The flow of the first tests: CLIENT:40001 -> VIP:80 -> BACKEND:8080. A
  // router toward the client could not forward the reply VIP:80 -> CLIENT:40001.
  const reply = buildPacket6({ proto: 'tcp', src: VIP, dst: CLIENT, sport: 80, dport: 40001, flags: 0x10, payload: 'x'.repeat(64) });
  const ptb = buildPacket6({ proto: 'icmp6', src: ROUTER, dst: VIP, icmpType: 2, icmpWord: 1280, payload: reply.subarray(14) });
  const before = verdictCount(ctx, 'forward');
  const { retval, out } = run(ctx, ptb, 'ext');
  assert.is(retval, TC_ACT_OK);
  const h = readHeaders6(out);
  assert.equal({ src: h.src, dst: h.dst, proto: h.proto }, { src: ROUTER, dst: BACKEND, proto: 58 }, 'to the backend');
  assert.equal([out[54], out.readUInt32BE(58)], [2, 1280], 'still Packet Too Big, same MTU');
  const quote = out.subarray(62);
  const q = readHeaders6(Buffer.concat([out.subarray(0, 14), quote]));
  assert.equal({ ...q, l4: 0 }, { src: BACKEND, dst: CLIENT, sport: 8080, dport: 40001, proto: 6, l4: 0 }, 'the quote is the packet as the backend sent it');
  assert.equal(checksumsValid6(out), { len: true, l4: true });
  assert.is(verdictCount(ctx, 'forward'), before + 1n);
});

s('ICMPv6 errors about a masqueraded request go to the client, quote and destination translated back', (ctx) => {
  const fwd = run(ctx, buildPacket6({ proto: 'udp', src: 'fd00:5::8', dst: NODEPORT_VIP, sport: 40010, dport: 30080, payload: 'x' }), 'ext');
  // No UDP NodePort: use the TCP one's flow instead.
  assert.equal(fwd.out, buildPacket6({ proto: 'udp', src: 'fd00:5::8', dst: NODEPORT_VIP, sport: 40010, dport: 30080, payload: 'x' }), 'no UDP frontend: untouched');
  const syn = run(ctx, buildPacket6({ proto: 'tcp', src: 'fd00:5::8', dst: NODEPORT_VIP, sport: 40010, dport: 30080, payload: 'y'.repeat(100) }), 'ext');
  const sent = hdr(syn.out);
  assert.is(sent.src, SNAT);
  // A router toward the backend could not forward it: time exceeded, to the masquerade address.
  const te = buildPacket6({ proto: 'icmp6', src: ROUTER, dst: SNAT, icmpType: 3, payload: syn.out.subarray(14) });
  const before = verdictCount(ctx, 'revnat');
  const { retval, out } = run(ctx, te, 'pod');
  assert.is(retval, TC_ACT_OK);
  const h = readHeaders6(out);
  assert.equal({ src: h.src, dst: h.dst }, { src: ROUTER, dst: 'fd00:5::8' }, 'to the client');
  const q = readHeaders6(Buffer.concat([out.subarray(0, 14), out.subarray(62)]));
  assert.equal({ ...q, l4: 0 }, { src: 'fd00:5::8', dst: NODEPORT_VIP, sport: 40010, dport: 30080, proto: 6, l4: 0 }, 'the quote is the packet as the client sent it');
  assert.equal(checksumsValid6(out), { len: true, l4: true });
  assert.is(verdictCount(ctx, 'revnat'), before + 1n);
});

s('ICMPv6 errors about no flow of ours, neighbour discovery and echo pass untouched', (ctx) => {
  const before = allCounts(ctx, 6);
  const stranger = buildPacket6({ proto: 'tcp', src: VIP, dst: CLIENT, sport: 80, dport: 49999, flags: 0x10 });
  for (const pkt of [
    buildPacket6({ proto: 'icmp6', src: ROUTER, dst: VIP, icmpType: 2, icmpWord: 1280, payload: stranger.subarray(14) }),
    // Neighbor solicitation for the ClusterIP, to its solicited-node multicast address.
    buildPacket6({ proto: 'icmp6', src: 'fe80::1', dst: 'ff02::1:ff00:a', icmpType: 135, hopLimit: 255, payload: Buffer.concat([Buffer.from(new Uint8Array(16).fill(0)), Buffer.alloc(0)]) }),
    buildPacket6({ proto: 'icmp6', src: 'fe80::1', dst: VIP, icmpType: 135, hopLimit: 255, payload: Buffer.alloc(16) }),
    buildPacket6({ proto: 'icmp6', src: 'fe80::2', dst: 'fe80::1', icmpType: 136, hopLimit: 255, payload: Buffer.alloc(16) }),
    buildPacket6({ proto: 'icmp6', src: CLIENT, dst: VIP, icmpType: 128, payload: 'ping' }),
  ]) {
    const { retval, out } = run(ctx, pkt);
    assert.is(retval, TC_ACT_OK);
    assert.equal(out, pkt);
  }
  assert.equal(allCounts(ctx, 6), before, 'counted nowhere');
});

s('packets that are not ours pass untouched and count nowhere', (ctx) => {
  const before = allCounts(ctx, 6);
  for (const pkt of [
    buildPacket6({ proto: 'tcp', src: CLIENT, dst: BACKEND, sport: 40011, dport: 8080 }),
    buildPacket6({ proto: 'udp', src: CLIENT, dst: VIP, sport: 40011, dport: 80 }),
    buildPacket6({ proto: 'tcp', src: CLIENT, dst: 'fd00:96::c', sport: 40011, dport: 80 }),
  ]) {
    const { retval, out } = run(ctx, pkt);
    assert.is(retval, TC_ACT_OK);
    assert.equal(out, pkt);
  }
  assert.equal(allCounts(ctx, 6), before);
});

/**
 * Split an Ethernet/IPv6 packet (no extension headers) into fragments of
 * `chunk` bytes of its payload (a multiple of 8), each with a fragment
 * header of identification `id`, as a sender's kernel does.
 */
function fragments6(pkt: Buffer, id: number, chunk: number): Buffer[] {
  const data = pkt.subarray(54);
  const out: Buffer[] = [];
  for (let off = 0; off < data.length; off += chunk) {
    const part = data.subarray(off, off + chunk);
    const fh = Buffer.alloc(8);
    fh[0] = pkt[20]!;
    fh.writeUInt16BE(off | (off + chunk < data.length ? 1 : 0), 2);
    fh.writeUInt32BE(id, 4);
    const f = Buffer.concat([pkt.subarray(0, 54), fh, part]);
    f[20] = 44;
    f.writeUInt16BE(8 + part.length, 18);
    out.push(f);
  }
  return out;
}

/** The datagram the receiver reassembles from fragments given in offset order. */
function reassemble6(frags: Buffer[]): Buffer {
  const pkt = Buffer.concat([frags[0]!.subarray(0, 54), ...frags.map((f) => f.subarray(62))]);
  pkt[20] = frags[0]![54]!;
  pkt.writeUInt16BE(pkt.length - 54, 18);
  return pkt;
}

s('a fragmented UDP datagram to an IPv6 ClusterIP: every fragment DNATed, the datagram reassembles with a valid checksum', (ctx) => {
  const whole = buildPacket6({ proto: 'udp', src: CLIENT, dst: VIP, sport: 40012, dport: 53, payload: 'z'.repeat(150) });
  const frags = fragments6(whole, 0xabcd, 64);
  assert.is(frags.length, 3);
  const before = verdictCount(ctx, 'forward');
  const out = frags.map((f) => run(ctx, f));
  for (const o of out) {
    assert.is(o.retval, TC_ACT_OK);
    assert.equal({ src: readHeaders6(o.out).src, dst: readHeaders6(o.out).dst }, { src: CLIENT, dst: BACKEND });
  }
  const d = reassemble6(out.map((o) => o.out));
  assert.equal(hdr(d), { src: CLIENT, dst: BACKEND, sport: 40012, dport: 5353, proto: 17 });
  assert.equal(checksumsValid6(d), { len: true, l4: true });
  assert.equal(d.subarray(62), whole.subarray(62), 'payload intact');
  assert.is(verdictCount(ctx, 'forward'), before + 3n);

  // The backend's fragmented answer: every fragment reverse-NATed.
  const answer = buildPacket6({ proto: 'udp', src: BACKEND, dst: CLIENT, sport: 5353, dport: 40012, payload: 'a'.repeat(200) });
  const back = fragments6(answer, 0x1234, 96).map((f) => run(ctx, f).out);
  const r = reassemble6(back);
  assert.equal(hdr(r), { src: VIP, dst: CLIENT, sport: 53, dport: 40012, proto: 17 });
  assert.equal(checksumsValid6(r), { len: true, l4: true });
});

s('a later fragment whose first fragment was not seen passes unchanged, counted as frag_unmatched', (ctx) => {
  const whole = buildPacket6({ proto: 'udp', src: CLIENT, dst: VIP, sport: 40016, dport: 53, payload: 'z'.repeat(100) });
  const later = fragments6(whole, 0x7777, 64)[1]!;
  const before = verdictCount(ctx, 'frag_unmatched');
  const { retval, out } = run(ctx, later);
  assert.is(retval, TC_ACT_OK);
  assert.equal(out, later);
  assert.is(verdictCount(ctx, 'frag_unmatched'), before + 1n);
});

s('a ::1 source from a pod is dropped as drop_loopback_source; a TCP segment weir never saw open passes (pass_midflow)', (ctx) => {
  const b = { lo: verdictCount(ctx, 'drop_loopback_source'), mid: verdictCount(ctx, 'pass_midflow') };
  assert.is(run(ctx, buildPacket6({ proto: 'udp', src: '::1', dst: VIP, sport: 40013, dport: 53, payload: 'x' })).retval, TC_ACT_SHOT);
  const ack = buildPacket6({ proto: 'tcp', src: CLIENT, dst: VIP, sport: 40014, dport: 80, flags: 0x10 });
  assert.equal(run(ctx, ack).out, ack);
  assert.is(verdictCount(ctx, 'drop_loopback_source'), b.lo + 1n);
  assert.is(verdictCount(ctx, 'pass_midflow'), b.mid + 1n);
});

s('verdicts are counted per family: IPv6 traffic moves only the IPv6 counters, IPv4 traffic only the IPv4 ones', (ctx) => {
  const v4 = allCounts(ctx, 4);
  const v6 = allCounts(ctx, 6);
  run(ctx, buildPacket6({ proto: 'udp', src: CLIENT, dst: VIP, sport: 40015, dport: 53, payload: 'q' }));
  assert.equal(allCounts(ctx, 4), v4, 'IPv4 counters unchanged');
  assert.is(verdictCount(ctx, 'forward', 6), v6[VERDICTS.indexOf('forward')]! + 1n);
  // An IPv4 packet to an address no IPv4 service has: nothing counted, in either family.
  run(ctx, buildPacket({ proto: 'udp', src: '10.244.1.20', dst: '10.96.0.99', sport: 40015, dport: 53, payload: 'q' }));
  assert.equal(allCounts(ctx, 4), v4);
  // One the IPv4 maps know counts in the IPv4 family only.
  const m = ctx.dp.maps;
  m.be.upsert([[keyString(C.u32Key.encode({ value: 201 })), C.backend.encode({ addr: '10.244.1.30', port: 5353, proto: 17, flags: 0 })]]);
  m.svc.upsert([[keyString(C.svcKey.encode({ addr: '10.96.0.10', port: 53, proto: 17, slot: 1 })), C.svcVal.encode({ backend_id: 201 })]]);
  m.member.upsert([[keyString(C.memberKey.encode({ rev_nat_id: 201, backend_id: 201 })), C.u32Key.encode({ value: 1 })]]);
  m.revnat.upsert([[keyString(C.u32Key.encode({ value: 201 })), C.revnat.encode({ addr: '10.96.0.10', port: 53 })]]);
  m.svc.upsert([[keyString(C.svcKey.encode({ addr: '10.96.0.10', port: 53, proto: 17, slot: 0 })), C.svcVal.encode({ count: 1, rev_nat_id: 201, flags: C.SVC_F.CLUSTER_IP })]]);
  const v6b = allCounts(ctx, 6);
  run(ctx, buildPacket({ proto: 'udp', src: '10.244.1.20', dst: '10.96.0.10', sport: 40015, dport: 53, payload: 'q' }));
  assert.is(verdictCount(ctx, 'forward', 4), v4[VERDICTS.indexOf('forward')]! + 1n);
  assert.equal(allCounts(ctx, 6), v6b, 'IPv6 counters unchanged');
});

s.run();
