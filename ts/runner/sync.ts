/**
 * One sync: re-plan the services that changed, commit the difference, and
 * report what the operator must know about (frontend conflicts, slices
 * whose Service does not exist). Shared by the agent and the tests.
 */
import { ClusterStore } from '../model/store';
import { PlanContext, ServicePlan, planService } from '../plan/plan';
import { CommitStats, FrontendConflict, MAX_SLOTS } from '../reconcile/reconciler';
import { Dataplane } from '../reconcile/dataplane';
import { Logger, errorText } from '../util/log';
import { ObjectKey } from '../model/types';
import { SCOPE_LOCAL, SVC_F } from '../datapath/codecs';

function conflictField(flags: number): string {
  if (flags & SVC_F.NODE_PORT) return 'spec.ports[].nodePort';
  if (flags & SVC_F.EXTERNAL_IP) return 'spec.externalIPs';
  if (flags & SVC_F.LOAD_BALANCER) return 'status.loadBalancer.ingress';
  return 'spec.clusterIP';
}

/** Services planned between two flushes: big enough to amortise a batch, small enough that the last part's write is short. */
const FLUSH_EVERY = 512;

export interface SyncResult extends CommitStats {
  readonly services: number;
  readonly ms: number;
  /** For each changed service: ms from the change arriving to its maps being written. */
  readonly programmingMs: readonly number[];
  /** For each programmed slice change with a trigger time: ms from that time (the API server's clock) to now. */
  readonly triggerLatenciesMs: readonly number[];
  /** Services whose plan or setService threw: reported, kept as last programmed, planned again next sync. */
  readonly failed: readonly ObjectKey[];
}

/** What one sync took from the store and planned, until it commits. */
interface Taken {
  readonly t0: bigint;
  /** The services it took, with when each first changed. */
  readonly changed: Map<ObjectKey, number>;
  readonly dirty: readonly ObjectKey[];
  /** Services whose plan or setService threw. */
  readonly failed: Map<ObjectKey, unknown>;
  conflicts: FrontendConflict[];
}

export class Syncer {
  /** Orphan slices already reported, by the Service they name. */
  private readonly warnedOrphans = new Map<ObjectKey, Set<ObjectKey>>();
  /** What was last said of each service's topology ("trafficDistribution/mode"), to say it again only when it changes. */
  private readonly topologyShown = new Map<ObjectKey, string>();
  /** Services that lost frontends to another service, and which. */
  private readonly losers = new Map<ObjectKey, Set<string>>();
  /**
   * Services taken from the store's dirty set but not committed (their plan
   * threw, or the commit did), with when each first changed: the next sync
   * plans them with the store's dirty ones. The store's set cannot hold
   * them: taking it is what leaves it empty for the changes that arrive
   * during a sync.
   */
  private readonly uncommitted = new Map<ObjectKey, number>();
  /** Trigger times of slice changes not yet programmed, by service (ClusterStore.takeTriggerTimes): a failed service keeps its own. */
  private readonly triggers = new Map<ObjectKey, number[]>();
  /**
   * Service ports with a Local traffic policy whose endpoints are all on
   * other nodes (traffic to them is dropped here), by service, as
   * [internal, external]; services with none are absent. Kept per service
   * because a sync plans only the changed ones.
   */
  private readonly noLocal = new Map<ObjectKey, readonly [number, number]>();
  /** The sums over noLocal: kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy}. */
  readonly noLocalEndpoints = { internal: 0, external: 0 };
  private readonly store: ClusterStore;
  private readonly reconciler: Dataplane;
  private readonly log: Logger;
  ctx: PlanContext;

  constructor(opts: { store: ClusterStore; reconciler: Dataplane; ctx: PlanContext; log: Logger }) {
    this.store = opts.store;
    this.reconciler = opts.reconciler;
    this.ctx = opts.ctx;
    this.log = opts.log;
  }

  /** Plan inputs changed for every service (e.g. node IPs): re-plan them all. */
  setContext(ctx: PlanContext): void {
    this.ctx = ctx;
    for (const key of this.store.services.keys()) this.store.dirty.add(key);
  }

  /** Services a sync took but did not commit; the next sync plans them again. */
  get pending(): number {
    return this.uncommitted.size;
  }

