/**
 * Topology-aware routing as kube-proxy does it (pkg/proxy/topology.go,
 * Kubernetes 1.35): the proxy reads only the endpoints' hints, which the
 * EndpointSlice controller sets from the Service's trafficDistribution
 * (PreferClose / PreferSameZone → hints.forZones; PreferSameNode →
 * hints.forNodes as well). The Service field itself decides nothing here.
 *
 *  - Only ready endpoints are looked at. If every ready endpoint has a node
 *    hint and one is hinted for this node: same-node mode.
 *  - Else, if every ready endpoint has a zone hint and one is hinted for
 *    this node's zone (its topology.kubernetes.io/zone label): same-zone.
 *  - Else no topology: every endpoint. One endpoint without hints, a node
 *    without a zone label, or no endpoint for this zone means all endpoints.
 *
 * The mode narrows only the cluster-wide endpoint set (ClusterIPs with
 * internalTrafficPolicy Cluster, external frontends with eTP=Cluster, and
 * the short-circuit of in-cluster clients to eTP=Local external frontends);
 * node-local sets (the Local policies) ignore topology.
 */
import type { EndpointHints } from '../model/endpoints';

export const TOPOLOGY_NONE = 0;
export const TOPOLOGY_ZONE = 1;
export const TOPOLOGY_NODE = 2;
export type TopologyMode = typeof TOPOLOGY_NONE | typeof TOPOLOGY_ZONE | typeof TOPOLOGY_NODE;

/** This node, as topology sees it. */
export interface TopologyNode {
  readonly nodeName: string;
  /** The node's topology.kubernetes.io/zone label; '' without one. */
  readonly zone: string;
}

interface Hinted {
  readonly ready: boolean;
  readonly hints: EndpointHints | null;
}

/** kube-proxy's topologyModeFromHints. */
export function topologyMode(eps: readonly Hinted[], node: TopologyNode): TopologyMode {
  let anyReady = false;
  let allNode = true;
  let forNode = false;
  let allZone = true;
  let forZone = false;
  for (let i = 0; i < eps.length; i++) {
    const e = eps[i]!;
    if (!e.ready) continue;
    anyReady = true;
    const h = e.hints;
    if (!h || h.forNodes.length === 0) allNode = false;
    else if (h.forNodes.includes(node.nodeName)) forNode = true;
    if (!h || h.forZones.length === 0) allZone = false;
    else if (h.forZones.includes(node.zone)) forZone = true;
  }
  if (!anyReady) return TOPOLOGY_NONE;
  if (allNode && forNode) return TOPOLOGY_NODE;
  if (allZone && forZone) return TOPOLOGY_ZONE;
  return TOPOLOGY_NONE;
}

/** kube-proxy's availableForTopology: may this endpoint serve this node under the mode? */
export function availableForTopology(hints: EndpointHints | null, mode: TopologyMode, node: TopologyNode): boolean {
  if (mode === TOPOLOGY_NONE) return true;
  if (!hints) return false;
  return mode === TOPOLOGY_NODE ? hints.forNodes.includes(node.nodeName) : hints.forZones.includes(node.zone);
}
