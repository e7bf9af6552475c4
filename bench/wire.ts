/**
 * The wire benchmark: standard clients through the real namespace path,
 * every dataplane side by side in one run.
 *
 * Each variant gets a node of its own in one cluster in a box, with a
 * client pod and an nginx pod on it; the client reaches nginx through a
 * ClusterIP (the measured service, which sorts after the N - 1 others):
 *
 *   none       no proxy: the client addresses the nginx pod directly
 *   tc-floor   no proxy, and a tc program that passes every packet at once
 *              (bench/floor.bpf.c) at ingress and egress of both pods'
 *              devices: what running any tc program there costs
 *   bpf-tc     weir, BPF mode; the pods are outside its cgroup (tc path)
 *   bpf-sock   weir, BPF mode; the pods inside its cgroup (socket path)
 *   bpf-direct weir, BPF mode, but the client addresses the nginx pod: what
 *              having the programs attached costs traffic that is no service's
 *   nftables   weir, nftables mode (where this build has it)
 *   iptables   weir, iptables mode
 *   kp-nft     a kube-proxy nftables-shaped ruleset (bench/kube-proxy-nft.ts)
 *
 * Every variant is programmed once per scale; then rounds interleave them
 * (each round rotates the order), so a slow spell of a shared machine
 * falls on all. Per round and variant: wrk with a new connection per
 * request (`Connection: close`), wrk with keep-alive (both -t1 -c8, with
 * latency percentiles), and one iperf3 stream. Ratios to `none` are taken
 * per round; the report gives medians and how many rounds each bar held.
 *
 *   node dist/bench/wire.js [--sizes 1,1000,10000] [--rounds 3] [--seconds 5] [--variants a,b]
 *
 * Traffic stays inside the box's namespaces.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, Box, CLUSTER_CIDR, REPO } from '../test/box/box';
import { RUN_FLAGS } from '../ts/cli/options';
import { lbMapArgs, lbMapEntries } from './coldstart';
import { kubeProxyNftRuleset, PeerService } from './kube-proxy-nft';
import { epAddr, serviceObj, sliceObj, vip, writeManifests } from './manifests';

export const VARIANTS = ['none', 'tc-floor', 'bpf-direct', 'bpf-tc', 'bpf-sock', 'nftables', 'iptables', 'kp-nft'] as const;
export type Variant = (typeof VARIANTS)[number];

export interface WireSample {
  /** New connection per request: requests (= connections) per second, latency percentiles in µs. */
  closeRps: number;
  closeP50Us: number;
  closeP99Us: number;
  keepaliveRps: number;
  keepaliveP99Us: number;
  /** One iperf3 TCP stream, Gbit/s. */
  iperfGbps: number;
}

export interface WireResult {
  services: number;
  endpoints: number;
  rounds: number;
  seconds: number;
  /** Variants that could not be programmed (or are not in this build), and why. */
  skipped: Record<string, string>;
  /** Per variant, one sample per round. */
  samples: Partial<Record<Variant, WireSample[]>>;
  /** Programming time per variant (agent start to ready, or nft -f), ms. */
  programmedMs: Partial<Record<Variant, number>>;
}

const ENDPOINTS = 10;
const TARGET = 65_000;
const HTTP_PORT = 80;
const IPERF_PORT = 5201;
const SERVICE_CIDR = '10.96.0.0/12';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const log = (s: string): void => void process.stderr.write(`${s}\n`);

function nginxConf(dir: string): string {
  // One worker (the machine has two cores: wrk takes the other), no logs, a fixed body.
  return `worker_processes 1;
daemon off;
user root;
pid ${dir}/nginx.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_requests 1000000;
  server { listen 8080 reuseport backlog=4096; location / { return 200 "ok\\n"; } }
}
`;
}

