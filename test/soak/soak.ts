/**
 * The generative test: a seeded random sequence of what an operator's node
 * lives through, applied to the real agent in a cluster in a box, with the
 * oracle checked after every step (DESIGN.md §8):
 *
 *  - `weir check` finds no violated invariant in the kernel's maps;
 *  - `weir services --json` equals what the pure plan makes of the
 *    manifests on disk (ids aside: each frontend's flags, affinity and
 *    backend set);
 *  - real connections from a pod to a sample of live ClusterIPs of each
 *    family reach a backend of that frontend; connections to ClusterIPs
 *    gone from the plan do not.
 *
 * The box is dual-stack: a Service is IPv4-only, IPv6-only or dual-stack in
 * either order, its EndpointSlices one per address type, its externalIPs,
 * LoadBalancer IPs and source ranges of either family; the kernel is read
 * from both families' maps.
 *
 * Steps: Services and EndpointSlices created, changed and deleted (every
 * kind weir serves), files rewritten in place (truncated, then written, as
 * `kubectl get -o yaml > f` does), renamed, objects moved between files, a
 * bad object added and removed, the agent restarted (SIGTERM; half the
 * time with changes made while none runs), killed (SIGKILL) right after a
 * change, a second agent started on the same pin root, a hand edit of a
 * map with bpftool (revnat or revnat6, or a word of the port filter), and
 * an agent on maps too small for the state (its writes fail) followed by
 * one on the right size. Part of the run keeps both cores busy with other
 * processes.
 *
 * In nftables and iptables mode the kernel side is the agent's rules: as
 * its partial commits left them, they must equal what a first commit of
 * the same plan writes in a network namespace of the soak's own (both
 * listed by nft or iptables-save and put in one order by the soak itself,
 * not by weir's drift comparison). nftables mode's hand edits are made with
 * nft. iptables mode's are what it finds on its sync period (a table
 * flushed or replaced, a hook deleted, in either family); a rule changed
 * inside one of its chains waits for the hourly full sync, as in
 * kube-proxy, so the soak makes none.
 * Neither fallback has the maps-too-small step.
 *
 * A failure throws with the seed and the steps so far: `make soak SEED=n
 * STEPS=m [MODE=nftables|iptables]` replays it.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Agent, Box, CLI, CLUSTER_CIDR, CLUSTER_CIDR6, waitFor } from '../box/box';
import type { NsProcess } from '../box/exec';
import { FrontendView, ServicesView, hostPort, readServices } from '../../ts/datapath/dump';
import { runPipeline } from '../unit/pipeline';
import { loadShim } from '../../ts/datapath/ffi';
import { openPinned } from '../../ts/datapath/loader';
import { rng } from '../unit/rng';
import { parseCidr, type IP } from '../../ts/model/types';
import { ServicePlan, planService } from '../../ts/plan/plan';
import { NftablesDataplane } from '../../ts/fallback/nftables';
import { IptablesDataplane, ruleArgs } from '../../ts/fallback/iptables';
import { CommandRunner } from '../../ts/fallback/command';
import { HOOKS } from '../../ts/fallback/render';
import { iptablesLocalMatches } from '../../ts/runner/local-detector';
import { createLogger } from '../../ts/util/log';

export interface SoakOptions {
  readonly seed: number;
  readonly steps: number;
  /** The agent's dataplane (default bpf). */
  readonly mode?: 'bpf' | 'nftables' | 'iptables';
  /** Progress lines (one per step). */
  readonly log?: (line: string) => void;
}

const PODS = ['p0', 'p1', 'p2', 'p3'];
const SERVICES = 6;
const SYNC_PERIOD = '1s';

type Kind = 'svc' | 'slice' | 'bad';
interface Obj {
  readonly id: string;
  readonly kind: Kind;
  text: string;
}

