/**
 * The agent's series. Names follow kube-proxy's where one exists
 * (sync_proxy_rules_duration_seconds, network_programming_duration_seconds),
 * prefixed weir_.
 */
import { PinnedMap } from '../datapath/maps';
import { VERDICTS } from '../datapath/verdicts';
import { Dataplane } from '../reconcile/dataplane';
import type { MapFill } from '../reconcile/reconciler';
import { Runner } from '../runner/runner';
import { Collected, Counter, Histogram, LATENCY_BUCKETS, Registry } from './registry';

export interface AgentMetrics {
  readonly registry: Registry;
  readonly syncDuration: Histogram;
  readonly programming: Histogram;
  /** Map entries the periodic comparison with the desired state found different and rewrote or removed. */
  readonly driftRepairs: Counter;
}

/** ct / verdicts / mapFill: the BPF maps, absent in iptables mode. */
export function agentMetrics(opts: {
  reconciler: Dataplane;
  runner: () => Runner | undefined;
  ct?: PinnedMap;
  verdicts?: PinnedMap;
  mapFill?: () => readonly MapFill[];
}): AgentMetrics {
  const registry = new Registry();
  const syncDuration = registry.add(new Histogram('weir_sync_proxy_rules_duration_seconds', 'Time to plan and write one sync to the maps.', LATENCY_BUCKETS));
  const programming = registry.add(
    new Histogram('weir_network_programming_duration_seconds', 'Time from a Service or EndpointSlice change reaching weir to its maps being written.', LATENCY_BUCKETS),
  );
  const driftRepairs = registry.add(new Counter('weir_drift_repaired_entries_total', 'Map entries found different from the desired state by the periodic full comparison (--sync-period) and repaired, by map.'));
  registry.add(new Collected('weir_syncs_total', 'Successful syncs.', 'counter', () => [{ value: opts.runner()?.syncs ?? 0 }]));
  registry.add(new Collected('weir_sync_errors_total', 'Failed syncs (each is retried).', 'counter', () => [{ value: opts.runner()?.errors ?? 0 }]));
  registry.add(new Collected('weir_frontends', 'Programmed frontends (service address, port, protocol).', 'gauge', () => [{ value: opts.reconciler.frontendCount() }]));
  registry.add(new Collected('weir_backends', 'Programmed backends.', 'gauge', () => [{ value: opts.reconciler.backendCount() }]));
  const { ct, verdicts, mapFill } = opts;
  if (mapFill) {
    // Both from the agent's own state (no map walk per scrape): an alert on their ratio comes before a full map's error.
    registry.add(new Collected('weir_map_entries', 'Entries the agent keeps in each map it writes.', 'gauge', () => mapFill().map((f) => ({ labels: { map: f.map }, value: f.entries }))));
    registry.add(new Collected('weir_map_max_entries', 'How many entries each map the agent writes holds (--lb-map-entries for the service maps).', 'gauge', () => mapFill().map((f) => ({ labels: { map: f.map }, value: f.max }))));
  }
  if (!ct || !verdicts) return { registry, syncDuration, programming, driftRepairs };
  registry.add(new Collected('weir_conntrack_entries', 'Entries in the BPF conntrack map (two per flow).', 'gauge', () => [{ value: ct.count() }]));
  registry.add(
    new Collected('weir_packets_total', 'Packets the BPF programs did not pass on untouched, by verdict (forward, revnat, reject_*, drop_*).', 'counter', () => {
      const totals = new Map<number, number>();
      for (const [k, v] of verdicts.dump()) {
        let n = 0;
        for (let c = 0; c < verdicts.cpus; c++) n += Number(v.readBigUInt64LE(c * 8));
        totals.set(Buffer.from(k, 'latin1').readUInt32LE(0), n);
      }
      return VERDICTS.map((name, i) => ({ labels: { verdict: name }, value: totals.get(i) ?? 0 }));
    }),
  );
  return { registry, syncDuration, programming, driftRepairs };
}