/** wrk's summary: Requests/sec and the --latency percentiles. */
export function parseWrk(out: string): { rps: number; p50Us: number; p99Us: number } {
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const pct = (p: string): number => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s)\\s*$`, 'm').exec(out);
    if (!m) return NaN;
    const v = Number(m[1]);
    return m[2] === 'us' ? v : m[2] === 'ms' ? v * 1000 : v * 1e6;
  };
  return { rps, p50Us: pct('50'), p99Us: pct('99') };
}

interface Lane {
  variant: Variant;
  node: string;
  client: string;
  server: string;
  /** Where the client connects: the ClusterIP, or the pod for `none`. */
  host: string;
  httpPort: number;
  iperfPort: number;
  agent?: Agent;
}

async function measure(box: Box, lane: Lane, seconds: number): Promise<WireSample> {
  const url = `http://${lane.host}:${lane.httpPort}/`;
  const wrk = async (close: boolean): Promise<ReturnType<typeof parseWrk>> => {
    const argv = ['wrk', '-t1', '-c8', `-d${seconds}s`, '--latency', ...(close ? ['-H', 'Connection: close'] : []), url];
    const r = await box.execAs(lane.client, argv, (seconds + 30) * 1000);
    const res = parseWrk(r.stdout);
    if (r.code !== 0 || !Number.isFinite(res.rps)) throw new Error(`${lane.variant}: wrk failed (${r.code}): ${r.stdout}${r.stderr}`);
    if (/Non-2xx|Socket errors: connect [1-9]/.test(r.stdout)) throw new Error(`${lane.variant}: wrk saw errors: ${r.stdout}`);
    return res;
  };
  const close = await wrk(true);
  const keep = await wrk(false);
  const ip = await box.execAs(lane.client, ['iperf3', '-c', lane.host, '-p', String(lane.iperfPort), '-t', String(seconds), '-J'], (seconds + 30) * 1000);
  const gbps = ip.code === 0 ? (JSON.parse(ip.stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second / 1e9 : NaN;
  if (!Number.isFinite(gbps)) throw new Error(`${lane.variant}: iperf3 failed (${ip.code}): ${ip.stdout.slice(-500)}${ip.stderr}`);
  return {
    closeRps: Math.round(close.rps),
    closeP50Us: Math.round(close.p50Us),
    closeP99Us: Math.round(close.p99Us),
    keepaliveRps: Math.round(keep.rps),
    keepaliveP99Us: Math.round(keep.p99Us),
    iperfGbps: Math.round(gbps * 100) / 100,
  };
}

/** The do-nothing program (`make bench` builds it). */
const FLOOR_OBJ = path.join(REPO, 'build/bench/floor.o');

/**
 * tc-floor: the pass-everything program at ingress and egress of the lane's
 * two pod devices (they go with the box). tc's object loader makes its pin
 * directories (tc/globals, ip, xdp) under the bpffs it finds, so it runs in
 * a mount namespace of its own, on a bpffs that ends with it: the machine's
 * /sys/fs/bpf keeps nothing. The filter holds the program, not the pins.
 */
async function attachFloor(box: Box, lane: Lane): Promise<void> {
  if (!fs.existsSync(FLOOR_OBJ)) throw new Error(`${FLOOR_OBJ} is missing: \`make bench\` builds it`);
  const ns = box.node(lane.node).ns;
  const privateBpffs = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount -t bpf bpf /sys/fs/bpf && exec "$@"', 'sh'];
  for (const dev of [box.pod(lane.client).hostDev, box.pod(lane.server).hostDev]) {
    const argvs = [
      ['tc', 'qdisc', 'replace', 'dev', dev, 'clsact'],
      ...['ingress', 'egress'].map((dir) => [...privateBpffs, 'tc', 'filter', 'replace', 'dev', dev, dir, 'bpf', 'direct-action', 'obj', FLOOR_OBJ, 'sec', 'tc']),
    ];
    for (const argv of argvs) {
      const r = await box.exec(ns, argv);
      if (r.code !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr}`);
    }
  }
}

/** Does this build's `--mode` take `mode`? */
function hasMode(mode: string): boolean {
  return (RUN_FLAGS.mode.placeholder ?? '').split('|').includes(mode);
}

export async function benchWire(o: { sizes: number[]; rounds: number; seconds: number; variants: readonly Variant[] }): Promise<WireResult[]> {
  const variants = o.variants.filter((v) => v !== 'nftables' || hasMode('nftables'));
  const lanes: Lane[] = variants.map((variant, i) => ({ variant, node: `n${i + 1}`, client: `c${i + 1}`, server: `s${i + 1}`, host: '', httpPort: HTTP_PORT, iperfPort: IPERF_PORT }));
  const sockNodes = lanes.filter((l) => l.variant === 'bpf-sock').map((l) => l.node);
  const box = await Box.create({ nodes: lanes.length, podsUnderCgroup: sockNodes });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'weir-wire-'));
  const results: WireResult[] = [];
  try {
    for (const lane of lanes) {
      const server = await box.addPod(lane.node, lane.server);
      await box.addPod(lane.node, lane.client);
      const dir = path.join(tmp, lane.server);
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, 'nginx.conf'), nginxConf(dir));
      box.spawnArgv(box.argvFor(lane.server, ['nginx', '-e', 'stderr', '-p', dir, '-c', path.join(dir, 'nginx.conf')]), server.ns);
      box.spawnArgv(box.argvFor(lane.server, ['iperf3', '-s', '-p', String(IPERF_PORT)]), server.ns);
    }
    await sleep(500);
    for (const n of o.sizes) {
      const res: WireResult = { services: n, endpoints: ENDPOINTS, rounds: o.rounds, seconds: o.seconds, skipped: {}, samples: {}, programmedMs: {} };
      for (const f of fs.readdirSync(box.manifestDir)) fs.rmSync(path.join(box.manifestDir, f));
      // n - 1 services of 10 endpoints each (addresses nothing answers; never reached), then one
      // measured service per lane, sorting last: the worst case for a linear walk.
      writeManifests(box.manifestDir, n - 1, (i) => Array.from({ length: ENDPOINTS }, (_, j) => epAddr(i * ENDPOINTS + j)));
      const targets = lanes.map((l, i) => {
        const svc = serviceObj(TARGET + i, `zz-target-${l.node}`);
        svc.spec!.ports = [
          { name: 'http', port: HTTP_PORT, targetPort: 8080 },
          { name: 'iperf', port: IPERF_PORT, targetPort: IPERF_PORT },
        ];
        const slice = sliceObj(TARGET + i, [box.pod(l.server).ip], `zz-target-${l.node}`);
        slice.ports = [
          { name: 'http', port: 8080, protocol: 'TCP' },
          { name: 'iperf', port: IPERF_PORT, protocol: 'TCP' },
        ];
        return [svc, slice];
      });
      box.writeManifest('targets.json', JSON.stringify({ apiVersion: 'v1', kind: 'List', items: targets.flat() }));
      const entries = lbMapEntries(n + lanes.length, ENDPOINTS);
      for (const [i, lane] of lanes.entries()) {
        const direct = lane.variant === 'none' || lane.variant === 'tc-floor' || lane.variant === 'bpf-direct';
        lane.host = direct ? box.pod(lane.server).ip : vip(TARGET + i);
        lane.httpPort = direct ? 8080 : HTTP_PORT;
        const t0 = Date.now();
        if (lane.variant === 'kp-nft') {
          const peer: PeerService[] = [];
          for (let k = 0; k < n - 1; k++) peer.push({ vip: vip(k), port: HTTP_PORT, endpoints: Array.from({ length: ENDPOINTS }, (_, j) => ({ addr: epAddr(k * ENDPOINTS + j), port: 8080 })) });
          for (const [j, l] of lanes.entries()) {
            const ip = box.pod(l.server).ip;
            peer.push({ vip: vip(TARGET + j), port: HTTP_PORT, endpoints: [{ addr: ip, port: 8080 }] });
            peer.push({ vip: vip(TARGET + j), port: IPERF_PORT, endpoints: [{ addr: ip, port: IPERF_PORT }] });
          }
          const file = path.join(tmp, 'kube-proxy.nft');
          fs.writeFileSync(file, kubeProxyNftRuleset(peer, { clusterCidr: CLUSTER_CIDR, serviceCidr: SERVICE_CIDR }));
          const r = await box.exec(box.node(lane.node).ns, ['nft', '-f', file], { timeoutMs: 600_000 });
          if (r.code !== 0) throw new Error(`nft -f: ${r.stderr}`);
        } else if (lane.variant === 'tc-floor') {
          await attachFloor(box, lane);
        } else if (lane.variant !== 'none') {
          const mode = lane.variant.startsWith('bpf') ? 'bpf' : lane.variant;
          await box.weir(lane.node, ['cleanup']).catch(() => undefined);
          try {
            lane.agent = await box.startAgent(lane.node, ['--mode', mode, ...lbMapArgs(entries)], { readyTimeoutMs: 600_000, waitReady: false });
            await lane.agent.proc.waitFor(/"msg":"ready"/, 600_000);
          } catch (e) {
            res.skipped[lane.variant] = `not programmed within 600 s (${(e as Error).message.split('\n')[0]})`;
            if (lane.agent) await lane.agent.stop();
            lane.agent = undefined;
            continue;
          }
        }
        res.programmedMs[lane.variant] = Date.now() - t0;
        log(`  ${lane.variant} ${n} services: programmed in ${res.programmedMs[lane.variant]} ms`);
      }
      const live = lanes.filter((l) => !res.skipped[l.variant]);
      await sleep(1000); // tc attach on new devices, and the agents' first drift scan
      // Warm-up, not measured: nginx and the caches of each path.
      for (const lane of live) await measure(box, lane, 1);
      for (let r = 0; r < o.rounds; r++) {
        const order = live.map((_, i) => live[(i + r) % live.length]!);
        for (const lane of order) {
          const s = await measure(box, lane, o.seconds);
          (res.samples[lane.variant] ??= []).push(s);
          log(`  round ${r + 1}/${o.rounds} ${lane.variant} ${n} services: ${s.closeRps} conn/s (p99 ${s.closeP99Us} µs), keep-alive ${s.keepaliveRps} req/s, iperf3 ${s.iperfGbps} Gbit/s`);
        }
      }
      for (const lane of lanes) {
        if (lane.agent) await lane.agent.stop();
        lane.agent = undefined;
        if (lane.variant === 'kp-nft') await box.exec(box.node(lane.node).ns, ['nft', 'delete', 'table', 'ip', 'kube-proxy']);
        else if (lane.variant !== 'none' && lane.variant !== 'tc-floor') await box.weir(lane.node, ['cleanup']).catch(() => undefined);
      }
      results.push(res);
      log(summary(res).join('\n'));
    }
  } finally {
    await box.destroy();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return results;
}

/** Of the finite values; for an even count, the mean of the two middle ones. */
export const median = (xs: readonly number[]): number => {
  const s = [...xs].filter(Number.isFinite).sort((a, b) => a - b);
  return s.length === 0 ? NaN : ((s[(s.length - 1) >> 1] ?? NaN) + (s[s.length >> 1] ?? NaN)) / 2;
};

/** Per-round ratios of a variant's new-connection rate to another's. */
export function ratios(res: WireResult, v: Variant, to: Variant): number[] {
  const a = res.samples[v] ?? [];
  const b = res.samples[to] ?? [];
  return a.map((s, i) => s.closeRps / (b[i]?.closeRps ?? NaN)).filter(Number.isFinite);
}

export interface WireBar {
  /** "tc path ≥ 0.95× no proxy": the path, and what it is held to. */
  readonly bar: string;
  readonly path: string;
  readonly target: string;
  /** The median of the per-round ratios (two decimals), and whether it holds the bar (unrounded). */
  readonly median: number;
  readonly met: boolean;
  readonly held: number;
  readonly rounds: number;
}

/** The bars this benchmark holds the dataplanes to, per scale: median ratio and rounds held. */
export function bars(res: WireResult): WireBar[] {
  const bar = (path: string, target: string, v: Variant, to: Variant, min: number): WireBar => {
    const r = ratios(res, v, to);
    return { bar: `${path} ≥ ${target}`, path, target, median: Math.round(median(r) * 100) / 100, met: median(r) >= min, held: r.filter((x) => x >= min).length, rounds: r.length };
  };
  return [bar('tc path', '0.95× no proxy', 'bpf-tc', 'none', 0.95), bar('tc path', 'kube-proxy nftables', 'bpf-tc', 'kp-nft', 1), bar('socket path', '0.98× no proxy', 'bpf-sock', 'none', 0.98)];
}

export function summary(res: WireResult): string[] {
  const lines = [`${res.services} services × ${res.endpoints} endpoints, ${res.rounds} rounds of ${res.seconds} s (medians; ratio to no proxy per round, then the median):`];
  for (const v of VARIANTS) {
    const ss = res.samples[v];
    if (!ss?.length) {
      if (res.skipped[v]) lines.push(`  ${v.padEnd(10)} skipped: ${res.skipped[v]}`);
      continue;
    }
    const m = (k: keyof WireSample): number => Math.round(median(ss.map((s) => s[k])) * 100) / 100;
    const ratio = median(ratios(res, v, 'none'));
    lines.push(
      `  ${v.padEnd(10)} ${String(m('closeRps')).padStart(6)} conn/s (${ratio.toFixed(2)}×) p50 ${m('closeP50Us')} µs p99 ${m('closeP99Us')} µs | keep-alive ${m('keepaliveRps')} req/s p99 ${m('keepaliveP99Us')} µs | iperf3 ${m('iperfGbps')} Gbit/s`,
    );
  }
  for (const b of bars(res)) if (b.rounds) lines.push(`  bar: ${b.bar}: median ${b.median}, held in ${b.held} of ${b.rounds} rounds`);
  return lines;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '1,1000,10000' },
      rounds: { type: 'string', default: '3' },
      seconds: { type: 'string', default: '5' },
      variants: { type: 'string', default: VARIANTS.join(',') },
      out: { type: 'string', default: path.join(REPO, 'bench', 'results-wire.json') },
    },
  });
  const variants = values.variants.split(',') as Variant[];
  const bad = variants.filter((v) => !(VARIANTS as readonly string[]).includes(v));
  if (bad.length) throw new Error(`--variants: unknown ${bad.join(', ')} (expected ${VARIANTS.join(', ')})`);
  const results = await benchWire({ sizes: values.sizes.split(',').map(Number), rounds: Number(values.rounds), seconds: Number(values.seconds), variants });
  fs.writeFileSync(values.out, JSON.stringify({ machine: { cpus: os.cpus().length, kernel: os.release(), at: new Date().toISOString() }, results }, null, 2) + '\n');
  for (const r of results) process.stdout.write(summary(r).join('\n') + '\n');
}

if (require.main === module) {
  main().catch((e: unknown) => {
    process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
