/**
 * kube-proxy's own configuration (a kubeproxy.config.k8s.io/v1alpha1
 * KubeProxyConfiguration, bare or as kubeadm's kube-proxy ConfigMap holds it
 * under data["config.conf"]) read as the texts of weir run options, so a
 * node's existing kube-proxy config can be handed to `weir run --config`.
 *
 * kube-proxy reads a zero value (null, "", 0s) as "use the default", and
 * kubeadm writes every field it does not set that way; such a field leaves
 * weir's option unset too, so weir's default applies. Fields that have no
 * meaning for weir are collected, not rejected: the caller names them in
 * one warning.
 */
import { isIPv4, isIPv6 } from 'node:net';
import type * as Yaml from 'yaml';
import type { Fields } from '../util/log';
import { UsageError } from './flags';
import type { RunOptions } from './options';

export const KUBE_PROXY_API_VERSION = 'kubeproxy.config.k8s.io/v1alpha1';
export const KUBE_PROXY_KIND = 'KubeProxyConfiguration';
/** The key of kube-proxy's ConfigMap that kubeadm writes the configuration under. */
export const CONFIGMAP_KEY = 'config.conf';

/** kube-proxy's ports for a bind address given without one. */
const HEALTHZ_PORT = 10256;
const METRICS_PORT = 10249;

/** An option's text and the key of the file it came from, for errors that name the key. */
export interface KeyedText {
  readonly text: string;
  readonly key: string;
}
export type OptionTexts = { [K in keyof RunOptions]?: KeyedText };

/** A line the agent logs when it starts: what it made of the file. */
export interface ConfigNote {
  readonly level: 'info' | 'warn';
  readonly msg: string;
  readonly fields?: Fields;
}

export interface KubeProxyOptions {
  readonly values: OptionTexts;
  /** Keys set to something (not a zero value) that weir has no meaning for, in file order. */
  readonly ignored: string[];
  readonly notes: ConfigNote[];
}

type Doc = Record<string, unknown>;

