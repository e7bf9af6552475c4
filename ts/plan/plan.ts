/**
 * The plan: one Service and its EndpointSlices -> the frontends weir programs
 * and the endpoint set behind each. Pure: no ids, no maps, no I/O, so every
 * kube-proxy rule here is unit-tested without root.
 *
 * Endpoint sets follow kube-proxy's CategorizeEndpoints:
 *  - new connections go to ready endpoints; when none is ready, to endpoints
 *    that are serving and terminating (graceful termination fallback);
 *  - that choice is made separately for the cluster-wide and the node-local
 *    set;
 *  - every endpoint listed in a slice stays a known backend (even not ready or
 *    terminating) so established flows to it keep working until it is removed;
 *  - topology hints narrow the cluster-wide set (./topology.ts).
 *
 * Dual-stack follows kube-proxy's split into one proxier per family: each
 * family with a cluster IP gets its own frontends (that family's cluster IP,
 * externalIPs, LB IPs and node addresses) backed only by that family's
 * EndpointSlices, with that family's loadBalancerSourceRanges. IPv4 comes
 * first; a single-family service plans exactly as before.
 */
import { EP_READY, EP_SERVING, EP_TERMINATING, EndpointHints, SliceModel, endpointsForPort, sliceFamily } from '../model/endpoints';
import { TOPOLOGY_NODE, TOPOLOGY_NONE, TOPOLOGY_ZONE, TopologyMode, availableForTopology, topologyMode } from './topology';
import { ServiceModel } from '../model/service';
import { Cidr, EMPTY, Family, IP, IPv6, ObjectKey, Port, cidrContains, cidrFamily, intToIp, ipFamily, ipv6SortKey, parseCidr } from '../model/types';
import { SCOPE_ALL, SCOPE_LOCAL, SVC_F } from '../datapath/codecs';
import { flatKey } from '../util/keys';

export type L4Proto = 'TCP' | 'UDP' | 'SCTP';

export interface PlanContext {
  /** This node's name, to tell local endpoints from remote ones. */
  readonly nodeName: string;
  /** Addresses NodePorts answer on, of both families (empty: no NodePort frontends); each family's frontends take their own. */
  readonly nodePortAddrs: readonly IP[];
  /** This node's own addresses (default none): loadBalancerSourceRanges that hold one also admit the LB IPs themselves. */
  readonly nodeIPs?: readonly IP[];
  /** This node's topology.kubernetes.io/zone label ('' or absent: none), for zone hints. */
  readonly zone?: string;
}

export interface PlannedBackend {
  readonly addr: IP;
  /** An IPv4 addr as a host-order u32, computed once here for the maps and the sort; 0 for IPv6. */
  readonly ip: number;
  readonly port: Port;
  readonly proto: L4Proto;
  readonly local: boolean;
  readonly terminating: boolean;
}

export interface PlannedFrontend {
  /** The service port this frontend serves ("name/PROTO"): frontends of one port share endpoints. */
  readonly servicePort: string;
  /** Its family is its backends' family. */
  readonly addr: IP;
  readonly port: Port;
  readonly proto: L4Proto;
  readonly scope: typeof SCOPE_ALL | typeof SCOPE_LOCAL;
  /** WEIR_SVC_F_* */
  readonly flags: number;
  readonly affinityTimeout: number;
  /** Backends for new connections, as indices into ServicePlan.backends, in a deterministic order. */
  readonly backends: readonly number[];
  /** Every endpoint of this service port (any state), as indices: flows to them stay valid. */
  readonly members: readonly number[];
  /** loadBalancerSourceRanges (LoadBalancer frontends only; empty = open). */
  readonly sourceRanges: readonly Cidr[];
}

export interface ServicePlan {
  readonly service: ObjectKey;
  readonly frontends: readonly PlannedFrontend[];
  /**
   * Every endpoint of the service (usable or not), each (address, port,
   * protocol) once. Frontends name them by index: the reconciler turns an
   * index into its backend row with an array lookup, where a key string per
   * endpoint cost a string build and two hash lookups on every plan.
   */
  readonly backends: readonly PlannedBackend[];
}

export function backendKey(b: { addr: IP; port: number; proto: L4Proto }): string {
  return endpointKey(b.addr, b.port, b.proto);
}

export function frontendKey(f: { addr: IP; port: number; proto: L4Proto }): string {
  return endpointKey(f.addr, f.port, f.proto);
}

/** "addr:port/PROTO", with an IPv6 address in brackets ("[fd00::1]:80/TCP") as URLs and ip6tables write it. */
function endpointKey(addr: string, port: number, proto: string): string {
  return addr.includes(':') ? flatKey(`[${addr}]`, ':', port, '/', proto) : flatKey(addr, ':', port, '/', proto);
}

