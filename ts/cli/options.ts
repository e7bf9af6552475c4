/**
 * `weir run` options: flags, or the same keys in a YAML file given with
 * --config (flags win). Every value is validated here, with the flag's name
 * in the error, before anything touches the machine.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import type * as Yaml from 'yaml';
import { Cidr, IPv4, parseCidr, parseIPv4 } from '../model/types';
import { Level, parseLevel } from '../util/log';

export type Mode = 'bpf' | 'iptables' | 'auto';
export type SourceSpec = { kind: 'file'; dir: string } | { kind: 'kube' };

export interface RunOptions {
  source: SourceSpec;
  nodeName: string;
  mode: Mode;
  podDevices: string[];
  externalDevices: string[];
  /** Explicit node IPs; empty = the addresses of the external devices. */
  nodeIPs: IPv4[];
  clusterCIDRs: Cidr[];
  /** Only node IPs inside these CIDRs answer NodePorts (empty: all). */
  nodePortAddresses: Cidr[];
  /** NodePorts answer on 127.0.0.1 for node processes (kube-proxy's iptables default). */
  localhostNodePorts: boolean;
  masqueradeAll: boolean;
  nodePortRange: { min: number; max: number };
  bpffsRoot: string;
  cgroupRoot: string;
  healthAddr: string;
  metricsAddr: string;
  logLevel: Level;
  minSyncPeriodMs: number;
  /** BPF mode: how often every map is compared with the desired state and drift repaired (kube-proxy's syncPeriod); 0 = never. */
  syncPeriodMs: number;
  /** Source address for hairpin traffic (a pod reaching itself via a service). */
  hairpinAddr: IPv4;
  kubeconfig: string;
  /** Conntrack capacity in flows, sized as kube-proxy sizes Linux conntrack: max(min, per-core × CPUs). */
  conntrackMaxPerCore: number;
  conntrackMin: number;
  /** max_entries of the service and membership maps. */
  lbMapEntries: number;
}

/** Flag name -> whether it takes a value. */
const FLAGS = {
  source: true,
  'node-name': true,
  mode: true,
  'pod-devices': true,
  'external-devices': true,
  'node-ips': true,
  'cluster-cidr': true,
  'nodeport-addresses': true,
  'localhost-nodeports': true,
  'masquerade-all': true,
  'service-node-port-range': true,
  'bpffs-root': true,
  'cgroup-root': true,
  'health-addr': true,
  'metrics-addr': true,
  'log-level': true,
  'min-sync-period': true,
  'sync-period': true,
  'hairpin-addr': true,
  kubeconfig: true,
  'conntrack-max-per-core': true,
  'conntrack-min': true,
  'lb-map-entries': true,
  config: true,
} as const;
type Flag = keyof typeof FLAGS;

export class UsageError extends Error {}

/** Parse `--flag value` / `--flag=value` pairs; positional arguments are returned apart. */
export function parseFlags(argv: readonly string[], allowed: readonly string[]): { flags: Map<string, string>; rest: string[] } {
  const flags = new Map<string, string>();
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) {
      rest.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = a.slice(2, eq < 0 ? undefined : eq);
    if (!allowed.includes(name)) throw new UsageError(`unknown flag --${name}`);
    if (eq >= 0) flags.set(name, a.slice(eq + 1));
    else if (i + 1 < argv.length && !argv[i + 1]!.startsWith('--')) flags.set(name, argv[++i]!);
    else flags.set(name, 'true');
  }
  return { flags, rest };
}

