/**
 * discovery.k8s.io/v1 EndpointSlice -> endpoints per service port, with
 * kube-proxy's reading of the conditions:
 *  - ready: nil means ready (the API's "unknown" is to be read as ready);
 *  - serving: nil means the value of ready;
 *  - terminating: nil means false.
 * Slices join their Service through the kubernetes.io/service-name label, and
 * endpoints join a service port through the slice port of the same name and
 * protocol: the EndpointSlice controller has already resolved the service's
 * targetPort (number or container port name) into that port's number.
 */
import type { V1EndpointHints, V1EndpointSlice } from '@kubernetes/client-node';
import { FieldError, IP, IPv6, ObjectKey, Port, Protocol, Result, intToIp, ipToInt, ipv6SortKey, kept, objectKey, parseIPv4, parseIPv6, parsePort } from './types';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
/** Set by the EndpointSlice controller: when the change this slice carries was triggered (RFC 3339). */
export const TRIGGER_TIME_ANNOTATION = 'endpoints.kubernetes.io/last-change-trigger-time';

export interface EndpointModel {
  readonly addr: IP;
  readonly nodeName: string;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  /** hints.forZones / hints.forNodes, or null when the endpoint has none. */
  readonly hints: EndpointHints | null;
}

/**
 * An endpoint's topology hints, set by the EndpointSlice controller from the
 * Service's trafficDistribution: the zones and nodes whose proxies should
 * send this endpoint traffic (../plan/topology.ts).
 */
export interface EndpointHints {
  readonly forZones: readonly string[];
  readonly forNodes: readonly string[];
}

export interface SlicePortModel {
  readonly name: string;
  readonly protocol: Protocol;
  readonly port: Port;
}

/** Bits of SliceModel.conditions. */
export const EP_READY = 1;
export const EP_SERVING = 2;
export const EP_TERMINATING = 4;

/**
 * A slice's endpoints are kept column by column: endpoint i is ips[i],
 * nodeNames[i] and conditions[i]. The store keeps every slice for the
 * agent's life, and an object and an address string per endpoint were
 * two hundred thousand objects at ten thousand services, each copied twice
 * by the young-generation collector before it settled (reading the
 * manifests spent more time collecting than parsing JSON). sliceEndpoints()
 * gives them as objects where that is easier to read.
 */
export interface SliceModel {
  readonly key: ObjectKey;
  readonly service: ObjectKey;
  readonly ports: readonly SlicePortModel[];
  /** The first address of each endpoint, as a host-order u32 (IPv4 slices; empty in an IPv6 slice). */
  readonly ips: readonly number[];
  /**
   * The first address of each endpoint of an addressType IPv6 slice, in
   * canonical text; absent in an IPv4 slice (the usual case, kept as it was).
   */
  readonly ips6?: readonly IPv6[];
  /** One per endpoint: its length is the slice's endpoint count, whatever the family. */
  readonly nodeNames: readonly string[];
  /** EP_READY | EP_SERVING | EP_TERMINATING, after kube-proxy's reading of nil. */
  readonly conditions: readonly number[];
  /** Each endpoint's hints (null: none); the column is absent when no endpoint of the slice has any (the usual case). */
  readonly hints?: readonly (EndpointHints | null)[];
  /**
   * The TRIGGER_TIME_ANNOTATION as ms since the epoch; absent when the slice
   * has none (or one that does not parse, which kube-proxy ignores too). It
   * is what kubeproxy_network_programming_duration_seconds measures from.
   */
  readonly triggerTime?: number;
}

/** A slice's endpoints as objects. */
export function sliceEndpoints(slice: SliceModel): EndpointModel[] {
  return slice.nodeNames.map((nodeName, i) => endpointModel(slice.ips6 ? 0 : slice.ips[i]!, nodeName, slice.conditions[i]!, slice.hints?.[i] ?? null, slice.ips6?.[i]));
}

