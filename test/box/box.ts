/**
 * Cluster in a box (DESIGN.md §5): node namespaces joined by a bridge in an
 * "underlay" namespace, pods in their own namespaces on veth pairs, and an
 * "outside" namespace for external clients. Nothing links to the root
 * namespace, so no packet can leave the box.
 * Every name carries a random per-run prefix (`weir-<6 hex>-`); destroy()
 * removes everything, and also runs on exit, SIGINT/SIGTERM and uncaught
 * errors.
 *
 *   outside 192.168.77.200 ─┐
 *   n1 eth0 192.168.77.10 ──┼── br0 in <prefix>ul
 *   n2 eth0 192.168.77.11 ──┘
 *   node nI: pod CIDR 10.244.I.0/24, pods 10.244.I.10+ on veth pairs
 *
 * Pod side: eth0 with the pod IP /32, `169.254.1.1 dev eth0` and a default
 * route via it (the Calico layout). Node side: `veth<id>` with proxy_arp=1 and
 * a /32 route to the pod. 169.254.1.1 is also an address (scope link) on the
 * node's lo, because proxy ARP only answers for targets the node routes out
 * of another device, and a local address is answered always. So the pod's
 * gateway MAC is its host veth, and every pod packet enters the node through
 * that veth — where weir's tc program sits.
 *
 * Routes: the outside namespace reaches each pod CIDR via its node; nodes
 * reach other nodes' pod CIDRs via those nodes, and have a default route to
 * the outside namespace (a real node has one; iptables mode needs it, see
 * build()). The outside namespace does not forward, so that default route is
 * a dead end inside the box. Pods' default route is their node; the underlay
 * and outside namespaces have none.
 *
 * Usage:
 *   await withBox({ nodes: 2 }, async (box) => {
 *     await box.addPod('n1', 'a'); await box.addPod('n2', 'b');
 *     await box.startEcho('b', { tcp: [8080], udp: [5353] });
 *     const r = await box.tcp('a', `${box.pod('b').ip}:8080`);
 *   });
 */
import { ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Attempt } from './client';
import { ExecResult, NsProcess, nsArgv, nsRun, run } from './exec';
import { NETNS_DIR, delNetnsSync, netnsInode, pidsInNetns } from './netns';

export const REPO = path.resolve(__dirname, '../../..');
export const CLI = path.join(REPO, 'dist/ts/cli/main.js');

const ECHO = path.join(REPO, 'dist/test/box/echo.js');
const CLIENT = path.join(REPO, 'dist/test/box/client.js');
/** The pods' gateway (link-local, on every node's lo). */
export const GATEWAY = '169.254.1.1';
export const CLUSTER_CIDR = '10.244.0.0/16';
/**
 * The dataplane the suites run against: `make test` runs the service suites
 * in BPF and iptables mode; WEIR_TEST_MODE=nftables runs them in nftables
 * mode, which serves what iptables mode does, the same way to a client.
 */
export const MODE: 'bpf' | 'iptables' | 'nftables' = process.env.WEIR_TEST_MODE === 'iptables' ? 'iptables' : process.env.WEIR_TEST_MODE === 'nftables' ? 'nftables' : 'bpf';
export const OUTSIDE_IP = '192.168.77.200';
const UNDERLAY = '192.168.77';
/** Dual-stack boxes (spec.ipv6): the same layout in IPv6 (ULAs), see the file comment. */
export const OUTSIDE_IP6 = 'fd00:77::200';
export const CLUSTER_CIDR6 = 'fd00:244::/32';
const UNDERLAY6 = 'fd00:77::';
/** The pods' IPv6 gateway: a link-local address on every host veth, answered by the veth itself. */
const GATEWAY6 = 'fe80::1';
const MAX_NODES = 50;

export interface BoxSpec {
  /** Node namespaces n1..nN (default 1). */
  nodes?: number;
  /** Dual-stack: nodes, pods and the outside namespace get IPv6 addresses too. */
  ipv6?: boolean;
  /**
   * Pods' processes run in a cgroup below their node's (as kubepods below
   * the host's root, which a DaemonSet gives weir as --cgroup-root), so
   * the agent's socket hooks see pods' sockets too. A list: only the pods
   * of these nodes.
   */
  podsUnderCgroup?: boolean | readonly string[];
}

export interface BoxNode {
  /** n1, n2, ...: also the agent's --node-name. */
  readonly name: string;
  /** Its network namespace (/run/netns/<ns>). */
  readonly ns: string;
  /** Underlay address, 192.168.77.(9 + index). */
  readonly ip: string;
  /** 1-based. */
  readonly index: number;
  /** 10.244.<index>.0/24 */
  readonly podCidr: string;
  /** Dual-stack boxes: underlay IPv6 address fd00:77::<9 + index> and pod CIDR fd00:244:<index>::/64; else ''. */
  readonly ip6: string;
  readonly podCidr6: string;
  /** Pin directory path (box.pinRoot(name) creates it). */
  readonly pinRoot: string;
  /** cgroup v2 directory path for socket hooks and node processes (box.cgroupDir(name) creates it). */
  readonly cgroup: string;
}

