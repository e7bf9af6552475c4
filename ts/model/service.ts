/**
 * v1 Service -> ServiceModel, with kube-proxy's rules for what is programmed
 * and the API server's validation for what is accepted. Anything invalid is
 * reported as FieldErrors naming the field; the caller keeps the last good
 * version of the object.
 */
import type { V1Service } from '@kubernetes/client-node';
import { Cidr, FieldError, Family, IP, ObjectKey, Port, Protocol, Result, familyName, ipFamily, objectKey, parseCidr, kept, parseIP, parsePort } from './types';

export type TrafficPolicy = 'Cluster' | 'Local';
/**
 * spec.trafficDistribution. kube-proxy does not act on it: the EndpointSlice
 * controller turns it into endpoint hints, and the proxy follows the hints
 * (../plan/topology.ts). weir does the same; the field is kept for the logs,
 * and a value it does not know counts as unset.
 */
export type TrafficDistribution = '' | 'PreferClose' | 'PreferSameZone' | 'PreferSameNode';
const TRAFFIC_DISTRIBUTIONS: readonly string[] = ['PreferClose', 'PreferSameZone', 'PreferSameNode'];
export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer';

export interface ServicePortModel {
  /** Service port name; '' for a single unnamed port. Joins to EndpointSlice ports. */
  readonly name: string;
  readonly protocol: Protocol;
  readonly port: Port;
  /** 0 when the service has no NodePort for this port. */
  readonly nodePort: number;
}

export interface ServiceModel {
  readonly key: ObjectKey;
  readonly namespace: string;
  readonly name: string;
  readonly type: ServiceType;
  /**
   * spec.clusterIPs: one per family the service has, primary first (a
   * dual-stack service has two). A family's frontends exist only when the
   * service has a cluster IP of that family, as kube-proxy's per-family
   * proxiers see it.
   */
  readonly clusterIPs: readonly IP[];
  /** Both families; each family's plan takes its own. */
  readonly externalIPs: readonly IP[];
  readonly loadBalancerIPs: readonly IP[];
  readonly loadBalancerSourceRanges: readonly Cidr[];
  readonly ports: readonly ServicePortModel[];
  /** ClientIP affinity timeout in seconds, or 0 for no affinity. */
  readonly affinityTimeout: number;
  readonly externalTrafficPolicy: TrafficPolicy;
  readonly internalTrafficPolicy: TrafficPolicy;
  readonly healthCheckNodePort: number;
  /** '' when unset. Informational: routing follows the EndpointSlices' hints. */
  readonly trafficDistribution: TrafficDistribution;
}

/** Why a valid Service is nevertheless not programmed (kube-proxy skips these). */
export type SkipReason = 'headless' | 'external-name' | 'no-cluster-ip' | 'service-proxy-name';

export type ServiceParse = Result<ServiceModel> | { ok: 'skip'; key: ObjectKey; reason: SkipReason };

/** kube-proxy's default for sessionAffinityConfig.clientIP.timeoutSeconds (3 hours). */
export const DEFAULT_AFFINITY_TIMEOUT = 10800;
const MAX_AFFINITY_TIMEOUT = 86400;
export const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';