  /**
   * Plan the changed services into the dataplane and commit. A service whose
   * plan (or setService) throws is reported and left as last programmed
   * while the others commit; it is in `failed` and planned again next sync.
   * When the commit throws, every service of this sync is planned again by
   * the next one, and the error propagates (the runner retries). For a
   * dataplane that commits synchronously (the BPF maps, nftables); syncAsync
   * serves every dataplane.
   */
  sync(): SyncResult {
    const taken = this.plan();
    let stats: CommitStats | Promise<CommitStats>;
    try {
      stats = this.reconciler.commit();
    } catch (e) {
      this.requeue(taken);
      throw e;
    }
    if (stats instanceof Promise) {
      // The write goes on; its outcome is the next sync's to see (a failed commit makes the dataplane's next one whole).
      stats.catch(() => undefined);
      this.requeue(taken);
      throw new Error('this dataplane commits asynchronously: sync with syncAsync');
    }
    return this.finish(taken, stats);
  }

  /** sync, awaiting a commit that writes in a child process (iptables mode: a restore of many chains takes seconds). */
  async syncAsync(): Promise<SyncResult> {
    const taken = this.plan();
    let stats: CommitStats;
    try {
      stats = await this.reconciler.commit();
    } catch (e) {
      this.requeue(taken);
      throw e;
    }
    return this.finish(taken, stats);
  }

  /** Take the changed services (with those the last sync left) and plan them into the dataplane. */
  private plan(): Taken {
    const t0 = process.hrtime.bigint();
    const changed = this.store.takeDirtyWithTimes();
    for (const [key, since] of this.uncommitted) {
      const t = changed.get(key);
      if (t === undefined || since < t) changed.set(key, since);
    }
    this.uncommitted.clear();
    for (const [key, times] of this.store.takeTriggerTimes()) {
      const have = this.triggers.get(key);
      if (have) have.push(...times);
      else this.triggers.set(key, times);
    }
    const dirty = [...changed.keys()].sort();
    const failed = new Map<ObjectKey, unknown>();
    const plan = (key: ObjectKey): void => {
      const svc = this.store.services.get(key);
      this.losers.delete(key);
      try {
        const planned = svc ? planService(svc, this.store.slicesOf(key), this.ctx) : null;
        this.reconciler.setService(key, planned);
        this.countNoLocal(key, planned);
        this.showTopology(key, svc?.trafficDistribution ?? '', planned);
      } catch (e) {
        // One service's failure must not end the sync: the services after it
        // in this sync were taken from the store and would be lost with it.
        failed.set(key, e);
      }
    };
    const taken: Taken = { t0, changed, dirty, failed, conflicts: [] };
    try {
      // A large sync hands its writes over in parts, so the kernel inserts one
      // part while the next is planned (see Reconciler.flush).
      if (dirty.length > FLUSH_EVERY) this.reconciler.expectBackends?.(this.endpointPorts());
      dirty.forEach((key, i) => {
        plan(key);
        if ((i + 1) % FLUSH_EVERY === 0) this.reconciler.flush?.();
      });
      // A service that lost a frontend to another one gets it once the owner
      // lets go (changes or goes away), in the same sync: as with kube-proxy,
      // where the second rule for an address matches once the first is gone.
      const first = this.reconciler.conflicts.splice(0);
      for (const c of first) this.lost(c.service, c.frontend);
      const retry = new Set([...this.losers].filter(([, fks]) => [...fks].some((fk) => this.reconciler.frontendOwner(fk) === undefined)).map(([key]) => key));
      for (const key of retry) plan(key);
      const again = this.reconciler.conflicts.splice(0);
      for (const c of again) this.lost(c.service, c.frontend);
      taken.conflicts = [...first.filter((c) => !retry.has(c.service)), ...again];
    } catch (e) {
      this.requeue(taken);
      throw e;
    }
    return taken;
  }

  /** A sync that did not commit: every service it took is planned again by the next one. */
  private requeue(taken: Taken): void {
    for (const [key, since] of taken.changed) this.uncommitted.set(key, since);
    for (const key of taken.failed.keys()) if (!this.uncommitted.has(key)) this.uncommitted.set(key, Date.now());
  }

  /** After a commit: report, and measure what it programmed. */
  private finish(taken: Taken, stats: CommitStats): SyncResult {
    const { t0, changed, dirty, failed, conflicts } = taken;
    for (const [key, e] of failed) {
      this.uncommitted.set(key, changed.get(key) ?? Date.now());
      this.log.error('service not programmed; it keeps what was programmed before and is planned again next sync', {
        object: `Service ${key}`,
        error: errorText(e),
      });
    }
    for (const c of conflicts) {
      this.log.error('frontend already served by another service; skipped', {
        object: `Service ${c.service}`,
        field: conflictField(c.flags),
        frontend: c.frontend,
        owner: `Service ${c.owner}`,
      });
    }
    for (const t of this.reconciler.truncated?.splice(0) ?? []) {
      this.log.warn(`frontend has more endpoints than one service entry holds; ${MAX_SLOTS} of them serve`, {
        object: `Service ${t.service}`,
        frontend: t.frontend,
        endpoints: t.backends,
      });
    }
    this.reportOrphans(dirty);
    const now = Date.now();
    const programmingMs: number[] = [];
    const triggerLatenciesMs: number[] = [];
    for (const [key, since] of changed) {
      if (failed.has(key)) continue;
      programmingMs.push(now - since);
      const times = this.triggers.get(key);
      if (!times) continue;
      for (const t of times) triggerLatenciesMs.push(now - t);
      this.triggers.delete(key);
    }
    return { ...stats, services: dirty.length, ms: Number(process.hrtime.bigint() - t0) / 1e6, programmingMs, triggerLatenciesMs, failed: [...failed.keys()] };
  }