/**
 * One family's part of a plan (frontends and the backends they name,
 * renumbered): what a per-family dataplane programs (the BPF maps and
 * iptables/ip6tables are separate per family). A plan of one family is
 * returned as it is.
 */
export function familyPlan(plan: ServicePlan, family: Family): ServicePlan {
  // Frontends only: a family is planned only with its cluster IP, which gives
  // every port a frontend, so frontends of one family mean backends of that
  // family (reading a backend's address would build its string).
  let mine = 0;
  for (let i = 0; i < plan.frontends.length; i++) if (ipFamily(plan.frontends[i]!.addr) === family) mine++;
  if (mine === plan.frontends.length && mine > 0) return plan;
  if (mine === 0) return { service: plan.service, frontends: EMPTY, backends: EMPTY };
  const renumber = new Map<number, number>();
  const backends: PlannedBackend[] = [];
  plan.backends.forEach((b, i) => {
    if (ipFamily(b.addr) !== family) return;
    renumber.set(i, backends.push(b) - 1);
  });
  const map = (idx: readonly number[]): number[] => idx.map((i) => renumber.get(i)!);
  const frontends = plan.frontends.filter((f) => ipFamily(f.addr) === family).map((f) => ({ ...f, backends: map(f.backends), members: map(f.members) }));
  return { service: plan.service, frontends, backends };
}

/** kube-proxy's endpoint choice for new connections. */
export function usableEndpoints<T extends { ready: boolean; serving: boolean; terminating: boolean }>(eps: readonly T[]): T[] {
  const ready = eps.filter((e) => e.ready);
  if (ready.length > 0) return ready;
  return eps.filter((e) => e.serving && e.terminating);
}

/** (address, port, protocol) as one exact number (< 2^50), for finding a backend two service ports share. */
function identity(ip: number, port: number, proto: L4Proto): number {
  return ip * 0x40000 + port * 4 + (proto === 'TCP' ? 0 : proto === 'UDP' ? 1 : 2);
}

/** The same for an IPv6 endpoint, which does not fit a number. */
function identity6(key6: string, port: number, proto: L4Proto): string {
  return `${key6}:${port}/${proto}`;
}

/**
 * A planned backend with the conditions it is chosen by (the plan's
 * backends are these). The dotted address is made when read (iptables
 * mode, tests); the maps take `ip`.
 */
class Candidate implements PlannedBackend {
  readonly ip: number;
  readonly port: Port;
  readonly proto: L4Proto;
  readonly local: boolean;
  readonly terminating: boolean;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly hints: EndpointHints | null;

  constructor(c: CandidateFields) {
    this.ip = c.ip;
    this.port = c.port;
    this.proto = c.proto;
    this.local = c.local;
    this.terminating = c.terminating;
    this.ready = c.ready;
    this.serving = c.serving;
    this.hints = c.hints;
  }

  get addr(): IP {
    return intToIp(this.ip);
  }
}

type CandidateFields = Omit<PlannedBackend, 'addr'> & { readonly ready: boolean; readonly serving: boolean; readonly hints: EndpointHints | null };

/**
 * An IPv6 candidate: its address, and the sort key endpointsForPort orders
 * and merges by (its `ip` is 0). A class of its own so that IPv4 candidates,
 * nearly all of them, stay as small as they were (two more fields on every
 * candidate made planning a tenth slower).
 */
class Candidate6 extends Candidate {
  readonly ip6: IPv6;
  readonly key6: string;

  constructor(c: CandidateFields, ip6: IPv6) {
    super(c);
    this.ip6 = ip6;
    this.key6 = ipv6SortKey(ip6);
  }

  override get addr(): IP {
    return this.ip6;
  }
}

/** What the frontends of one service port share. */
interface PortPlan {
  readonly servicePort: string;
  readonly proto: L4Proto;
  /** Every endpoint of the port, as plan indices. */
  readonly members: readonly number[];
  /** usableEndpoints() of all endpoints (narrowed by topology), and of the node-local ones. */
  readonly cluster: readonly number[];
  readonly local: readonly number[];
  /** loadBalancerSourceRanges as the LoadBalancer frontends apply them. */
  readonly sourceRanges: readonly Cidr[];
  /** SVC_F.TOPO_ZONE or SVC_F.TOPO_NODE when hints narrowed `cluster`, else 0. */
  readonly topology: number;
}

/*
 * planService runs for every service of a sync (ten thousand at a cold
 * start), so it is written without closures or intermediate arrays per
 * port: in the code V8 runs before it optimises, each of those is an
 * allocation, and the plan was the largest source of garbage in a sync.
 */