export function parseService(svc: V1Service): ServiceParse {
  const namespace = svc.metadata?.namespace || 'default';
  const name = svc.metadata?.name ?? '';
  const objName = `${namespace}/${name}`;
  const errors: FieldError[] = [];
  const err = (field: string, message: string): void => {
    errors.push({ kind: 'Service', object: objName, field, message });
  };
  if (!name) err('metadata.name', 'is required');
  const key = objectKey(namespace, name);
  const spec = svc.spec ?? {};

  if (svc.metadata?.labels?.[SERVICE_PROXY_NAME_LABEL] !== undefined) {
    return { ok: 'skip', key, reason: 'service-proxy-name' };
  }
  const type = spec.type ?? 'ClusterIP';
  if (type === 'ExternalName') return { ok: 'skip', key, reason: 'external-name' };
  if (type !== 'ClusterIP' && type !== 'NodePort' && type !== 'LoadBalancer') {
    err('spec.type', `unsupported value ${JSON.stringify(type)}`);
  }
  if (spec.clusterIP === 'None') return { ok: 'skip', key, reason: 'headless' };

  const clusterIPs: IP[] = [];
  const rawClusterIPs = spec.clusterIPs?.length ? spec.clusterIPs : spec.clusterIP ? [spec.clusterIP] : [];
  if (spec.clusterIP && spec.clusterIPs?.length && spec.clusterIPs[0] !== spec.clusterIP) {
    err('spec.clusterIPs[0]', `must equal spec.clusterIP ${JSON.stringify(spec.clusterIP)}`);
  }
  // Loops rather than forEach here: a closure per list per service adds up at ten thousand services.
  for (let i = 0; i < rawClusterIPs.length; i++) {
    const ip = parseIP(rawClusterIPs[i]);
    if (ip) clusterIPs.push(ip);
    else err(spec.clusterIPs?.length ? `spec.clusterIPs[${i}]` : 'spec.clusterIP', `invalid IP ${JSON.stringify(rawClusterIPs[i])}`);
  }
  checkFamilies(spec.ipFamilies, spec.ipFamilyPolicy, clusterIPs, spec.clusterIPs?.length ? 'spec.clusterIPs' : 'spec.clusterIP', err);

  const externalIPs = ipList(spec.externalIPs, 'spec.externalIPs', err);

  const loadBalancerIPs: IP[] = [];
  const ingress = svc.status?.loadBalancer?.ingress ?? [];
  for (let i = 0; i < ingress.length; i++) {
    const ing = ingress[i]!;
    if (ing.ip === undefined) continue; // hostname-only ingress: nothing to program
    // Only ipMode VIP (or none) is short-circuited on the node, as
    // kube-proxy's IsVIPMode decides: with Proxy the load balancer must see
    // the traffic, and a mode added by a later API version is treated the
    // same way rather than rejecting the Service.
    const vip = (ing.ipMode ?? 'VIP') === 'VIP';
    const ip = parseIP(ing.ip);
    if (!ip) err(`status.loadBalancer.ingress[${i}].ip`, `invalid IP ${JSON.stringify(ing.ip)}`);
    else if (vip) loadBalancerIPs.push(ip);
  }

  const loadBalancerSourceRanges: Cidr[] = [];
  const rawRanges = spec.loadBalancerSourceRanges ?? [];
  for (let i = 0; i < rawRanges.length; i++) {
    const r = rawRanges[i];
    const c = parseCidr(r);
    if (c) loadBalancerSourceRanges.push(c);
    else err(`spec.loadBalancerSourceRanges[${i}]`, `invalid CIDR ${JSON.stringify(r)}`);
  }

  const ports: ServicePortModel[] = [];
  const rawPorts = spec.ports ?? [];
  if (rawPorts.length === 0) err('spec.ports', 'at least one port is required');
  const seen = rawPorts.length > 1 ? new Set<string>() : null; // duplicates need two ports
  rawPorts.forEach((p, i) => {
    const field = `spec.ports[${i}]`;
    const portName = p.name ?? '';
    if (rawPorts.length > 1 && !portName) err(`${field}.name`, 'is required when a service has more than one port');
    const protocol = p.protocol ?? 'TCP';
    if (protocol !== 'TCP' && protocol !== 'UDP' && protocol !== 'SCTP') {
      err(`${field}.protocol`, `unsupported value ${JSON.stringify(protocol)}`);
      return;
    }
    const port = parsePort(p.port);
    if (!port) {
      err(`${field}.port`, `must be 1-65535, got ${JSON.stringify(p.port)}`);
      return;
    }
    let nodePort = 0;
    if (p.nodePort !== undefined && p.nodePort !== null && p.nodePort !== 0) {
      // Any port: the API server checked it against its own --service-node-port-range, which weir does not know.
      const np = parsePort(p.nodePort);
      if (!np) err(`${field}.nodePort`, `must be 1-65535, got ${JSON.stringify(p.nodePort)}`);
      else nodePort = np;
    }
    const tp = p.targetPort as unknown;
    if (tp !== undefined && !(typeof tp === 'string' ? tp.length > 0 : parsePort(tp))) {
      err(`${field}.targetPort`, `must be a port number or a port name, got ${JSON.stringify(tp)}`);
    }
    if (seen) {
      const id = `${portName}/${protocol}`;
      if (seen.has(id) && portName) err(`${field}.name`, `duplicate port name ${JSON.stringify(portName)} for ${protocol}`);
      seen.add(id);
    }
    ports.push({ name: portName, protocol, port, nodePort });
  });

  let affinityTimeout = 0;
  const affinity = spec.sessionAffinity ?? 'None';
  if (affinity === 'ClientIP') {
    const t = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? DEFAULT_AFFINITY_TIMEOUT;
    if (!Number.isInteger(t) || t < 1 || t > MAX_AFFINITY_TIMEOUT) {
      err('spec.sessionAffinityConfig.clientIP.timeoutSeconds', `must be 1-${MAX_AFFINITY_TIMEOUT}, got ${JSON.stringify(t)}`);
    } else affinityTimeout = t;
  } else if (affinity !== 'None') {
    err('spec.sessionAffinity', `unsupported value ${JSON.stringify(affinity)}`);
  }

  const policy = (field: string, v: unknown): TrafficPolicy => {
    if (v === undefined || v === null || v === '' || v === 'Cluster') return 'Cluster';
    if (v === 'Local') return 'Local';
    err(field, `unsupported value ${JSON.stringify(v)} (expected Cluster or Local)`);
    return 'Cluster';
  };
  const externalTrafficPolicy = policy('spec.externalTrafficPolicy', spec.externalTrafficPolicy);
  const internalTrafficPolicy = policy('spec.internalTrafficPolicy', spec.internalTrafficPolicy);
  // Routing follows the hints whatever this says, so a value weir does not
  // know (a later API version's) is kept as unset instead of rejecting the Service.
  const td = TRAFFIC_DISTRIBUTIONS.includes(spec.trafficDistribution ?? '') ? spec.trafficDistribution! : '';
  let healthCheckNodePort = 0;
  if (spec.healthCheckNodePort !== undefined && spec.healthCheckNodePort !== null && spec.healthCheckNodePort !== 0) {
    const hc = parsePort(spec.healthCheckNodePort);
    if (!hc) err('spec.healthCheckNodePort', `must be 1-65535, got ${JSON.stringify(spec.healthCheckNodePort)}`);
    else healthCheckNodePort = hc;
  }

  if (errors.length) return { ok: false, errors };
  if (clusterIPs.length === 0) return { ok: 'skip', key, reason: 'no-cluster-ip' };
  return {
    ok: true,
    value: {
      key,
      namespace,
      name,
      type: type as ServiceType,
      clusterIPs: kept(clusterIPs),
      externalIPs: kept(externalIPs),
      loadBalancerIPs: kept(type === 'LoadBalancer' ? loadBalancerIPs : []),
      loadBalancerSourceRanges: kept(loadBalancerSourceRanges),
      ports: kept(ports),
      affinityTimeout,
      externalTrafficPolicy,
      internalTrafficPolicy,
      healthCheckNodePort,
      trafficDistribution: td as TrafficDistribution,
    },
  };
}

