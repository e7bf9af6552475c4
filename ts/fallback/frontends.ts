/**
 * A service's frontends as both rule renderers (render.ts for iptables,
 * nft-render.ts for nftables) take them: grouped by service port (kube-proxy
 * builds its chains per service port), then sorted by kind and traffic
 * policy, with the endpoint sets each policy uses.
 */
import { SVC_F } from '../datapath/codecs';
import { PlannedFrontend, ServicePlan } from '../plan/plan';

/** The plan's frontends by service port ("name/PROTO"), in plan order. */
export function byServicePort(plan: ServicePlan): Map<string, PlannedFrontend[]> {
  const out = new Map<string, PlannedFrontend[]>();
  for (const fe of plan.frontends) {
    const list = out.get(fe.servicePort);
    if (list) list.push(fe);
    else out.set(fe.servicePort, [fe]);
  }
  return out;
}

export interface PortFrontends {
  readonly clusterIPs: PlannedFrontend[];
  /** NodePorts, externalIPs and load-balancer IPs. */
  readonly external: PlannedFrontend[];
  readonly itpLocal: boolean;
  readonly etpLocal: boolean;
  /** The frontend whose backends are the cluster-wide endpoint set, if any uses it. */
  readonly clusterFe: PlannedFrontend | undefined;
  /** The local endpoint set: an iTP=Local ClusterIP's, or an eTP=Local frontend's local-scope entry's. */
  readonly local: readonly number[];
}

/** One service port's frontends, sorted. */
export function portFrontends(fes: readonly PlannedFrontend[]): PortFrontends {
  const clusterIPs = fes.filter((f) => f.flags & SVC_F.CLUSTER_IP);
  const external = fes.filter((f) => f.flags & (SVC_F.NODE_PORT | SVC_F.EXTERNAL_IP | SVC_F.LOAD_BALANCER));
  return {
    clusterIPs,
    external,
    itpLocal: clusterIPs.some((f) => f.flags & SVC_F.ITP_LOCAL),
    etpLocal: external.some((f) => f.flags & SVC_F.ETP_LOCAL),
    clusterFe: clusterIPs.find((f) => !(f.flags & SVC_F.ITP_LOCAL)) ?? external.find((f) => f.scope === 0),
    local: (clusterIPs.find((f) => f.flags & SVC_F.ITP_LOCAL) ?? external.find((f) => f.scope === 1))?.backends ?? [],
  };
}
