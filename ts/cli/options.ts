/**
 * `weir run` options: flags, or the same keys (or kube-proxy's
 * KubeProxyConfiguration) in a YAML file given with --config (flags win).
 * Every value is validated here, naming the flag, or the file and key,
 * before anything touches the machine.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import type * as Yaml from 'yaml';
import { Cidr, IP, IPv4, IPv6, parseCidr, parseIP, parseIPv4, parseIPv6 } from '../model/types';
import { Level, parseLevel } from '../util/log';
import { Command, Flag, FlagTable, Given, UsageError, boolean, flagEntries, integer, list, oneOf, present, readArgs, resolveFlags, text } from './flags';
import { ConfigNote, KUBE_PROXY_KIND, KeyedText, OptionTexts, isKubeProxyDocument, kubeProxyOptions, parseGoDuration } from './kubeproxy-config';

export type Mode = 'bpf' | 'nftables' | 'iptables' | 'auto';
/** kube-proxy's detectLocalMode: how traffic from this node's pods is told from other traffic. */
export type DetectLocalMode = 'ClusterCIDR' | 'NodeCIDR' | 'InterfaceNamePrefix' | 'BridgeInterface';
export const DETECT_LOCAL_MODES: readonly DetectLocalMode[] = ['ClusterCIDR', 'NodeCIDR', 'InterfaceNamePrefix', 'BridgeInterface'];
export type SourceSpec = { kind: 'file'; dir: string } | { kind: 'kube' };

export interface RunOptions {
  source: SourceSpec;
  nodeName: string;
  mode: Mode;
  podDevices: string[];
  externalDevices: string[];
  /** Explicit node IPs; empty = the addresses of the external devices. */
  nodeIPs: IP[];
  clusterCIDRs: Cidr[];
  /** Only node IPs inside these CIDRs answer NodePorts (empty: all). */
  nodePortAddresses: Cidr[];
  /** NodePorts answer on 127.0.0.1 for node processes (kube-proxy's iptables default). */
  localhostNodePorts: boolean;
  masqueradeAll: boolean;
  /** Accepted for configs written for older weir; it has no effect (empty: not given). */
  nodePortRange: string;
  bpffsRoot: string;
  cgroupRoot: string;
  /** The socket hooks translate for the node's network namespace only; pods' sockets keep the service address (BPF mode). */
  socketLbHostnsOnly: boolean;
  healthAddr: string;
  metricsAddr: string;
  logLevel: Level;
  minSyncPeriodMs: number;
  /** BPF and nftables mode: how often the maps or the table are compared with the desired state and drift repaired (kube-proxy's syncPeriod); 0 = never. */
  syncPeriodMs: number;
  /** Source address for hairpin traffic (a pod reaching itself via a service). */
  hairpinAddr: IPv4;
  /** The same for IPv6 pods (BPF mode). */
  hairpinAddr6: IPv6;
  kubeconfig: string;
  /** Conntrack capacity in flows, sized as kube-proxy sizes Linux conntrack: max(min, per-core × CPUs). */
  conntrackMaxPerCore: number;
  conntrackMin: number;
  /** max_entries of the service and membership maps. */
  lbMapEntries: number;
  /**
   * Conntrack idle timeouts in seconds (kube-proxy's conntrack.* timeouts);
   * null: not given, so BPF mode keeps weir's lifetimes and iptables mode
   * leaves the kernel's sysctls alone.
   */
  conntrackTcpEstablishedSec: number | null;
  conntrackTcpCloseWaitSec: number | null;
  conntrackUdpSec: number | null;
  conntrackUdpStreamSec: number | null;
  detectLocalMode: DetectLocalMode;
  /** InterfaceNamePrefix: pods' host-side devices start with this. */
  podInterfaceNamePrefix: string;
  /** BridgeInterface: the bridge pods are attached to. */
  podBridgeInterface: string;
}

/** weir's own conntrack lifetimes (bpf/lib/ct.h), in seconds: what BPF mode uses when no timeout is given. */
export const CONNTRACK_DEFAULTS = { tcpEstablished: 6 * 3600, tcpCloseWait: 10, udp: 60, udpStream: 60 } as const;

/** Where an agent pins its maps, and where the inspection commands look for them. */
export const DEFAULT_BPFFS_ROOT = '/sys/fs/bpf/weir';