/** The slice's address family: 6 for an addressType IPv6 slice, else 4. */
export function sliceFamily(slice: SliceModel): 4 | 6 {
  return slice.ips6 ? 6 : 4;
}

function endpointModel(ip: number, nodeName: string, cond: number, hints: EndpointHints | null, ip6?: IPv6): EndpointModel {
  return { addr: ip6 ?? intToIp(ip), nodeName, ready: (cond & EP_READY) !== 0, serving: (cond & EP_SERVING) !== 0, terminating: (cond & EP_TERMINATING) !== 0, hints };
}

const EMPTY_IPS: readonly number[] = kept([]);

export type SliceParse = Result<SliceModel> | { ok: 'skip'; key: ObjectKey; reason: string };

export function parseEndpointSlice(slice: V1EndpointSlice): SliceParse {
  const namespace = slice.metadata?.namespace || 'default';
  const name = slice.metadata?.name ?? '';
  const key = objectKey(namespace, name);
  const errors: FieldError[] = [];
  const err = (field: string, message: string): void => {
    errors.push({ kind: 'EndpointSlice', object: `${namespace}/${name}`, field, message });
  };
  if (!name) err('metadata.name', 'is required');
  // FQDN slices are valid, but no proxy serves them (kube-proxy neither).
  const v6 = slice.addressType === 'IPv6';
  if (slice.addressType !== 'IPv4' && !v6) {
    if (slice.addressType === 'FQDN') return { ok: 'skip', key, reason: `addressType ${slice.addressType}` };
    err('addressType', `unsupported value ${JSON.stringify(slice.addressType)}`);
  }
  const svcName = slice.metadata?.labels?.[SERVICE_NAME_LABEL];
  if (!svcName) err(`metadata.labels[${SERVICE_NAME_LABEL}]`, 'is required to join the slice to its Service');

  const ports: SlicePortModel[] = [];
  (slice.ports ?? []).forEach((p, i) => {
    const protocol = p.protocol ?? 'TCP';
    if (protocol !== 'TCP' && protocol !== 'UDP' && protocol !== 'SCTP') {
      err(`ports[${i}].protocol`, `unsupported value ${JSON.stringify(protocol)}`);
      return;
    }
    // A nil port means "all ports" for selector-less services; kube-proxy skips it.
    if (p.port === undefined || p.port === null) return;
    const port = parsePort(p.port);
    if (!port) {
      err(`ports[${i}].port`, `must be 1-65535, got ${JSON.stringify(p.port)}`);
      return;
    }
    ports.push({ name: p.name ?? '', protocol, port });
  });

  // Columns sized up front and filled by index: the store keeps them.
  const rawEndpoints = slice.endpoints ?? [];
  const n = rawEndpoints.length;
  const ips = new Array<number>(v6 ? 0 : n);
  const ips6 = v6 ? new Array<IPv6>(n) : undefined;
  const nodeNames = new Array<string>(n);
  const conditions = new Array<number>(n);
  let hints: (EndpointHints | null)[] | undefined;
  for (let i = 0; i < n; i++) {
    const ep = rawEndpoints[i]!;
    // kube-proxy programs only the first address of an endpoint.
    const raw = ep.addresses?.[0];
    if (ips6) {
      const addr6 = parseIPv6(raw);
      if (!addr6) {
        err(`endpoints[${i}].addresses[0]`, `invalid IPv6 address ${JSON.stringify(raw)}`);
        continue;
      }
      ips6[i] = addr6;
    } else {
      const addr = parseIPv4(raw);
      if (!addr) {
        err(`endpoints[${i}].addresses[0]`, `invalid IPv4 address ${JSON.stringify(raw)}`);
        continue;
      }
      ips[i] = ipToInt(addr);
    }
    const ready = ep.conditions?.ready ?? true;
    const serving = ep.conditions?.serving ?? ready;
    const terminating = ep.conditions?.terminating ?? false;
    nodeNames[i] = ep.nodeName ?? '';
    conditions[i] = (ready ? EP_READY : 0) | (serving ? EP_SERVING : 0) | (terminating ? EP_TERMINATING : 0);
    if (ep.hints) {
      const h = parseHints(ep.hints, `endpoints[${i}].hints`, err);
      if (h) (hints ??= new Array<EndpointHints | null>(n).fill(null))[i] = h;
    }
  }

  if (errors.length || !svcName) return { ok: false, errors };
  const service = objectKey(namespace, svcName);
  const trigger = slice.metadata?.annotations?.[TRIGGER_TIME_ANNOTATION];
  const triggerTime = trigger === undefined ? NaN : Date.parse(trigger);
  if (ips6) {
    // Rare enough that a spread (see sliceModel) costs nothing that matters.
    const model = sliceModel(key, service, kept(ports), EMPTY_IPS, kept(nodeNames), kept(conditions), hints, triggerTime);
    return { ok: true, value: { ...model, ips6: kept(ips6) } };
  }
  if (n === 0) return { ok: true, value: sliceModel(key, service, kept(ports), kept(ips), kept(nodeNames), kept(conditions), undefined, triggerTime) };
  return { ok: true, value: sliceModel(key, service, kept(ports), ips, nodeNames, conditions, hints, triggerTime) };
}

