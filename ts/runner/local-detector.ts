/**
 * kube-proxy's local-traffic detector (detectLocalMode): what tells traffic
 * from this node's pods apart from other traffic, for masquerading
 * ClusterIP traffic from outside and for the eTP=Local short-circuit.
 * kube-proxy's pkg/proxy/util/localdetector.go is the reference:
 *  - ClusterCIDR: the source is in the cluster CIDRs (none given: no detector);
 *  - NodeCIDR: the source is in this node's spec.podCIDRs (none yet: no detector);
 *  - InterfaceNamePrefix: the packet entered on a device named PREFIX*;
 *  - BridgeInterface: the packet entered on the bridge (or one of its ports).
 */
import { Cidr } from '../model/types';
import type { RunOptions } from '../cli/options';

export type LocalDetector = { readonly kind: 'none' } | { readonly kind: 'cidrs'; readonly cidrs: readonly Cidr[] } | { readonly kind: 'devices'; readonly prefix: string; readonly bridge: string };

const NONE: LocalDetector = { kind: 'none' };

/** The detector of the options; for NodeCIDR, of the Node's pod CIDRs (empty until the Node says). */
export function localDetector(opts: Pick<RunOptions, 'detectLocalMode' | 'clusterCIDRs' | 'podInterfaceNamePrefix' | 'podBridgeInterface'>, nodePodCIDRs: readonly Cidr[] = []): LocalDetector {
  switch (opts.detectLocalMode) {
    case 'ClusterCIDR':
      return opts.clusterCIDRs.length ? { kind: 'cidrs', cidrs: opts.clusterCIDRs } : NONE;
    case 'NodeCIDR':
      return nodePodCIDRs.length ? { kind: 'cidrs', cidrs: nodePodCIDRs } : NONE;
    case 'InterfaceNamePrefix':
      return { kind: 'devices', prefix: opts.podInterfaceNamePrefix, bridge: '' };
    case 'BridgeInterface':
      return { kind: 'devices', prefix: '', bridge: opts.podBridgeInterface };
  }
}

/** The cidrs a source-address detector matches (owner 0 of the BPF cidr map); none for the others. */
export function detectorCidrs(d: LocalDetector): readonly Cidr[] {
  return d.kind === 'cidrs' ? d.cidrs : [];
}

/**
 * Is traffic entering on this device from a pod, by a device detector? The
 * device kube-proxy's `-i` sees is the one that routes the packet: for a
 * port of a bridge, the bridge (nameOf names it). weir's programs see a
 * pod's packets where they enter the port, so a port is judged by its
 * bridge's name: with BridgeInterface every port of the bridge is a pod's,
 * and the bridge forwards replies between its ports without ever passing
 * its own device.
 */
export function isLocalDevice(d: LocalDetector, link: { name: string; master?: number }, nameOf: (ifindex: number) => string | null): boolean {
  if (d.kind !== 'devices') return false;
  const routedBy = link.master ? (nameOf(link.master) ?? link.name) : link.name;
  return d.prefix ? routedBy.startsWith(d.prefix) : routedBy === d.bridge;
}

/** The device glob a device detector needs the pod-side program on (pods' traffic must be translated there too). */
export function detectorDeviceGlobs(d: LocalDetector): string[] {
  if (d.kind !== 'devices') return [];
  return [d.prefix ? `${d.prefix}*` : d.bridge];
}

/** iptables matches that select pod traffic, as kube-proxy writes them (`-s CIDR`, `-i PREFIX+`, `-i BRIDGE`). */
export function iptablesLocalMatches(d: LocalDetector): string[] {
  if (d.kind === 'cidrs') return d.cidrs.map((c) => `-s ${c.text}`);
  if (d.kind === 'devices') return [d.prefix ? `-i ${d.prefix}+` : `-i ${d.bridge}`];
  return [];
}

/** For the log: the detector in words. */
export function describeDetector(d: LocalDetector): string {
  if (d.kind === 'cidrs') return `source in ${d.cidrs.map((c) => c.text).join(',')}`;
  if (d.kind === 'devices') return d.prefix ? `entered on a device named ${d.prefix}*` : `entered on bridge ${d.bridge}`;
  return 'none: pods are clients like any other';
}