/** Durations as kube-proxy writes them: "0", "1s", "250ms", "1m". */
export function parseDuration(flag: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(v.trim());
  if (!m) throw new UsageError(`--${flag}: expected a duration like 0, 500ms, 1s, got ${JSON.stringify(v)}`);
  const n = Number(m[1]);
  return m[2] === 'ms' ? n : m[2] === 'm' ? n * 60000 : n * 1000;
}

/** The longest conntrack timeout: its seconds fit the programs' 32-bit field. */
const MAX_TIMEOUT_S = 0xffffffff;

/**
 * A conntrack timeout: a Go duration as kube-proxy takes it ("24h0m0s",
 * "30s"), in whole seconds (the kernel's sysctls count seconds; kube-proxy
 * drops the fraction too). "" or 0 is not given: null. Less than a second
 * is refused rather than read as 0.
 */
function conntrackTimeout(flag: string, v: string): number | null {
  const text = v.trim();
  if (text === '') return null;
  const ms = parseGoDuration(text);
  if (ms === null) throw new UsageError(`--${flag}: expected a duration like 30s or 1h0m0s, got ${JSON.stringify(v)}`);
  if (ms === 0) return null;
  const s = Math.floor(ms / 1000);
  if (s < 1 || s > MAX_TIMEOUT_S) throw new UsageError(`--${flag}: expected at least 1s (and at most ${MAX_TIMEOUT_S}s), got ${JSON.stringify(v)}`);
  return s;
}

/** A network device name as the kernel takes it (IFNAMSIZ - 1 bytes, no '/' or blanks), or '' for none. */
function deviceName(flag: string, v: string): string {
  const name = v.trim();
  if (name !== '' && (name.length > 15 || /[/\s:]/.test(name))) throw new UsageError(`--${flag}: not a device name: ${JSON.stringify(v)}`);
  return name;
}

function ipv4(flag: string, v: string): IPv4 {
  const ip = parseIPv4(v);
  if (!ip) throw new UsageError(`--${flag}: invalid IPv4 address ${JSON.stringify(v)}`);
  return ip;
}

function ipv6(flag: string, v: string): IPv6 {
  const ip = parseIPv6(v);
  if (!ip) throw new UsageError(`--${flag}: invalid IPv6 address ${JSON.stringify(v)}`);
  return ip;
}

/** Addresses of either family. */
function ipList(flag: string, v: string): IP[] {
  return list(flag, v).map((s) => {
    const ip = parseIP(s);
    if (!ip) throw new UsageError(`--${flag}: invalid IP address ${JSON.stringify(s)}`);
    return ip;
  });
}

function cidrList(flag: string, v: string): Cidr[] {
  return list(flag, v).map((s) => {
    const c = parseCidr(s);
    if (!c) throw new UsageError(`--${flag}: invalid CIDR ${JSON.stringify(s)}`);
    return c;
  });
}

function source(flag: string, v: string): SourceSpec {
  if (v === 'kube') return { kind: 'kube' };
  if (v.startsWith('file:') && v.length > 5) return { kind: 'file', dir: v.slice(5) };
  throw new UsageError(`--${flag}: expected file:DIR or kube, got ${JSON.stringify(v)}`);
}

/** A MIN-MAX port range, kept as given ('' when absent). */
function portRange(flag: string, v: string): string {
  if (v === '') return v;
  const m = /^(\d+)-(\d+)$/.exec(v);
  const range = m ? { min: Number(m[1]), max: Number(m[2]) } : null;
  if (!range || range.min < 1 || range.max > 65535 || range.min > range.max) {
    throw new UsageError(`--${flag}: expected MIN-MAX within 1-65535, got ${JSON.stringify(v)}`);
  }
  return v;
}