export interface Pod {
  readonly name: string;
  readonly ns: string;
  readonly ip: string;
  /** Dual-stack boxes: fd00:244:<node index>::<host>, the same host number as ip; else ''. */
  readonly ip6: string;
  readonly node: BoxNode;
  /** Host side of the pod's veth, in the node namespace. */
  readonly hostDev: string;
}

/** "IP:PORT" */
export type Endpoint = string;

/** What test/box/client.js printed. */
export interface Results {
  attempts: Attempt[];
}

export interface TcpOptions {
  count?: number;
  /** Per connect and per response (default 2000). */
  timeoutMs?: number;
  /** Keep each connection open this long after its response. */
  holdMs?: number;
  /** Ask getpeername() this long after the response rather than at once. */
  peerAfterMs?: number;
  /** Source address. */
  bind?: string;
}

export interface UdpOptions {
  count?: number;
  /** Per reply (default 1000). */
  timeoutMs?: number;
  /** One connected socket for every request (else a new socket each). */
  sameSocket?: boolean;
  /** Connect each new socket (so ICMP errors come back as ECONNREFUSED). */
  connect?: boolean;
  /** Pause between requests (default 50 with sameSocket, else 0). */
  intervalMs?: number;
  bind?: string;
  /** The source port (else any free one): runs with the same port continue one flow. */
  sport?: number;
  /** Send a datagram of this many bytes (to a udpMirror port) and require it back intact. */
  size?: number;
}

export interface HoldHandle {
  readonly proc: NsProcess;
  /** Wait for the client to finish its duration and return what it saw. */
  result(): Promise<Results>;
}

/** cgroup v2 mount point (hybrid hosts have it at /sys/fs/cgroup/unified), if any. */
function cgroup2Mount(): string | null {
  const line = fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .find((l) => l.split(' ')[2] === 'cgroup2');
  return line ? line.split(' ')[1]! : null;
}

function isBpffs(dir: string): boolean {
  return fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === dir && l.split(' ')[2] === 'bpf');
}

// --- cleanup on any exit ---------------------------------------------------

const live = new Set<Box>();
let hooksInstalled = false;

/**
 * Boxes still alive when the process ends are destroyed synchronously: on a
 * normal exit, on SIGINT/SIGTERM (then exit 128+signal), and on an uncaught
 * exception or unhandled rejection (printed, then exit 1 — what Node would
 * have done).
 */
function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  const destroyAll = (): void => {
    for (const b of [...live]) b.destroySync();
  };
  process.on('exit', destroyAll);
  for (const [sig, num] of [
    ['SIGINT', 2],
    ['SIGTERM', 15],
    ['SIGHUP', 1],
  ] as const) {
    process.on(sig, () => {
      destroyAll();
      process.exit(128 + num);
    });
  }
  process.on('uncaughtException', (e) => {
    process.stderr.write(`uncaught: ${e instanceof Error ? e.stack : String(e)}\n`);
    destroyAll();
    process.exit(1);
  });
}

// --- the box -----------------------------------------------------------------

export class Box {
  /** `weir-<6 hex>-`: every namespace, pin and cgroup directory of this box starts with it. */
  readonly prefix: string;
  readonly underlay: string;
  readonly outside: string;
  readonly nodes: BoxNode[] = [];
  /** Whether nodes and pods have IPv6 addresses too (spec.ipv6). */
  ipv6 = false;
  private podsUnderCgroup: boolean | readonly string[] = false;
  readonly pods = new Map<string, Pod>();
  /** Manifests for `--source file:<dir>` (a temp dir, removed on destroy). */
  readonly manifestDir: string;
  /** /sys/fs/bpf/weir-<hex>: every node's pin root is below it. */
  readonly pinBase: string;
  /** <cgroup2 mount>/weir-<hex> ('' without cgroup v2): every node's cgroup is below it. */
  readonly cgroupBase: string;
  private readonly procs = new Set<NsProcess>();
  private readonly inflight = new Set<ChildProcess>();
  /** Our namespaces and their inodes (to find processes still inside after the name is gone). */
  private readonly namespaces = new Map<string, number>();
  private readonly cleanups: Array<() => void> = [];
  private readonly nextHost = new Map<string, number>();
  private podSeq = 0;
  private destroyed = false;

