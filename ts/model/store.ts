/**
 * The cluster as weir knows it: the last good model of every Service,
 * EndpointSlice and Node, and which services changed since the last sync.
 *
 * "Last good": an update that fails validation is reported and dropped; the
 * previous valid version of that object stays in force, and nothing else is
 * affected. A deletion always applies.
 */
import { isDeepStrictEqual } from 'node:util';
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { SliceModel, parseEndpointSlice } from './endpoints';
import { ServiceModel, parseService } from './service';
import { Cidr, EMPTY, FieldError, IP, ObjectKey, parseCidr, parseIP } from './types';

export interface NodeModel {
  readonly name: string;
  /** Both families, in the order the Node lists them. */
  readonly internalIPs: readonly IP[];
  readonly externalIPs: readonly IP[];
  readonly zone: string;
  /** IPv4 pod CIDRs of spec.podCIDRs (or spec.podCIDR): this node's pods, for detectLocalMode NodeCIDR. */
  readonly podCIDRs: readonly Cidr[];
  /**
   * The node is on its way out: metadata.deletionTimestamp is set, or the
   * cluster autoscaler's ToBeDeletedByClusterAutoscaler taint is on it.
   * kube-proxy's /healthz then answers 503 so load balancers drain the node
   * (KEP-3836); see ../health/health.ts.
   */
  readonly draining: boolean;
}

export const ZONE_LABEL = 'topology.kubernetes.io/zone';
/** The taint the cluster autoscaler puts on a node it is about to delete. */
export const TO_BE_DELETED_TAINT = 'ToBeDeletedByClusterAutoscaler';

/** Where an object came from, for error messages: a file path, or "kube". */
export type Origin = string;
export type ErrorSink = (origin: Origin, errors: readonly FieldError[]) => void;

/** A set of service keys that remembers when each was first added. */
export class DirtySet {
  private since = new Map<ObjectKey, number>();
  add(k: ObjectKey): void {
    if (!this.since.has(k)) this.since.set(k, Date.now());
  }
  has(k: ObjectKey): boolean {
    return this.since.has(k);
  }
  clear(): void {
    this.since.clear();
  }
  get size(): number {
    return this.since.size;
  }
  /** Every key with the time it was first added, leaving the set empty (no copy: a cold start takes ten thousand). */
  take(): Map<ObjectKey, number> {
    const out = this.since;
    this.since = new Map();
    return out;
  }
}

/**
 * kube-proxy's change counters (kubeproxy_sync_proxy_rules_{service,endpoint}_changes_{total,pending}):
 * every Service and EndpointSlice event the sources delivered, and the events
 * that changed something since the last sync took the changes. (kube-proxy's
 * service_changes_pending counts services rather than events; a sync takes
 * both back to 0 either way.)
 */
export interface ChangeCounts {
  services: number;
  endpoints: number;
  servicesPending: number;
  endpointsPending: number;
}

/** Two versions of a slice that differ at most in their trigger time: nothing to program (as kube-proxy's slice cache sees it). */
function sameSlice(a: SliceModel, b: SliceModel): boolean {
  if (a.triggerTime === b.triggerTime) return isDeepStrictEqual(a, b);
  // Field by field without copying either (a copy cost more than the comparison).
  const fields = (m: SliceModel): string[] => Object.keys(m).filter((k) => k !== 'triggerTime');
  const fa = fields(a);
  const ra = a as unknown as Record<string, unknown>;
  const rb = b as unknown as Record<string, unknown>;
  return fa.length === fields(b).length && fa.every((k) => k in rb && isDeepStrictEqual(ra[k], rb[k]));
}

export class ClusterStore {
  readonly services = new Map<ObjectKey, ServiceModel>();
  readonly slices = new Map<ObjectKey, SliceModel>();
  readonly nodes = new Map<string, NodeModel>();
  /** Services whose plan must be recomputed (changed service or slices), with when they first changed. */
  readonly dirty = new DirtySet();
  /** Bumped on every change to nodes (their IPs feed NodePort frontends, their zone topology, draining /healthz). */
  nodesVersion = 0;
  /** Nodes that were known and then deleted (a deleted Node is draining too). */
  readonly deletedNodes = new Set<string>();
  /**
   * Slices by the service they name, for planning: an array, since nearly
   * every service has one slice (a Set each was ~150 bytes more), holding
   * the models themselves so that slicesOf() neither allocates nor looks
   * each one up.
   */
  private readonly slicesByService = new Map<ObjectKey, SliceModel[]>();
  private readonly report: ErrorSink;
  readonly changes: ChangeCounts = { services: 0, endpoints: 0, servicesPending: 0, endpointsPending: 0 };
  /**
   * Trigger times (SliceModel.triggerTime) of the slice changes not yet
   * taken, by service. Only those after the store was made count, as with
   * kube-proxy's trackerStartTime: a starting agent would otherwise report
   * the age of every slice in the cluster as programming latency.
   */
  private triggerTimes = new Map<ObjectKey, number[]>();
  readonly startedAt: number;

  /** startedAt: ms timestamp from which trigger times count (tests set it; the agent's is when it made the store). */
  constructor(report: ErrorSink, startedAt = Date.now()) {
    this.report = report;
    this.startedAt = startedAt;
  }

  /**
   * Apply a Service. Returns whether the model changed: an object delivered
   * again unchanged (relist, file saved again) marks nothing dirty.
   */
  upsertService(raw: V1Service, origin: Origin): boolean {
    this.changes.services++;
    const parsed = parseService(raw);
    if (parsed.ok === false) {
      this.report(origin, parsed.errors);
      return false;
    }
    if (parsed.ok === 'skip') {
      // Valid but not ours to program (headless, ExternalName, ...): remove any older version.
      return this.removeService(parsed.key);
    }
    const prev = this.services.get(parsed.value.key);
    if (prev && isDeepStrictEqual(prev, parsed.value)) return false;
    this.services.set(parsed.value.key, parsed.value);
    this.dirty.add(parsed.value.key);
    this.changes.servicesPending++;
    return true;
  }

