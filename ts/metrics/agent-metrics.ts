/**
 * The agent's series. Names follow kube-proxy's where one exists
 * (sync_proxy_rules_duration_seconds, network_programming_duration_seconds),
 * prefixed weir_.
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
import { VERDICTS } from '../datapath/verdicts';
import type { Dataplane } from '../reconcile/dataplane';
import type { MapFill } from '../reconcile/reconciler';
import type { Runner } from '../runner/runner';

/** Seconds, from 0.5 ms to 60 s: sync and programming latencies span that. */
export const LATENCY_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** One histogram, as the agent's hot path sees it. */
export interface Observer {
  observe(seconds: number): void;
}

/** weir_drift_repaired_entries_total, as the drift check sees it. */
export interface DriftRepairs {
  inc(labels: { readonly map: string }, entries: number): void;
}

export interface AgentMetrics {
  readonly syncDuration: Observer;
  readonly programming: Observer;
  /** Map entries the periodic comparison with the desired state found different and rewrote or removed. */
  readonly driftRepairs: DriftRepairs;
  /** This agent's own registry; the first call loads prom-client and replays what was observed before. */
  registry(): PromClient.Registry;
}

export interface AgentMetricsOptions {
  readonly reconciler: Pick<Dataplane, 'frontendCount' | 'backendCount'>;
  readonly runner: () => Pick<Runner, 'syncs' | 'errors'> | undefined;
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
}

export function agentMetrics(opts: AgentMetricsOptions): AgentMetrics {
  let live: Live | null = null;
  let pending: Array<(m: Live) => void> = [];
  const record = (op: (m: Live) => void): void => {
    if (live) op(live);
    else pending.push(op);
  };
  return {
    syncDuration: { observe: (s) => record((m) => m.syncDuration.observe(s)) },
    programming: { observe: (s) => record((m) => m.programming.observe(s)) },
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
      help: 'Packets the BPF programs did not pass on untouched, by verdict (forward, revnat, reject_*, drop_*; frag_unmatched is passed on unchanged).',
      labelNames: ['verdict'] as const,
      registers,
      collect() {
        const totals = new Map<number, number>();
        for (const [k, v] of verdicts.dump()) {
          let n = 0;
          for (let c = 0; c < verdicts.cpus; c++) n += Number(v.readBigUInt64LE(c * 8));
          totals.set(Buffer.from(k, 'latin1').readUInt32LE(0), n);
        }
        this.reset();
        VERDICTS.forEach((verdict, i) => this.inc({ verdict }, totals.get(i) ?? 0));
      },
    });
  }
  return { registry, syncDuration, programming, driftRepairs };
}