function list(v: string): string[] {
  return v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Durations as kube-proxy writes them: "0", "1s", "250ms", "1m". */
export function parseDuration(flag: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(v.trim());
  if (!m) throw new UsageError(`--${flag}: expected a duration like 0, 500ms, 1s, got ${JSON.stringify(v)}`);
  const n = Number(m[1]);
  return m[2] === 'ms' ? n : m[2] === 'm' ? n * 60000 : m[2] === 's' ? n * 1000 : n * 1000;
}

export function parseRunOptions(argv: readonly string[]): RunOptions {
  const { flags, rest } = parseFlags(argv, Object.keys(FLAGS));
  if (rest.length) throw new UsageError(`unexpected argument ${JSON.stringify(rest[0])}`);
  const merged = new Map<string, string>();
  const configPath = flags.get('config');
  if (configPath) {
    let doc: unknown;
    try {
      // Loaded here only: the YAML parser costs start-up time every run otherwise.
      doc = (require('yaml') as typeof Yaml).parse(fs.readFileSync(configPath, 'utf8'));
    } catch (e) {
      throw new UsageError(`--config ${configPath}: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
    }
    if (doc !== null && doc !== undefined && (typeof doc !== 'object' || Array.isArray(doc))) {
      throw new UsageError(`--config ${configPath}: expected a mapping of option names to values`);
    }
    for (const [k, v] of Object.entries((doc ?? {}) as Record<string, unknown>)) {
      const name = k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
      if (!(name in FLAGS) || name === 'config') throw new UsageError(`--config ${configPath}: unknown key ${JSON.stringify(k)}`);
      merged.set(name, Array.isArray(v) ? v.join(',') : String(v));
    }
  }
  for (const [k, v] of flags) merged.set(k, v);
  const get = (f: Flag): string | undefined => merged.get(f);

  const sourceText = get('source') ?? 'kube';
  let source: SourceSpec;
  if (sourceText === 'kube') source = { kind: 'kube' };
  else if (sourceText.startsWith('file:') && sourceText.length > 5) source = { kind: 'file', dir: sourceText.slice(5) };
  else throw new UsageError(`--source: expected file:DIR or kube, got ${JSON.stringify(sourceText)}`);

  const mode = get('mode') ?? 'auto';
  if (mode !== 'bpf' && mode !== 'iptables' && mode !== 'auto') throw new UsageError(`--mode: expected bpf, iptables or auto, got ${JSON.stringify(mode)}`);

  const ips = (flag: Flag): IPv4[] =>
    list(get(flag) ?? '').map((s) => {
      const ip = parseIPv4(s);
      if (!ip) throw new UsageError(`--${flag}: invalid IPv4 address ${JSON.stringify(s)}`);
      return ip;
    });
  const cidrList = (flag: Flag): Cidr[] =>
    list(get(flag) ?? '').map((s) => {
      const c = parseCidr(s);
      if (!c) throw new UsageError(`--${flag}: invalid CIDR ${JSON.stringify(s)}`);
      return c;
    });
  const bool = (flag: Flag, def: boolean): boolean => {
    const v = get(flag);
    if (v === undefined) return def;
    if (v === 'true' || v === '1') return true;
    if (v === 'false' || v === '0') return false;
    throw new UsageError(`--${flag}: expected true or false, got ${JSON.stringify(v)}`);
  };
  const range = /^(\d+)-(\d+)$/.exec(get('service-node-port-range') ?? '30000-32767');
  const nodePortRange = range ? { min: Number(range[1]), max: Number(range[2]) } : null;
  if (!nodePortRange || nodePortRange.min < 1 || nodePortRange.max > 65535 || nodePortRange.min > nodePortRange.max) {
    throw new UsageError(`--service-node-port-range: expected MIN-MAX within 1-65535, got ${JSON.stringify(get('service-node-port-range'))}`);
  }
  const count = (flag: Flag, def: number, min: number): number => {
    const v = get(flag);
    if (v === undefined) return def;
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || n < min || n > 1 << 23) throw new UsageError(`--${flag}: expected an integer from ${min} to ${1 << 23}, got ${JSON.stringify(v)}`);
    return n;
  };
  const hairpin = parseIPv4(get('hairpin-addr') ?? '169.254.42.1');
  if (!hairpin) throw new UsageError(`--hairpin-addr: invalid IPv4 address ${JSON.stringify(get('hairpin-addr'))}`);

  return {
    source,
    nodeName: get('node-name') || process.env.NODE_NAME || os.hostname(),
    mode,
    podDevices: list(get('pod-devices') ?? 'veth*,cali*,lxc*,cni0'),
    externalDevices: list(get('external-devices') ?? ''),
    nodeIPs: ips('node-ips'),
    clusterCIDRs: cidrList('cluster-cidr'),
    nodePortAddresses: cidrList('nodeport-addresses'),
    localhostNodePorts: bool('localhost-nodeports', true),
    masqueradeAll: bool('masquerade-all', false),
    nodePortRange,
    bpffsRoot: get('bpffs-root') ?? '/sys/fs/bpf/weir',
    cgroupRoot: get('cgroup-root') ?? '',
    healthAddr: get('health-addr') ?? '0.0.0.0:10256',
    metricsAddr: get('metrics-addr') ?? '127.0.0.1:10249',
    logLevel: parseLevel(get('log-level') ?? 'info'),
    minSyncPeriodMs: parseDuration('min-sync-period', get('min-sync-period') ?? '0'),
    syncPeriodMs: parseDuration('sync-period', get('sync-period') ?? '30s'),
    hairpinAddr: hairpin,
    kubeconfig: get('kubeconfig') ?? process.env.KUBECONFIG ?? '',
    // kube-proxy's defaults for --conntrack-max-per-core and --conntrack-min.
    conntrackMaxPerCore: count('conntrack-max-per-core', 32768, 0),
    conntrackMin: count('conntrack-min', 131072, 1),
    lbMapEntries: count('lb-map-entries', 262144, 1024),
  };
}

/** Conntrack map entries for these options on this machine (two per flow). */
export function conntrackEntries(opts: Pick<RunOptions, 'conntrackMaxPerCore' | 'conntrackMin'>, cpus = os.availableParallelism()): number {
  return 2 * Math.max(opts.conntrackMin, opts.conntrackMaxPerCore * cpus);
}

/** host:port -> [host, port] (port 0 = any free port, for tests). */
export function parseHostPort(flag: string, v: string): { host: string; port: number } {
  const i = v.lastIndexOf(':');
  const port = Number(v.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--${flag}: expected HOST:PORT, got ${JSON.stringify(v)}`);
  return { host: v.slice(0, i) || '0.0.0.0', port };
}
