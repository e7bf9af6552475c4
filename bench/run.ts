/**
 * `make bench`: weir's benchmarks. Writes bench/results.json, BENCHMARKS.md
 * and bench/latency.svg. Sizes are flags; `--quick` is a smoke run (< 2 min)
 * that checks the suite works, not the bars. Benchmarks are not tests:
 * nothing in `make test` depends on these timings.
 *
 *   node dist/bench/run.js [--quick] [--services N] [--endpoints M] [--changes K]
 *                          [--ct N] [--runs R] [--conns C] [--path-sizes 1,1000,10000]
 *                          [--sections ffi,packet,control,path,iptables]
 *
 * All traffic stays inside a cluster in a box (test/box).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as C from '../ts/datapath/codecs';
import { BpfDatapath, DEFAULT_SIZES } from '../ts/datapath/loader';
import { FfiBackend, loadShim } from '../ts/datapath/ffi';
import { buildPacket, buildPacket6 } from '../ts/datapath/packet';
import { VARIANTS, WireResult, benchWire } from './wire';
import { keyString } from '../ts/datapath/maps';
import { ClusterStore } from '../ts/model/store';
import { Reconciler } from '../ts/reconcile/reconciler';
import { Syncer } from '../ts/runner/sync';
import { createLogger } from '../ts/util/log';
import { Agent, Box, REPO } from '../test/box/box';
import { cleanupAndSettle, firstSyncMs, lbMapArgs, lbMapEntries as lbMapEntriesFor } from './coldstart';
import { epAddr, serviceObj, sliceObj, vip, writeManifests } from './manifests';
import { report } from './report';

export interface Stats {
  p50: number;
  p99: number;
  n: number;
}

export interface Results {
  machine: Record<string, string>;
  /** When the run was made (ISO 8601); older results lack it. */
  date?: string;
  command: string;
  params: Params;
  ffi: Array<{ backend: string; singleNsPerOp: number; batchNsPerElem: number }>;
  packet: {
    setup: string;
    /** Hot established flow: ns per packet over `repeat` runs (the ping-pong pair, see benchPacket). */
    establishedNs: number;
    /** The same packet as one run each: cold caches, and the harness's own cost (floorNs) included. */
    establishedSingleNs: number;
    newFlowNs: number;
    passNs: number;
    /** A node's own loopback packet that is no service's, through weir_tc_host on lo (older results lack it). */
    loopbackPassNs?: number;
    /** The same figures for IPv6 packets, the same number of IPv6 services in the IPv6 maps (older results lack them). */
    ipv6?: { establishedNs: number; establishedSingleNs: number; newFlowNs: number; passNs: number };
    floorNs: number;
    runs: number;
    repeat: number;
  };
  /** timedOut: not programmed within the deadline (ms is then the deadline). */
  coldStart: Array<{
    mode: string;
    services: number;
    ms: number;
    /** Every run's cold start, in the order run (ms is their median). */
    allMs?: number[];
    syncMs: number;
    /** From the agent's own log, ms since its process started (medians): manifests read, BPF objects loaded, ready. */
    phases?: { sourcesAtMs: number; loadedAtMs: number; readyAtMs: number };
    peakRssMb: number;
    runs: number;
    timedOut?: boolean;
  }>;
  /** driftMs: the comparisons with the desired state (--sync-period 1s; BPF and nftables mode) while the changes were measured; driftSliceMs: BPF's longest slice of each. */
  oneChange: Array<{ mode: string; services: number; programmingMs: Stats; syncMs: Stats; wallMs?: Stats; driftMs?: Stats; driftSliceMs?: Stats }>;
  /** BPF: an agent restarted over its pinned dataplane (adopts it, writes only what changed meanwhile). */
  restart?: Array<{ services: number; ms: number; peakRssMb: number; upserts: number; deletes: number }>;
  path: Array<{ mode: string; services: number; latencyUs: Stats; connPerSec: number; timedOut?: boolean }>;
  /** wrk and iperf3 through every dataplane side by side (bench/wire.ts). */
  wire?: WireResult[];
}

interface Params {
  quick: boolean;
  /** How long an agent may take to program everything before the point is reported as timed out. */
  deadlineMs: number;
  services: number;
  /** A second, smaller scale where every mode is measured in full, side by side. */
  compareServices: number;
  endpoints: number;
  changes: number;
  ct: number;
  runs: number;
  conns: number;
  pathSizes: number[];
}

