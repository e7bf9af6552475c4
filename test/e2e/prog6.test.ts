/**
 * The real tc program on crafted IPv6 packets (BPF_PROG_TEST_RUN): DNAT and
 * reverse NAT with the L4 checksum over the IPv6 pseudo header, masquerade,
 * hairpin, the RST and ICMPv6 rejects, ICMPv6 errors about a NATed flow
 * translated back, extension headers, and what must pass untouched
 * (neighbour discovery, other traffic). Checksums are verified from
 * scratch. Maps are written directly; the object is loaded with its maps
 * pinned under a unique test directory and attached nowhere.
 */
import { spawn, spawnSync } from 'node:child_process';
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

s('SCTP over IPv6: DNAT to the backend port with the CRC32c updated at every length; no endpoints: ICMPv6 port unreachable', (ctx) => {
  const m = ctx.dp.maps;
  m.be6.upsert([[keyString(C.u32Key.encode({ value: 141 })), C.backend6.encode({ addr: BACKEND, port: 38412, proto: 132, flags: 0 })]]);
  m.svc6.upsert([[keyString(C.svc6Key.encode({ addr: VIP, port: 36412, proto: 132, slot: 1 })), C.svcVal.encode({ backend_id: 141 })]]);
  m.member.upsert([[keyString(C.memberKey.encode({ rev_nat_id: 140, backend_id: 141 })), C.u32Key.encode({ value: 1 })]]);
  m.revnat6.upsert([[keyString(C.u32Key.encode({ value: 140 })), C.revnat6.encode({ addr: VIP, port: 36412 })]]);
  m.svc6.upsert([[keyString(C.svc6Key.encode({ addr: VIP, port: 36412, proto: 132, slot: 0 })), C.svcVal.encode({ count: 1, rev_nat_id: 140, flags: C.SVC_F.CLUSTER_IP })]]);
  m.svc6.upsert([[keyString(C.svc6Key.encode({ addr: EMPTY_VIP, port: 36412, proto: 132, slot: 0 })), C.svcVal.encode({ count: 0, rev_nat_id: 142, flags: C.SVC_F.CLUSTER_IP })]]);
  for (const [i, len] of [0, 1, 13, 200, 1300].entries()) {
    const { retval, out } = run(ctx, buildPacket6({ proto: 'sctp', src: CLIENT, dst: VIP, sport: 40100 + i, dport: 36412, payload: 'p'.repeat(len) }));
    assert.is(retval, TC_ACT_OK);
    assert.equal(hdr(out), { src: CLIENT, dst: BACKEND, sport: 40100 + i, dport: 38412, proto: 132 }, `payload ${len}`);
    assert.equal(checksumsValid6(out), { len: true, l4: true }, `CRC32c valid, payload ${len}`);
  }
  const reply = run(ctx, buildPacket6({ proto: 'sctp', src: BACKEND, dst: CLIENT, sport: 38412, dport: 40100, payload: 'ack' }));
  assert.equal(hdr(reply.out), { src: VIP, dst: CLIENT, sport: 36412, dport: 40100, proto: 132 });
  assert.equal(checksumsValid6(reply.out), { len: true, l4: true });
  const rej = run(ctx, buildPacket6({ proto: 'sctp', src: CLIENT, dst: EMPTY_VIP, sport: 40110, dport: 36412 }));
  assert.is(rej.retval, TC_ACT_REDIRECT);
  assert.equal([rej.out[20], rej.out[54], rej.out[55]], [58, 1, 4], 'ICMPv6 port unreachable');
  assert.equal(checksumsValid6(rej.out), { len: true, l4: true });
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
  const before = verdictCount(ctx, 'revnat_redirect');
  const { retval, out } = run(ctx, te, 'pod');
  assert.is(retval, TC_ACT_OK);
  const h = readHeaders6(out);
  assert.equal({ src: h.src, dst: h.dst }, { src: ROUTER, dst: 'fd00:5::8' }, 'to the client');
  const q = readHeaders6(Buffer.concat([out.subarray(0, 14), out.subarray(62)]));
  assert.equal({ ...q, l4: 0 }, { src: 'fd00:5::8', dst: NODEPORT_VIP, sport: 40010, dport: 30080, proto: 6, l4: 0 }, 'the quote is the packet as the client sent it');
  assert.equal(checksumsValid6(out), { len: true, l4: true });
  assert.is(verdictCount(ctx, 'revnat_redirect'), before + 1n, 'sent on as the flow is: by FIB redirect');
});

