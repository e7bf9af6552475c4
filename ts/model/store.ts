/**
 * The cluster as weir knows it: the last good model of every Service,
 * EndpointSlice and Node, and which services changed since the last sync.
 *
 * "Last good": an update that fails validation is reported and dropped; the
 * previous valid version of that object stays in force, and nothing else is
 * affected. A deletion always applies.
 */
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { SliceModel, parseEndpointSlice } from './endpoints';
import { DEFAULT_RULES, ServiceModel, ServiceRules, parseService } from './service';
import { FieldError, IPv4, ObjectKey, parseIPv4 } from './types';

export interface NodeModel {
  readonly name: string;
  readonly internalIPs: readonly IPv4[];
  readonly externalIPs: readonly IPv4[];
  readonly zone: string;
}

/** Where an object came from, for error messages: a file path, or "kube". */
export type Origin = string;
export type ErrorSink = (origin: Origin, errors: readonly FieldError[]) => void;

/** A set of service keys that remembers when each was first added. */
export class DirtySet {
  readonly since = new Map<ObjectKey, number>();
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
}

export class ClusterStore {
  readonly services = new Map<ObjectKey, ServiceModel>();
  readonly slices = new Map<ObjectKey, SliceModel>();
  readonly nodes = new Map<string, NodeModel>();
  /** Services whose plan must be recomputed (changed service or slices), with when they first changed. */
  readonly dirty = new DirtySet();
  /** Bumped on every change to nodes (node IPs feed NodePort frontends). */
  nodesVersion = 0;
  private readonly slicesByService = new Map<ObjectKey, Set<ObjectKey>>();
  private readonly report: ErrorSink;
  private readonly rules: ServiceRules;

  constructor(report: ErrorSink, rules: ServiceRules = DEFAULT_RULES) {
    this.report = report;
    this.rules = rules;
  }

  upsertService(raw: V1Service, origin: Origin): void {
    const parsed = parseService(raw, this.rules);
    if (parsed.ok === false) {
      this.report(origin, parsed.errors);
      return;
    }
    if (parsed.ok === 'skip') {
      // Valid but not ours to program (headless, ExternalName, ...): remove any older version.
      this.deleteService(parsed.key);
      return;
    }
    this.services.set(parsed.value.key, parsed.value);
    this.dirty.add(parsed.value.key);
  }

  deleteService(key: ObjectKey): void {
    if (this.services.delete(key)) this.dirty.add(key);
  }

  upsertSlice(raw: V1EndpointSlice, origin: Origin): void {
    const parsed = parseEndpointSlice(raw);
    if (parsed.ok === false) {
      this.report(origin, parsed.errors);
      return;
    }
    if (parsed.ok === 'skip') {
      this.deleteSlice(parsed.key);
      return;
    }
    const slice = parsed.value;
    const prev = this.slices.get(slice.key);
    if (prev && prev.service !== slice.service) this.unindex(prev);
    this.slices.set(slice.key, slice);
    let set = this.slicesByService.get(slice.service);
    if (!set) this.slicesByService.set(slice.service, (set = new Set()));
    set.add(slice.key);
    this.dirty.add(slice.service);
  }

  deleteSlice(key: ObjectKey): void {
    const prev = this.slices.get(key);
    if (!prev) return;
    this.slices.delete(key);
    this.unindex(prev);
    this.dirty.add(prev.service);
  }

  upsertNode(raw: V1Node, origin: Origin): void {
    const name = raw.metadata?.name;
    if (!name) {
      this.report(origin, [{ kind: 'Node', object: '(unnamed)', field: 'metadata.name', message: 'is required' }]);
      return;
    }
    const internalIPs: IPv4[] = [];
    const externalIPs: IPv4[] = [];
    for (const a of raw.status?.addresses ?? []) {
      const ip = parseIPv4(a.address);
      if (!ip) continue;
      if (a.type === 'InternalIP') internalIPs.push(ip);
      else if (a.type === 'ExternalIP') externalIPs.push(ip);
    }
    const zone = raw.metadata?.labels?.['topology.kubernetes.io/zone'] ?? '';
    this.nodes.set(name, { name, internalIPs, externalIPs, zone });
    this.nodesVersion++;
  }

  deleteNode(name: string): void {
    if (this.nodes.delete(name)) this.nodesVersion++;
  }

  slicesOf(service: ObjectKey): SliceModel[] {
    const out: SliceModel[] = [];
    for (const k of this.slicesByService.get(service) ?? []) {
      const s = this.slices.get(k);
      if (s) out.push(s);
    }
    return out;
  }

  /** Slices whose Service is unknown (only an error once every source has synced). */
  orphanSlices(): SliceModel[] {
    const out: SliceModel[] = [];
    for (const [svc, keys] of this.slicesByService) {
      if (this.services.has(svc)) continue;
      for (const k of keys) {
        const s = this.slices.get(k);
        if (s) out.push(s);
      }
    }
    return out;
  }

  /** Take the set of changed services, leaving it empty. */
  takeDirty(): ObjectKey[] {
    return [...this.takeDirtyWithTimes().keys()];
  }

  /** Changed services and the time (ms) each first changed since the last take. */
  takeDirtyWithTimes(): Map<ObjectKey, number> {
    const out = new Map(this.dirty.since);
    this.dirty.clear();
    return out;
  }

  private unindex(slice: SliceModel): void {
    const set = this.slicesByService.get(slice.service);
    if (!set) return;
    set.delete(slice.key);
    if (set.size === 0) this.slicesByService.delete(slice.service);
  }
}