function params(argv: string[]): Params {
  const quick = argv.includes('--quick');
  const num = (name: string, def: number, q: number): number => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? Number(argv[i + 1]) : quick ? q : def;
  };
  const sizesArg = argv.indexOf('--path-sizes');
  return {
    quick,
    deadlineMs: num('deadline-ms', 120_000, 60_000),
    services: num('services', 10_000, 500),
    compareServices: num('compare-services', 1000, 100),
    endpoints: num('endpoints', 10, 4),
    changes: num('changes', 200, 30),
    ct: num('ct', 1_000_000, 20_000),
    runs: num('runs', 3, 1),
    conns: num('conns', 2000, 200),
    pathSizes: sizesArg >= 0 ? argv[sizesArg + 1]!.split(',').map(Number) : quick ? [1, 100] : [1, 1000, 10_000],
  };
}

const log = (s: string): void => void process.stdout.write(`${s}\n`);
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN;
};
export function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)] ?? NaN;
  return { p50: q(0.5), p99: q(0.99), n: s.length };
}

function benchFfi(): Results['ffi'] {
  const out: Results['ffi'] = [];
  for (const backend of ['koffi', 'ffi-napi'] as FfiBackend[]) {
    const shim = loadShim(backend);
    const n = 100_000;
    const fd = shim.mapCreate(1, 4, 8, n);
    const k = Buffer.alloc(4);
    const v = Buffer.alloc(8);
    const singles = 20_000;
    let t = process.hrtime.bigint();
    for (let i = 0; i < singles; i++) {
      k.writeUInt32LE(i);
      shim.mapUpdate(fd, k, v);
    }
    const single = Number(process.hrtime.bigint() - t) / singles;
    const keys = Buffer.alloc(n * 4);
    for (let i = 0; i < n; i++) keys.writeUInt32LE(i, i * 4);
    t = process.hrtime.bigint();
    shim.mapUpdateMany(fd, keys, Buffer.alloc(n * 8), n, 4, 8);
    const batch = Number(process.hrtime.bigint() - t) / n;
    shim.close(fd);
    out.push({ backend, singleNsPerOp: Math.round(single), batchNsPerElem: Math.round(batch * 10) / 10 });
    log(`  ffi ${backend}: ${Math.round(single)} ns/call single, ${batch.toFixed(1)} ns/element batched`);
  }
  return out;
}

/** The service map size of this run's largest scale (the spare quarter holds the path section's extra services). */
function lbMapEntries(p: Params): number {
  return lbMapEntriesFor(p.services, p.endpoints);
}

type ControlMode = 'bpf' | 'nftables' | 'iptables';

/** `weir run` flags for an agent of this run: the mode, and the service map size when the default is too small. */
function agentArgs(p: Params, mode: ControlMode): string[] {
  // The drift comparison every second (30 s by default; nftables mode spaces
  // its own by its duration), so the one-change figures are measured while
  // it runs; debug logs give its duration. iptables mode has none.
  const drift = mode !== 'iptables' ? ['--sync-period', '1s', '--log-level', 'debug'] : [];
  return ['--mode', mode, ...lbMapArgs(lbMapEntries(p)), ...drift];
}