/**
 * The model with only the fields it has: each combination a literal, since
 * a spread to add one (triggerTime) cost 0.9 µs per slice, a third of
 * parsing a ten-endpoint slice.
 */
function sliceModel(
  key: ObjectKey,
  service: ObjectKey,
  ports: readonly SlicePortModel[],
  ips: readonly number[],
  nodeNames: readonly string[],
  conditions: readonly number[],
  hints: readonly (EndpointHints | null)[] | undefined,
  triggerTime: number,
): SliceModel {
  if (Number.isNaN(triggerTime)) return hints ? { key, service, ports, ips, nodeNames, conditions, hints } : { key, service, ports, ips, nodeNames, conditions };
  return hints ? { key, service, ports, ips, nodeNames, conditions, hints, triggerTime } : { key, service, ports, ips, nodeNames, conditions, triggerTime };
}

/** hints.forZones[].name and hints.forNodes[].name; null when both are empty (the same as no hints). */
function parseHints(raw: V1EndpointHints, field: string, err: (field: string, message: string) => void): EndpointHints | null {
  const names = (list: ReadonlyArray<{ name?: unknown }> | undefined, what: string): string[] => {
    const out: string[] = [];
    (list ?? []).forEach((e, j) => {
      if (typeof e?.name === 'string' && e.name !== '') out.push(e.name);
      else err(`${field}.${what}[${j}].name`, `must be a non-empty string, got ${JSON.stringify(e?.name)}`);
    });
    return out;
  };
  const forZones = names(raw.forZones, 'forZones');
  const forNodes = names(raw.forNodes, 'forNodes');
  return forZones.length || forNodes.length ? { forZones: kept(forZones), forNodes: kept(forNodes) } : null;
}

/** One endpoint of one service port, after merging every slice. */
export interface PortEndpoint extends EndpointModel {
  readonly port: Port;
  /** addr as a host-order u32 (what the maps hold and plans sort by); 0 for IPv6. */
  readonly ip: number;
  /** An IPv6 endpoint's ipv6SortKey. */
  readonly key6?: string;
}

/** What the merge of endpointsForPort reads of each endpoint it built. */
export interface Mergeable {
  readonly ip: number;
  /** An IPv6 endpoint's ipv6SortKey (its `ip` is 0); absent for IPv4. */
  readonly key6?: string;
  readonly port: number;
  readonly ready: boolean;
}