  private constructor() {
    // A prefix no namespace, pin or cgroup directory uses yet (other runs may be live).
    const taken = (p: string): boolean => fs.readdirSync(NETNS_DIR).some((n) => n.startsWith(p)) || fs.existsSync(`/sys/fs/bpf/${p.slice(0, -1)}`);
    if (!fs.existsSync(NETNS_DIR)) fs.mkdirSync(NETNS_DIR, { recursive: true });
    let prefix: string;
    do prefix = `weir-${crypto.randomBytes(3).toString('hex')}-`;
    while (taken(prefix));
    this.prefix = prefix;
    this.underlay = `${this.prefix}ul`;
    this.outside = `${this.prefix}out`;
    this.pinBase = `/sys/fs/bpf/${this.id}`;
    const cg = cgroup2Mount();
    this.cgroupBase = cg ? path.join(cg, this.id) : '';
    this.manifestDir = fs.mkdtempSync(path.join(os.tmpdir(), this.prefix));
  }

  /** The prefix without its trailing dash: the pin and cgroup directory name. */
  get id(): string {
    return this.prefix.slice(0, -1);
  }

  /** Build the topology; on any failure it is torn down again before the error propagates. */
  static async create(spec: BoxSpec = {}): Promise<Box> {
    if (process.getuid?.() !== 0) throw new Error('the cluster in a box needs root (network namespaces)');
    const n = spec.nodes ?? 1;
    if (!Number.isInteger(n) || n < 1 || n > MAX_NODES) throw new Error(`nodes must be 1..${MAX_NODES}, got ${n}`);
    installExitHooks();
    const box = new Box();
    box.ipv6 = spec.ipv6 === true;
    box.podsUnderCgroup = spec.podsUnderCgroup ?? false;
    live.add(box);
    try {
      await box.build(n);
    } catch (e) {
      await box.destroy();
      throw e;
    }
    return box;
  }

  private async addNs(name: string): Promise<void> {
    // `ip netns add` fails on a taken name, so whatever it creates is ours:
    // registered at once, destroy() removes it even if the next step fails.
    await this.must(['ip', 'netns', 'add', name]);
    this.namespaces.set(name, netnsInode(name) ?? -1);
    await this.in(name, ['ip', 'link', 'set', 'lo', 'up']);
  }

  private async build(nodeCount: number): Promise<void> {
    await this.addNs(this.underlay);
    await this.in(this.underlay, ['ip', 'link', 'add', 'br0', 'type', 'bridge']);
    await this.in(this.underlay, ['ip', 'link', 'set', 'br0', 'up']);
    for (let i = 1; i <= nodeCount; i++) {
      const name = `n${i}`;
      const ns = `${this.prefix}${name}`;
      const node: BoxNode = {
        name,
        ns,
        ip: `${UNDERLAY}.${9 + i}`,
        index: i,
        podCidr: `10.244.${i}.0/24`,
        ip6: this.ipv6 ? `${UNDERLAY6}${9 + i}` : '',
        podCidr6: this.ipv6 ? `fd00:244:${i}::/64` : '',
        pinRoot: `${this.pinBase}/${name}`,
        cgroup: this.cgroupBase && path.join(this.cgroupBase, name),
      };
      await this.addNs(ns);
      // Forwarding node: no rp_filter (pod sources arrive on many devices, and
      // weir's NAT changes them), no redirects (pods share the node as gateway).
      // default=0 before any device exists, so every later device inherits it.
      await this.sysctl(ns, {
        'net.ipv4.ip_forward': 1,
        'net.ipv4.conf.all.rp_filter': 0,
        'net.ipv4.conf.default.rp_filter': 0,
        'net.ipv4.conf.all.send_redirects': 0,
        'net.ipv4.conf.default.send_redirects': 0,
        ...(this.ipv6 ? { 'net.ipv6.conf.all.forwarding': 1, 'net.ipv6.conf.default.accept_dad': 0 } : {}),
      });
      // scope link: the gateway answers pods' ARP, but is never chosen as a
      // source address (MASQUERADE and node processes use the node IP).
      await this.in(ns, ['ip', 'addr', 'add', `${GATEWAY}/32`, 'dev', 'lo', 'scope', 'link']);
      await this.underlayLink(ns, `u${i}`, node.ip, node.ip6);
      await this.sysctl(ns, { 'net.ipv4.conf.eth0.rp_filter': 0, 'net.ipv4.conf.eth0.send_redirects': 0 });
      this.nodes.push(node);
    }
    await this.addNs(this.outside);
    if (this.ipv6) await this.sysctl(this.outside, { 'net.ipv6.conf.default.accept_dad': 0 });
    await this.underlayLink(this.outside, 'uout', OUTSIDE_IP, this.ipv6 ? OUTSIDE_IP6 : '');
    for (const n of this.nodes) {
      // Like a real node, a default route: a node process's connect() to a
      // ClusterIP must pass the route lookup before iptables' OUTPUT DNAT
      // (iptables mode). It leads to the outside namespace, which forwards
      // nothing: anything not NATed ends there.
      await this.in(n.ns, ['ip', 'route', 'add', 'default', 'via', OUTSIDE_IP]);
      await this.in(this.outside, ['ip', 'route', 'add', n.podCidr, 'via', n.ip]);
      for (const m of this.nodes) if (m !== n) await this.in(n.ns, ['ip', 'route', 'add', m.podCidr, 'via', m.ip]);
      if (!this.ipv6) continue;
      await this.in(n.ns, ['ip', '-6', 'route', 'add', 'default', 'via', OUTSIDE_IP6]);
      await this.in(this.outside, ['ip', '-6', 'route', 'add', n.podCidr6, 'via', n.ip6]);
      for (const m of this.nodes) if (m !== n) await this.in(n.ns, ['ip', '-6', 'route', 'add', m.podCidr6, 'via', m.ip6]);
    }
  }