/** Per-packet cost of the real program with P services x M backends and `ct` conntrack entries loaded. */
function benchPacket(p: Params): Results['packet'] {
  const shim = loadShim();
  const root = `/sys/fs/bpf/weir-bench-${process.pid}`;
  // Conntrack sized for the entries this test loads (the agent's default is smaller).
  const dp = BpfDatapath.load(shim, root, { ...DEFAULT_SIZES, ct: p.ct + (1 << 16), svc: lbMapEntries(p), member: lbMapEntries(p) });
  try {
    dp.writeConfig({ hairpinAddr: '169.254.42.1', snatAddr: '192.168.77.10', masqueradeAll: false, haveClusterCidrs: false });
    const store = new ClusterStore(() => undefined);
    for (let i = 0; i < p.services; i++) {
      store.upsertService(serviceObj(i), 'bench');
      store.upsertSlice(
        sliceObj(
          i,
          Array.from({ length: p.endpoints }, (_, j) => epAddr(i * p.endpoints + j)),
        ),
        'bench',
      );
    }
    // The ping-pong pair: two services whose only backend is the other's
    // address (same port). A packet to the first is rewritten to the second,
    // whose flow rewrites it back: with `repeat`, the kernel reruns the
    // program on its own output, so every run is an established-flow packet
    // with a real DNAT and checksum update, not a replay of one that no
    // longer matches anything.
    const ping = vip(p.services + 1);
    const pong = vip(p.services + 2);
    store.upsertService(serviceObj(p.services + 1, 'ping'), 'bench');
    store.upsertService(serviceObj(p.services + 2, 'pong'), 'bench');
    store.upsertSlice(sliceObj(p.services + 1, [pong], 'ping', 80), 'bench');
    store.upsertSlice(sliceObj(p.services + 2, [ping], 'pong', 80), 'bench');
    const reconciler = new Reconciler(dp.maps, dp.writes);
    reconciler.adopt();
    const t0 = process.hrtime.bigint();
    new Syncer({ store, reconciler, log: createLogger('error', () => undefined), ctx: { nodeName: 'n1', nodePortAddrs: [] } }).sync();
    log(`  loaded ${p.services} services x ${p.endpoints} endpoints into the maps in ${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(0)} ms`);
    // Fill conntrack with unrelated flows (FWD entries to random frontends).
    const ks = C.ctKey.size;
    const vs = C.ctVal.size;
    const chunk = 100_000;
    for (let done = 0; done < p.ct; done += chunk) {
      const n = Math.min(chunk, p.ct - done);
      const keys = Buffer.alloc(n * ks);
      const vals = Buffer.alloc(n * vs);
      for (let i = 0; i < n; i++) {
        const id = done + i;
        C.ctKey.encode({ saddr: `10.250.${(id >> 16) & 255}.${(id >> 8) & 255}`, daddr: vip(id % p.services), sport: 1024 + (id & 0xff) * 200, dport: 80, proto: 6, dir: 0 }, keys, i * ks);
        C.ctVal.encode({ last_seen: process.hrtime.bigint(), backend_id: 1, rev_nat_id: 1 }, vals, i * vs);
      }
      shim.mapUpdateMany(dp.maps.ct.fd, keys, vals, n, ks, vs);
    }
    log(`  conntrack holds ${dp.maps.ct.count()} entries`);
    // Hot established flow: the ping-pong pair with `repeat` (the kernel
    // reports ns per run). Its first two packets create the two flows.
    const single = (pkt: Buffer): number => shim.progTestRun(dp.progFds.pod, pkt, pkt.length + 256, 1).durationNs;
    const repeat = p.quick ? 10_000 : 100_000;
    // A SYN opens each flow (a segment of a connection weir never saw open is the stack's).
    const pingPkt = buildPacket({ proto: 'tcp', src: '10.251.0.1', dst: ping, sport: 40000, dport: 80, flags: 0x10 });
    const pingSyn = buildPacket({ proto: 'tcp', src: '10.251.0.1', dst: ping, sport: 40000, dport: 80 });
    const pongSyn = shim.progTestRun(dp.progFds.pod, pingSyn, pingSyn.length + 256, 1).data;
    if (C.readIp4(pongSyn, 30) !== pong) throw new Error('ping-pong pair: the first packet was not rewritten to the second service');
    single(Buffer.from(pongSyn));
    const hot: number[] = [];
    for (let r = 0; r < p.runs; r++) hot.push(shim.progTestRun(dp.progFds.pod, pingPkt, pingPkt.length + 256, repeat).durationNs);
    // Every other figure is the median of single runs on a fresh copy of the
    // packet (a new flow cannot be repeated: its first run creates it). A
    // single run's time includes the harness's own clock reads, reported as
    // the floor (a non-IPv4 frame the program ignores).
    const target = vip(Math.floor(p.services / 2));
    const est: number[] = [];
    const fresh: number[] = [];
    const pass: number[] = [];
    const loopback: number[] = [];
    const floor: number[] = [];
    for (let r = 0; r < p.runs; r++) {
      const flow = buildPacket({ proto: 'tcp', src: '10.251.0.1', dst: target, sport: 40000 + r, dport: 80, flags: 0x10 });
      single(buildPacket({ proto: 'tcp', src: '10.251.0.1', dst: target, sport: 40000 + r, dport: 80 })); // its SYN creates the flow
      const other = buildPacket({ proto: 'tcp', src: '10.251.0.1', dst: '10.253.0.1', sport: 40000, dport: 80 });
      // Loopback traffic every node has (a database, the kubelet's local APIs): lo's program looks it up once and lets it go.
      const local = buildPacket({ proto: 'tcp', src: '127.0.0.1', dst: '127.0.0.1', sport: 40000, dport: 5432, flags: 0x10 });
      const arp = Buffer.from(flow);
      arp.writeUInt16BE(0x0806, 12);
      const e: number[] = [];
      const n: number[] = [];
      const o: number[] = [];
      const l: number[] = [];
      const f: number[] = [];
      for (let i = 0; i < 2000; i++) {
        e.push(single(flow));
        n.push(single(buildPacket({ proto: 'tcp', src: `10.252.${r}.${i & 255}`, dst: target, sport: 10000 + i, dport: 80 })));
        o.push(single(other));
        l.push(shim.progTestRun(dp.progFds.host, local, local.length + 256, 1).durationNs);
        f.push(single(arp));
      }
      est.push(median(e));
      fresh.push(median(n));
      pass.push(median(o));
      loopback.push(median(l));
      floor.push(median(f));
    }
    const ipv6 = benchPacket6(p, dp, shim, repeat);
    return {
      setup: `${p.services} services x ${p.endpoints} endpoints, ${dp.maps.ct.count()} conntrack entries`,
      ipv6,
      establishedNs: median(hot),
      establishedSingleNs: median(est),
      newFlowNs: median(fresh),
      passNs: median(pass),
      loopbackPassNs: median(loopback),
      floorNs: median(floor),
      runs: p.runs,
      repeat,
    };
  } finally {
    dp.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
}

/**
 * The IPv6 twin of benchPacket's figures: as many IPv6 services (written
 * straight into the IPv6 maps, ids above the IPv4 ones) and the same
 * packets over IPv6, so the two families compare on one loaded program.
 */
function benchPacket6(p: Params, dp: BpfDatapath, shim: ReturnType<typeof loadShim>, repeat: number): NonNullable<Results['packet']['ipv6']> {
  const m = dp.maps;
  const vip6 = (i: number): string => `fd00:96::${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}`;
  const ep6 = (i: number): string => `fd00:244::${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}`;
  let id = 1 << 24;
  const add = (addr: string, eps: string[]): void => {
    const rev = id++;
    const ids = eps.map(() => id++);
    m.be6.upsert(ids.map((b, j) => [keyString(C.u32Key.encode({ value: b })), C.backend6.encode({ addr: eps[j]!, port: 80, proto: 6, flags: 0 })]));
    m.member.upsert(ids.map((b) => [keyString(C.memberKey.encode({ rev_nat_id: rev, backend_id: b })), C.u32Key.encode({ value: 1 })]));
    m.svc6.upsert(ids.map((b, j) => [keyString(C.svc6Key.encode({ addr, port: 80, proto: 6, slot: j + 1 })), C.svcVal.encode({ backend_id: b })]));
    m.revnat6.upsert([[keyString(C.u32Key.encode({ value: rev })), C.revnat6.encode({ addr, port: 80 })]]);
    m.svc6.upsert([[keyString(C.svc6Key.encode({ addr, port: 80, proto: 6, slot: 0 })), C.svcVal.encode({ count: ids.length, rev_nat_id: rev, flags: C.SVC_F.CLUSTER_IP })]]);
  };
  for (let i = 0; i < p.services; i++)
    add(
      vip6(i),
      Array.from({ length: p.endpoints }, (_, j) => ep6(i * p.endpoints + j)),
    );
  const ping = vip6(p.services + 1);
  const pong = vip6(p.services + 2);
  add(ping, [pong]);
  add(pong, [ping]);
  const client = 'fd00:251::1';
  const single = (pkt: Buffer): number => shim.progTestRun(dp.progFds.pod, pkt, pkt.length + 256, 1).durationNs;
  const pongSyn = shim.progTestRun(dp.progFds.pod, buildPacket6({ proto: 'tcp', src: client, dst: ping, sport: 40000, dport: 80 }), 200, 1).data;
  single(Buffer.from(pongSyn));
  const pingPkt = buildPacket6({ proto: 'tcp', src: client, dst: ping, sport: 40000, dport: 80, flags: 0x10 });
  const hot: number[] = [];
  const est: number[] = [];
  const fresh: number[] = [];
  const pass: number[] = [];
  const target = vip6(Math.floor(p.services / 2));
  for (let r = 0; r < p.runs; r++) {
    hot.push(shim.progTestRun(dp.progFds.pod, pingPkt, pingPkt.length + 256, repeat).durationNs);
    single(buildPacket6({ proto: 'tcp', src: client, dst: target, sport: 41000 + r, dport: 80 }));
    const flow = buildPacket6({ proto: 'tcp', src: client, dst: target, sport: 41000 + r, dport: 80, flags: 0x10 });
    const other = buildPacket6({ proto: 'tcp', src: client, dst: 'fd00:253::1', sport: 40000, dport: 80 });
    const e: number[] = [];
    const n: number[] = [];
    const o: number[] = [];
    for (let i = 0; i < 2000; i++) {
      e.push(single(flow));
      n.push(single(buildPacket6({ proto: 'tcp', src: `fd00:252:${r.toString(16)}::${i.toString(16)}`, dst: target, sport: 10000 + i, dport: 80 })));
      o.push(single(other));
    }
    est.push(median(e));
    fresh.push(median(n));
    pass.push(median(o));
  }
  return { establishedNs: median(hot), establishedSingleNs: median(est), newFlowNs: median(fresh), passNs: median(pass) };
}

function peakRssMb(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

/**
 * Cold start and one-change latency, per mode (BPF, nftables, iptables), in
 * a one-node box (agent only): at the full scale, and at a smaller one where
 * every mode is measured in full (iptables mode at the full scale takes a
 * few changes only; `--sections iptables` measures it alone with more).
 */
async function benchControlPlane(p: Params): Promise<{ coldStart: Results['coldStart']; oneChange: Results['oneChange']; restart: NonNullable<Results['restart']> }> {
  const coldStart: Results['coldStart'] = [];
  const oneChange: Results['oneChange'] = [];
  const restart: NonNullable<Results['restart']> = [];
  const box = await Box.create({ nodes: 1 });
  try {
    const scales = [
      { services: p.compareServices, iptablesRuns: p.runs, iptablesChanges: Math.min(p.changes, 50), bpfChanges: Math.min(p.changes, 50) },
      { services: p.services, iptablesRuns: p.quick ? p.runs : 1, iptablesChanges: p.quick ? p.changes : Math.min(p.changes, 5), bpfChanges: p.changes },
    ];
    for (const scale of scales) {
      for (const f of fs.readdirSync(box.manifestDir)) fs.rmSync(path.join(box.manifestDir, f));
      writeManifests(box.manifestDir, scale.services, (i) => Array.from({ length: p.endpoints }, (_, j) => epAddr(i * p.endpoints + j)));
      for (const mode of ['bpf', 'nftables', 'iptables'] as const) {
        const r = await measureMode(box, p, mode, scale.services, mode === 'iptables' ? scale.iptablesRuns : p.runs, mode === 'iptables' ? scale.iptablesChanges : scale.bpfChanges);
        coldStart.push(r.coldStart);
        oneChange.push(r.oneChange);
        if (r.restart) restart.push(r.restart);
      }
    }
    await box.weir('n1', ['cleanup']);
  } finally {
    await box.destroy();
  }
  return { coldStart, oneChange, restart };
}

async function measureMode(
  box: Box,
  p: Params,
  mode: ControlMode,
  services: number,
  runs: number,
  changes: number,
): Promise<{ coldStart: Results['coldStart'][number]; oneChange: Results['oneChange'][number]; restart?: NonNullable<Results['restart']>[number] }> {
  const starts: number[] = [];
  const syncs: number[] = [];
  const rss: number[] = [];
  const phases = { sources: [] as number[], loaded: [] as number[], ready: [] as number[] };
  let timedOut = false;
  let change: Results['oneChange'][number] = { mode, services, programmingMs: { p50: NaN, p99: NaN, n: 0 }, syncMs: { p50: NaN, p99: NaN, n: 0 } };
  for (let r = 0; r < runs; r++) {
    await cleanupAndSettle(box);
    const t0 = Date.now();
    let agent: Agent;
    try {
      agent = await box.startAgent('n1', agentArgs(p, mode), { readyTimeoutMs: p.deadlineMs });
    } catch {
      // Not programmed within the deadline: report that, and stop measuring this mode here.
      timedOut = true;
      starts.push(p.deadlineMs);
      log(`  ${mode} ${services} services: not programmed within ${p.deadlineMs} ms`);
      // Stop the agent that missed it: it holds the pin root's lock and would go on writing beside the next one.
      const late = box.processes.at(-1);
      if (late) await box.stopProc(late, 2000);
      await box.weir('n1', ['cleanup'], 120_000).catch(() => undefined);
      break;
    }
    starts.push(Date.now() - t0);
    syncs.push(firstSyncMs(agent.logs()));
    const at = (re: RegExp): number => Number(re.exec(agent.logs())?.[1] ?? NaN);
    phases.sources.push(at(/"msg":"sources synced"[^\n]*"atMs":(\d+)/));
    phases.loaded.push(at(/"loadedAtMs":(\d+)/));
    phases.ready.push(at(/"msg":"ready"[^\n]*"atMs":(\d+)/));
    rss.push(peakRssMb(agent.proc.child.pid!));
    if (r < runs - 1) {
      await agent.stop();
      continue;
    }
    // One change at a time on a small service of its own, at this scale.
    const prog: number[] = [];
    const sync: number[] = [];
    const wall: number[] = [];
    for (let c = 0; c <= changes; c++) {
      const next = agent.waitForNext(/"msg":"synced","services":1,[^\n]*"programmingMs":\d+/, 300_000);
      const eps = c % 2 ? [epAddr(200_000), epAddr(200_001)] : [epAddr(200_000)];
      const t0 = performance.now();
      box.writeManifest('churn.json', JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [serviceObj(60_000, 'churn'), sliceObj(60_000, eps, 'churn')] }));
      await next;
      // From the file written to the agent's "synced" line: includes the file source's 20 ms settle, and any stall of the agent's loop.
      if (c > 0) wall.push(Math.round(performance.now() - t0));
      const line = agent
        .logs()
        .trim()
        .split('\n')
        .reverse()
        .find((l) => l.includes('"services":1,'))!;
      if (c === 0) continue; // the first one creates the service
      prog.push(Number(/"programmingMs":(\d+)/.exec(line)![1]));
      sync.push(Number(/"ms":([\d.]+)/.exec(line)![1]));
    }
    // BPF mode scans the maps in slices; nftables mode lists its table in a child process and compares it at once.
    const scans = [...agent.logs().matchAll(/"msg":"compared the maps with the desired state: no drift","ms":(\d+),"slices":\d+,"longestSliceMs":([\d.]+)/g)];
    const nftScans = [...agent.logs().matchAll(/"msg":"compared table inet weir with what was committed: no drift","ms":(\d+)/g)];
    const drift = [...scans, ...nftScans].map((m) => Number(m[1]));
    const stall = scans.map((m) => Number(m[2]));
    change = {
      mode,
      services,
      programmingMs: stats(prog),
      syncMs: stats(sync),
      wallMs: stats(wall),
      ...(drift.length ? { driftMs: stats(drift) } : {}),
      ...(stall.length ? { driftSliceMs: stats(stall) } : {}),
    };
    rss.push(peakRssMb(agent.proc.child.pid!));
    log(
      `  ${mode} ${services} services: one change p50 ${stats(prog).p50} ms / p99 ${stats(prog).p99} ms (sync p99 ${stats(sync).p99} ms; file written → synced p99 ${stats(wall).p99} ms)${drift.length ? `; drift scan p50 ${stats(drift).p50} ms${stall.length ? `, longest slice p99 ${stats(stall).p99} ms` : ''} (${drift.length} scans)` : ''}`,
    );
    await agent.stop();
    box.removeManifest('churn.json');
  }
  const cold = {
    mode,
    services,
    ms: median(starts),
    allMs: starts,
    syncMs: median(syncs),
    ...(mode === 'bpf' && phases.ready.length ? { phases: { sourcesAtMs: median(phases.sources), loadedAtMs: median(phases.loaded), readyAtMs: median(phases.ready) } } : {}),
    peakRssMb: rss.length ? Math.max(...rss) : NaN,
    runs,
    ...(timedOut ? { timedOut } : {}),
  };
  log(`  ${mode} ${services} services: cold start ${cold.ms} ms (first sync ${cold.syncMs} ms), peak RSS ${cold.peakRssMb} MB`);
  let restart: NonNullable<Results['restart']>[number] | undefined;
  if (mode === 'bpf' && !timedOut) {
    // The last agent left its dataplane pinned (and one service fewer than it had): start over it.
    const t0 = Date.now();
    const agent = await box.startAgent('n1', agentArgs(p, mode), { readyTimeoutMs: p.deadlineMs });
    const ms = Date.now() - t0;
    const synced = /"msg":"synced","services":\d+,"upserts":(\d+),"deletes":(\d+)/.exec(agent.logs());
    restart = { services, ms, peakRssMb: peakRssMb(agent.proc.child.pid!), upserts: Number(synced?.[1] ?? NaN), deletes: Number(synced?.[2] ?? NaN) };
    log(`  ${mode} ${services} services: restart over the pinned dataplane ${ms} ms, peak RSS ${restart.peakRssMb} MB (${restart.upserts} upserts, ${restart.deletes} deletes)`);
    await agent.stop();
  }
  return { coldStart: cold, oneChange: change, restart };
}