  deleteService(key: ObjectKey): boolean {
    this.changes.services++;
    return this.removeService(key);
  }

  private removeService(key: ObjectKey): boolean {
    if (!this.services.delete(key)) return false;
    this.dirty.add(key);
    this.changes.servicesPending++;
    return true;
  }

  /** Apply an EndpointSlice; returns whether anything changed (see upsertService). */
  upsertSlice(raw: V1EndpointSlice, origin: Origin): boolean {
    this.changes.endpoints++;
    const parsed = parseEndpointSlice(raw);
    if (parsed.ok === false) {
      this.report(origin, parsed.errors);
      return false;
    }
    if (parsed.ok === 'skip') return this.removeSlice(parsed.key);
    const slice = parsed.value;
    const prev = this.slices.get(slice.key);
    if (prev && sameSlice(prev, slice)) return false;
    if (prev && prev.service !== slice.service) this.unindex(prev);
    this.slices.set(slice.key, slice);
    const list = this.slicesByService.get(slice.service);
    const at = list ? list.findIndex((s) => s.key === slice.key) : -1;
    if (!list) this.slicesByService.set(slice.service, [slice]);
    else if (at >= 0) list[at] = slice;
    else list.push(slice);
    this.dirty.add(slice.service);
    this.changes.endpointsPending++;
    const t = slice.triggerTime;
    if (t !== undefined && t > this.startedAt) {
      const times = this.triggerTimes.get(slice.service);
      if (times) times.push(t);
      else this.triggerTimes.set(slice.service, [t]);
    }
    return true;
  }

  deleteSlice(key: ObjectKey): boolean {
    this.changes.endpoints++;
    return this.removeSlice(key);
  }

  private removeSlice(key: ObjectKey): boolean {
    const prev = this.slices.get(key);
    if (!prev) return false;
    this.slices.delete(key);
    this.unindex(prev);
    this.dirty.add(prev.service);
    this.changes.endpointsPending++;
    // A deleted slice's annotation dates its last update, not the deletion:
    // kube-proxy measures nothing for the service's pending changes then.
    this.triggerTimes.delete(prev.service);
    return true;
  }

  upsertNode(raw: V1Node, origin: Origin): boolean {
    const name = raw.metadata?.name;
    if (!name) {
      this.report(origin, [{ kind: 'Node', object: '(unnamed)', field: 'metadata.name', message: 'is required' }]);
      return false;
    }
    const internalIPs: IP[] = [];
    const externalIPs: IP[] = [];
    for (const a of raw.status?.addresses ?? []) {
      const ip = parseIP(a.address);
      if (!ip) continue;
      if (a.type === 'InternalIP') internalIPs.push(ip);
      else if (a.type === 'ExternalIP') externalIPs.push(ip);
    }
    const zone = raw.metadata?.labels?.[ZONE_LABEL] ?? '';
    const draining = !!raw.metadata?.deletionTimestamp || (raw.spec?.taints ?? []).some((t) => t.key === TO_BE_DELETED_TAINT);
    // IPv6 CIDRs of a dual-stack node are skipped: weir serves IPv4.
    const podCIDRs = (raw.spec?.podCIDRs ?? (raw.spec?.podCIDR ? [raw.spec.podCIDR] : [])).flatMap((c) => parseCidr(c) ?? []);
    const node: NodeModel = { name, internalIPs, externalIPs, zone, podCIDRs, draining };
    this.deletedNodes.delete(name);
    if (isDeepStrictEqual(this.nodes.get(name), node)) return false;
    this.nodes.set(name, node);
    this.nodesVersion++;
    return true;
  }

  deleteNode(name: string): boolean {
    if (!this.nodes.delete(name)) return false;
    this.deletedNodes.add(name);
    this.nodesVersion++;
    return true;
  }

  /**
   * kube-proxy's NodeEligible: true until the Node says otherwise (before it
   * is listed, or with a file source that has none); false while it drains
   * and once it was deleted.
   */
  nodeEligible(name: string): boolean {
    const node = this.nodes.get(name);
    return node ? !node.draining : !this.deletedNodes.has(name);
  }

  /** The slices naming a service (the store's own list: read it before the store changes again). */
  slicesOf(service: ObjectKey): readonly SliceModel[] {
    return this.slicesByService.get(service) ?? EMPTY;
  }

  /** Take the set of changed services, leaving it empty. */
  takeDirty(): ObjectKey[] {
    return [...this.takeDirtyWithTimes().keys()];
  }

  /** Changed services and the time (ms) each first changed since the last take. */
  takeDirtyWithTimes(): Map<ObjectKey, number> {
    this.changes.servicesPending = 0;
    this.changes.endpointsPending = 0;
    return this.dirty.take();
  }

  /** The trigger times of the slice changes since the last take, by service, leaving none. */
  takeTriggerTimes(): Map<ObjectKey, number[]> {
    const out = this.triggerTimes;
    if (out.size > 0) this.triggerTimes = new Map();
    return out;
  }

  private unindex(slice: SliceModel): void {
    const list = this.slicesByService.get(slice.service);
    const at = list?.findIndex((s) => s.key === slice.key) ?? -1;
    if (!list || at < 0) return;
    list.splice(at, 1);
    if (list.length === 0) this.slicesByService.delete(slice.service);
  }
}
