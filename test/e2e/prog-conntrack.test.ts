/**
 * The tc program's conntrack lifetimes on crafted packets
 * (BPF_PROG_TEST_RUN): a flow's entries expire by the lifetimes the agent
 * wrote to the config map (kube-proxy's conntrack timeouts), and a UDP flow
 * that saw a reply lives by the stream lifetime. An entry is aged by
 * rewriting its last_seen; whether it is alive shows in the backend the next
 * packet goes to: the entry names a backend outside the slots (still a
 * member), which only a live entry sends to.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as C from '../../ts/datapath/codecs';
import { BpfDatapath } from '../../ts/datapath/loader';
import { loadShim } from '../../ts/datapath/ffi';
import { keyString } from '../../ts/datapath/maps';
import { buildPacket, readHeaders } from '../../ts/datapath/packet';

const CLIENT = '10.244.1.20';
const VIP = '10.96.0.10';
const SLOT_BACKEND = '10.244.1.30';
const OLD_BACKEND = '10.244.1.31';
const REV = 2;

interface Ctx {
  dp: BpfDatapath;
  root: string;
}
const s = suite<Ctx>('conntrack lifetimes (BPF_PROG_TEST_RUN)');

function send(ctx: Ctx, pkt: Buffer): ReturnType<typeof readHeaders> {
  return readHeaders(loadShim().progTestRun(ctx.dp.progFds.pod, pkt, pkt.length + 256).data);
}

/** Both entries of a UDP flow CLIENT:sport -> VIP:53 on OLD_BACKEND, last seen ageMs ago. */
function writeFlow(ctx: Ctx, sport: number, ageMs: number, flags: number): void {
  const lastSeen = process.hrtime.bigint() - BigInt(ageMs) * 1_000_000n;
  const fwd = C.ctKey.encode({ saddr: CLIENT, daddr: VIP, sport, dport: 53, proto: 17, dir: C.CT_DIR.FWD });
  const rev = C.ctKey.encode({ saddr: OLD_BACKEND, daddr: CLIENT, sport: 5353, dport: sport, proto: 17, dir: C.CT_DIR.REV });
  ctx.dp.maps.ct.upsert([
    [keyString(fwd), C.ctVal.encode({ last_seen: lastSeen, backend_id: 7, rev_nat_id: REV, flags })],
    [keyString(rev), C.ctVal.encode({ last_seen: lastSeen, rev_nat_id: REV, nat_addr: CLIENT, nat_port: sport, flags })],
  ]);
}

function fwdFlags(ctx: Ctx, sport: number): number {
  const v = ctx.dp.maps.ct.lookup(keyString(C.ctKey.encode({ saddr: CLIENT, daddr: VIP, sport, dport: 53, proto: 17, dir: C.CT_DIR.FWD })));
  return v ? C.ctVal.decode(v).flags : -1;
}

const udp = (sport: number): Buffer => buildPacket({ proto: 'udp', src: CLIENT, dst: VIP, sport, dport: 53, payload: 'q' });