/**
 * iptables mode alone (`--sections iptables`): from a cold start to every
 * rule programmed, and one endpoint change at a time, at the compare scale
 * and the full one (10,000 services x 10 endpoints by default). Written to
 * bench/results-iptables.json.
 */
async function benchIptables(p: Params): Promise<{ coldStart: Results['coldStart']; oneChange: Results['oneChange'] }> {
  const coldStart: Results['coldStart'] = [];
  const oneChange: Results['oneChange'] = [];
  const box = await Box.create({ nodes: 1 });
  try {
    for (const services of [p.compareServices, p.services]) {
      for (const f of fs.readdirSync(box.manifestDir)) fs.rmSync(path.join(box.manifestDir, f));
      writeManifests(box.manifestDir, services, (i) => Array.from({ length: p.endpoints }, (_, j) => epAddr(i * p.endpoints + j)));
      const r = await measureMode(box, p, 'iptables', services, services > p.compareServices && !p.quick ? 1 : p.runs, p.changes);
      coldStart.push(r.coldStart);
      oneChange.push(r.oneChange);
    }
    await box.weir('n1', ['cleanup'], 120_000);
  } finally {
    await box.destroy();
  }
  return { coldStart, oneChange };
}

/** New-connection latency through a real namespace path with N services, BPF vs iptables. */
async function benchPath(p: Params): Promise<Results['path']> {
  const out: Results['path'] = [];
  const box = await Box.create({ nodes: 1 });
  try {
    const backend = await box.addPod('n1', 'backend');
    await box.startEcho('backend', { tcp: [8080] });
    await box.addPod('n1', 'client');
    for (const n of p.pathSizes) {
      for (const f of fs.readdirSync(box.manifestDir)) fs.rmSync(path.join(box.manifestDir, f));
      // n-1 other services, then the measured one, which sorts last (the
      // worst case for iptables' linear walk of the services chain).
      writeManifests(box.manifestDir, n - 1, () => [backend.ip]);
      box.writeManifest('target.json', JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [serviceObj(65_000, 'zz-target'), sliceObj(65_000, [backend.ip], 'zz-target')] }));
      for (const mode of ['bpf', 'iptables'] as const) {
        await box.weir('n1', ['cleanup']);
        let agent: Agent;
        try {
          agent = await box.startAgent('n1', agentArgs(p, mode), { readyTimeoutMs: p.deadlineMs });
        } catch {
          out.push({ mode, services: n, latencyUs: { p50: NaN, p99: NaN, n: 0 }, connPerSec: 0, timedOut: true });
          log(`  ${mode} ${n} services: not programmed within ${p.deadlineMs} ms`);
          await box.weir('n1', ['cleanup']).catch(() => undefined);
          continue;
        }
        await new Promise((r) => setTimeout(r, 700)); // device attach (bpf)
        const target = `${vip(65_000)}:80`;
        // Warm-up, not measured: the echo server is a Node.js process whose
        // code is still being optimized during its first few hundred
        // connections, which would otherwise slow whichever point runs first.
        await box.tcp('client', target, { count: out.length === 0 ? 1000 : 100, timeoutMs: 2000 });
        const t0 = Date.now();
        const r = await box.tcp('client', target, { count: p.conns, timeoutMs: 2000 });
        const secs = (Date.now() - t0) / 1000;
        const ok = r.attempts.filter((a) => a.ok);
        if (ok.length !== r.attempts.length) throw new Error(`${mode} ${n}: ${r.attempts.length - ok.length} connections failed`);
        const st = stats(ok.map((a) => a.us!));
        out.push({ mode, services: n, latencyUs: { p50: Math.round(st.p50), p99: Math.round(st.p99), n: st.n }, connPerSec: Math.round(p.conns / secs) });
        log(`  ${mode} ${n} services: p50 ${Math.round(st.p50)} us, p99 ${Math.round(st.p99)} us, ${Math.round(p.conns / secs)} conn/s`);
        await agent.stop();
      }
    }
    await box.weir('n1', ['cleanup']);
  } finally {
    await box.destroy();
  }
  return out;
}