s('an ICMPv6 error this node sent itself to a NodePort address (through lo) goes to the backend by FIB redirect', (ctx) => {
  // The masqueraded NodePort flow: fd00:5::7:40004 -> NODEPORT_VIP:30080, sent as SNAT:port -> BACKEND:8080.
  // Its reply leaves reverse-NATed as NODEPORT_VIP:30080 -> fd00:5::7:40004; this node's own
  // forwarding found it too big and sent the error to the reply's source, a local address.
  const reply = buildPacket6({ proto: 'tcp', src: NODEPORT_VIP, dst: 'fd00:5::7', sport: 30080, dport: 40004, flags: 0x10, payload: 'x'.repeat(40) });
  const ptb = buildPacket6({ proto: 'icmp6', src: SNAT, dst: NODEPORT_VIP, icmpType: 2, icmpWord: 1280, payload: reply.subarray(14) });
  const before = verdictCount(ctx, 'forward_redirect');
  const { out } = run(ctx, ptb, 'host');
  const h = readHeaders6(out);
  assert.equal({ src: h.src, dst: h.dst }, { src: SNAT, dst: BACKEND });
  const q = readHeaders6(Buffer.concat([out.subarray(0, 14), out.subarray(62)]));
  assert.equal({ src: q.src, dst: q.dst, sport: q.sport, dport: q.dport }, { src: BACKEND, dst: SNAT, sport: 8080, dport: q.dport });
  assert.ok(q.dport >= 61000, 'the masquerade port the backend knows');
  assert.equal(checksumsValid6(out), { len: true, l4: true });
  assert.is(verdictCount(ctx, 'forward_redirect'), before + 1n);
});