export function planService(svc: ServiceModel, slices: readonly SliceModel[], ctx: PlanContext): ServicePlan {
  const frontends: PlannedFrontend[] = [];
  const backends: PlannedBackend[] = [];
  const ips = svc.clusterIPs;
  // Nearly every service has one family: its plan is made without filtering anything.
  if (ips.length === 1) planFamily(svc, slices, ctx, ipFamily(ips[0]!), frontends, backends);
  else {
    for (const family of [4, 6] as const) if (ips.some((ip) => ipFamily(ip) === family)) planFamily(svc, slices, ctx, family, frontends, backends);
  }
  return { service: svc.key, frontends, backends };
}

/** The addresses of one family: the list itself when all are (no copy). */
function ofFamily<T extends IP>(list: readonly T[], family: Family): readonly T[] {
  for (let i = 0; i < list.length; i++) if (ipFamily(list[i]!) !== family) return list.filter((ip) => ipFamily(ip) === family);
  return list;
}

/** The slices of one family: the list itself when all are (no copy). */
function slicesOfFamily(slices: readonly SliceModel[], family: Family): readonly SliceModel[] {
  for (let i = 0; i < slices.length; i++) if (sliceFamily(slices[i]!) !== family) return slices.filter((sl) => sliceFamily(sl) === family);
  return slices;
}

/** One family's frontends and backends of a service, appended to the plan's lists (kube-proxy's per-family proxier). */
function planFamily(svc: ServiceModel, allSlices: readonly SliceModel[], ctx: PlanContext, family: Family, frontends: PlannedFrontend[], backends: PlannedBackend[]): void {
  const slices = slicesOfFamily(allSlices, family);
  const clusterIPs = ofFamily(svc.clusterIPs, family);
  const externalIPs = ofFamily(svc.externalIPs, family);
  const loadBalancerIPs = ofFamily(svc.loadBalancerIPs, family);
  const nodePortAddrs = ofFamily(ctx.nodePortAddrs, family);
  // Two service ports can reach the same endpoint port (TCP, UDP and SCTP differ):
  // with one service port (the usual case) every endpoint is new.
  const indexOf = svc.ports.length > 1 ? new Map<number | string, number>() : null;
  const topo = { nodeName: ctx.nodeName, zone: ctx.zone ?? '' };
  // Most services have no hints at all: then topology has nothing to decide.
  let hinted = false;
  for (let i = 0; i < slices.length && !hinted; i++) hinted = slices[i]!.hints !== undefined;

  const sourceRanges = lbSourceRanges(svc, ctx, family, loadBalancerIPs);

  for (let p = 0; p < svc.ports.length; p++) {
    const sp = svc.ports[p]!;
    const proto: L4Proto = sp.protocol;
    // Sorted by address and port; each one built once, as the backend it becomes.
    const eps = endpointsForPort(slices, sp.name, sp.protocol, (ip, nodeName, cond, port, hints, ip6) => {
      const c: CandidateFields = {
        ip,
        port,
        proto,
        local: isLocal(nodeName, ctx),
        terminating: (cond & EP_TERMINATING) !== 0,
        ready: (cond & EP_READY) !== 0,
        serving: (cond & EP_SERVING) !== 0,
        hints,
      };
      return ip6 === undefined ? new Candidate(c) : new Candidate6(c, ip6);
    });
    const members = new Array<number>(eps.length);
    let anyReady = false;
    let anyLocalReady = false;
    for (let i = 0; i < eps.length; i++) {
      const b = eps[i]!;
      anyReady ||= b.ready;
      anyLocalReady ||= b.local && b.ready;
      const id = indexOf ? (family === 4 ? identity(b.ip, b.port, proto) : identity6((b as Candidate6).key6, b.port, proto)) : 0;
      const at = indexOf?.get(id);
      if (at !== undefined) {
        backends[at] = b; // shared with an earlier port: the last port's copy stands
        members[i] = at;
        continue;
      }
      indexOf?.set(id, backends.length);
      members[i] = backends.push(b) - 1;
    }
    // usableEndpoints(), for all endpoints and for the local ones, on plan
    // indices. Topology narrows the ready cluster-wide ones; a mode is only
    // chosen when it leaves a ready endpoint, so the terminating fallback
    // never applies topology (as kube-proxy's CategorizeEndpoints).
    const mode: TopologyMode = hinted ? topologyMode(eps, topo) : TOPOLOGY_NONE;
    const cluster: number[] = [];
    const local: number[] = [];
    for (let i = 0; i < eps.length; i++) {
      const e = eps[i]!;
      const fallback = e.serving && e.terminating;
      if (anyReady ? e.ready && availableForTopology(e.hints, mode, topo) : fallback) cluster.push(members[i]!);
      if (e.local && (anyLocalReady ? e.ready : fallback)) local.push(members[i]!);
    }
    const topology = mode === TOPOLOGY_NODE ? SVC_F.TOPO_NODE : mode === TOPOLOGY_ZONE ? SVC_F.TOPO_ZONE : 0;
    const port: PortPlan = { servicePort: `${sp.name}/${proto}`, proto, members, cluster, local, sourceRanges, topology };
    for (let i = 0; i < clusterIPs.length; i++) addFrontend(frontends, svc, port, clusterIPs[i]!, sp.port, SVC_F.CLUSTER_IP, false);
    for (let i = 0; i < externalIPs.length; i++) addFrontend(frontends, svc, port, externalIPs[i]!, sp.port, SVC_F.EXTERNAL_IP, true);
    for (let i = 0; i < loadBalancerIPs.length; i++) addFrontend(frontends, svc, port, loadBalancerIPs[i]!, sp.port, SVC_F.LOAD_BALANCER, true);
    if (sp.nodePort > 0) {
      for (let i = 0; i < nodePortAddrs.length; i++) addFrontend(frontends, svc, port, nodePortAddrs[i]!, sp.nodePort as Port, SVC_F.NODE_PORT, true);
    }
  }
}

