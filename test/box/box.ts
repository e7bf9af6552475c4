/**
 * Cluster in a box (DESIGN.md §5): node namespaces joined by a bridge in an
 * "underlay" namespace, pods in their own namespaces on veth pairs, and an
 * "outside" namespace for external clients. Nothing links to the root
 * namespace; every name carries a random per-run prefix; destroy() removes
 * everything, and is also run on exit, signals and uncaught errors.
 *
 *   outside (192.168.77.200) ─┐
 *   node n1 eth0 (.10) ───────┼─ br0 in <prefix>ul
 *   node n2 eth0 (.11) ───────┘
 *   node nI: pods 10.244.I.10+ on veth pairs, gateway 169.254.1.1 on the node's lo
 *
 * Pods reach their node through 169.254.1.1, which is a local address of the
 * node (on lo), so the node answers the pod's ARP with the veth's MAC and
 * routes every pod packet — through the tc program on that veth.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Attempt } from './client';
import { ExecResult, NsProcess, must, nsArgv, nsMust, nsRun, run } from './exec';
import { execFileSync } from 'node:child_process';

export const REPO = path.resolve(__dirname, '../../..');
const CLI = path.join(REPO, 'dist/ts/cli/main.js');
const ECHO = path.join(REPO, 'dist/test/box/echo.js');
const CLIENT = path.join(REPO, 'dist/test/box/client.js');
export const GATEWAY = '169.254.1.1';
export const CLUSTER_CIDR = '10.244.0.0/16';
/** The dataplane the suites run against: `make test` runs the service suites in both. */
export const MODE: 'bpf' | 'iptables' = process.env.WEIR_TEST_MODE === 'iptables' ? 'iptables' : 'bpf';

/** The cgroup v2 mount (hybrid hosts have it at /sys/fs/cgroup/unified). */
function cgroup2Mount(): string {
  const line = fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .find((l) => l.split(' ')[2] === 'cgroup2');
  if (!line) throw new Error('no cgroup2 mount found');
  return line.split(' ')[1]!;
}
export const OUTSIDE_IP = '192.168.77.200';

export interface NodeSpec {
  name: string;
}

export interface BoxNode {
  readonly name: string;
  readonly ns: string;
  readonly ip: string;
  readonly index: number;
  readonly podCidr: string;
  readonly pinRoot: string;
  /** cgroup of the node's "processes": socket hooks attach here, node clients run here. */
  readonly cgroup: string;
}

export interface Pod {
  readonly name: string;
  readonly ns: string;
  readonly ip: string;
  readonly node: BoxNode;
  readonly hostDev: string;
}

export type Endpoint = string; // "IP:PORT"
export interface Results {
  attempts: Attempt[];
}

const live = new Set<Box>();
let hooksInstalled = false;

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const b of live) b.destroySync();
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      for (const b of live) b.destroySync();
      process.exit(130);
    });
  }
  process.on('uncaughtException', (e) => {
    for (const b of live) b.destroySync();
    process.stderr.write(`uncaught: ${e.stack ?? e}\n`);
    process.exit(1);
  });
}

export class Box {
  readonly prefix: string;
  readonly underlay: string;
  readonly outside: string;
  readonly nodes: BoxNode[] = [];
  readonly pods = new Map<string, Pod>();
  readonly manifestDir: string;
  readonly pinBase: string;
  readonly cgroupBase: string;
  private readonly procs = new Set<NsProcess>();
  private readonly namespaces: string[] = [];
  private podSeq = 0;
  private destroyed = false;
  private readonly cleanups: Array<() => void> = [];

  private constructor() {
    this.prefix = `weir-${crypto.randomBytes(3).toString('hex')}-`;
    this.underlay = `${this.prefix}ul`;
    this.outside = `${this.prefix}out`;
    this.manifestDir = fs.mkdtempSync(path.join(os.tmpdir(), this.prefix));
    this.pinBase = `/sys/fs/bpf/${this.prefix.slice(0, -1)}`;
    this.cgroupBase = path.join(cgroup2Mount(), this.prefix.slice(0, -1));
  }

  /** A box with `nodes` node namespaces (named n1, n2, ...). */
  static async create(opts: { nodes?: number } = {}): Promise<Box> {
    installExitHooks();
    const box = new Box();
    live.add(box);
    try {
      await box.build(opts.nodes ?? 1);
    } catch (e) {
      await box.destroy();
      throw e;
    }
    return box;
  }

  private async addNs(name: string): Promise<void> {
    await must(['ip', 'netns', 'add', name]);
    this.namespaces.push(name);
    await nsMust(name, ['ip', 'link', 'set', 'lo', 'up']);
  }