function machine(): Record<string, string> {
  const cpu = /model name\s*:\s*(.*)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown';
  const touch = memoryTouch();
  return {
    cpu: `${cpu} (${os.cpus().length} cores)`,
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    kernel: os.release(),
    node: process.version,
    firstTouch: `${touch.first.toFixed(2)} ms/MiB`,
    retouch: `${touch.again.toFixed(2)} ms/MiB`,
  };
}

/**
 * Writing fresh memory (page faults) against writing it again, per MiB. On a
 * machine with slow page faults (a VM with shadow paging) memory is time: a
 * start-up that touches 150 MB pays for it many times over what its code costs.
 */
function memoryTouch(): { first: number; again: number } {
  const mib = 64;
  const firsts: number[] = [];
  const agains: number[] = [];
  for (let r = 0; r < 3; r++) {
    const b = Buffer.allocUnsafeSlow(mib * 2 ** 20);
    let t = process.hrtime.bigint();
    b.fill(r + 1);
    firsts.push(Number(process.hrtime.bigint() - t) / 1e6 / mib);
    t = process.hrtime.bigint();
    b.fill(r + 2);
    agains.push(Number(process.hrtime.bigint() - t) / 1e6 / mib);
  }
  return { first: median(firsts), again: median(agains) };
}

async function main(): Promise<void> {
  const p = params(process.argv.slice(2));
  const command = `node dist/bench/run.js ${process.argv.slice(2).join(' ')}`.trim();
  log(`weir benchmarks (${p.quick ? 'quick' : 'full'}): ${JSON.stringify(p)}`);
  const outFile = path.join(REPO, 'bench', p.quick ? 'results-quick.json' : 'results.json');
  // --sections a,b re-measures only those and keeps the rest of the last results ("iptables" is only measured when named).
  const sectionsArg = process.argv.indexOf('--sections');
  const all = ['ffi', 'packet', 'control', 'path', 'wire'];
  const sections = new Set(sectionsArg >= 0 ? process.argv[sectionsArg + 1]!.split(',') : all);
  if (sections.has('iptables')) {
    // Its own results file: BENCHMARKS.md is the other sections' report.
    log('iptables mode at scale');
    const file = path.join(REPO, 'bench', p.quick ? 'results-iptables-quick.json' : 'results-iptables.json');
    const iptablesScale = await benchIptables(p);
    fs.writeFileSync(file, JSON.stringify({ machine: machine(), date: new Date().toISOString().slice(0, 10), command, params: p, iptablesScale }, null, 2) + '\n');
    log(`results written to bench/${path.basename(file)}`);
    sections.delete('iptables');
    if (sections.size === 0) return;
  }
  const prev = !all.every((x) => sections.has(x)) && fs.existsSync(outFile) ? (JSON.parse(fs.readFileSync(outFile, 'utf8')) as Results) : null;
  const results = { ...(prev ?? {}), machine: machine(), date: new Date().toISOString().slice(0, 10), command, params: p } as Results;
  if (sections.has('ffi')) {
    log('FFI cost per map operation');
    results.ffi = benchFfi();
  }
  if (sections.has('packet')) {
    log('Dataplane per packet (BPF_PROG_TEST_RUN)');
    results.packet = benchPacket(p);
    log(
      `  established ${results.packet.establishedNs} ns hot (single run ${results.packet.establishedSingleNs} ns), new flow ${results.packet.newFlowNs} ns, not a service ${results.packet.passNs} ns, loopback not a service ${results.packet.loopbackPassNs} ns, floor ${results.packet.floorNs} ns`,
    );
    const v6 = results.packet.ipv6!;
    log(`  IPv6: established ${v6.establishedNs} ns hot (single run ${v6.establishedSingleNs} ns), new flow ${v6.newFlowNs} ns, not a service ${v6.passNs} ns`);
  }
  if (sections.has('control')) {
    log('Control plane');
    Object.assign(results, await benchControlPlane(p));
  }
  if (sections.has('path')) {
    log('Real namespace path');
    results.path = await benchPath(p);
  }
  if (sections.has('wire')) {
    log('wrk and iperf3 through every dataplane');
    results.wire = await benchWire({ sizes: p.pathSizes, rounds: p.quick ? 1 : 3, seconds: p.quick ? 2 : 5, variants: VARIANTS });
  }
  fs.writeFileSync(outFile, JSON.stringify(results, null, 2) + '\n');
  if (!p.quick) report(results, REPO);
  log(`results written to bench/${p.quick ? 'results-quick.json' : 'results.json'}${p.quick ? '' : ', BENCHMARKS.md, bench/latency.svg'}`);
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exitCode = 1;
});