/*
 * A VIP-like load balancer whose IP is also a local address loops a node's
 * own request back with the LB IP as source. When the source ranges admit
 * this node, kube-proxy admits the LB IPs as sources too, so that request
 * is served.
 */
function lbSourceRanges(svc: ServiceModel, ctx: PlanContext, family: Family, loadBalancerIPs: readonly IP[]): readonly Cidr[] {
  // Each family filters by its own ranges; a family the service gives none is
  // open, as kube-proxy's per-family service info has it.
  const all = svc.loadBalancerSourceRanges;
  const ranges = all.length === 0 || all.every((c) => cidrFamily(c) === family) ? all : all.filter((c) => cidrFamily(c) === family);
  const nodeIPs = ctx.nodeIPs ?? EMPTY;
  if (ranges.length === 0 || !ranges.some((c) => nodeIPs.some((ip) => cidrContains(c, ip)))) return ranges;
  const extra = loadBalancerIPs.map((ip) => parseCidr(ip)!).filter((c) => !ranges.some((r) => r.text === c.text));
  return extra.length === 0 ? ranges : [...ranges, ...extra];
}

function isLocal(nodeName: string, ctx: PlanContext): boolean {
  return nodeName !== '' && nodeName === ctx.nodeName;
}

function addFrontend(out: PlannedFrontend[], svc: ServiceModel, port: PortPlan, addr: IP, portNum: Port, kind: number, ext: boolean): void {
  const itpLocal = !ext && svc.internalTrafficPolicy === 'Local';
  const etpLocal = ext && svc.externalTrafficPolicy === 'Local';
  const sourceRanges = kind === SVC_F.LOAD_BALANCER ? port.sourceRanges : EMPTY;
  const srcFlag = sourceRanges.length > 0 ? SVC_F.SRC_RANGES : 0;
  // kube-proxy: no endpoints at all -> REJECT; endpoints, but none the
  // policy allows here -> DROP.
  const dropIfEmpty = port.cluster.length > 0 ? SVC_F.DROP_EMPTY : 0;
  const affinityFlag = svc.affinityTimeout > 0 ? SVC_F.AFFINITY : 0;
  const flags = kind | affinityFlag | srcFlag | (itpLocal ? SVC_F.ITP_LOCAL | dropIfEmpty : 0) | (etpLocal ? SVC_F.ETP_LOCAL : 0);
  const { servicePort, proto, members } = port;
  // Scope ALL is what pods and the node itself get: for internal frontends
  // the internal policy decides; external frontends short-circuit to every
  // endpoint for in-cluster clients, as kube-proxy does.
  out.push({
    servicePort,
    addr,
    port: portNum,
    proto,
    scope: SCOPE_ALL,
    flags: itpLocal ? flags : flags | port.topology,
    affinityTimeout: svc.affinityTimeout,
    backends: itpLocal ? port.local : port.cluster,
    members,
    sourceRanges,
  });
  // Scope LOCAL: what traffic from outside the node gets under eTP=Local.
  if (etpLocal) {
    out.push({ servicePort, addr, port: portNum, proto, scope: SCOPE_LOCAL, flags: flags | dropIfEmpty, affinityTimeout: svc.affinityTimeout, backends: port.local, members, sourceRanges });
  }
}