class Random {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = rng(seed);
  }
  float(): number {
    return this.next();
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

/** The manifests: objects and which file holds each. */
class Manifests {
  readonly objects = new Map<string, Obj>();
  readonly fileOf = new Map<string, string>();
  private fileSeq = 0;
  constructor(readonly dir: string) {}

  files(): string[] {
    return [...new Set(this.fileOf.values())].sort();
  }

  newFile(): string {
    return `m${this.fileSeq++}.yaml`;
  }

  text(file: string): string {
    return [...this.fileOf]
      .filter(([, f]) => f === file)
      .map(([id]) => this.objects.get(id)!.text)
      .join('---\n');
  }

  /** Write one file atomically (a temp file renamed over it). */
  write(file: string): void {
    const body = this.text(file);
    const p = path.join(this.dir, file);
    if (!body) return void fs.rmSync(p, { force: true });
    fs.writeFileSync(path.join(this.dir, `.${file}.tmp`), body);
    fs.renameSync(path.join(this.dir, `.${file}.tmp`), p);
  }

  /** Truncate, pause, write: what a shell redirection does. */
  async rewriteInPlace(file: string, pauseMs: number): Promise<void> {
    const p = path.join(this.dir, file);
    fs.writeFileSync(p, '');
    await sleep(pauseMs);
    fs.writeFileSync(p, this.text(file));
  }

  put(o: Obj, file?: string): string {
    this.objects.set(o.id, o);
    const f = file ?? this.fileOf.get(o.id) ?? this.newFile();
    this.fileOf.set(o.id, f);
    return f;
  }

  remove(id: string): string | undefined {
    const f = this.fileOf.get(id);
    this.objects.delete(id);
    this.fileOf.delete(id);
    return f;
  }
}

/** A Service's families, primary first: IPv4-only, IPv6-only, or dual-stack in either order. */
type Families = readonly (4 | 6)[];
const FAMILY_CHOICES: readonly Families[] = [[4], [6], [4, 6], [6, 4]];

/** What the bad object's spec gets wrong: an address, or how its families fit together. */
const BAD_SPECS = [
  '  clusterIP: 10.96.100.300\n',
  '  clusterIP: "fd00:96::100:zz"\n',
  '  clusterIP: 10.96.100.99\n  clusterIPs: [10.96.100.99, 10.96.100.98]\n  ipFamilyPolicy: RequireDualStack\n',
  '  clusterIP: 10.96.100.99\n  clusterIPs: [10.96.100.99, "fd00:96::100:99"]\n  ipFamilies: [IPv6, IPv4]\n  ipFamilyPolicy: PreferDualStack\n',
  '  clusterIP: 10.96.100.99\n  clusterIPs: [10.96.100.99, "fd00:96::100:99"]\n  ipFamilyPolicy: SingleStack\n',
];

/** Service s<i>'s addresses of each family: ClusterIP, externalIP, LoadBalancer ingress IP. */
const clusterIP = (f: 4 | 6, i: number): string => (f === 4 ? `10.96.100.${i + 1}` : `fd00:96::100:${i + 1}`);
const externalIP = (f: 4 | 6, i: number): string => (f === 4 ? `172.31.0.${i + 1}` : `2001:db8:31::${i + 1}`);
const lbIP = (f: 4 | 6, i: number): string => (f === 4 ? `172.30.0.${i + 1}` : `2001:db8:30::${i + 1}`);
const familyName = (f: 4 | 6): string => `IPv${f}`;
const quoted = (xs: readonly string[]): string => `[${xs.map((x) => `"${x}"`).join(', ')}]`;

/**
 * The family fields as the API server leaves them: a single-stack Service
 * with or without ipFamilies, ipFamilyPolicy and clusterIPs spelled out; a
 * dual-stack one with PreferDualStack or RequireDualStack, its primary
 * family first. Sometimes PreferDualStack with one family (a cluster that
 * gave it only one).
 */
function familyLines(r: Random, i: number, fams: Families): string[] {
  const ips = fams.map((f) => clusterIP(f, i));
  const lines = [`  clusterIP: "${ips[0]!}"`];
  if (fams.length === 2 || r.chance(0.5)) lines.push(`  clusterIPs: ${quoted(ips)}`);
  if (fams.length === 2 || r.chance(0.5)) lines.push(`  ipFamilies: [${fams.map(familyName).join(', ')}]`);
  const policy = fams.length === 2 ? r.pick(['PreferDualStack', 'RequireDualStack']) : r.pick(['', 'SingleStack', 'PreferDualStack']);
  if (policy) lines.push(`  ipFamilyPolicy: ${policy}`);
  return lines;
}

/**
 * A random subset of [IPv4, IPv6] addresses: mostly of the Service's own
 * families, sometimes of the other one too (which no family's plan takes).
 */
function someOf(r: Random, fams: Families, addr: (f: 4 | 6) => string): string[] {
  const pool: (4 | 6)[] = r.chance(0.2) ? [4, 6] : [...fams];
  const out = pool.filter(() => r.chance(0.7)).map(addr);
  return out.length ? out : [addr(fams[0]!)];
}

function serviceYaml(r: Random, i: number): string {
  const type = r.pick(['ClusterIP', 'ClusterIP', 'NodePort', 'LoadBalancer'] as const);
  const fams = r.pick(FAMILY_CHOICES);
  const lines = [
    'apiVersion: v1',
    'kind: Service',
    `metadata: {name: s${i}, namespace: soak}`,
    'spec:',
    `  type: ${type}`,
    ...familyLines(r, i, fams),
    `  ports: [{name: http, port: 80, targetPort: 8080${type === 'ClusterIP' ? '' : `, nodePort: ${30100 + i}`}}]`,
  ];
  if (r.chance(0.3)) lines.push('  sessionAffinity: ClientIP', `  sessionAffinityConfig: {clientIP: {timeoutSeconds: ${r.pick([30, 10800])}}}`);
  if (r.chance(0.2)) lines.push('  internalTrafficPolicy: Local');
  if (type !== 'ClusterIP' && r.chance(0.4)) lines.push('  externalTrafficPolicy: Local');
  if (r.chance(0.25)) lines.push(`  externalIPs: ${quoted(someOf(r, fams, (f) => externalIP(f, i)))}`);
  if (type === 'LoadBalancer') {
    if (r.chance(0.4)) {
      // Each family's ranges, or one family's only (the other family's frontends then have none of theirs).
      const ranges = r.pick([
        ['10.244.0.0/16', '192.168.0.0/16'],
        ['fd00:244::/32', 'fd00:77::/64'],
        ['10.244.0.0/16', '192.168.0.0/16', 'fd00:244::/32', 'fd00:77::/64'],
      ]);
      lines.push(`  loadBalancerSourceRanges: ${quoted(ranges)}`);
    }
    lines.push(
      'status:',
      `  loadBalancer: {ingress: [${someOf(r, fams, (f) => lbIP(f, i))
        .map((ip) => `{ip: "${ip}"}`)
        .join(', ')}]}`,
    );
  }
  return lines.join('\n') + '\n';
}

/** Service s<i>'s EndpointSlice of one address type: its pods' addresses of that family. */
function sliceYaml(r: Random, i: number, family: 4 | 6, pods: ReadonlyMap<string, { ip: string; ip6: string }>): string {
  const eps = PODS.filter(() => r.chance(0.5)).map((p) => {
    const c = r.float();
    // Mostly ready; sometimes terminating but serving (kube-proxy's fallback), sometimes neither.
    const cond = c < 0.75 ? '{ready: true}' : c < 0.9 ? '{ready: false, serving: true, terminating: true}' : '{ready: false, serving: false}';
    const pod = pods.get(p)!;
    return `{addresses: ["${family === 4 ? pod.ip : pod.ip6}"], nodeName: n1, conditions: ${cond}}`;
  });
  return (
    [
      'apiVersion: discovery.k8s.io/v1',
      'kind: EndpointSlice',
      `metadata: {name: s${i}-${family === 4 ? 'a' : 'b6'}, namespace: soak, labels: {kubernetes.io/service-name: s${i}}}`,
      `addressType: ${familyName(family)}`,
      'ports: [{name: http, port: 8080}]',
      `endpoints: [${eps.join(', ')}]`,
    ].join('\n') + '\n'
  );
}

/** A frontend as a line with no ids in it: what must be equal between the kernel and the plan. */
function frontendLine(f: FrontendView): string {
  const bes = f.backends.map((b) => (b ? hostPort(b.addr, b.port) : 'MISSING')).sort();
  return `${hostPort(f.addr, f.port)}/${f.proto} ${f.scope} [${f.flags.join(',')}] aff=${f.affinityTimeout} -> ${bes.join(' ') || '(none)'}`;
}

function viewLines(v: ServicesView): string[] {
  return v.frontends.map(frontendLine).sort();
}

type Json = Record<string, unknown>;

/**
 * `nft -j list table inet weir` as sorted lines that do not depend on how
 * the table was built: handles dropped, counters zeroed, each set's
 * elements sorted, each rule numbered by its place in its chain. The
 * elements of sets the kernel fills (the affinity sets: flags dynamic or
 * timeout) are left out.
 */
function tableLines(listing: string): string[] {
  const lines: string[] = [];
  const place = new Map<string, number>();
  const strip = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(strip);
    if (v === null || typeof v !== 'object') return v;
    const out: Json = {};
    for (const [k, x] of Object.entries(v as Json)) if (k !== 'handle' && k !== 'family' && k !== 'table') out[k] = k === 'counter' ? {} : strip(x);
    return out;
  };
  for (const o of (JSON.parse(listing) as { nftables: Json[] }).nftables) {
    const [kind, body] = Object.entries(o)[0] as [string, Json];
    if (kind === 'metainfo' || kind === 'table') continue;
    const b = strip(body) as Json;
    if (kind === 'rule') {
      const chain = b.chain as string;
      place.set(chain, (place.get(chain) ?? 0) + 1);
      lines.push(`rule ${chain} #${place.get(chain)!} ${JSON.stringify(b.expr)}`);
    } else if (kind === 'set' || kind === 'map') {
      const flags = ([] as unknown[]).concat(b.flags ?? []);
      const filled = flags.includes('dynamic') || flags.includes('timeout') || b.timeout !== undefined;
      const elem = filled ? [] : ((b.elem as unknown[] | undefined) ?? []).map((e) => JSON.stringify(e)).sort();
      lines.push(`${kind} ${b.name as string} ${JSON.stringify({ ...b, elem })}`);
    } else lines.push(`${kind} ${(b.name as string | undefined) ?? ''} ${JSON.stringify(b)}`);
  }
  return lines.sort();
}