  /** veth from `ns` (eth0, addr/24, and addr6/64 in a dual-stack box) to a port of the underlay bridge. */
  private async underlayLink(ns: string, port: string, addr: string, addr6: string): Promise<void> {
    // Both ends are created directly in their namespaces: nothing ever appears in the root namespace.
    await this.must(['ip', 'link', 'add', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', port, 'netns', this.underlay]);
    await this.in(this.underlay, ['ip', 'link', 'set', port, 'master', 'br0', 'up']);
    await this.in(ns, ['ip', 'addr', 'add', `${addr}/24`, 'dev', 'eth0']);
    if (addr6) await this.in(ns, ['ip', '-6', 'addr', 'add', `${addr6}/64`, 'dev', 'eth0', 'nodad']);
    await this.in(ns, ['ip', 'link', 'set', 'eth0', 'up']);
  }

  private sysctl(ns: string, kv: Record<string, number>): Promise<string> {
    return this.in(ns, ['sysctl', '-qw', ...Object.entries(kv).map(([k, v]) => `${k}=${v}`)]);
  }

  private in(ns: string, argv: readonly string[]): Promise<string> {
    return this.must(nsArgv(ns, argv));
  }

  private async must(argv: readonly string[], timeoutMs = 10_000): Promise<string> {
    const r = await this.run(argv, timeoutMs);
    if (r.code !== 0) throw new Error(`${argv.join(' ')} -> ${r.timedOut ? 'timed out' : `exit ${r.code}`}: ${r.stderr.trim() || r.stdout.trim()}`);
    return r.stdout;
  }

  /** One-shot command, tracked so that destroy() can kill it if it is still running. */
  private run(argv: readonly string[], timeoutMs: number): Promise<ExecResult> {
    if (this.destroyed) return Promise.reject(new Error(`box ${this.prefix} is destroyed`));
    return run(argv, {
      timeoutMs,
      onChild: (c) => {
        this.inflight.add(c);
        c.once('exit', () => this.inflight.delete(c));
      },
    });
  }

  // --- lookups ---------------------------------------------------------------

  node(name: string): BoxNode {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name} (have ${this.nodes.map((x) => x.name).join(', ')})`);
    return n;
  }

  pod(name: string): Pod {
    const p = this.pods.get(name);
    if (!p) throw new Error(`no pod ${name}`);
    return p;
  }

  /** Namespace of a pod name, a node name, or "outside". */
  nsOf(who: string): string {
    if (who === 'outside') return this.outside;
    const node = this.nodes.find((n) => n.name === who);
    if (node) return node.ns;
    return this.pod(who).ns;
  }

  /** The node's pin directory, created on first use (needs bpffs at /sys/fs/bpf: `make bpffs`). */
  pinRoot(nodeName: string): string {
    const dir = this.node(nodeName).pinRoot;
    if (!fs.existsSync(dir)) {
      if (!isBpffs('/sys/fs/bpf')) throw new Error('/sys/fs/bpf is not a bpf filesystem (make bpffs)');
      fs.mkdirSync(dir, { recursive: true });
    }
    return dir;
  }

  /** The node's cgroup (v2) directory, created on first use. Never the root cgroup. */
  cgroupDir(nodeName: string): string {
    const dir = this.node(nodeName).cgroup;
    if (!dir) throw new Error('no cgroup v2 mount');
    fs.mkdirSync(dir, { recursive: true });
    return dir;
  }

  /** Where a podsUnderCgroup box runs the pods of a node: <node cgroup>/pods. */
  private podCgroupDir(nodeName: string): string {
    const dir = path.join(this.cgroupDir(nodeName), 'pods');
    fs.mkdirSync(dir, { recursive: true });
    return dir;
  }

  // --- pods --------------------------------------------------------------------

  /** A pod on `nodeName` with `ip`, or the node's next unused 10.244.<i>.10+ address. */
  async addPod(nodeName: string, name: string, ip?: string): Promise<Pod> {
    const node = this.node(nodeName);
    if (!/^[a-z0-9][a-z0-9-]{0,39}$/i.test(name)) throw new Error(`bad pod name ${JSON.stringify(name)}`);
    if (this.pods.has(name)) throw new Error(`pod ${name} exists`);
    const addr = ip ?? this.nextPodIp(node);
    const addr6 = this.ipv6 ? `fd00:244:${node.index}::${addr.split('.')[3]}` : '';
    if ([...this.pods.values()].some((p) => p.ip === addr)) throw new Error(`pod IP ${addr} is taken`);
    const ns = `${this.prefix}p-${name}`;
    // veth + box id + sequence: ≤ 15 chars, unique in the node, matches weir's `veth*`.
    const hostDev = `veth${this.id.slice(5)}${(++this.podSeq).toString(16).padStart(3, '0')}`;
    await this.addNs(ns);
    try {
      if (addr6) await this.sysctl(ns, { 'net.ipv6.conf.default.accept_dad': 0 });
      await this.must(['ip', 'link', 'add', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', hostDev, 'netns', node.ns]);
      await this.sysctl(node.ns, { [`net.ipv4.conf.${hostDev}.proxy_arp`]: 1, [`net.ipv4.conf.${hostDev}.rp_filter`]: 0, [`net.ipv4.conf.${hostDev}.send_redirects`]: 0 });
      await this.in(node.ns, ['ip', 'link', 'set', hostDev, 'up']);
      await this.in(node.ns, ['ip', 'route', 'add', `${addr}/32`, 'dev', hostDev]);
      await this.in(ns, ['ip', 'addr', 'add', `${addr}/32`, 'dev', 'eth0']);
      await this.in(ns, ['ip', 'link', 'set', 'eth0', 'up']);
      await this.in(ns, ['ip', 'route', 'add', GATEWAY, 'dev', 'eth0', 'scope', 'link']);
      await this.in(ns, ['ip', 'route', 'add', 'default', 'via', GATEWAY, 'dev', 'eth0']);
      if (addr6) {
        // The host veth answers for fe80::1 itself: pods' IPv6 packets enter the node there too.
        await this.in(node.ns, ['ip', '-6', 'addr', 'add', `${GATEWAY6}/64`, 'dev', hostDev, 'nodad']);
        await this.in(node.ns, ['ip', '-6', 'route', 'add', `${addr6}/128`, 'dev', hostDev]);
        await this.in(ns, ['ip', '-6', 'addr', 'add', `${addr6}/128`, 'dev', 'eth0', 'nodad']);
        await this.in(ns, ['ip', '-6', 'route', 'add', 'default', 'via', GATEWAY6, 'dev', 'eth0']);
      }
    } catch (e) {
      delNetnsSync(ns);
      this.namespaces.delete(ns);
      throw e;
    }
    const pod: Pod = { name, ns, ip: addr, ip6: addr6, node, hostDev };
    this.pods.set(name, pod);
    return pod;
  }

  /** Addresses go up and are not reused after removePod (no stale conntrack can match a new pod). */
  private nextPodIp(node: BoxNode): string {
    const used = new Set([...this.pods.values()].map((p) => p.ip));
    for (let h = this.nextHost.get(node.name) ?? 10; h < 255; h++) {
      const ip = `10.244.${node.index}.${h}`;
      if (!used.has(ip)) {
        this.nextHost.set(node.name, h + 1);
        return ip;
      }
    }
    throw new Error(`no free pod address on ${node.name}`);
  }

  /** Stop the pod's processes, delete its veth (at once, for the agent to see) and namespace. */
  async removePod(name: string): Promise<void> {
    const pod = this.pod(name);
    await Promise.all([...this.procs].filter((p) => p.ns === pod.ns).map((p) => this.stopProc(p, 2000)));
    const ino = netnsInode(pod.ns);
    if (ino !== null && ino === this.namespaces.get(pod.ns)) killPids(pidsInNetns(new Set([ino])));
    await nsRun(pod.node.ns, ['ip', 'link', 'del', pod.hostDev]);
    delNetnsSync(pod.ns);
    this.namespaces.delete(pod.ns);
    this.pods.delete(name);
  }

  // --- processes ---------------------------------------------------------------

  /** One-shot command in namespace `ns` (never throws; code 124 on timeout). */
  exec(ns: string, argv: readonly string[], opts: number | { timeoutMs?: number } = {}): Promise<ExecResult> {
    const timeoutMs = typeof opts === 'number' ? opts : (opts.timeoutMs ?? 10_000);
    return this.run(nsArgv(ns, argv), timeoutMs);
  }

  /** Long-running process in namespace `ns`; stopped by destroy() if still running. */
  spawn(ns: string, argv: readonly string[]): NsProcess {
    return this.track(new NsProcess(ns, argv));
  }

  /** Spawn a complete argv (from argvFor); `ns` records where it runs. */
  spawnArgv(argv: readonly string[], ns = ''): NsProcess {
    return this.track(new NsProcess(ns, argv, { raw: true }));
  }

  private track(p: NsProcess): NsProcess {
    if (this.destroyed) {
      void p.kill();
      throw new Error(`box ${this.prefix} is destroyed`);
    }
    this.procs.add(p);
    return p;
  }

  /** SIGTERM, SIGKILL after graceMs, and forget the process. */
  async stopProc(p: NsProcess, graceMs = 5000): Promise<void> {
    await p.stop(graceMs);
    this.procs.delete(p);
  }

  /** Processes the box started and still tracks (stopProc/removePod/hold results drop them). */
  get processes(): readonly NsProcess[] {
    return [...this.procs];
  }

  /** Output of every process the box started, for a failing test's report. */
  logs(tailChars = 2000): string {
    return [...this.procs].map((p) => `--- ${p.argv.join(' ')} (pid ${p.pid}, ${p.running ? 'running' : 'exited'})\n${p.output().slice(-tailChars)}`).join('\n');
  }

  /**
   * argv to run `who`'s command: in a pod's namespace, in "outside", or as a
   * process of a node (in its namespace and inside its cgroup, where the
   * agent's socket hooks apply — like a hostNetwork pod).
   */
  argvFor(who: string, argv: readonly string[]): string[] {
    const node = this.nodes.find((n) => n.name === who);
    if (node) return nsArgv(node.ns, ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', this.cgroupDir(node.name), ...argv]);
    const pod = this.pods.get(who);
    const under = pod && (this.podsUnderCgroup === true || (Array.isArray(this.podsUnderCgroup) && this.podsUnderCgroup.includes(pod.node.name)));
    if (pod && under) return nsArgv(pod.ns, ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', this.podCgroupDir(pod.node.name), ...argv]);
    return nsArgv(this.nsOf(who), argv);
  }

  /** Run `who`'s command to completion, as argvFor places it (a pod inside its cgroup where the box puts it there). */
  execAs(who: string, argv: readonly string[], timeoutMs = 10_000): Promise<ExecResult> {
    return this.run(this.argvFor(who, argv), timeoutMs);
  }

  /** Start test/box/echo.js in a pod; resolves once every port listens. */
  async startEcho(podName: string, ports: { tcp?: number[]; udp?: number[]; udpMirror?: number[] } = { tcp: [8080], udp: [5353] }): Promise<NsProcess> {
    const pod = this.pod(podName);
    const argv = ['node', ECHO, '--name', podName, '--tcp', (ports.tcp ?? []).join(','), '--udp', (ports.udp ?? []).join(',')];
    if (pod.ip6) argv.push('--ipv6');
    if (ports.udpMirror?.length) argv.push('--udp-mirror', ports.udpMirror.join(','));
    const p = this.spawnArgv(this.argvFor(podName, argv), pod.ns);
    await p.waitFor(/^ready$/m, 10_000);
    return p;
  }

  // --- clients -----------------------------------------------------------------

  private async client(who: string, args: string[], timeoutMs: number): Promise<Results> {
    const r = await this.run(this.argvFor(who, ['node', CLIENT, ...args]), timeoutMs);
    return parseResults(r.stdout, `client ${args.join(' ')} in ${who} (exit ${r.code}): ${r.stderr}`);
  }

  /** `count` sequential TCP connections from `from` (pod, node or "outside"), one HTTP request each. */
  tcp(from: string, to: Endpoint, opts: TcpOptions = {}): Promise<Results> {
    const count = opts.count ?? 1;
    const t = opts.timeoutMs ?? 2000;
    const hold = opts.holdMs ?? 0;
    const args = ['tcp', '--to', to, '--count', String(count), '--timeout-ms', String(t), '--hold-ms', String(hold)];
    if (opts.bind) args.push('--bind', opts.bind);
    if (opts.peerAfterMs) args.push('--peer-after-ms', String(opts.peerAfterMs));
    return this.client(from, args, count * (2 * t + hold + (opts.peerAfterMs ?? 0) + 200) + 5000);
  }

  /** `count` UDP requests; which backend answered each, or ECONNREFUSED / timeout. */
  udp(from: string, to: Endpoint, opts: UdpOptions = {}): Promise<Results> {
    const count = opts.count ?? 1;
    const t = opts.timeoutMs ?? 1000;
    const interval = opts.intervalMs ?? (opts.sameSocket ? 50 : 0);
    const args = ['udp', '--to', to, '--count', String(count), '--timeout-ms', String(t), '--interval-ms', String(interval)];
    if (opts.sameSocket) args.push('--same-socket');
    if (opts.connect) args.push('--connect');
    if (opts.bind) args.push('--bind', opts.bind);
    if (opts.sport) args.push('--sport', String(opts.sport));
    if (opts.size) args.push('--size', String(opts.size));
    return this.client(from, args, count * (t + interval + 200) + 5000);
  }

  /**
   * One TCP connection doing a request every intervalMs for durationMs, in
   * the background. Resolves once connected (or once the client gave up);
   * result() waits for the end.
   */
  async hold(from: string, to: Endpoint, opts: { durationMs: number; intervalMs: number; timeoutMs?: number }): Promise<HoldHandle> {
    const args = ['hold', '--to', to, '--duration-ms', String(opts.durationMs), '--interval-ms', String(opts.intervalMs), '--timeout-ms', String(opts.timeoutMs ?? 2000)];
    const p = this.spawnArgv(this.argvFor(from, ['node', CLIENT, ...args]), this.nsOf(from));
    // A failed connect ends the client with its JSON (and no "connected").
    await p.waitFor(/^(connected|\{.*)$/m, 10_000);
    return {
      proc: p,
      result: async () => {
        const bound = setTimeout(() => void p.kill(), opts.durationMs + 15_000);
        await p.wait();
        clearTimeout(bound);
        this.procs.delete(p);
        return parseResults(p.stdout(), `hold in ${from}: ${p.output()}`);
      },
    };
  }

  /** The real curl (`curl -s -m <maxTimeS>`): exit code 0 ok, 7 refused, 28 timeout. */
  async curl(from: string, url: string, maxTimeS = 3): Promise<{ code: number; exitCode: number; body: string }> {
    const r = await this.run(this.argvFor(from, ['curl', '-s', '-m', String(maxTimeS), url]), maxTimeS * 1000 + 2000);
    return { code: r.code, exitCode: r.code, body: r.stdout };
  }

  /** Route a destination (service VIPs, LoadBalancer IPs) from the outside namespace via a node. */
  async routeFromOutside(cidr: string, nodeName: string): Promise<void> {
    await this.in(this.outside, ['ip', 'route', 'replace', cidr, 'via', this.node(nodeName).ip]);
  }

  // --- weir ----------------------------------------------------------------------

  /** Write a manifest file into the box's manifest directory (atomically: the agent never reads half a file). */
  writeManifest(file: string, text: string): void {
    const tmp = path.join(this.manifestDir, `.${file}.tmp`);
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, path.join(this.manifestDir, file));
  }

  removeManifest(file: string): void {
    fs.rmSync(path.join(this.manifestDir, file), { force: true });
  }

  /**
   * `weir run` in a node namespace on the box's manifests, with the node's
   * own pin root and cgroup. Waits for its "ready" log line unless told not to.
   */
  async startAgent(
    nodeName: string,
    extra: string[] = [],
    opts: {
      waitReady?: boolean;
      env?: Record<string, string>;
      readyTimeoutMs?: number;
      /** Another build's CLI, and node flags to run it with (bench/paired.ts). */ cli?: string;
      nodeFlags?: string[];
      /** false: no --cluster-cidr, as kube-proxy without a local-traffic detector. */
      clusterCidr?: boolean;
    } = {},
  ): Promise<Agent> {
    const node = this.node(nodeName);
    const cli = opts.cli ?? CLI;
    if (!fs.existsSync(cli)) throw new Error(`${cli} is missing: build the CLI first`);
    const argv = [
      'node',
      ...(opts.nodeFlags ?? []),
      cli,
      'run',
      '--source',
      `file:${this.manifestDir}`,
      '--node-name',
      node.name,
      '--bpffs-root',
      this.pinRoot(node.name),
      '--cgroup-root',
      this.cgroupDir(node.name),
      '--health-addr',
      '127.0.0.1:0',
      '--metrics-addr',
      '127.0.0.1:0',
      '--mode',
      MODE,
      '--external-devices',
      'eth0',
      ...(opts.clusterCidr === false ? [] : ['--cluster-cidr', CLUSTER_CIDR]),
      ...extra,
    ];
    const proc = this.track(new NsProcess(node.ns, argv, opts.env ? { env: { ...process.env, ...opts.env } } : {}));
    if (opts.waitReady !== false) await proc.waitFor(/"msg":"ready"/, opts.readyTimeoutMs ?? 20_000);
    return new Agent(this, node, proc);
  }

  /**
   * An agent on every node of the box, each ready to serve: `programmed`
   * shows in its `weir services`, and in BPF mode its external device and
   * (on pod-bearing nodes) pod devices are attached.
   */
  async startAgentsServing(programmed: RegExp): Promise<Agent[]> {
    const agents: Agent[] = [];
    for (const node of this.nodes) agents.push(await this.startAgent(node.name));
    for (const [i, node] of this.nodes.entries()) {
      await waitFor(async () => programmed.test(await this.weir(node.name, ['services'])), { timeoutMs: 5000, what: `${node.name} programmed` });
      if (MODE !== 'bpf') continue;
      await agents[i]!.proc.waitFor(/"device":"eth0"/, 3000);
      // Pod devices are attached by the watcher within its poll interval: one "attached" line each.
      const pods = [...this.pods.values()].filter((p) => p.node.name === node.name).length;
      if (pods > 0) await agents[i]!.proc.waitFor(new RegExp(`("role":"pod"[\\s\\S]*){${pods}}`), 5000);
    }
    return agents;
  }

  /** `weir <args> --bpffs-root <pin root>` in a node namespace; its stdout (throws on failure). */
  async weir(nodeName: string, args: string[], timeoutMs = 20_000): Promise<string> {
    const node = this.node(nodeName);
    return this.must(nsArgv(node.ns, ['node', CLI, ...args, '--bpffs-root', node.pinRoot]), timeoutMs);
  }

  // --- teardown ------------------------------------------------------------------

  /** Run fn (synchronously) when the box is destroyed, before the namespaces go. */
  onDestroy(fn: () => void): void {
    this.cleanups.push(fn);
  }

  /** Stop every process (SIGTERM, SIGKILL after 2 s, all at once), then destroySync(). */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    await Promise.all([...this.procs].map((p) => p.stop(2000).catch(() => null)));
    this.destroySync();
  }

  /**
   * Synchronous teardown, safe from an exit or signal handler: SIGKILL what
   * is left — our processes, in-flight commands, and anything else still in
   * our namespaces or cgroups (e.g. a killed agent's `ip monitor` child,
   * which would keep a deleted namespace alive) — then delete namespaces,
   * pins, cgroup directories and the manifest directory.
   */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    live.delete(this);
    for (const fn of this.cleanups.splice(0)) {
      try {
        fn();
      } catch {
        /* keep tearing down */
      }
    }
    for (const p of this.procs) if (p.running) p.child.kill('SIGKILL');
    for (const c of this.inflight) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    // Only inodes still mounted under our names: a namespace that is gone may
    // have passed its inode number on to someone else's new namespace.
    const inodes = new Set([...this.namespaces].filter(([ns, ino]) => ino > 0 && netnsInode(ns) === ino).map(([, ino]) => ino));
    // Children first: a cgroup with a child cannot be removed.
    const cgroups = this.cgroupBase ? [...this.nodes.flatMap((n) => [path.join(n.cgroup, 'pods'), n.cgroup]), this.cgroupBase] : [];
    const stragglers = (): number[] => [...new Set([...pidsInNetns(inodes), ...cgroups.flatMap(cgroupPids)])];
    for (let i = 0; i < 40; i++) {
      const pids = stragglers();
      if (pids.length === 0) break;
      killPids(pids);
      sleepSync(50);
    }
    for (const ns of [...this.namespaces.keys()].reverse()) delNetnsSync(ns);
    this.namespaces.clear();
    fs.rmSync(this.pinBase, { recursive: true, force: true });
    fs.rmSync(this.manifestDir, { recursive: true, force: true });
    for (const dir of cgroups) rmdirCgroup(dir);
  }
}

function parseResults(stdout: string, context: string): Results {
  const line = stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Results;
  } catch {
    throw new Error(`no result from ${context}`);
  }
}

function killPids(pids: readonly number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

function cgroupPids(dir: string): number[] {
  try {
    return fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** rmdir a cgroup; EBUSY while killed processes are still leaving it, so retry briefly. */
function rmdirCgroup(dir: string): void {
  for (let i = 0; i < 40; i++) {
    try {
      fs.rmdirSync(dir);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      sleepSync(50);
    }
  }
}

/** A weir agent running in a node namespace. */
export class Agent {
  constructor(
    readonly box: Box,
    readonly node: BoxNode,
    readonly proc: NsProcess,
  ) {}

  /** Everything it printed (stdout and stderr). */
  logs(): string {
    return this.proc.output();
  }

  /** Wait for a log line matching re that appears after the current output. */
  waitForNext(re: RegExp, timeoutMs = 5000): Promise<void> {
    return this.proc.waitFor(re, timeoutMs, this.proc.mark());
  }

  /** SIGTERM and wait for the exit (SIGKILL after 5 s); its exit code. */
  stop(): Promise<number | null> {
    return this.proc.stop();
  }

  /** SIGKILL: a crash, pins stay. */
  kill(): Promise<number | null> {
    return this.proc.kill();
  }
}

/** Build a box, run fn, always destroy; on failure print the processes' output. */
export async function withBox<T>(spec: BoxSpec, fn: (box: Box) => Promise<T>): Promise<T> {
  const box = await Box.create(spec);
  try {
    return await fn(box);
  } catch (e) {
    const logs = box.logs();
    if (logs) process.stderr.write(`box ${box.prefix} processes:\n${logs}\n`);
    throw e;
  } finally {
    await box.destroy();
  }
}

/** Poll until fn returns a truthy value (returned) or timeoutMs passes (throws). */
export async function waitFor<T>(fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {}): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 5000);
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${opts.timeoutMs ?? 5000} ms waiting for ${opts.what ?? 'condition'}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 50));
  }
}

export { nsArgv };