function isMapping(v: unknown): v is Doc {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A parsed YAML document written for kube-proxy rather than in weir's own keys. */
export function isKubeProxyDocument(doc: unknown): doc is Doc {
  return isMapping(doc) && (doc.kind === KUBE_PROXY_KIND || doc.kind === 'ConfigMap' || doc.apiVersion === KUBE_PROXY_API_VERSION);
}

/** Go's time.ParseDuration units, in milliseconds. */
const UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, μs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A Go duration ("30s", "1m0s", "1h30m", "250ms", "0") in milliseconds; null if it is not one. Negative durations are not durations here. */
export function parseGoDuration(v: string): number | null {
  if (v === '0') return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;
  let ms = 0;
  let i = 0;
  while (i < v.length) {
    re.lastIndex = i;
    const m = re.exec(v);
    const unit = m ? UNIT_MS[m[2] ?? ''] : undefined;
    if (!m || unit === undefined) return null;
    ms += Number(m[1]) * unit;
    i = re.lastIndex;
  }
  return v.length ? ms : null;
}

/** kube-proxy's default for a zero value: the field is as good as absent. */
function isZero(v: unknown): boolean {
  return v === null || v === undefined || v === '' || v === false || v === 0 || v === '0' || v === '0s' || (Array.isArray(v) && v.length === 0);
}

/** Reads typed values by dotted key, remembering which keys were read. */
class Reader {
  readonly used = new Set<string>();
  constructor(
    private readonly doc: Doc,
    /** Put before every key in errors: where the document sits in the file. */
    readonly prefix: string,
  ) {}

  fail(key: string, msg: string): never {
    throw new UsageError(`${this.prefix}${key}: ${msg}`);
  }

  raw(key: string): unknown {
    this.used.add(key);
    let v: unknown = this.doc;
    for (const part of key.split('.')) v = isMapping(v) ? v[part] : undefined;
    return v;
  }

  /** A string; undefined for a zero value. */
  str(key: string): string | undefined {
    const v = this.raw(key);
    if (v === null || v === undefined) return undefined;
    if (typeof v !== 'string' && typeof v !== 'number') this.fail(key, `expected a string, got ${JSON.stringify(v)}`);
    const s = String(v).trim();
    return s === '' ? undefined : s;
  }

  /** true/false; undefined when absent or null. */
  bool(key: string): boolean | undefined {
    const v = this.raw(key);
    if (v === null || v === undefined) return undefined;
    if (typeof v !== 'boolean') this.fail(key, `expected true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  /** An integer; undefined when absent or null (an explicit 0 is a value). */
  int(key: string): number | undefined {
    const v = this.raw(key);
    if (v === null || v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v)) this.fail(key, `expected an integer, got ${JSON.stringify(v)}`);
    return v;
  }

  /** A Go duration in milliseconds; undefined for a zero value (kube-proxy's default). */
  duration(key: string): number | undefined {
    const v = this.raw(key);
    if (v === null || v === undefined || v === '') return undefined;
    const ms = typeof v === 'string' ? parseGoDuration(v.trim()) : null;
    if (ms === null) this.fail(key, `invalid duration ${JSON.stringify(v)}`);
    return ms === 0 ? undefined : ms;
  }

  /** A list of strings; undefined when absent, null or empty. */
  strings(key: string): string[] | undefined {
    const v = this.raw(key);
    if (v === null || v === undefined) return undefined;
    if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) this.fail(key, `expected a list of strings, got ${JSON.stringify(v)}`);
    return v.length ? (v as string[]).map((s) => s.trim()) : undefined;
  }

  /** Leaf keys with a value other than a zero one that nothing read. */
  unread(): string[] {
    const out: string[] = [];
    const walk = (v: unknown, key: string): void => {
      if (isMapping(v)) {
        for (const [k, child] of Object.entries(v)) walk(child, key ? `${key}.${k}` : k);
      } else if (!this.used.has(key) && !isZero(v)) {
        out.push(this.prefix + key);
      }
    };
    walk(this.doc, '');
    return out;
  }
}

/** kube-proxy's AppendPortIfNeeded: a bare IP takes the default port. */
function withPort(addr: string, port: number): string {
  if (isIPv4(addr)) return `${addr}:${port}`;
  if (isIPv6(addr)) return `[${addr}]:${port}`;
  return addr;
}

/** The ConfigMap's KubeProxyConfiguration, or the document itself. */
function unwrap(doc: Doc): Reader {
  if (doc.kind !== 'ConfigMap') return new Reader(doc, '');
  const data = doc.data;
  const text = isMapping(data) ? data[CONFIGMAP_KEY] : undefined;
  const where = `data.${CONFIGMAP_KEY}`;
  if (typeof text !== 'string') throw new UsageError(`${where}: missing: a ConfigMap is read for the KubeProxyConfiguration kubeadm writes under this key`);
  let inner: unknown;
  try {
    inner = (require('yaml') as typeof Yaml).parse(text);
  } catch (e) {
    throw new UsageError(`${where}: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
  }
  if (!isMapping(inner)) throw new UsageError(`${where}: expected a KubeProxyConfiguration mapping`);
  return new Reader(inner, `${where}: `);
}

/**
 * The weir options a kube-proxy configuration document gives. Errors are
 * UsageErrors naming the key (`iptables.syncPeriod: invalid duration "abc"`);
 * the caller puts the file in front.
 */
export function kubeProxyOptions(doc: Doc): KubeProxyOptions {
  const r = unwrap(doc);
  const values: OptionTexts = {};
  const notes: ConfigNote[] = [];
  const set = (field: keyof RunOptions, key: string, text: string | number | boolean | undefined): void => {
    if (text !== undefined) values[field] = { text: String(text), key: r.prefix + key };
  };

  const apiVersion = r.str('apiVersion');
  if (apiVersion !== KUBE_PROXY_API_VERSION) r.fail('apiVersion', `expected ${KUBE_PROXY_API_VERSION}, got ${JSON.stringify(apiVersion ?? '')}`);
  const kind = r.str('kind');
  if (kind !== KUBE_PROXY_KIND) r.fail('kind', `expected ${KUBE_PROXY_KIND}, got ${JSON.stringify(kind ?? '')}`);

  // Each kube-proxy backend reads its own section's periods (and nftables its own masqueradeAll).
  const mode = r.str('mode') ?? '';
  // A rule-based mode asked for by name is weir's mode of that name.
  if (mode === 'iptables' || mode === 'nftables') {
    set('mode', 'mode', mode);
  } else if (mode === '' || mode === 'ipvs') {
    set('mode', 'mode', 'auto');
    notes.push({
      level: 'info',
      msg: `kube-proxy mode ${mode ? JSON.stringify(mode) : 'unset'}: weir runs its BPF dataplane, or nftables (else iptables) if the BPF programs do not load`,
      fields: { key: 'mode' },
    });
  } else {
    r.fail('mode', `expected iptables, ipvs, nftables or empty, got ${JSON.stringify(mode)}`);
  }
  const section = mode === 'ipvs' || mode === 'nftables' ? mode : 'iptables';
  set('syncPeriodMs', `${section}.syncPeriod`, msText(r.duration(`${section}.syncPeriod`)));
  set('minSyncPeriodMs', `${section}.minSyncPeriod`, msText(r.duration(`${section}.minSyncPeriod`)));
  const masqueradeKey = mode === 'nftables' ? 'nftables.masqueradeAll' : 'iptables.masqueradeAll';
  set('masqueradeAll', masqueradeKey, r.bool(masqueradeKey));
  set('localhostNodePorts', 'iptables.localhostNodePorts', r.bool('iptables.localhostNodePorts'));

  // kube-proxy lower-cases the node name it looks up.
  set('nodeName', 'hostnameOverride', r.str('hostnameOverride')?.toLowerCase());
  // A specific bindAddress is kube-proxy's primary node IP; 0.0.0.0 (or ::) means "detect it".
  const bind = r.str('bindAddress');
  if (bind !== undefined && bind !== '0.0.0.0' && bind !== '::') set('nodeIPs', 'bindAddress', bind);
  const healthz = r.str('healthzBindAddress');
  set('healthAddr', 'healthzBindAddress', healthz === undefined ? undefined : withPort(healthz, HEALTHZ_PORT));
  const metrics = r.str('metricsBindAddress');
  set('metricsAddr', 'metricsBindAddress', metrics === undefined ? undefined : withPort(metrics, METRICS_PORT));
  set('clusterCIDRs', 'clusterCIDR', r.str('clusterCIDR'));
  set('kubeconfig', 'clientConnection.kubeconfig', r.str('clientConnection.kubeconfig'));
  set('conntrackMaxPerCore', 'conntrack.maxPerCore', r.int('conntrack.maxPerCore'));
  set('conntrackMin', 'conntrack.min', r.int('conntrack.min'));

  // CIDRs and kube-proxy's keywords. "primary" (the Node's primary IPs) and
  // "all" leave weir's node IPs unnarrowed: they are already the node's own
  // addresses (--node-ips, the external devices' addresses, or the Node's
  // InternalIPs). "localhost" is loopback, which no node IP is in; NodePorts
  // on 127.0.0.1 follow iptables.localhostNodePorts.
  const nodePortAddresses = r.strings('nodePortAddresses');
  if (nodePortAddresses && !nodePortAddresses.includes('primary') && !nodePortAddresses.includes('all')) {
    set('nodePortAddresses', 'nodePortAddresses', nodePortAddresses.map((a) => (a === 'localhost' ? '127.0.0.0/8' : a)).join(','));
  }

  // Durations go on as milliseconds; the option's own check (whole seconds, at least 1s) names the key.
  set('conntrackTcpEstablishedSec', 'conntrack.tcpEstablishedTimeout', msText(r.duration('conntrack.tcpEstablishedTimeout')));
  set('conntrackTcpCloseWaitSec', 'conntrack.tcpCloseWaitTimeout', msText(r.duration('conntrack.tcpCloseWaitTimeout')));
  set('conntrackUdpSec', 'conntrack.udpTimeout', msText(r.duration('conntrack.udpTimeout')));
  set('conntrackUdpStreamSec', 'conntrack.udpStreamTimeout', msText(r.duration('conntrack.udpStreamTimeout')));

  // kube-proxy's local-traffic detector; empty is its default, ClusterCIDR.
  const detectLocalMode = r.str('detectLocalMode');
  set('detectLocalMode', 'detectLocalMode', detectLocalMode);
  const prefix = r.str('detectLocal.interfaceNamePrefix');
  const bridge = r.str('detectLocal.bridgeInterface');
  // As kube-proxy's validation: the mode's own field must be set.
  if (detectLocalMode === 'InterfaceNamePrefix' && prefix === undefined) r.fail('detectLocal.interfaceNamePrefix', 'required with detectLocalMode InterfaceNamePrefix');
  if (detectLocalMode === 'BridgeInterface' && bridge === undefined) r.fail('detectLocal.bridgeInterface', 'required with detectLocalMode BridgeInterface');
  set('podInterfaceNamePrefix', 'detectLocal.interfaceNamePrefix', prefix);
  set('podBridgeInterface', 'detectLocal.bridgeInterface', bridge);

  const ignored = r.unread();
  if (ignored.length) notes.push({ level: 'warn', msg: 'kube-proxy configuration fields without a meaning for weir are ignored', fields: { ignored } });
  return { values, ignored, notes };
}

function msText(ms: number | undefined): string | undefined {
  return ms === undefined ? undefined : `${ms}ms`;
}
