/**
 * The agent's series. Names follow kube-proxy's where one exists
 * (sync_proxy_rules_duration_seconds, network_programming_duration_seconds),
 * prefixed weir_. Beside them, kube-proxy's own series where weir measures
 * the same thing (kubeproxy_*, with kube-proxy's type, help, buckets and
 * labels; ip_family is always IPv4), so dashboards and alerts written for
 * kube-proxy work unchanged. Two differ from their weir_ namesakes:
 * kubeproxy_network_programming_duration_seconds measures from the
 * EndpointSlice controller's trigger time (the SLI), weir_'s from the change
 * reaching weir; kubeproxy_sync_proxy_rules_duration_seconds gets the same
 * observations in kube-proxy's buckets.
 *
 * prom-client is loaded on the first call of registry(), which the agent
 * makes when it starts the metrics server, after "ready": loading it (tens
 * of milliseconds) stays off the path to the first sync.
 * That sync's duration and programming latencies are observed before then,
 * so until the registry exists each observation is queued as a call and
 * replayed into the prom-client metric when the registry is made; from then
 * on it goes straight through. Replaying keeps prom-client's histogram the
 * only place buckets are counted (no second implementation to merge at
 * scrape time), and the queue is short: the server starts right after the
 * first sync. An agent without a metrics server makes no AgentMetrics, so
 * nothing queues forever.
 */
import type * as PromClient from 'prom-client';
import type { PinnedMap } from '../datapath/maps';
import { VERDICT_SLOTS } from '../datapath/verdicts';
import type { Dataplane } from '../reconcile/dataplane';
import type { MapFill } from '../reconcile/reconciler';
import type { Runner } from '../runner/runner';
import type { ChangeCounts } from '../model/store';
import type { AnswerSink } from '../health/health';

/** Seconds, from 0.5 ms to 60 s: sync and programming latencies span that. */
export const LATENCY_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** kube-proxy's buckets for kubeproxy_sync_proxy_rules_duration_seconds: 1 ms doubling 15 times (to 16.384 s). */
export const KUBE_SYNC_BUCKETS: readonly number[] = Array.from({ length: 15 }, (_, i) => 0.001 * 2 ** i);

/** kube-proxy's buckets for kubeproxy_network_programming_duration_seconds: 0, 0.25 s, 0.5 s, each second to 59 s, every 5 s to 115 s, every 30 s to 5 min. */
export const KUBE_PROGRAMMING_BUCKETS: readonly number[] = [
  0,
  0.25,
  0.5,
  ...Array.from({ length: 59 }, (_, i) => 1 + i),
  ...Array.from({ length: 12 }, (_, i) => 60 + 5 * i),
  ...Array.from({ length: 7 }, (_, i) => 120 + 30 * i),
];

/** The only address family weir programs (kube-proxy labels per family). */
const FAMILY = { ip_family: 'IPv4' } as const;

/** One histogram, as the agent's hot path sees it. */
export interface Observer {
  observe(seconds: number): void;
}

/** weir_drift_repaired_entries_total, as the drift check sees it. */
export interface DriftRepairs {
  inc(labels: { readonly map: string }, entries: number): void;
}

export interface AgentMetrics {
  /** Both sync duration histograms, weir_'s and kubeproxy_'s. */
  readonly syncDuration: Observer;
  readonly programming: Observer;
  /** kubeproxy_network_programming_duration_seconds: from a slice's trigger time to its change being programmed. */
  readonly triggerLatency: Observer;
  /** kubeproxy_proxy_healthz_total / kubeproxy_proxy_livez_total. */
  readonly answered: AnswerSink;
  /** Map entries the periodic comparison with the desired state found different and rewrote or removed. */
  readonly driftRepairs: DriftRepairs;
  /** This agent's own registry; the first call loads prom-client and replays what was observed before. */
  registry(): PromClient.Registry;
}

export interface AgentMetricsOptions {
  readonly reconciler: Pick<Dataplane, 'frontendCount' | 'backendCount'>;
  readonly runner: () => Pick<Runner, 'syncs' | 'errors' | 'lastSuccessAt' | 'lastQueuedAt'> | undefined;
  /** The store's Service and EndpointSlice change counts. */
  readonly changes: () => Readonly<ChangeCounts>;
  /** Service ports with a Local policy and no endpoint here, as the last sync left them (Syncer.noLocalEndpoints). */
  readonly noLocalEndpoints: () => { readonly internal: number; readonly external: number };
  /** ct / verdicts / mapFill: the BPF maps, absent in iptables mode. */
  readonly ct?: Pick<PinnedMap, 'count'>;
  readonly verdicts?: Pick<PinnedMap, 'dump' | 'cpus'>;
  readonly mapFill?: () => readonly MapFill[];
}