function ipList(raw: readonly string[] | undefined, field: string, err: (field: string, message: string) => void): IP[] {
  const out: IP[] = [];
  if (!raw) return out;
  for (let i = 0; i < raw.length; i++) {
    const ip = parseIP(raw[i]);
    if (ip) out.push(ip);
    else err(`${field}[${i}]`, `invalid IP ${JSON.stringify(raw[i])}`);
  }
  return out;
}

/**
 * The API server's rules tying spec.ipFamilies, spec.ipFamilyPolicy and
 * spec.clusterIPs together, as far as a proxy must trust them: at most one
 * cluster IP per family, each of the family spec.ipFamilies names at its
 * position, and no second family for a SingleStack service. An object that
 * breaks them would have weir program a family its owner did not ask for.
 */
function checkFamilies(ipFamilies: readonly string[] | undefined, policy: string | undefined, ips: readonly IP[], field: string, err: (field: string, message: string) => void): void {
  // Loops, no closures or arrays: every Service of a cold start comes through here.
  const nf = ipFamilies?.length ?? 0;
  for (let i = 0; i < nf; i++) {
    const f = ipFamilies![i];
    if (f !== 'IPv4' && f !== 'IPv6') err(`spec.ipFamilies[${i}]`, `unsupported value ${JSON.stringify(f)} (expected IPv4 or IPv6)`);
  }
  if (nf > 2 || (nf === 2 && ipFamilies![0] === ipFamilies![1])) err('spec.ipFamilies', 'must hold at most one of each family');
  if (policy !== undefined && policy !== null && policy !== 'SingleStack' && policy !== 'PreferDualStack' && policy !== 'RequireDualStack') {
    err('spec.ipFamilyPolicy', `unsupported value ${JSON.stringify(policy)} (expected SingleStack, PreferDualStack, RequireDualStack)`);
  }
  if (ips.length > 2 || (ips.length === 2 && ipFamily(ips[0]!) === ipFamily(ips[1]!))) err(field, 'must hold at most one address of each family');
  if (ips.length === 2 && policy === 'SingleStack') err(field, 'a SingleStack service has one cluster IP');
  for (let i = 0; i < ips.length && i < nf; i++) {
    const want: Family | 0 = ipFamilies![i] === 'IPv4' ? 4 : ipFamilies![i] === 'IPv6' ? 6 : 0;
    const f = ipFamily(ips[i]!);
    if (want !== 0 && f !== want) err(`spec.clusterIPs[${i}]`, `${familyName(f)} address ${ips[i]!} does not match spec.ipFamilies[${i}] ${familyName(want)}`);
  }
}