  /**
   * kube-proxy counts, per service port, an internal frontend under
   * internalTrafficPolicy=Local and the node-local side of an external one
   * under externalTrafficPolicy=Local that have endpoints, none of them
   * here: the plan marks those DROP_EMPTY and leaves them no backends.
   */
  private countNoLocal(key: ObjectKey, plan: ServicePlan | null): void {
    let internal = 0;
    let external = 0;
    let lastInternal = '';
    let lastExternal = '';
    for (const f of plan?.frontends ?? []) {
      if (f.backends.length > 0 || !(f.flags & SVC_F.DROP_EMPTY)) continue;
      if (f.flags & SVC_F.ITP_LOCAL && f.servicePort !== lastInternal) {
        internal++;
        lastInternal = f.servicePort;
      } else if (f.flags & SVC_F.ETP_LOCAL && f.scope === SCOPE_LOCAL && f.servicePort !== lastExternal) {
        external++;
        lastExternal = f.servicePort;
      }
    }
    const was = this.noLocal.get(key);
    this.noLocalEndpoints.internal += internal - (was?.[0] ?? 0);
    this.noLocalEndpoints.external += external - (was?.[1] ?? 0);
    if (internal || external) this.noLocal.set(key, [internal, external]);
    else if (was) this.noLocal.delete(key);
  }

  /**
   * Say which topology is in force for a service that asks for one
   * (spec.trafficDistribution) or whose hints narrow its endpoints, when
   * that changes: the field itself decides nothing (the EndpointSlice
   * controller's hints do, as with kube-proxy), so an operator needs to
   * see what came of it.
   */
  private showTopology(key: ObjectKey, trafficDistribution: string, plan: ServicePlan | null): void {
    let flags = 0;
    for (const f of plan?.frontends ?? []) flags |= f.flags;
    const topology = flags & SVC_F.TOPO_NODE ? 'same-node' : flags & SVC_F.TOPO_ZONE ? 'same-zone' : 'none';
    const said = this.topologyShown.get(key);
    if (!plan || (trafficDistribution === '' && topology === 'none')) {
      if (said !== undefined) this.topologyShown.delete(key);
      return;
    }
    const now = `${trafficDistribution}/${topology}`;
    if (said === now) return;
    this.topologyShown.set(key, now);
    this.log.info('topology', {
      object: `Service ${key}`,
      trafficDistribution: trafficDistribution || '(unset)',
      topology,
      ...(topology === 'none' ? { why: 'every endpoint serves: not every ready endpoint has a hint, or none is hinted for this node or its zone' } : {}),
    });
  }

  /** Endpoints times slice ports over every slice: what the backend table holds when all is planned. */
  private endpointPorts(): number {
    let n = 0;
    for (const slice of this.store.slices.values()) n += slice.nodeNames.length * slice.ports.length;
    return n;
  }

  private lost(service: ObjectKey, frontend: string): void {
    let fks = this.losers.get(service);
    if (!fks) this.losers.set(service, (fks = new Set()));
    fks.add(frontend);
  }

  /**
   * Warn once per slice whose Service is unknown, looking only at the
   * services this sync touched (a slice's service is marked changed with
   * it): no walk over every slice on every sync.
   */
  private reportOrphans(services: readonly ObjectKey[]): void {
    for (const svc of services) {
      if (this.store.services.has(svc)) {
        this.warnedOrphans.delete(svc); // its slices are no orphans (the usual case: nothing to build)
        continue;
      }
      const slices = this.store.slicesOf(svc);
      const warned = this.warnedOrphans.get(svc) ?? new Set<ObjectKey>();
      const now = new Set(slices.map((sl) => sl.key));
      for (const sl of slices) {
        if (warned.has(sl.key)) continue;
        this.log.warn('EndpointSlice refers to a Service that does not exist', {
          object: `EndpointSlice ${sl.key}`,
          field: 'metadata.labels[kubernetes.io/service-name]',
          service: sl.service,
        });
      }
      if (now.size > 0) this.warnedOrphans.set(svc, now);
      else this.warnedOrphans.delete(svc);
    }
  }
}