/** The chains whose lines are one per frontend, in no order that matters (jumpEdits in ts/fallback/iptables.ts). */
const ORDER_FREE = new Set(['nat WEIR-SERVICES', 'nat WEIR-NODEPORTS', 'filter WEIR-SERVICES', 'filter WEIR-PROXY-FIREWALL']);

/**
 * weir's part of `iptables-save` and `ip6tables-save` as sorted lines: its
 * chains, their rules numbered by place (sorted in the order-free chains,
 * whose last rule, the NodePort jump, must stay last), and the jumps to
 * them from the built-in chains (in no order: weir puts each first in its
 * chain when it finds it missing, so their order depends on which went).
 */
function iptablesLines(saves: Record<'4' | '6', string>): string[] {
  const lines: string[] = [];
  for (const [family, save] of Object.entries(saves)) {
    let table = '';
    const rules = new Map<string, string[]>();
    for (const line of save.split('\n')) {
      if (line.startsWith('*')) table = line.slice(1);
      const decl = /^:(WEIR\S*) /.exec(line);
      if (decl) lines.push(`${family} ${table} chain ${decl[1]!}`);
      const rule = /^-A (\S+) (.*)$/.exec(line);
      if (!rule || !(rule[1]!.startsWith('WEIR') || rule[2]!.includes('-j WEIR'))) continue;
      const key = `${table} ${rule[1]!}`;
      rules.set(key, [...(rules.get(key) ?? []), rule[2]!]);
    }
    for (const [key, rs] of rules) {
      if (!ORDER_FREE.has(key) && key.split(' ')[1]!.startsWith('WEIR')) rs.forEach((r, i) => lines.push(`${family} ${key} #${i + 1} ${r}`));
      else {
        const last = key === 'nat WEIR-SERVICES' ? rs.pop() : undefined;
        for (const r of rs.sort()) lines.push(`${family} ${key} ${r}`);
        if (last !== undefined) lines.push(`${family} ${key} #last ${last}`);
      }
    }
  }
  return lines.sort();
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What a run exercised, per family: so a test can tell a generator that stopped reaching IPv6 from one that passed. */
export interface SoakStats {
  /** Connections to live ClusterIPs that reached a backend. */
  readonly reached: Record<'v4' | 'v6', number>;
  /** Connections to ClusterIPs gone from the plan that (rightly) did not answer. */
  readonly refused: Record<'v4' | 'v6', number>;
  /** revnat entries deleted by hand (and repaired). */
  readonly revnatEdits: Record<'v4' | 'v6', number>;
  /** Port filter words cleared by hand (and repaired). */
  readonly portEdits: number;
  /** nftables mode: elements deleted and chains flushed with nft (and repaired). */
  readonly nftEdits: number;
  /** iptables mode: tables flushed or replaced and hooks deleted (and repaired). */
  readonly iptEdits: number;
}

export async function soak(opts: SoakOptions): Promise<SoakStats> {
  const stats = { reached: { v4: 0, v6: 0 }, refused: { v4: 0, v6: 0 }, revnatEdits: { v4: 0, v6: 0 }, portEdits: 0, nftEdits: 0, iptEdits: 0 };
  const mode = opts.mode ?? 'bpf';
  const fam = (addr: string): 'v4' | 'v6' => (addr.includes(':') ? 'v6' : 'v4');
  const r = new Random(opts.seed);
  const log = opts.log ?? ((): void => undefined);
  const steps: string[] = [];
  const box = await Box.create({ nodes: 1, ipv6: true });
  const busy: NsProcess[] = [];
  try {
    const podIPs = new Map<string, { ip: string; ip6: string }>();
    for (const p of PODS) {
      podIPs.set(p, await box.addPod('n1', p));
      await box.startEcho(p, { tcp: [8080] });
    }
    // A backend as a frontend line names it, to the pod whose echo answers there.
    const podOf = new Map([...podIPs].flatMap(([name, pod]) => [[hostPort(pod.ip, 8080), name] as const, [hostPort(pod.ip6, 8080), name] as const]));
    await box.addPod('n1', 'client');
    const m = new Manifests(box.manifestDir);
    const node = box.node('n1');
    const flags = ['--mode', mode, '--sync-period', SYNC_PERIOD, '--log-level', 'warn', '--cluster-cidr', `${CLUSTER_CIDR},${CLUSTER_CIDR6}`];
    const start = (extra: string[] = [], waitReady = true): Promise<Agent> => box.startAgent('n1', [...flags, ...extra], { waitReady, readyTimeoutMs: 30_000 });
    // --log-level warn hides "ready": wait for the pins and a clean check instead.
    let agent = await start([], false);
    /** Every ClusterIP the plan has had a frontend for (as frontend lines write it: IPv6 in brackets). */
    const everClusterIP = new Set<string>();

    const weir = async (args: string[]): Promise<{ code: number; stdout: string }> => {
      const res = await box.exec(node.ns, ['node', CLI, ...args, '--bpffs-root', box.pinRoot('n1')], { timeoutMs: 20_000 });
      return { code: res.code, stdout: res.stdout + res.stderr };
    };
    // The agent's node IPs are eth0's: IPv4, then IPv6; NodePorts answer on them and on 127.0.0.1 (never ::1).
    const nodeIPs = [node.ip as IP, node.ip6 as IP];
    const planCtx = { nodeName: 'n1', nodePortAddrs: [...nodeIPs, '127.0.0.1' as IP], nodeIPs };
    const cidrs = [CLUSTER_CIDR, CLUSTER_CIDR6].map((c) => parseCidr(c)!);
    const quiet = createLogger('error', () => undefined);
    /** nftables and iptables mode: a first commit of these plans, in a network namespace of its own, as listed. */
    const reference = async (plans: readonly ServicePlan[]): Promise<string[]> => {
      const ns = `weir-soak-ref-${crypto.randomBytes(3).toString('hex')}`;
      execFileSync('ip', ['netns', 'add', ns]);
      try {
        const run: CommandRunner = (argv, input) => {
          const res = spawnSync('ip', ['netns', 'exec', ns, ...argv], { input, encoding: 'utf8', maxBuffer: 1 << 26 });
          return { code: res.status ?? 1, stdout: res.stdout, stderr: res.stderr };
        };
        const dp =
          mode === 'nftables'
            ? new NftablesDataplane({ ctx: { clusterCIDRs: cidrs, masqueradeAll: false, localTraffic: { kind: 'cidrs', cidrs } }, log: quiet, run: async (argv, o) => run(argv, o?.input) })
            : new IptablesDataplane({
                ctx: { clusterCIDRs: cidrs, masqueradeAll: false, localTraffic: iptablesLocalMatches({ kind: 'cidrs', cidrs }) },
                log: quiet,
                run: async (argv, o) => run(argv, o?.input),
              });
        for (const plan of plans) dp.setService(plan.service, plan);
        await dp.commit();
        return mode === 'nftables' ? tableLines(run(['nft', '-j', 'list', 'table', 'inet', 'weir']).stdout) : iptablesLines({ 4: run(['iptables-save']).stdout, 6: run(['ip6tables-save']).stdout });
      } finally {
        spawnSync('ip', ['netns', 'del', ns]);
      }
    };
    // The pure plan of what is on disk, through the in-memory twin, read the way `weir services` reads the kernel.
    const planned = async (): Promise<{ lines: string[]; table: string[] }> => {
      const p = await runPipeline(box.manifestDir, planCtx);
      const lines = viewLines(readServices(p.maps));
      if (mode === 'bpf') return { lines, table: lines };
      return { lines, table: await reference([...p.store.services.values()].map((svc) => planService(svc, p.store.slicesOf(svc.key), { ...planCtx, zone: '' }))) };
    };
    // Polled in process, through the code behind `weir services` (a CLI process per poll would be most of a step's time).
    const shim = loadShim();
    const kernel = async (want: readonly string[]): Promise<string[] | null> => {
      if (mode === 'iptables') {
        const [v4, v6] = await Promise.all(['iptables-save', 'ip6tables-save'].map((cmd) => box.exec(node.ns, [cmd])));
        return v4!.code === 0 && v6!.code === 0 ? iptablesLines({ 4: v4!.stdout, 6: v6!.stdout }) : null;
      }
      if (mode === 'nftables') {
        const res = await box.exec(node.ns, ['nft', '-j', 'list', 'table', 'inet', 'weir']);
        if (res.code !== 0) return null;
        const have = tableLines(res.stdout);
        // A chain flushed by one commit is deleted by the next (docs/nftables.md): one with no rules may linger.
        return have.filter((l) => !l.startsWith('chain ') || want.includes(l) || have.some((x) => x.startsWith(`rule ${l.split(' ')[1]!} `)));
      }
      let maps: ReturnType<typeof openPinned<'svc' | 'be' | 'svc6' | 'be6'>>;
      try {
        maps = openPinned(shim, box.pinRoot('n1'), ['svc', 'be', 'svc6', 'be6']);
      } catch {
        return null; // not pinned yet
      }
      try {
        return viewLines(readServices(maps));
      } finally {
        for (const mp of Object.values(maps)) mp.close();
      }
    };

    /**
     * What a failed connection to `vip` met, for the report: whether the
     * same connection works when tried again, whether the backends answer
     * on their pod IPs, the node's conntrack entries and neighbours, and
     * (iptables mode) weir's rules with their counters.
     */
    const diagnose = async (vip: string, backends: ReadonlySet<string>): Promise<string> => {
      const out: string[] = [];
      for (let n = 0; n < 3; n++) out.push(`again: ${JSON.stringify((await box.tcp('client', `${vip}:80`, { count: 1, timeoutMs: 1500 })).attempts[0])}`);
      const v6 = vip.startsWith('[');
      for (const b of backends) {
        const pod = podIPs.get(b);
        if (!pod) continue;
        const to = v6 ? `[${pod.ip6}]:8080` : `${pod.ip}:8080`;
        out.push(`${b} at ${to}: ${JSON.stringify((await box.tcp('client', to, { count: 1, timeoutMs: 1500 })).attempts[0])}`);
      }
      const shell = async (argv: string[], keep: (l: string) => boolean = () => true): Promise<void> => {
        const res = await box.exec(node.ns, argv);
        out.push(`--- ${argv.join(' ')} (exit ${res.code})`, ...`${res.stdout}${res.stderr}`.split('\n').filter((l) => l && keep(l)));
      };
      await shell(['conntrack', '-L', '-f', v6 ? 'ipv6' : 'ipv4']);
      await shell(['ip', v6 ? '-6' : '-4', 'neigh']);
      if (mode === 'iptables') await shell([v6 ? 'ip6tables-save' : 'iptables-save', '-c'], (l) => l.includes('WEIR-') || l.startsWith('*'));
      out.push('--- agent', agent.logs().slice(-3000));
      return out.join('\n');
    };

    const converge = async (what: string): Promise<void> => {
      const { lines: want, table } = await planned();
      let have: string[] | null = null;
      try {
        await waitFor(
          async () => {
            have = await kernel(table);
            return have !== null && have.join('\n') === table.join('\n');
          },
          { timeoutMs: 20_000, intervalMs: 150, what },
        );
      } catch {
        const got: string[] = have ?? [];
        const only = (a: readonly string[], b: readonly string[]): string => a.filter((l) => !b.includes(l)).join('\n') || '(none)';
        throw new Error(`${what}: the kernel did not converge to the plan${have ? '' : ' (unreadable)'}\nplanned only:\n${only(table, got)}\nkernel only:\n${only(got, table)}`);
      }
      // A hand edit invisible to `weir services` (a revnat entry) is repaired on the sync period.
      let check = await weir(['check']);
      for (let n = 0; check.code !== 0 && n < 20; n++) {
        await sleep(250);
        check = await weir(['check']);
      }
      if (check.code !== 0) throw new Error(`${what}: weir check failed:\n${check.stdout}`);
      // Real connections: live ClusterIPs of each family reach one of their
      // backends; a ClusterIP the plan once had and no longer has (its
      // Service deleted, or this family dropped from it) does not answer.
      const live = new Map<string, Set<string>>();
      for (const line of want) {
        const mm = /^(10\.96\.100\.\d+|\[fd00:96::100:\d+\]):80\/TCP all \[cluster-ip.* -> (.*)$/.exec(line);
        if (!mm) continue;
        everClusterIP.add(mm[1]!);
        if (mm[2] === '(none)') continue;
        live.set(mm[1]!, new Set(mm[2]!.split(' ').map((ep) => podOf.get(ep) ?? ep)));
      }
      const shuffled = [...live.keys()].sort(() => r.float() - 0.5);
      // One of each family where there is one, then any other, two in all.
      const firsts = [shuffled.find((a) => !a.startsWith('[')), shuffled.find((a) => a.startsWith('['))].filter((a): a is string => a !== undefined);
      const sample = [...firsts, ...shuffled.filter((a) => !firsts.includes(a))].slice(0, 2);
      for (const vip of sample) {
        const res = await box.tcp('client', `${vip}:80`, { count: 1, timeoutMs: 1500 });
        const a = res.attempts[0]!;
        if (!a.ok || !live.get(vip)!.has(a.backend ?? ''))
          throw new Error(`${what}: ${vip}:80 answered ${JSON.stringify(a)}; backends: ${[...live.get(vip)!].join(',')}\n${await diagnose(vip, live.get(vip)!)}`);
        stats.reached[fam(vip)]++;
      }
      const wantAddrs = new Set(want.map((l) => /^(.*):\d+\//.exec(l)![1]!));
      const gone = [...everClusterIP].filter((a) => !wantAddrs.has(a)).sort();
      for (const of of [gone.filter((g) => !g.startsWith('[')), gone.filter((g) => g.startsWith('['))]) {
        if (!of.length) continue;
        const vip = r.pick(of);
        const res = await box.tcp('client', `${vip}:80`, { count: 1, timeoutMs: 300 });
        if (res.attempts[0]!.ok) throw new Error(`${what}: ${vip}:80, a ClusterIP no Service has any more, still answered`);
        stats.refused[fam(vip)]++;
      }
    };

    /** Delete a frontend or endpoint element, or flush a pick chain, of table inet weir; says which. */
    const nftEdit = async (): Promise<string> => {
      const res = await box.exec(node.ns, ['nft', '-j', 'list', 'table', 'inet', 'weir']);
      const edits: string[][] = [];
      const keyText = (k: unknown): string => {
        const v = (k as Json).elem ? ((k as Json).elem as Json).val : k;
        const c = (v as Json).concat;
        return Array.isArray(c) ? c.map(String).join(' . ') : String(v);
      };
      for (const o of res.code === 0 ? (JSON.parse(res.stdout) as { nftables: Json[] }).nftables : []) {
        const m = o.map as Json | undefined;
        if (m && /^(service-ips|cluster-endpoints-tcp)6?$/.test(m.name as string))
          for (const [k] of (m.elem as unknown[][] | undefined) ?? []) edits.push(['delete', 'element', 'inet', 'weir', m.name as string, `{ ${keyText(k)} }`]);
        const c = o.chain as Json | undefined;
        if (c && (c.name as string).startsWith('pick')) edits.push(['flush', 'chain', 'inet', 'weir', c.name as string]);
      }
      if (!edits.length) return 'nothing to edit';
      const edit = r.pick(edits.sort());
      const done = await box.exec(node.ns, ['nft', ...edit]);
      if (done.code !== 0) throw new Error(`nft ${edit.join(' ')}: ${done.stderr}`);
      stats.nftEdits++;
      return edit.join(' ');
    };

    /** Flush a table, replace it (as a firewall's iptables-restore without --noflush does), or delete a hook; says which. */
    const iptEdit = async (): Promise<string> => {
      const cmd = r.pick(['iptables', 'ip6tables']);
      const table = r.pick(['nat', 'filter'] as const);
      const how = r.int(3);
      let argv: string[];
      if (how === 0) argv = [cmd, '-t', table, '-F'];
      else if (how === 1) {
        const builtins = table === 'nat' ? ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'] : ['INPUT', 'FORWARD', 'OUTPUT'];
        argv = ['sh', '-c', `printf '${[`*${table}`, ...builtins.map((c) => `:${c} ACCEPT [0:0]`), 'COMMIT'].join('\\n')}\\n' | ${cmd}-restore`];
      } else {
        const h = r.pick(HOOKS.filter((x) => x.table === table));
        argv = [cmd, '-t', table, '-D', h.chain, ...ruleArgs(h.rule)];
      }
      const done = await box.exec(node.ns, argv);
      // A hook of a family weir has not written is not there to delete.
      if (done.code !== 0 && how !== 2) throw new Error(`${argv.join(' ')}: ${done.stderr}`);
      stats.iptEdits++;
      return `${argv.map((a) => (/\s/.test(a) ? `"${a}"` : a)).join(' ')}${done.code !== 0 ? ' (not there)' : ''}`;
    };

    await converge('start');
    for (let step = 0; step < opts.steps; step++) {
      // Busy cores for a third of the run, in stretches. The loop bounds
      // itself and is the process spawned, so a SIGKILL on teardown ends it.
      if (step % 30 === 10) for (let c = 0; c < 2; c++) busy.push(box.spawnArgv(['bash', '-c', 'end=$((SECONDS + 600)); while ((SECONDS < end)); do :; done']));
      if (step % 30 === 20) for (const b of busy.splice(0)) await box.stopProc(b, 500);
      const kind = r.float();
      let what: string;
      const i = r.int(SERVICES);
      const touch = (file: string | undefined): void => void (file && m.write(file));
      /** A Service or EndpointSlice of s<n> created, changed or deleted, as x (0..0.52) picks; says which. */
      const change = (x: number, n: number): string => {
        if (x < 0.22) {
          touch(m.put({ id: `svc${n}`, kind: 'svc', text: serviceYaml(r, n) }));
          return `service s${n}: create or change`;
        }
        if (x < 0.44) {
          const family = r.pick([4, 6] as const);
          touch(m.put({ id: `slice${family === 4 ? '' : '6'}${n}`, kind: 'slice', text: sliceYaml(r, n, family, podIPs) }));
          return `IPv${family} slice of s${n}: create or change`;
        }
        for (const id of [`svc${n}`, `slice${n}`, `slice6${n}`]) touch(m.remove(id));
        return `service s${n} and its slices: delete`;
      };
      if (kind < 0.52) {
        what = change(kind, i);
      } else if (kind < 0.58 && m.files().length) {
        const f = r.pick(m.files());
        what = `rewrite ${f} in place`;
        await m.rewriteInPlace(f, r.int(300));
      } else if (kind < 0.62 && m.files().length) {
        const f = r.pick(m.files());
        const to = m.newFile();
        what = `rename ${f} to ${to}`;
        for (const [id, file] of m.fileOf) if (file === f) m.fileOf.set(id, to);
        fs.renameSync(path.join(m.dir, f), path.join(m.dir, to));
      } else if (kind < 0.68 && m.objects.size) {
        const id = r.pick([...m.objects.keys()].sort());
        const from = m.fileOf.get(id)!;
        const files = m.files().filter((f) => f !== from);
        const to = files.length && r.chance(0.7) ? r.pick(files) : m.newFile();
        what = `move ${id} from ${from} to ${to}`;
        m.fileOf.set(id, to);
        // Either order: the object is briefly in both files, or in neither.
        if (r.chance(0.5)) {
          m.write(to);
          m.write(from);
        } else {
          m.write(from);
          m.write(to);
        }
      } else if (kind < 0.72) {
        const has = m.objects.has('bad');
        what = has ? 'remove the bad object' : 'add a bad object';
        if (has) touch(m.remove('bad'));
        else
          touch(
            m.put(
              { id: 'bad', kind: 'bad', text: `apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: soak}\nspec:\n${r.pick(BAD_SPECS)}  ports: [{port: 80}]\n` },
              r.pick([...m.files(), m.newFile()]),
            ),
          );
      } else if (kind < 0.77) {
        await agent.stop();
        // Half the time the cluster changes while no agent runs: the next one must find the rules of what left.
        const down = r.chance(0.5) ? Array.from({ length: 1 + r.int(3) }, () => change(r.float() * 0.52, r.int(SERVICES))) : [];
        what = down.length ? `stop the agent; while none runs: ${down.join('; ')}; start one` : 'restart the agent (SIGTERM)';
        agent = await start([], false);
      } else if (kind < 0.82) {
        what = `service s${i}: change, then SIGKILL the agent mid-sync`;
        touch(m.put({ id: `svc${i}`, kind: 'svc', text: serviceYaml(r, i) }));
        await sleep(r.int(250));
        await agent.kill();
        agent = await start([], false);
      } else if (kind < 0.86) {
        what = 'a second agent on the same pin root, then the first stops';
        const second = await start([], false);
        await second.proc.waitFor(/another weir agent holds the pin root; waiting/, 20_000);
        const family = r.pick([4, 6] as const);
        touch(m.put({ id: `slice${family === 4 ? '' : '6'}${i}`, kind: 'slice', text: sliceYaml(r, i, family, podIPs) }));
        await sleep(r.int(500));
        await agent.stop();
        agent = second;
      } else if (kind < 0.95 && mode === 'nftables') {
        what = `a hand edit with nft: ${await nftEdit()}`;
      } else if (kind < 0.92 && mode === 'iptables') {
        what = `something else edits the tables: ${await iptEdit()}`;
      } else if (kind < 0.92 && mode === 'bpf') {
        const res = await weir(['services', '--json']);
        const fronts = res.code === 0 ? (JSON.parse(res.stdout) as ServicesView).frontends : [];
        what = 'a hand edit with bpftool: nothing to edit';
        const le32 = (n: number): string[] => [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, n >>> 24].map((b) => b.toString(16).padStart(2, '0'));
        if (fronts.length && r.float() < 0.3) {
          // The port filter word of a frontend's port, cleared: the programs would skip its lookups until the agent rewrites it.
          const f = r.pick(fronts);
          what = `a hand edit with bpftool: weir1_ports word of port ${f.port} cleared`;
          const zero = Array.from({ length: 8 }, () => '00');
          await box.exec(node.ns, ['bpftool', 'map', 'update', 'pinned', `${box.pinRoot('n1')}/weir1_ports`, 'key', 'hex', ...le32(f.port >> 6), 'value', 'hex', ...zero]);
          stats.portEdits++;
        } else if (fronts.length) {
          const f = r.pick(fronts);
          // Ids are shared by the families; an IPv6 frontend's reverse NAT is in revnat6 (the key is the id, host order, in both).
          const map = f.addr.includes(':') ? 'weir1_revnat6' : 'weir1_revnat';
          what = `a hand edit with bpftool: ${map} entry of ${hostPort(f.addr, f.port)} deleted`;
          await box.exec(node.ns, ['bpftool', 'map', 'delete', 'pinned', `${box.pinRoot('n1')}/${map}`, 'key', 'hex', ...le32(f.revNatId)]);
          stats.revnatEdits[fam(f.addr)]++;
        }
      } else if (kind < 0.95 && mode === 'bpf') {
        what = 'maps too small for the state (writes fail), then the right size';
        await agent.stop();
        await weir(['cleanup']);
        const small = await start(['--lb-map-entries', '4'], false);
        await small.proc.waitFor(/a BPF map is full|"msg":"(ready|synced)"/, 20_000).catch(() => undefined);
        await small.stop();
        await weir(['cleanup']);
        agent = await start([], false);
      } else {
        what = 'nothing (a sync period passes)';
        await sleep(1100);
      }
      steps.push(what);
      log(`seed ${opts.seed} step ${step + 1}/${opts.steps}: ${what}${busy.length ? ' (busy cores)' : ''}`);
      if (!agent.proc.running) throw new Error(`${what}: the agent exited:\n${agent.logs().slice(-3000)}`);
      await converge(what);
    }
    return stats;
  } catch (e) {
    const list = steps.map((s, n) => `  ${n + 1}. ${s}`).join('\n');
    throw new Error(
      `soak failed: seed ${opts.seed}, after ${steps.length} steps (replay: make soak SEED=${opts.seed} STEPS=${steps.length + 1})\n${list}\n${(e as Error).message}\n--- processes:\n${box.logs(3000)}`,
    );
  } finally {
    await box.destroy();
  }
}