interface Live {
  readonly registry: PromClient.Registry;
  readonly syncDuration: PromClient.Histogram;
  readonly programming: PromClient.Histogram;
  readonly driftRepairs: PromClient.Counter<'map'>;
  readonly kubeSyncDuration: PromClient.Histogram<'ip_family'>;
  readonly kubeProgramming: PromClient.Histogram<'ip_family'>;
  readonly healthz: PromClient.Counter<'code'>;
  readonly livez: PromClient.Counter<'code'>;
}

export function agentMetrics(opts: AgentMetricsOptions): AgentMetrics {
  let live: Live | null = null;
  let pending: Array<(m: Live) => void> = [];
  const record = (op: (m: Live) => void): void => {
    if (live) op(live);
    else pending.push(op);
  };
  return {
    syncDuration: {
      observe: (s) =>
        record((m) => {
          m.syncDuration.observe(s);
          m.kubeSyncDuration.observe(FAMILY, s);
        }),
    },
    programming: { observe: (s) => record((m) => m.programming.observe(s)) },
    triggerLatency: { observe: (s) => record((m) => m.kubeProgramming.observe(FAMILY, s)) },
    answered: (path, code) => record((m) => (path === 'healthz' ? m.healthz : m.livez).inc({ code: String(code) })),
    driftRepairs: { inc: (labels, entries) => record((m) => m.driftRepairs.inc({ map: labels.map }, entries)) },
    registry: () => {
      if (!live) {
        const m = register(opts);
        for (const op of pending) op(m);
        pending = [];
        live = m;
      }
      return live.registry;
    },
  };
}

/** Every series, in exposition order, on a registry of their own (never prom-client's global one). */
function register(opts: AgentMetricsOptions): Live {
  const pc = require('prom-client') as typeof PromClient;
  const registry = new pc.Registry();
  const registers = [registry];
  const syncDuration = new pc.Histogram({ name: 'weir_sync_proxy_rules_duration_seconds', help: 'Time to plan and write one sync to the maps.', buckets: [...LATENCY_BUCKETS], registers });
  const programming = new pc.Histogram({
    name: 'weir_network_programming_duration_seconds',
    help: 'Time from a Service or EndpointSlice change reaching weir to its maps being written.',
    buckets: [...LATENCY_BUCKETS],
    registers,
  });
  const driftRepairs = new pc.Counter({
    name: 'weir_drift_repaired_entries_total',
    help: 'Map entries found different from the desired state by the periodic full comparison (--sync-period) and repaired, by map.',
    labelNames: ['map'] as const,
    registers,
  });
  // Computed at scrape time: a counter whose total lives elsewhere is reset and set to it.
  new pc.Counter({
    name: 'weir_syncs_total',
    help: 'Successful syncs.',
    registers,
    collect() {
      this.reset();
      this.inc(opts.runner()?.syncs ?? 0);
    },
  });
  new pc.Counter({
    name: 'weir_sync_errors_total',
    help: 'Failed syncs (each is retried).',
    registers,
    collect() {
      this.reset();
      this.inc(opts.runner()?.errors ?? 0);
    },
  });
  new pc.Gauge({
    name: 'weir_frontends',
    help: 'Programmed frontends (service address, port, protocol).',
    registers,
    collect() {
      this.set(opts.reconciler.frontendCount());
    },
  });
  new pc.Gauge({
    name: 'weir_backends',
    help: 'Programmed backends.',
    registers,
    collect() {
      this.set(opts.reconciler.backendCount());
    },
  });
  const { ct, verdicts, mapFill } = opts;
  if (mapFill) {
    // Both from the agent's own state (no map walk per scrape): an alert on their ratio comes before a full map's error.
    // Reset first: a map the agent no longer reports leaves the exposition.
    new pc.Gauge({
      name: 'weir_map_entries',
      help: 'Entries the agent keeps in each map it writes.',
      labelNames: ['map'] as const,
      registers,
      collect() {
        this.reset();
        for (const f of mapFill()) this.set({ map: f.map }, f.entries);
      },
    });
    new pc.Gauge({
      name: 'weir_map_max_entries',
      help: 'How many entries each map the agent writes holds (--lb-map-entries for the service maps).',
      labelNames: ['map'] as const,
      registers,
      collect() {
        this.reset();
        for (const f of mapFill()) this.set({ map: f.map }, f.max);
      },
    });
  }
  if (ct && verdicts) {
    new pc.Gauge({
      name: 'weir_conntrack_entries',
      help: 'Entries in the BPF conntrack map (two per flow).',
      registers,
      collect() {
        this.set(ct.count());
      },
    });
    new pc.Counter({
      name: 'weir_packets_total',
      help: 'Packets the BPF programs did not pass on untouched, by verdict (forward, revnat, reject_*, drop_*, icmp_local* for ICMP errors the node generated; frag_unmatched and pass_* are passed on unchanged) and IP family.',
      labelNames: ['verdict', 'family'] as const,
      registers,
      collect() {
        const totals = new Map<number, number>();
        for (const [k, v] of verdicts.dump()) {
          let n = 0;
          for (let c = 0; c < verdicts.cpus; c++) n += Number(v.readBigUInt64LE(c * 8));
          totals.set(Buffer.from(k, 'latin1').readUInt32LE(0), n);
        }
        this.reset();
        for (const slot of VERDICT_SLOTS) this.inc({ verdict: slot.reason, family: `ipv${slot.family}` }, totals.get(slot.index) ?? 0);
      },
    });
  }
  return { registry, syncDuration, programming, driftRepairs, ...registerKubeProxy(pc, registers, opts) };
}