  private async build(nodeCount: number): Promise<void> {
    await this.addNs(this.underlay);
    await nsMust(this.underlay, ['ip', 'link', 'add', 'br0', 'type', 'bridge']);
    await nsMust(this.underlay, ['ip', 'link', 'set', 'br0', 'up']);
    for (let i = 1; i <= nodeCount; i++) {
      const name = `n${i}`;
      const ns = `${this.prefix}${name}`;
      const cgroup = path.join(this.cgroupBase, name);
      fs.mkdirSync(cgroup, { recursive: true });
      const node: BoxNode = { name, ns, ip: `192.168.77.${9 + i}`, index: i, podCidr: `10.244.${i}.0/24`, pinRoot: `${this.pinBase}/${name}`, cgroup };
      await this.addNs(ns);
      for (const [k, v] of [
        ['net.ipv4.ip_forward', '1'],
        ['net.ipv4.conf.all.rp_filter', '0'],
        ['net.ipv4.conf.default.rp_filter', '0'],
        ['net.ipv4.conf.all.send_redirects', '0'],
        ['net.ipv4.conf.default.send_redirects', '0'],
      ]) {
        await nsMust(ns, ['sysctl', '-qw', `${k}=${v}`]);
      }
      // scope link: the gateway answers pods' ARP, but is never chosen as a
      // source address (MASQUERADE and node processes use the node IP).
      await nsMust(ns, ['ip', 'addr', 'add', `${GATEWAY}/32`, 'dev', 'lo', 'scope', 'link']);
      await this.link(ns, 'eth0', this.underlay, `u${i}`, node.ip);
      this.nodes.push(node);
    }
    await this.addNs(this.outside);
    await this.link(this.outside, 'eth0', this.underlay, 'uout', OUTSIDE_IP);
    for (const n of this.nodes) {
      // Like a real node, a default route: a node process's connect() to a
      // ClusterIP must pass the route lookup before iptables' OUTPUT DNAT
      // (iptables mode). It leads to the outside namespace, which forwards
      // nothing: anything not NATed ends there.
      await nsMust(n.ns, ['ip', 'route', 'add', 'default', 'via', OUTSIDE_IP]);
      await nsMust(this.outside, ['ip', 'route', 'add', n.podCidr, 'via', n.ip]);
      for (const m of this.nodes) if (m !== n) await nsMust(n.ns, ['ip', 'route', 'add', m.podCidr, 'via', m.ip]);
    }
  }

  /** veth between ns (dev, with addr/24) and the underlay bridge (port). */
  private async link(ns: string, dev: string, ul: string, port: string, addr: string): Promise<void> {
    await must(['ip', 'link', 'add', dev, 'netns', ns, 'type', 'veth', 'peer', 'name', port, 'netns', ul]);
    await nsMust(ul, ['ip', 'link', 'set', port, 'master', 'br0', 'up']);
    await nsMust(ns, ['ip', 'addr', 'add', `${addr}/24`, 'dev', dev]);
    await nsMust(ns, ['ip', 'link', 'set', dev, 'up']);
  }