function logLevel(_flag: string, v: string): Level {
  try {
    return parseLevel(v);
  } catch (e) {
    // parseLevel's message names the flag; a bad level is a usage mistake.
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
}

/** HOST:PORT, checked here so a typo fails before the agent starts; the agent splits it with parseHostPort. */
function hostPort(flag: string, v: string): string {
  parseHostPort(flag, v);
  return v;
}

function defaultNodeName(): string {
  return process.env.NODE_NAME || os.hostname();
}

/** The largest count a map-size flag takes. */
const MAX_COUNT = 1 << 23;

/**
 * `weir run`'s flags, one per option. The YAML key of each is its flag name.
 * Where kube-proxy has the same setting, the default is kube-proxy's.
 */
export const RUN_FLAGS: FlagTable<RunOptions> = {
  source: {
    flag: 'source',
    yaml: 'source',
    kind: 'value',
    placeholder: 'file:DIR|kube',
    default: 'kube',
    description: 'where Services, EndpointSlices and Nodes come from: manifests in DIR, or the API server',
    parse: source,
  },
  nodeName: {
    flag: 'node-name',
    yaml: 'node-name',
    kind: 'value',
    placeholder: 'NAME',
    default: defaultNodeName,
    defaultHelp: '$NODE_NAME, else the host name',
    description: "this node's name: which endpoints are local",
    parse: (_flag, v) => v || defaultNodeName(),
  },
  mode: {
    flag: 'mode',
    yaml: 'mode',
    kind: 'value',
    placeholder: 'bpf|nftables|iptables|auto',
    default: 'auto',
    description: 'dataplane; auto: BPF if the programs load, else nftables if nft works here, else iptables, logged with the reason',
    parse: oneOf<Mode>(['bpf', 'nftables', 'iptables', 'auto']),
  },
  podDevices: {
    flag: 'pod-devices',
    yaml: 'pod-devices',
    kind: 'value',
    placeholder: 'GLOBS',
    default: 'veth*,cali*,lxc*,cni0',
    description: 'devices for the pod-side program, also those that appear later',
    parse: list,
  },
  externalDevices: {
    flag: 'external-devices',
    yaml: 'external-devices',
    kind: 'value',
    placeholder: 'DEVICES',
    defaultHelp: 'none',
    description: 'devices for the external-side program; their addresses are the node IPs by default',
    parse: list,
  },
  nodeIPs: {
    flag: 'node-ips',
    yaml: 'node-ips',
    kind: 'value',
    placeholder: 'IPS',
    defaultHelp: "the external devices' addresses, else the Node's InternalIPs as they change",
    description: 'NodePort addresses; the first is the masquerade source',
    parse: ipList,
  },
  clusterCIDRs: {
    flag: 'cluster-cidr',
    yaml: 'cluster-cidr',
    kind: 'value',
    placeholder: 'CIDRS',
    defaultHelp: 'none',
    description: 'pod CIDRs: tell pods from outside clients, for masquerading and externalTrafficPolicy Local',
    parse: cidrList,
  },
  detectLocalMode: {
    flag: 'detect-local-mode',
    yaml: 'detect-local-mode',
    kind: 'value',
    placeholder: 'MODE',
    default: 'ClusterCIDR',
    description: "how pods' traffic is told apart: ClusterCIDR (source in --cluster-cidr), NodeCIDR (source in the Node's podCIDRs), InterfaceNamePrefix or BridgeInterface (the device it enters on)",
    parse: oneOf<DetectLocalMode>(DETECT_LOCAL_MODES),
  },
  podInterfaceNamePrefix: {
    flag: 'pod-interface-name-prefix',
    yaml: 'pod-interface-name-prefix',
    kind: 'value',
    placeholder: 'PREFIX',
    defaultHelp: 'none',
    description: 'InterfaceNamePrefix: traffic entering on a device whose name starts with this is from a pod, e.g. veth',
    parse: deviceName,
  },
  podBridgeInterface: {
    flag: 'pod-bridge-interface',
    yaml: 'pod-bridge-interface',
    kind: 'value',
    placeholder: 'DEVICE',
    defaultHelp: 'none',
    description: 'BridgeInterface: traffic entering from this bridge is from a pod, e.g. cni0',
    parse: deviceName,
  },
  nodePortAddresses: {
    flag: 'nodeport-addresses',
    yaml: 'nodeport-addresses',
    kind: 'value',
    placeholder: 'CIDRS',
    defaultHelp: 'all node IPs',
    description: 'only node IPs inside these CIDRs answer NodePorts',
    parse: cidrList,
  },
  localhostNodePorts: {
    flag: 'localhost-nodeports',
    yaml: 'localhost-nodeports',
    kind: 'bool',
    placeholder: '[true|false]',
    default: 'true',
    description: 'NodePorts also answer on 127.0.0.1 for node processes',
    parse: boolean,
  },
  masqueradeAll: {
    flag: 'masquerade-all',
    yaml: 'masquerade-all',
    kind: 'bool',
    placeholder: '[true|false]',
    default: 'false',
    description: 'SNAT every ClusterIP flow (external frontends follow their traffic policy)',
    parse: boolean,
  },
  nodePortRange: {
    flag: 'service-node-port-range',
    yaml: 'service-node-port-range',
    kind: 'value',
    placeholder: 'MIN-MAX',
    defaultHelp: 'none',
    description: 'no effect (logged): every nodePort the API server accepted is programmed, whatever its range',
    parse: portRange,
  },
  bpffsRoot: {
    flag: 'bpffs-root',
    yaml: 'bpffs-root',
    kind: 'value',
    placeholder: 'PATH',
    default: DEFAULT_BPFFS_ROOT,
    description: 'bpffs directory of the pinned maps and links, locked while the agent runs',
    parse: text,
  },
  cgroupRoot: {
    flag: 'cgroup-root',
    yaml: 'cgroup-root',
    kind: 'value',
    placeholder: 'PATH',
    defaultHelp: 'none, so no socket hooks',
    description: "cgroup v2 directory for the socket hooks; a DaemonSet gives the host's root",
    parse: text,
  },
  socketLbHostnsOnly: {
    flag: 'socket-lb-hostns-only',
    yaml: 'socket-lb-hostns-only',
    kind: 'bool',
    placeholder: '[true|false]',
    default: 'false',
    description: "socket hooks translate only for the node's network namespace: pods' connections keep the ClusterIP on the wire, as a service mesh needs",
    parse: boolean,
  },
  healthAddr: {
    flag: 'health-addr',
    yaml: 'health-addr',
    kind: 'value',
    placeholder: 'HOST:PORT',
    default: '0.0.0.0:10256',
    description: 'where /healthz and /livez are served',
    parse: hostPort,
  },
  metricsAddr: {
    flag: 'metrics-addr',
    yaml: 'metrics-addr',
    kind: 'value',
    placeholder: 'HOST:PORT',
    default: '127.0.0.1:10249',
    description: 'where Prometheus /metrics is served',
    parse: hostPort,
  },
  logLevel: {
    flag: 'log-level',
    yaml: 'log-level',
    kind: 'value',
    placeholder: 'debug|info|warn|error',
    default: 'info',
    description: 'the least severe log lines written',
    parse: logLevel,
  },
  minSyncPeriodMs: {
    flag: 'min-sync-period',
    yaml: 'min-sync-period',
    kind: 'value',
    placeholder: 'DURATION',
    default: '0',
    description: "coalesce bursts of changes over this long, e.g. 250ms; kube-proxy's minSyncPeriod",
    parse: parseDuration,
  },
  syncPeriodMs: {
    flag: 'sync-period',
    yaml: 'sync-period',
    kind: 'value',
    placeholder: 'DURATION',
    default: '30s',
    description: 'BPF and nftables mode: how often the maps or table inet weir are compared with the desired state and repaired; 0: never',
    parse: parseDuration,
  },
  hairpinAddr: {
    flag: 'hairpin-addr',
    yaml: 'hairpin-addr',
    kind: 'value',
    placeholder: 'IP',
    default: '169.254.42.1',
    description: 'source address of a pod reaching itself through a service',
    parse: ipv4,
  },
  hairpinAddr6: {
    flag: 'hairpin-addr6',
    yaml: 'hairpin-addr6',
    kind: 'value',
    placeholder: 'IP',
    // Groups 2-3 spell 169.254.42.1. Not link-local: a pod routes it to its gateway, the node, without neighbour discovery for it.
    default: 'fd00:a9fe:2a01::1',
    description: 'source address of an IPv6 pod reaching itself through a service (BPF mode)',
    parse: ipv6,
  },
  kubeconfig: {
    flag: 'kubeconfig',
    yaml: 'kubeconfig',
    kind: 'value',
    placeholder: 'FILE',
    default: () => process.env.KUBECONFIG ?? '',
    defaultHelp: 'in-cluster when KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG, else ~/.kube/config',
    description: 'API server credentials for --source kube',
    parse: text,
  },
  conntrackMaxPerCore: {
    flag: 'conntrack-max-per-core',
    yaml: 'conntrack-max-per-core',
    kind: 'value',
    placeholder: 'N',
    default: '32768',
    description: 'conntrack flows per CPU: the capacity is this times the CPUs or --conntrack-min, whichever is more',
    parse: integer({ min: 0, max: MAX_COUNT }),
  },
  conntrackMin: {
    flag: 'conntrack-min',
    yaml: 'conntrack-min',
    kind: 'value',
    placeholder: 'N',
    default: '131072',
    description: 'least conntrack capacity in flows; a pinned map keeps its size until weir cleanup',
    parse: integer({ min: 1, max: MAX_COUNT }),
  },
  conntrackTcpEstablishedSec: {
    flag: 'conntrack-tcp-timeout-established',
    yaml: 'conntrack-tcp-timeout-established',
    kind: 'value',
    placeholder: 'DURATION',
    defaultHelp: "BPF mode 6h0m0s; iptables mode leaves the kernel's",
    description: 'idle timeout of an established TCP flow, e.g. 24h0m0s; iptables mode sets nf_conntrack_tcp_timeout_established',
    parse: conntrackTimeout,
  },
  conntrackTcpCloseWaitSec: {
    flag: 'conntrack-tcp-timeout-close-wait',
    yaml: 'conntrack-tcp-timeout-close-wait',
    kind: 'value',
    placeholder: 'DURATION',
    defaultHelp: "BPF mode 10s; iptables mode leaves the kernel's",
    description: 'idle timeout of a TCP flow that saw a FIN or RST; iptables mode sets nf_conntrack_tcp_timeout_close_wait',
    parse: conntrackTimeout,
  },
  conntrackUdpSec: {
    flag: 'conntrack-udp-timeout',
    yaml: 'conntrack-udp-timeout',
    kind: 'value',
    placeholder: 'DURATION',
    defaultHelp: "BPF mode 1m0s; iptables mode leaves the kernel's",
    description: 'idle timeout of a UDP flow without replies; iptables mode sets nf_conntrack_udp_timeout',
    parse: conntrackTimeout,
  },
  conntrackUdpStreamSec: {
    flag: 'conntrack-udp-timeout-stream',
    yaml: 'conntrack-udp-timeout-stream',
    kind: 'value',
    placeholder: 'DURATION',
    defaultHelp: "BPF mode 1m0s; iptables mode leaves the kernel's",
    description: 'idle timeout of a UDP flow that saw replies; iptables mode sets nf_conntrack_udp_timeout_stream',
    parse: conntrackTimeout,
  },
  lbMapEntries: {
    flag: 'lb-map-entries',
    yaml: 'lb-map-entries',
    kind: 'value',
    placeholder: 'N',
    default: '262144',
    description: 'entries in the service and membership maps: one per frontend plus one per endpoint; a pinned map keeps its size until weir cleanup',
    parse: integer({ min: 1024, max: MAX_COUNT }),
  },
};

/** Options that only make sense together; the message names the flags. */
function checkRunOptions(o: RunOptions): void {
  if (o.detectLocalMode === 'InterfaceNamePrefix' && !o.podInterfaceNamePrefix) {
    throw new UsageError('--detect-local-mode InterfaceNamePrefix needs --pod-interface-name-prefix');
  }
  if (o.detectLocalMode === 'BridgeInterface' && !o.podBridgeInterface) throw new UsageError('--detect-local-mode BridgeInterface needs --pod-bridge-interface');
}

/** What `weir run` reads from its command line: the options, the file that may hold them, and whether to print them instead of running. */
export type RunArgs = RunOptions & { config: string; printConfig: boolean };

export const RUN: Command<RunArgs> = {
  name: 'run',
  summary: 'run the agent: program the services of this node until SIGTERM or SIGINT',
  notes: [
    'A --config file is a YAML mapping of flag names (or their camelCase, e.g. nodeName) to values; a list may be a YAML list.',
    "It may instead be kube-proxy's KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1), bare or in the kube-proxy ConfigMap under config.conf; fields without a meaning for weir are named in a warning.",
  ],
  flags: {
    ...RUN_FLAGS,
    config: {
      flag: 'config',
      kind: 'value',
      placeholder: 'FILE',
      description: "read options from this YAML file, weir's keys or kube-proxy's KubeProxyConfiguration; flags win",
      parse: text,
    },
    printConfig: {
      flag: 'print-config',
      kind: 'switch',
      description: 'print the options the agent would run with as JSON, and exit',
      parse: present,
    },
  },
};

/** A YAML key as a flag name: camelCase keys are read as the kebab-case flag (nodeName is node-name). */
function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** The option texts of a document in weir's own keys, each with the key it came from. */
function weirOptions(doc: Record<string, unknown>): OptionTexts {
  const fields = flagEntries(RUN_FLAGS).flatMap(([field, f]) => (f.yaml === undefined ? [] : [{ field, yaml: f.yaml }]));
  const out: OptionTexts = {};
  for (const [k, v] of Object.entries(doc)) {
    const found = fields.find((e) => e.yaml === k) ?? fields.find((e) => e.yaml === kebab(k));
    if (!found) throw new UsageError(`unknown key ${JSON.stringify(k)}`);
    out[found.field] = { text: Array.isArray(v) ? v.join(',') : String(v), key: k };
  }
  return out;
}

interface FileOptions {
  values: OptionTexts;
  notes: ConfigNote[];
}

/** The option texts a --config file gives, in weir's keys or kube-proxy's. Errors name the file, then the key. */
function readConfigFile(file: string): FileOptions {
  const where = `config ${file}`;
  let docs: unknown[];
  try {
    // Loaded here only: the YAML parser costs start-up time every run otherwise.
    const parsed = Array.from((require('yaml') as typeof Yaml).parseAllDocuments(fs.readFileSync(file, 'utf8')));
    for (const d of parsed) if (d.errors[0]) throw d.errors[0];
    docs = parsed.map((d) => d.toJS() as unknown).filter((d) => d !== null && d !== undefined);
  } catch (e) {
    throw new UsageError(`${where}: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
  }
  // A kubeadm configuration file holds several documents; kube-proxy's is the one weir reads.
  const doc = docs.length > 1 ? docs.find((d) => isKubeProxyDocument(d) && d.kind === KUBE_PROXY_KIND) : docs[0];
  if (docs.length > 1 && doc === undefined) throw new UsageError(`${where}: ${docs.length} YAML documents, and none is a ${KUBE_PROXY_KIND}`);
  if (doc !== null && doc !== undefined && (typeof doc !== 'object' || Array.isArray(doc))) {
    throw new UsageError(`${where}: expected a mapping of option names to values`);
  }
  try {
    if (isKubeProxyDocument(doc)) {
      const kp = kubeProxyOptions(doc);
      return { values: kp.values, notes: kp.notes.map((n) => ({ ...n, fields: { file, ...n.fields } })) };
    }
    return { values: weirOptions((doc ?? {}) as Record<string, unknown>), notes: [] };
  } catch (e) {
    if (e instanceof UsageError) throw new UsageError(`${where}: ${e.message}`);
    throw e;
  }
}

/** Validates a value from the file as its flag would, naming the file and key instead of the flag. */
function checkFileValue<T>(file: string, f: Flag<T>, value: KeyedText): void {
  try {
    f.parse(f.flag, value.text);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    const own = `--${f.flag}: `;
    const msg = e.message.startsWith(own) ? e.message.slice(own.length) : e.message;
    throw new UsageError(`config ${file}: ${value.key}: ${msg}`);
  }
}

/** The run options and what the agent logs about its config file once it has a logger. */
export interface RunConfig {
  options: RunOptions;
  notes: ConfigNote[];
}

/** The run options from what the command line gave: the --config file's values, overridden by the flags, then defaults. */
export function runConfig(given: Given<RunArgs>): RunConfig {
  const { config, printConfig: _printConfig, ...flags } = given;
  const file = config ? readConfigFile(config) : { values: {}, notes: [] };
  const fromFile: Given<RunOptions> = {};
  for (const [field, f] of flagEntries(RUN_FLAGS)) {
    const value = file.values[field];
    if (value === undefined) continue;
    // Checked even where a flag overrides it: a mistake in the file is reported, not hidden until the flag goes.
    checkFileValue(config ?? '', f, value);
    fromFile[field] = value.text;
  }
  const options = resolveFlags(RUN_FLAGS, { ...fromFile, ...flags });
  checkRunOptions(options);
  return { options, notes: file.notes };
}

/** The run options (see runConfig). */
export function runOptions(given: Given<RunArgs>): RunOptions {
  return runConfig(given).options;
}

/** `weir run`'s command line as options. --help is the caller's to act on. */
export function parseRunOptions(argv: readonly string[]): RunOptions {
  return runOptions(readArgs(RUN, argv).given);
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