/** kube-proxy's series (pkg/proxy/metrics), as far as weir has their meaning. */
function registerKubeProxy(pc: typeof PromClient, registers: PromClient.Registry[], opts: AgentMetricsOptions): Pick<Live, 'kubeSyncDuration' | 'kubeProgramming' | 'healthz' | 'livez'> {
  const family = ['ip_family'] as const;
  const kubeSyncDuration = new pc.Histogram({
    name: 'kubeproxy_sync_proxy_rules_duration_seconds',
    help: 'SyncProxyRules latency in seconds',
    labelNames: family,
    buckets: [...KUBE_SYNC_BUCKETS],
    registers,
  });
  const kubeProgramming = new pc.Histogram({
    name: 'kubeproxy_network_programming_duration_seconds',
    help: 'In Cluster Network Programming Latency in seconds',
    labelNames: family,
    buckets: [...KUBE_PROGRAMMING_BUCKETS],
    registers,
  });
  // A histogram with a label shows no series until its first observation;
  // kube-proxy's shows one at zero from the start, as these do.
  kubeSyncDuration.zero(FAMILY);
  kubeProgramming.zero(FAMILY);
  const timestamp = (name: string, help: string, ms: () => number | undefined): void => {
    new pc.Gauge({
      name,
      help,
      labelNames: family,
      registers,
      collect() {
        const t = ms();
        this.reset(); // no sample before the first one
        if (t) this.set(FAMILY, t / 1000);
      },
    });
  };
  timestamp('kubeproxy_sync_proxy_rules_last_timestamp_seconds', 'The last time proxy rules were successfully synced', () => opts.runner()?.lastSuccessAt);
  timestamp('kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds', 'The last time a sync of proxy rules was queued', () => opts.runner()?.lastQueuedAt);
  const count = (name: string, help: string, type: 'counter' | 'gauge', n: (c: Readonly<ChangeCounts>) => number): void => {
    if (type === 'gauge') {
      new pc.Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(n(opts.changes()));
        },
      });
      return;
    }
    new pc.Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(n(opts.changes()));
      },
    });
  };
  count('kubeproxy_sync_proxy_rules_endpoint_changes_pending', 'Pending proxy rules Endpoint changes', 'gauge', (c) => c.endpointsPending);
  count('kubeproxy_sync_proxy_rules_endpoint_changes_total', 'Cumulative proxy rules Endpoint changes', 'counter', (c) => c.endpoints);
  count('kubeproxy_sync_proxy_rules_service_changes_pending', 'Pending proxy rules Service changes', 'gauge', (c) => c.servicesPending);
  count('kubeproxy_sync_proxy_rules_service_changes_total', 'Cumulative proxy rules Service changes', 'counter', (c) => c.services);
  new pc.Gauge({
    name: 'kubeproxy_sync_proxy_rules_no_local_endpoints_total',
    help: 'Number of services with a Local traffic policy and no endpoints',
    labelNames: ['ip_family', 'traffic_policy'] as const,
    registers,
    collect() {
      const n = opts.noLocalEndpoints();
      this.set({ ...FAMILY, traffic_policy: 'internal' }, n.internal);
      this.set({ ...FAMILY, traffic_policy: 'external' }, n.external);
    },
  });
  const healthz = new pc.Counter({ name: 'kubeproxy_proxy_healthz_total', help: 'Cumulative proxy healthz HTTP status', labelNames: ['code'] as const, registers });
  const livez = new pc.Counter({ name: 'kubeproxy_proxy_livez_total', help: 'Cumulative proxy livez HTTP status', labelNames: ['code'] as const, registers });
  return { kubeSyncDuration, kubeProgramming, healthz, livez };
}