  node(name: string): BoxNode {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  pod(name: string): Pod {
    const p = this.pods.get(name);
    if (!p) throw new Error(`no pod ${name}`);
    return p;
  }

  /** A pod on `nodeName` with the next free address of its CIDR (or `ip`). */
  async addPod(nodeName: string, name: string, ip?: string): Promise<Pod> {
    const node = this.node(nodeName);
    const seq = ++this.podSeq;
    const addr = ip ?? `10.244.${node.index}.${9 + [...this.pods.values()].filter((p) => p.node === node).length + 1}`;
    const ns = `${this.prefix}p-${name}`;
    const hostDev = `veth${this.prefix.slice(5, 11)}${seq.toString(16).padStart(3, '0')}`.slice(0, 15);
    await this.addNs(ns);
    await must(['ip', 'link', 'add', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', hostDev, 'netns', node.ns]);
    await nsMust(node.ns, ['ip', 'link', 'set', hostDev, 'up']);
    await nsMust(node.ns, ['ip', 'route', 'add', `${addr}/32`, 'dev', hostDev]);
    await nsMust(ns, ['ip', 'addr', 'add', `${addr}/32`, 'dev', 'eth0']);
    await nsMust(ns, ['ip', 'link', 'set', 'eth0', 'up']);
    await nsMust(ns, ['ip', 'route', 'add', GATEWAY, 'dev', 'eth0', 'scope', 'link']);
    await nsMust(ns, ['ip', 'route', 'add', 'default', 'via', GATEWAY, 'dev', 'eth0']);
    const pod: Pod = { name, ns, ip: addr, node, hostDev };
    this.pods.set(name, pod);
    return pod;
  }

  async removePod(name: string): Promise<void> {
    const pod = this.pod(name);
    for (const p of [...this.procs]) if (p.ns === pod.ns) await this.stopProc(p);
    await run(['ip', 'netns', 'del', pod.ns]);
    this.namespaces.splice(this.namespaces.indexOf(pod.ns), 1);
    this.pods.delete(name);
  }

  spawn(ns: string, argv: readonly string[]): NsProcess {
    const p = new NsProcess(ns, argv);
    this.procs.add(p);
    return p;
  }

  /** Spawn a full argv (from argvFor). */
  spawnArgv(argv: readonly string[]): NsProcess {
    const p = new NsProcess('', argv, undefined, true);
    this.procs.add(p);
    return p;
  }

  async stopProc(p: NsProcess): Promise<void> {
    await p.stop();
    this.procs.delete(p);
  }

  exec(ns: string, argv: readonly string[], timeoutMs = 10_000): Promise<ExecResult> {
    return nsRun(ns, argv, { timeoutMs });
  }

  /** Start the echo server in a pod; resolves when it listens. */
  async startEcho(podName: string, ports: { tcp?: number[]; udp?: number[] } = { tcp: [8080], udp: [5353] }): Promise<NsProcess> {
    const pod = this.pod(podName);
    const p = this.spawn(pod.ns, ['node', ECHO, '--name', podName, '--tcp', (ports.tcp ?? []).join(','), '--udp', (ports.udp ?? []).join(',')]);
    await p.waitFor(/ready/, 10_000);
    return p;
  }

  /** Route a destination (service VIPs, LoadBalancer IPs) from the outside namespace via a node. */
  async routeFromOutside(cidr: string, nodeName: string): Promise<void> {
    await nsMust(this.outside, ['ip', 'route', 'replace', cidr, 'via', this.node(nodeName).ip]);
  }

  /**
   * argv to run `who`'s command: in a pod's namespace, in "outside", or as a
   * process of a node (in its namespace and inside its cgroup, where the
   * agent's socket hooks apply — like a hostNetwork pod).
   */
  argvFor(who: string, argv: readonly string[]): string[] {
    const node = this.nodes.find((n) => n.name === who);
    if (node) return nsArgv(node.ns, ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', node.cgroup, ...argv]);
    return nsArgv(this.nsOf(who), argv);
  }

  /** Namespace of a pod name, a node name, or "outside". */
  nsOf(who: string): string {
    if (who === 'outside') return this.outside;
    const node = this.nodes.find((n) => n.name === who);
    if (node) return node.ns;
    return this.pod(who).ns;
  }

  private async client(who: string, args: string[], timeoutMs: number): Promise<Results> {
    const r = await run(this.argvFor(who, ['node', CLIENT, ...args]), { timeoutMs });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line) as Results;
    } catch {
      throw new Error(`client in ${who} failed (exit ${r.code}): ${r.stderr || r.stdout}`);
    }
  }

  tcp(from: string, to: Endpoint, opts: { count?: number; timeoutMs?: number; bind?: string } = {}): Promise<Results> {
    const count = opts.count ?? 1;
    const t = opts.timeoutMs ?? 2000;
    const args = ['tcp', '--to', to, '--count', String(count), '--timeout-ms', String(t)];
    if (opts.bind) args.push('--bind', opts.bind);
    return this.client(from, args, count * (t + 500) + 5000);
  }

  udp(from: string, to: Endpoint, opts: { count?: number; timeoutMs?: number; sameSocket?: boolean; connect?: boolean; intervalMs?: number; bind?: string } = {}): Promise<Results> {
    const count = opts.count ?? 1;
    const t = opts.timeoutMs ?? 1000;
    const args = ['udp', '--to', to, '--count', String(count), '--timeout-ms', String(t), '--interval-ms', String(opts.intervalMs ?? 0)];
    if (opts.sameSocket) args.push('--same-socket');
    if (opts.connect) args.push('--connect');
    if (opts.bind) args.push('--bind', opts.bind);
    return this.client(from, args, count * (t + (opts.intervalMs ?? 0) + 200) + 5000);
  }

  /** A long-lived TCP connection doing a request every intervalMs; collect with result(). */
  async hold(from: string, to: Endpoint, opts: { durationMs: number; intervalMs: number }): Promise<{ result(): Promise<Results> }> {
    const p = this.spawnArgv(this.argvFor(from, ['node', CLIENT, 'hold', '--to', to, '--duration-ms', String(opts.durationMs), '--interval-ms', String(opts.intervalMs)]));
    await p.waitFor(/connected/, 5000);
    return {
      result: async () => {
        await p.wait();
        this.procs.delete(p);
        const line = p.output().trim().split('\n').pop() ?? '';
        return JSON.parse(line) as Results;
      },
    };
  }

  /** curl from a namespace: exit code 0 ok, 7 refused, 28 timeout. */
  async curl(from: string, url: string, maxTimeS = 3): Promise<{ code: number; body: string }> {
    const r = await run(this.argvFor(from, ['curl', '-s', '-m', String(maxTimeS), url]), { timeoutMs: maxTimeS * 1000 + 2000 });
    return { code: r.code, body: r.stdout };
  }

  /** Write a manifest file into the box's manifest directory (atomically). */
  writeManifest(file: string, text: string): void {
    const tmp = path.join(this.manifestDir, `.${file}.tmp`);
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, path.join(this.manifestDir, file));
  }

  removeManifest(file: string): void {
    fs.rmSync(path.join(this.manifestDir, file), { force: true });
  }

  /** Run a weir agent in a node namespace on the box's manifests. */
  async startAgent(nodeName: string, extra: string[] = [], opts: { waitReady?: boolean; env?: Record<string, string>; readyTimeoutMs?: number } = {}): Promise<Agent> {
    const node = this.node(nodeName);
    const argv = [
      'node',
      CLI,
      'run',
      '--source',
      `file:${this.manifestDir}`,
      '--node-name',
      node.name,
      '--bpffs-root',
      node.pinRoot,
      '--health-addr',
      '127.0.0.1:0',
      '--metrics-addr',
      '127.0.0.1:0',
      '--mode',
      MODE,
      '--external-devices',
      'eth0',
      '--cgroup-root',
      node.cgroup,
      '--cluster-cidr',
      CLUSTER_CIDR,
      ...extra,
    ];
    const proc = new NsProcess(node.ns, argv, opts.env ? { ...process.env, ...opts.env } : undefined);
    this.procs.add(proc);
    if (opts.waitReady !== false) await proc.waitFor(/"msg":"ready"/, opts.readyTimeoutMs ?? 20_000);
    return new Agent(this, node, proc);
  }

  /** `weir <args>` in a node namespace against that node's pins. */
  async weir(nodeName: string, args: string[]): Promise<string> {
    const node = this.node(nodeName);
    return nsMust(node.ns, ['node', CLI, ...args, '--bpffs-root', node.pinRoot], { timeoutMs: 20_000 });
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    for (const p of [...this.procs]) await p.stop(2000).catch(() => undefined);
    this.procs.clear();
    this.destroySync();
  }

  /** Run fn (synchronously) when the box is destroyed. */
  onDestroy(fn: () => void): void {
    this.cleanups.push(fn);
  }

  /** Synchronous teardown, safe from an exit handler. */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const fn of this.cleanups.splice(0)) {
      try {
        fn();
      } catch {
        /* keep tearing down */
      }
    }
    live.delete(this);
    for (const p of this.procs) if (p.running) p.child.kill('SIGKILL');
    for (const ns of [...this.namespaces].reverse()) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
    }
    fs.rmSync(this.pinBase, { recursive: true, force: true });
    fs.rmSync(this.manifestDir, { recursive: true, force: true });
    // cgroup directories go with rmdir once their processes are gone.
    for (const n of this.nodes) rmdirQuiet(n.cgroup);
    rmdirQuiet(this.cgroupBase);
  }
}