s.before((ctx) => {
  ctx.root = `/sys/fs/bpf/weir-ctlife-${crypto.randomBytes(3).toString('hex')}`;
  process.on('exit', () => fs.rmSync(ctx.root, { recursive: true, force: true }));
  ctx.dp = BpfDatapath.load(loadShim(), ctx.root);
  // Lifetimes as `weir run --conntrack-udp-timeout 2s --conntrack-udp-timeout-stream 100s` writes them.
  ctx.dp.writeConfig({ hairpinAddr: '169.254.42.1', snatAddr: '', masqueradeAll: false, haveClusterCidrs: false, conntrack: { tcpEstablished: 0, tcpCloseWait: 0, udp: 2, udpStream: 100 } });
  const m = ctx.dp.maps;
  const key = (v: number): string => keyString(C.u32Key.encode({ value: v }));
  m.be.upsert([
    [key(1), C.backend.encode({ addr: SLOT_BACKEND, port: 5353, proto: 17, flags: 0 })],
    [key(7), C.backend.encode({ addr: OLD_BACKEND, port: 5353, proto: 17, flags: 0 })],
  ]);
  m.member.upsert([
    [keyString(C.memberKey.encode({ rev_nat_id: REV, backend_id: 1 })), C.u32Key.encode({ value: 1 })],
    [keyString(C.memberKey.encode({ rev_nat_id: REV, backend_id: 7 })), C.u32Key.encode({ value: 0 })],
  ]);
  m.revnat.upsert([[key(REV), C.revnat.encode({ addr: VIP, port: 53 })]]);
  m.svc.upsert([[keyString(C.svcKey.encode({ addr: VIP, port: 53, proto: 17, slot: 1 })), C.svcVal.encode({ backend_id: 1 })]]);
  m.svc.upsert([[keyString(C.svcKey.encode({ addr: VIP, port: 53, proto: 17, slot: 0 })), C.svcVal.encode({ count: 1, rev_nat_id: REV, flags: C.SVC_F.CLUSTER_IP })]]);
});

s.after((ctx) => {
  ctx.dp?.close();
  if (ctx.root) fs.rmSync(ctx.root, { recursive: true, force: true });
});

s('a UDP flow without replies lives --conntrack-udp-timeout (2 s): alive at 1.5 s idle, a new flow at 3 s', (ctx) => {
  writeFlow(ctx, 41001, 1500, 0);
  assert.is(send(ctx, udp(41001)).dst, OLD_BACKEND, 'alive: keeps its backend');
  writeFlow(ctx, 41002, 3000, 0);
  assert.is(send(ctx, udp(41002)).dst, SLOT_BACKEND, 'expired: chosen again');
});

s('a UDP flow that saw a reply lives --conntrack-udp-timeout-stream (100 s)', (ctx) => {
  writeFlow(ctx, 41003, 3000, C.CT_F.REPLIED);
  assert.is(send(ctx, udp(41003)).dst, OLD_BACKEND);
  writeFlow(ctx, 41004, 101_000, C.CT_F.REPLIED);
  assert.is(send(ctx, udp(41004)).dst, SLOT_BACKEND);
});

s("a flow's first reply marks both its entries as a stream", (ctx) => {
  assert.is(send(ctx, udp(41005)).dst, SLOT_BACKEND);
  assert.is(fwdFlags(ctx, 41005) & C.CT_F.REPLIED, 0, 'no reply yet');
  const reply = send(ctx, buildPacket({ proto: 'udp', src: SLOT_BACKEND, dst: CLIENT, sport: 5353, dport: 41005, payload: 'a' }));
  assert.equal([reply.src, reply.sport], [VIP, 53]);
  assert.is(fwdFlags(ctx, 41005) & C.CT_F.REPLIED, C.CT_F.REPLIED);
});

s('no lifetimes written (0): the programs keep their defaults (UDP 60 s)', (ctx) => {
  ctx.dp.writeConfig({ hairpinAddr: '169.254.42.1', snatAddr: '', masqueradeAll: false, haveClusterCidrs: false });
  writeFlow(ctx, 41006, 30_000, 0);
  assert.is(send(ctx, udp(41006)).dst, OLD_BACKEND);
  writeFlow(ctx, 41007, 61_000, 0);
  assert.is(send(ctx, udp(41007)).dst, SLOT_BACKEND);
});

s('a config map pinned by a build with a shorter weir_config is replaced at load, not refused', () => {
  const shim = loadShim();
  const root = `/sys/fs/bpf/weir-cfgpin-${crypto.randomBytes(3).toString('hex')}`;
  fs.mkdirSync(root);
  try {
    const fd = shim.mapCreate(2 /* BPF_MAP_TYPE_ARRAY */, 4, 16, 1);
    shim.pin(fd, `${root}/weir1_cfg`);
    shim.close(fd);
    const dp = BpfDatapath.load(shim, root);
    try {
      assert.is(dp.maps.cfg.valueSize, C.config.size);
    } finally {
      dp.close();
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

s.run();