s('egress: packet too big this node sent about a DNATed request reaches the client quoting the ClusterIP (icmp_local/ipv6)', (ctx) => {
  // CLIENT:40001 -> VIP:80 was forwarded as CLIENT:40001 -> BACKEND:8080 and did not fit the next link.
  const fwd = buildPacket6({ proto: 'tcp', src: CLIENT, dst: BACKEND, sport: 40001, dport: 8080, flags: 0x10, payload: 'x'.repeat(64) });
  const ptb = buildPacket6({ proto: 'icmp6', src: SNAT, dst: CLIENT, icmpType: 2, icmpWord: 1280, payload: fwd.subarray(14) });
  const before = verdictCount(ctx, 'icmp_local');
  const r = loadShim().progTestRun(ctx.dp.egressFd, ptb, ptb.length + 256);
  assert.is(r.retval, TC_ACT_OK);
  const h = readHeaders6(r.data);
  assert.equal({ src: h.src, dst: h.dst, proto: h.proto }, { src: SNAT, dst: CLIENT, proto: 58 }, 'still to the client');
  assert.equal([r.data[54], r.data.readUInt32BE(58)], [2, 1280], 'still Packet Too Big, same MTU');
  const q = readHeaders6(Buffer.concat([r.data.subarray(0, 14), r.data.subarray(62)]));
  assert.equal({ ...q, l4: 0 }, { src: CLIENT, dst: VIP, sport: 40001, dport: 80, proto: 6, l4: 0 }, 'the quote is the packet as the client sent it');
  assert.equal(checksumsValid6(r.data), { len: true, l4: true });
  assert.is(verdictCount(ctx, 'icmp_local'), before + 1n);
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

s('sessionAffinity ClientIP: new flows of one client keep its backend (weir1_aff6); another client may get another', (ctx) => {
  const m = ctx.dp.maps;
  const addr = 'fd00:96::aff';
  const backends = ['fd00:244:2::1', 'fd00:244:2::2', 'fd00:244:2::3', 'fd00:244:2::4'];
  backends.forEach((b, i) => {
    m.be6.upsert([[keyString(C.u32Key.encode({ value: 111 + i })), C.backend6.encode({ addr: b, port: 8080, proto: 6, flags: 0 })]]);
    m.svc6.upsert([[keyString(C.svc6Key.encode({ addr, port: 80, proto: 6, slot: i + 1 })), C.svcVal.encode({ backend_id: 111 + i })]]);
    m.member.upsert([[keyString(C.memberKey.encode({ rev_nat_id: 110, backend_id: 111 + i })), C.u32Key.encode({ value: 1 })]]);
  });
  m.revnat6.upsert([[keyString(C.u32Key.encode({ value: 110 })), C.revnat6.encode({ addr, port: 80 })]]);
  m.svc6.upsert([
    [keyString(C.svc6Key.encode({ addr, port: 80, proto: 6, slot: 0 })), C.svcVal.encode({ count: 4, rev_nat_id: 110, flags: C.SVC_F.CLUSTER_IP | C.SVC_F.AFFINITY, affinity_timeout: 10800 })],
  ]);
  const chosen = new Set<string>();
  for (let i = 0; i < 12; i++) chosen.add(hdr(run(ctx, buildPacket6({ proto: 'tcp', src: CLIENT, dst: addr, sport: 41000 + i, dport: 80 })).out).dst);
  assert.is(chosen.size, 1, `one backend for one client: ${[...chosen].join(', ')}`);
  const aff = m.aff6.dump().map(([k, v]) => ({ ...C.aff6Key.decode(Buffer.from(k, 'latin1')), backend: C.affVal.decode(v).backend_id }));
  assert.equal(aff, [{ client: CLIENT, rev_nat_id: 110, backend: 111 + backends.indexOf([...chosen][0]!) }]);
  // Without affinity the same twelve flows spread (all on one of four backends: 1 in 4^11).
  m.svc6.upsert([[keyString(C.svc6Key.encode({ addr, port: 80, proto: 6, slot: 0 })), C.svcVal.encode({ count: 4, rev_nat_id: 110, flags: C.SVC_F.CLUSTER_IP })]]);
  const spread = new Set<string>();
  for (let i = 0; i < 12; i++) spread.add(hdr(run(ctx, buildPacket6({ proto: 'tcp', src: CLIENT, dst: addr, sport: 42000 + i, dport: 80 })).out).dst);
  assert.ok(spread.size > 1, 'random slots without affinity');
});

s('externalTrafficPolicy Local: an outside client gets a local endpoint and keeps its source; none local: drop_no_local_endpoints', (ctx) => {
  const m = ctx.dp.maps;
  const lb = 'fd00:99::2';
  const local = 'fd00:244:1::40';
  m.be6.upsert([[keyString(C.u32Key.encode({ value: 121 })), C.backend6.encode({ addr: local, port: 8080, proto: 6, flags: C.BE_F.LOCAL })]]);
  m.be6.upsert([[keyString(C.u32Key.encode({ value: 122 })), C.backend6.encode({ addr: 'fd00:244:9::40', port: 8080, proto: 6, flags: 0 })]]);
  for (const id of [121, 122]) m.member.upsert([[keyString(C.memberKey.encode({ rev_nat_id: 120, backend_id: id })), C.u32Key.encode({ value: 1 })]]);
  m.revnat6.upsert([[keyString(C.u32Key.encode({ value: 120 })), C.revnat6.encode({ addr: lb, port: 80 })]]);
  m.svc6.upsert([[keyString(C.svc6Key.encode({ addr: lb, port: 80, proto: 6, slot: 1 })), C.svcVal.encode({ backend_id: 122 })]]);
  m.svc6.upsert([[keyString(C.svc6Key.encode({ addr: lb, port: 80, proto: 6, slot: 0 })), C.svcVal.encode({ count: 1, rev_nat_id: 120, flags: C.SVC_F.LOAD_BALANCER | C.SVC_F.ETP_LOCAL })]]);
  const before = verdictCount(ctx, 'drop_no_local_endpoints');
  const none = run(ctx, buildPacket6({ proto: 'tcp', src: 'fd00:5::9', dst: lb, sport: 40017, dport: 80 }), 'ext');
  assert.is(none.retval, TC_ACT_SHOT, 'no local scope entry yet');
  assert.is(verdictCount(ctx, 'drop_no_local_endpoints'), before + 1n);
  m.svc6.upsert([[keyString(C.svc6Key.encode({ addr: lb, port: 80, proto: 6, scope: C.SCOPE_LOCAL, slot: 1 })), C.svcVal.encode({ backend_id: 121 })]]);
  m.svc6.upsert([
    [keyString(C.svc6Key.encode({ addr: lb, port: 80, proto: 6, scope: C.SCOPE_LOCAL, slot: 0 })), C.svcVal.encode({ count: 1, rev_nat_id: 120, flags: C.SVC_F.LOAD_BALANCER | C.SVC_F.ETP_LOCAL })],
  ]);
  const ok = run(ctx, buildPacket6({ proto: 'tcp', src: 'fd00:5::9', dst: lb, sport: 40017, dport: 80 }), 'ext');
  assert.equal(hdr(ok.out), { src: 'fd00:5::9', dst: local, sport: 40017, dport: 8080, proto: 6 }, 'local endpoint, source kept');
  assert.equal(checksumsValid6(ok.out), { len: true, l4: true });
});

s('loopback path: a node socket bound to ::1 is masqueraded to the node IPv6 address; its reply is handed back to lo', (ctx) => {
  const m = ctx.dp.maps;
  m.svc6.upsert([[keyString(C.svc6Key.encode({ addr: '::1', port: 30090, proto: 6, slot: 1 })), C.svcVal.encode({ backend_id: 101 })]]);
  m.member.upsert([[keyString(C.memberKey.encode({ rev_nat_id: 130, backend_id: 101 })), C.u32Key.encode({ value: 1 })]]);
  m.revnat6.upsert([[keyString(C.u32Key.encode({ value: 130 })), C.revnat6.encode({ addr: '::1', port: 30090 })]]);
  m.svc6.upsert([[keyString(C.svc6Key.encode({ addr: '::1', port: 30090, proto: 6, slot: 0 })), C.svcVal.encode({ count: 1, rev_nat_id: 130, flags: C.SVC_F.NODE_PORT })]]);
  const fwd = run(ctx, buildPacket6({ proto: 'tcp', src: '::1', dst: '::1', sport: 45000, dport: 30090 }), 'host');
  const h = hdr(fwd.out);
  assert.equal({ ...h, sport: 0 }, { src: SNAT, dst: BACKEND, sport: 0, dport: 8080, proto: 6 });
  assert.ok(h.sport >= 61000);
  assert.equal(checksumsValid6(fwd.out), { len: true, l4: true });
  const before = verdictCount(ctx, 'revnat_host');
  const reply = run(ctx, buildPacket6({ proto: 'tcp', src: BACKEND, dst: SNAT, sport: 8080, dport: h.sport, flags: 0x12 }));
  assert.is(reply.retval, TC_ACT_REDIRECT, 'handed to loopback ingress');
  assert.equal(hdr(reply.out), { src: '::1', dst: '::1', sport: 30090, dport: 45000, proto: 6 });
  assert.equal([...reply.out.subarray(0, 12)], new Array<number>(12).fill(0), "lo's all-zero MACs");
  assert.equal(checksumsValid6(reply.out), { len: true, l4: true });
  assert.is(verdictCount(ctx, 'revnat_host'), before + 1n);
  const again = run(ctx, reply.out, 'host');
  assert.equal(again.out, reply.out, 'on lo the reply passes untouched');
  // A packet too big about the masqueraded request goes to the node process by lo too, quoting what it sent.
  const err = run(ctx, buildPacket6({ proto: 'icmp6', src: ROUTER, dst: SNAT, icmpType: 2, icmpWord: 1280, payload: fwd.out.subarray(14) }), 'ext');
  assert.is(err.retval, TC_ACT_REDIRECT, 'error handed to loopback ingress');
  const eh = readHeaders6(err.out);
  assert.equal({ src: eh.src, dst: eh.dst }, { src: ROUTER, dst: '::1' });
  const q = readHeaders6(Buffer.concat([err.out.subarray(0, 14), err.out.subarray(62)]));
  assert.equal({ ...q, l4: 0 }, { src: '::1', dst: '::1', sport: 45000, dport: 30090, proto: 6, l4: 0 });
  assert.equal(checksumsValid6(err.out), { len: true, l4: true });
  assert.is(verdictCount(ctx, 'revnat_host'), before + 2n);
});

s('draining: a new IPv6 flow passes unchanged (pass_draining); a flow weir carries keeps its backend', (ctx) => {
  const cfgKey = keyString(C.u32Key.encode({ value: 0 }));
  const cfg = (flags: number): void => ctx.dp.maps.cfg.upsert([[cfgKey, C.config.encode({ hairpin_addr: '169.254.42.1', snat_addr: '192.168.77.10', flags })]]);
  run(ctx, buildPacket6({ proto: 'tcp', src: CLIENT, dst: VIP, sport: 40018, dport: 80 }));
  cfg(C.CFG_F.DRAIN);
  try {
    const before = verdictCount(ctx, 'pass_draining');
    const syn = buildPacket6({ proto: 'tcp', src: CLIENT, dst: VIP, sport: 40019, dport: 80 });
    assert.equal(run(ctx, syn).out, syn);
    assert.is(verdictCount(ctx, 'pass_draining'), before + 1n);
    assert.is(hdr(run(ctx, buildPacket6({ proto: 'tcp', src: CLIENT, dst: VIP, sport: 40018, dport: 80, flags: 0x10 })).out).dst, BACKEND);
  } finally {
    cfg(0);
  }
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

/**
 * The IPv6 socket hooks with real sockets: a network namespace and a cgroup
 * of this test's own (never the root ones), a backend listening in the
 * namespace, and a client process in both that connects (TCP) or sends
 * (UDP) to an IPv6 ClusterIP.
 */
interface SockCtx {
  dp: BpfDatapath;
  root: string;
  ns: string;
  cgroup: string;
}
const sk = suite<SockCtx>('socket hooks, IPv6 (connect6, sendmsg6, recvmsg6, getpeername6)');

const PY_SERVER = `
import socket, sys
t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("${BACKEND}", 8080)); t.listen(4)
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.bind(("${BACKEND}", 5353))
t4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t4.bind(("10.244.1.30", 8080)); t4.listen(4)
print("ready", flush=True)
c, a = t.accept(); c.sendall(b"tcp " + c.recv(100)); c.close()
d, a = u.recvfrom(100); u.sendto(b"udp " + d, a)
for _ in range(2):
    c, a = t4.accept(); c.sendall(b"tcp4 " + c.recv(100)); c.close()
`;

const PY_CLIENT = `
import socket
t = socket.create_connection(("${VIP}", 80), timeout=3)
print("peer", t.getpeername()[0], t.getpeername()[1])
t.sendall(b"hello"); print(t.recv(100).decode()); t.close()
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.settimeout(3)
u.sendto(b"query", ("${VIP}", 53))
d, a = u.recvfrom(100)
print(d.decode(), "from", a[0], a[1])
t = socket.create_connection(("10.96.0.10", 80), timeout=3)
print("peer", t.getpeername()[0], t.getpeername()[1])
t.sendall(b"v4"); print(t.recv(100).decode()); t.close()
t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); t.settimeout(3)
t.connect(("::ffff:10.96.0.10", 80))
print("peer", t.getpeername()[0], t.getpeername()[1])
t.sendall(b"mapped"); print(t.recv(100).decode()); t.close()
`;

function cgroup2(): string | null {
  const m = fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .find((l) => l[2] === 'cgroup2');
  return m ? m[1]! : null;
}

sk.before((ctx) => {
  const id = crypto.randomBytes(3).toString('hex');
  ctx.root = `/sys/fs/bpf/weir-sock6-${id}`;
  ctx.ns = `weir-sock6-${id}`;
  const cg = cgroup2();
  ctx.cgroup = cg ? `${cg}/weir-sock6-${id}` : '';
  process.on('exit', () => {
    fs.rmSync(ctx.root, { recursive: true, force: true });
    spawnSync('ip', ['netns', 'del', ctx.ns]);
    if (ctx.cgroup) fs.rmSync(ctx.cgroup, { recursive: true, force: true });
  });
  ctx.dp = BpfDatapath.load(loadShim(), ctx.root);
  ctx.dp.writeConfig6({ hairpinAddr: HAIRPIN, snatAddr: SNAT, haveClusterCidrs: false });
  const m = ctx.dp.maps;
  m.be6.upsert([[keyString(C.u32Key.encode({ value: 301 })), C.backend6.encode({ addr: BACKEND, port: 8080, proto: 6, flags: 0 })]]);
  m.be6.upsert([[keyString(C.u32Key.encode({ value: 302 })), C.backend6.encode({ addr: BACKEND, port: 5353, proto: 17, flags: 0 })]]);
  for (const [port, proto, rev, be] of [
    [80, 6, 301, 301],
    [53, 17, 302, 302],
  ] as const) {
    m.svc6.upsert([[keyString(C.svc6Key.encode({ addr: VIP, port, proto, slot: 1 })), C.svcVal.encode({ backend_id: be })]]);
    m.member.upsert([[keyString(C.memberKey.encode({ rev_nat_id: rev, backend_id: be })), C.u32Key.encode({ value: 1 })]]);
    m.revnat6.upsert([[keyString(C.u32Key.encode({ value: rev })), C.revnat6.encode({ addr: VIP, port })]]);
    m.svc6.upsert([[keyString(C.svc6Key.encode({ addr: VIP, port, proto, slot: 0 })), C.svcVal.encode({ count: 1, rev_nat_id: rev, flags: C.SVC_F.CLUSTER_IP })]]);
  }
  const must = (argv: string[]): void => {
    const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr}`);
  };
  must(['ip', 'netns', 'add', ctx.ns]);
  must(['ip', '-n', ctx.ns, 'link', 'set', 'lo', 'up']);
  must(['ip', '-n', ctx.ns, '-6', 'addr', 'add', `${BACKEND}/128`, 'dev', 'lo', 'nodad']);
  must(['ip', '-n', ctx.ns, 'addr', 'add', '10.244.1.30/32', 'dev', 'lo']);
  // An IPv4 ClusterIP too: reached from an IPv4 socket and, IPv4-mapped, from an IPv6 one.
  m.be.upsert([[keyString(C.u32Key.encode({ value: 303 })), C.backend.encode({ addr: '10.244.1.30', port: 8080, proto: 6, flags: 0 })]]);
  m.svc.upsert([[keyString(C.svcKey.encode({ addr: '10.96.0.10', port: 80, proto: 6, slot: 1 })), C.svcVal.encode({ backend_id: 303 })]]);
  m.member.upsert([[keyString(C.memberKey.encode({ rev_nat_id: 303, backend_id: 303 })), C.u32Key.encode({ value: 1 })]]);
  m.revnat.upsert([[keyString(C.u32Key.encode({ value: 303 })), C.revnat.encode({ addr: '10.96.0.10', port: 80 })]]);
  m.svc.upsert([[keyString(C.svcKey.encode({ addr: '10.96.0.10', port: 80, proto: 6, slot: 0 })), C.svcVal.encode({ count: 1, rev_nat_id: 303, flags: C.SVC_F.CLUSTER_IP })]]);
  if (ctx.cgroup) {
    fs.mkdirSync(ctx.cgroup);
    ctx.dp.attachCgroup(ctx.cgroup);
  }
});

sk.after((ctx) => {
  ctx.dp?.close();
  if (ctx.root) fs.rmSync(ctx.root, { recursive: true, force: true }); // unpinning the links detaches the hooks
  if (ctx.ns) spawnSync('ip', ['netns', 'del', ctx.ns]);
  if (ctx.cgroup) fs.rmSync(ctx.cgroup, { recursive: true, force: true });
});

sk('a node process connects and sends to an IPv6 ClusterIP, and to an IPv4 one natively and IPv4-mapped: it reaches the backend and sees the ClusterIP as its peer', async (ctx) => {
  if (!ctx.cgroup) {
    console.log('  (skipped: no cgroup v2)');
    return;
  }
  const server = spawn('ip', ['netns', 'exec', ctx.ns, 'python3', '-c', PY_SERVER], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('backend did not start')), 5000);
      server.stdout.on('data', (d: Buffer) => {
        if (d.toString().includes('ready')) {
          clearTimeout(t);
          resolve();
        }
      });
      server.on('exit', (code) => reject(new Error(`backend exited ${code}`)));
    });
    // Into the cgroup first: `ip netns exec` mounts the namespace's own /sys.
    const client = spawnSync('sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec ip netns exec "$1" python3 -c "$2"', ctx.cgroup, ctx.ns, PY_CLIENT], { encoding: 'utf8', timeout: 10_000 });
    assert.is(client.status, 0, client.stderr);
    assert.equal(client.stdout.trim().split('\n'), [`peer ${VIP} 80`, 'tcp hello', `udp query from ${VIP} 53`, 'peer 10.96.0.10 80', 'tcp4 v4', 'peer ::ffff:10.96.0.10 80', 'tcp4 mapped']);
    // The UDP socket's translation is in skrevnat6; the TCP sockets keep theirs in their own storage (bpf/lib/sockconn.h).
    const entries = ctx.dp.maps.skrevnat6.dump().map(([k, v]) => ({ ...C.sk6Key.decode(Buffer.from(k, 'latin1')), cookie: 0n, ...{ to: C.sk6Val.decode(v) } }));
    assert.equal(
      entries.map((e) => `${e.addr}:${e.port} -> ${e.to.addr}:${e.to.port}`),
      [`${BACKEND}:5353 -> ${VIP}:53`],
    );
  } finally {
    server.kill('SIGKILL');
  }
});

sk.run();