function rmdirQuiet(dir: string): void {
  for (let i = 0; i < 20; i++) {
    try {
      fs.rmdirSync(dir);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      // EBUSY while a killed process is still leaving the cgroup.
      execFileSync('sleep', ['0.05']);
    }
  }
}

export class Agent {
  constructor(
    readonly box: Box,
    readonly node: BoxNode,
    readonly proc: NsProcess,
  ) {}

  logs(): string {
    return this.proc.output();
  }

  /** Wait for a log line matching re that appears after the current output. */
  waitForNext(re: RegExp, timeoutMs = 5000): Promise<void> {
    const skip = this.proc.output().length;
    return this.proc.waitFor(new RegExp(`^[\\s\\S]{${skip}}[\\s\\S]*${re.source}`), timeoutMs);
  }

  async stop(): Promise<number | null> {
    const code = await this.proc.stop();
    return code;
  }

  kill(): Promise<number | null> {
    return this.proc.kill();
  }
}

/** Build a box, run fn, always destroy. */
export async function withBox<T>(opts: { nodes?: number }, fn: (box: Box) => Promise<T>): Promise<T> {
  const box = await Box.create(opts);
  try {
    return await fn(box);
  } finally {
    await box.destroy();
  }
}

/** Poll until fn returns a truthy value or time runs out. */
export async function waitFor<T>(fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {}): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 5000);
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${opts.what ?? 'condition'}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 50));
  }
}

export { nsArgv };
