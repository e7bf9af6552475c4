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
import type { V1EndpointSlice } from '@kubernetes/client-node';
import { FieldError, IPv4, ObjectKey, Port, Protocol, Result, ipToInt, kept, objectKey, parseIPv4, parsePort } from './types';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export interface EndpointModel {
  readonly addr: IPv4;
  readonly nodeName: string;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
}

export interface SlicePortModel {
  readonly name: string;
  readonly protocol: Protocol;
  readonly port: Port;
}

export interface SliceModel {
  readonly key: ObjectKey;
  readonly service: ObjectKey;
  readonly ports: readonly SlicePortModel[];
  readonly endpoints: readonly EndpointModel[];
}

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
  // IPv6 and FQDN slices are valid, just not something this IPv4 dataplane serves.
  if (slice.addressType !== 'IPv4') {
    if (slice.addressType === 'IPv6' || slice.addressType === 'FQDN') return { ok: 'skip', key, reason: `addressType ${slice.addressType}` };
    err('addressType', `unsupported value ${JSON.stringify(slice.addressType)}`);
  }
  const svcName = slice.metadata?.labels?.[SERVICE_NAME_LABEL];
  if (!svcName) err(`metadata.labels[${SERVICE_NAME_LABEL}]`, 'is required to join the slice to its Service');

  const ports: SlicePortModel[] = [];
  (slice.ports ?? []).forEach((p, i) => {
    const protocol = (p.protocol ?? 'TCP') as string;
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

  // Sized up front and filled by index: the store keeps this array, and a
  // slice is read for every endpoint of a cluster at start-up.
  const rawEndpoints = slice.endpoints ?? [];
  const endpoints: EndpointModel[] = new Array(rawEndpoints.length);
  for (let i = 0; i < rawEndpoints.length; i++) {
    const ep = rawEndpoints[i]!;
    // kube-proxy programs only the first address of an endpoint.
    const raw = ep.addresses?.[0];
    const addr = parseIPv4(raw);
    if (!addr) {
      err(`endpoints[${i}].addresses[0]`, `invalid IPv4 address ${JSON.stringify(raw)}`);
      continue;
    }
    const ready = ep.conditions?.ready ?? true;
    endpoints[i] = {
      addr,
      nodeName: ep.nodeName ?? '',
      ready,
      serving: ep.conditions?.serving ?? ready,
      terminating: ep.conditions?.terminating ?? false,
    };
  }

  if (errors.length) return { ok: false, errors };
  return { ok: true, value: { key, service: objectKey(namespace, svcName!), ports: kept(ports), endpoints: endpoints.length ? endpoints : kept(endpoints) } };
}

/** One endpoint of one service port, after merging every slice. */
export interface PortEndpoint extends EndpointModel {
  readonly port: Port;
  /** addr as a host-order u32 (what the maps hold and plans sort by). */
  readonly ip: number;
}

/** What the merge of endpointsForPort reads of each endpoint it built. */
export interface Mergeable {
  readonly ip: number;
  readonly port: number;
  readonly ready: boolean;
}

function toPortEndpoint(ep: EndpointModel, port: Port, ip: number): PortEndpoint {
  return { addr: ep.addr, nodeName: ep.nodeName, ready: ep.ready, serving: ep.serving, terminating: ep.terminating, port, ip };
}

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
export function endpointsForPort<T extends Mergeable>(slices: Iterable<SliceModel>, portName: string, protocol: Protocol, make: (ep: EndpointModel, port: Port, ip: number) => T): T[];
export function endpointsForPort(
  slices: Iterable<SliceModel>,
  portName: string,
  protocol: Protocol,
  make: (ep: EndpointModel, port: Port, ip: number) => Mergeable = toPortEndpoint,
): Mergeable[] {
  const out: Mergeable[] = [];
  for (const slice of slices) {
    const sp = slice.ports.find((p) => p.name === portName && p.protocol === protocol);
    if (!sp) continue;
    const eps = slice.endpoints;
    for (let i = 0; i < eps.length; i++) {
      const ep = eps[i]!;
      out.push(make(ep, sp.port, ipToInt(ep.addr)));
    }
  }
  if (out.length < 2) return out;
  sortByAddrPort(out);
  let n = 1;
  for (let i = 1; i < out.length; i++) {
    const ep = out[i]!;
    const kept = out[n - 1]!;
    if (kept.ip === ep.ip && kept.port === ep.port) {
      if (!kept.ready && ep.ready) out[n - 1] = ep;
      continue;
    }
    out[n++] = ep;
  }
  out.length = n;
  return out;
}

function byAddrPort(a: Mergeable, b: Mergeable): number {
  return a.ip - b.ip || a.port - b.port;
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