function toPortEndpoint(ip: number, nodeName: string, cond: number, port: Port, hints: EndpointHints | null, ip6?: IPv6): PortEndpoint {
  return ip6 ? { ...endpointModel(0, nodeName, cond, hints, ip6), port, ip: 0, key6: ipv6SortKey(ip6) } : { ...endpointModel(ip, nodeName, cond, hints), port, ip };
}

/** Builds one endpoint of a service port (the plan makes its backends this way); ip6 is set (and ip 0) for an IPv6 endpoint, whose result must carry key6. */
export type MakeEndpoint<T> = (ip: number, nodeName: string, cond: number, port: Port, hints: EndpointHints | null, ip6?: IPv6) => T;

/**
 * Endpoints of a service port across all of the service's slices, sorted by
 * address and port. The same address:port in two slices (as during a slice
 * split) counts once; if the copies disagree, the ready one wins so a
 * transient duplicate never removes a serving backend.
 *
 * Copies are found by sorting rather than with a Map keyed by address: the
 * caller wants the sorted order anyway, and a Map per service port was an
 * allocation per service in every plan. The sort is stable, so copies stay
 * in slice order and "the first ready copy, else the first" is kept.
 */
export function endpointsForPort(slices: Iterable<SliceModel>, portName: string, protocol: Protocol): PortEndpoint[];
/** With `make`, each endpoint is built as the caller needs it (the plan builds its backends here, not a copy of each). */
export function endpointsForPort<T extends Mergeable>(slices: Iterable<SliceModel>, portName: string, protocol: Protocol, make: MakeEndpoint<T>): T[];
export function endpointsForPort(slices: Iterable<SliceModel>, portName: string, protocol: Protocol, make: MakeEndpoint<Mergeable> = toPortEndpoint): Mergeable[] {
  const out: Mergeable[] = [];
  for (const slice of slices) {
    const sp = slice.ports.find((p) => p.name === portName && p.protocol === protocol);
    if (!sp) continue;
    const hints = slice.hints;
    const ips6 = slice.ips6;
    if (ips6) {
      for (let i = 0; i < ips6.length; i++) out.push(make(0, slice.nodeNames[i]!, slice.conditions[i]!, sp.port, hints ? hints[i]! : null, ips6[i]));
      continue;
    }
    for (let i = 0; i < slice.ips.length; i++) out.push(make(slice.ips[i]!, slice.nodeNames[i]!, slice.conditions[i]!, sp.port, hints ? hints[i]! : null));
  }
  if (out.length < 2) return out;
  sortByAddrPort(out);
  let n = 1;
  for (let i = 1; i < out.length; i++) {
    const ep = out[i]!;
    const kept = out[n - 1]!;
    if (kept.ip === ep.ip && kept.key6 === ep.key6 && kept.port === ep.port) {
      if (!kept.ready && ep.ready) out[n - 1] = ep;
      continue;
    }
    out[n++] = ep;
  }
  out.length = n;
  return out;
}

function byAddrPort(a: Mergeable, b: Mergeable): number {
  // key6 is only read for two IPv6 endpoints (both ip 0), so IPv4 pays one comparison.
  return a.ip - b.ip || (a.key6 !== b.key6 ? (a.key6! < b.key6! ? -1 : 1) : 0) || a.port - b.port;
}

/**
 * A stable sort. Up to 32 endpoints (nearly every service port), an
 * insertion sort in place: Array.prototype.sort allocates a work copy per
 * call, about 0.9 kB for ten endpoints, which at ten thousand services was
 * a tenth of everything a sync allocates.
 */
function sortByAddrPort(eps: Mergeable[]): void {
  if (eps.length > 32) {
    eps.sort(byAddrPort);
    return;
  }
  for (let i = 1; i < eps.length; i++) {
    const e = eps[i]!;
    let j = i - 1;
    for (; j >= 0 && byAddrPort(eps[j]!, e) > 0; j--) eps[j + 1] = eps[j]!;
    eps[j + 1] = e;
  }
}
