/**
 * The agent's /metrics exposition: every series with its name, type, help
 * and labels; histogram buckets and values after observations, including
 * those made before the registry (and prom-client) existed; collected series
 * read at scrape time; one registry per agent; prom-client loaded only when
 * the registry is first asked for; the HTTP server.
 */
import { execFileSync } from 'node:child_process';
import * as http from 'node:http';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { AgentMetricsOptions, LATENCY_BUCKETS, agentMetrics } from '../../ts/metrics/agent-metrics';
import { startMetricsServer } from '../../ts/metrics/server';
import { VERDICTS, verdictIndex } from '../../ts/datapath/verdicts';
import type { MapFill } from '../../ts/reconcile/reconciler';

/** An agent's state as the collected series read it; tests change it between scrapes. */
function world() {
  const state = {
    frontends: 3,
    backends: 5,
    syncs: 7,
    errors: 1,
    ct: 4,
    lastSuccessAt: 1_700_000_000_500,
    lastQueuedAt: 1_700_000_001_250,
    changes: { services: 12, endpoints: 30, servicesPending: 1, endpointsPending: 2 },
    noLocal: { internal: 3, external: 1 },
    fill: [
      { map: 'weir1_svc', entries: 4, max: 262144 },
      { map: 'weir1_be', entries: 2, max: 65536 },
    ] as MapFill[],
  };
  const key = (i: number): string => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(i);
    return b.toString('latin1');
  };
  /** Two CPUs' counters for one verdict. */
  const perCpu = (a: number, b: number): Buffer => {
    const v = Buffer.alloc(16);
    v.writeBigUInt64LE(BigInt(a), 0);
    v.writeBigUInt64LE(BigInt(b), 8);
    return v;
  };
  const bpf: AgentMetricsOptions = {
    reconciler: { frontendCount: () => state.frontends, backendCount: () => state.backends },
    runner: () => ({ syncs: state.syncs, errors: state.errors, lastSuccessAt: state.lastSuccessAt, lastQueuedAt: state.lastQueuedAt }),
    changes: () => state.changes,
    noLocalEndpoints: () => state.noLocal,
    ct: { count: () => state.ct },
    verdicts: {
      cpus: 2,
      dump: () => [
        [key(VERDICTS.indexOf('forward')), perCpu(10, 5)],
        [key(VERDICTS.indexOf('reject_no_endpoints')), perCpu(0, 2)],
        [key(verdictIndex('forward', 6)), perCpu(3, 4)],
      ],
    },
    mapFill: () => state.fill,
  };
  const iptables: AgentMetricsOptions = { reconciler: bpf.reconciler, runner: bpf.runner, changes: bpf.changes, noLocalEndpoints: bpf.noLocalEndpoints };
  return { state, bpf, iptables };
}

/** The lines of one series family, from its HELP line to the next family's. */
function family(text: string, name: string): string[] {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.startsWith(`# HELP ${name} `));
  assert.ok(start >= 0, `no ${name} in\n${text}`);
  const end = lines.findIndex((l, i) => i > start + 1 && l.startsWith('# HELP '));
  return lines.slice(start, end < 0 ? lines.length : end).filter((l) => l !== '');
}

/** A histogram family with `observations` in LATENCY_BUCKETS, as the text format spells it. */
function histogram(name: string, help: string, observations: number[]): string[] {
  const le = (b: number): number => observations.filter((o) => o <= b).length;
  return [
    `# HELP ${name} ${help}`,
    `# TYPE ${name} histogram`,
    ...LATENCY_BUCKETS.map((b) => `${name}_bucket{le="${b}"} ${le(b)}`),
    `${name}_bucket{le="+Inf"} ${observations.length}`,
    `${name}_sum ${observations.reduce((a, b) => a + b, 0)}`,
    `${name}_count ${observations.length}`,
  ];
}

/** kube-proxy's series (pkg/proxy/metrics/metrics.go) that weir serves, with their types, in exposition order. */
const KUBE_TYPES = [
  'kubeproxy_sync_proxy_rules_duration_seconds histogram',
  'kubeproxy_network_programming_duration_seconds histogram',
  'kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge',
  'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds gauge',
  'kubeproxy_sync_proxy_rules_endpoint_changes_pending gauge',
  'kubeproxy_sync_proxy_rules_endpoint_changes_total counter',
  'kubeproxy_sync_proxy_rules_service_changes_pending gauge',
  'kubeproxy_sync_proxy_rules_service_changes_total counter',
  'kubeproxy_sync_proxy_rules_no_local_endpoints_total gauge',
  'kubeproxy_proxy_healthz_total counter',
  'kubeproxy_proxy_livez_total counter',
];

const SYNC_HELP = 'Time to plan and write one sync to the maps.';
const PROG_HELP = 'Time from a Service or EndpointSlice change reaching weir to its maps being written.';

test('BPF mode: every series with its type, help, labels and values', async () => {
  const { bpf } = world();
  const m = agentMetrics(bpf);
  const registry = m.registry();
  m.syncDuration.observe(0.003);
  m.syncDuration.observe(0.2);
  m.programming.observe(0.0004);
  m.programming.observe(90);
  m.driftRepairs.inc({ map: 'weir1_revnat' }, 2);
  m.driftRepairs.inc({ map: 'weir1_revnat' }, 1);
  m.driftRepairs.inc({ map: 'weir1_be' }, 1);
  const text = await registry.metrics();

  const names = text
    .split('\n')
    .filter((l) => l.startsWith('# TYPE '))
    .map((l) => l.slice('# TYPE '.length));
  assert.equal(names, [
    'weir_sync_proxy_rules_duration_seconds histogram',
    'weir_network_programming_duration_seconds histogram',
    'weir_drift_repaired_entries_total counter',
    'weir_syncs_total counter',
    'weir_sync_errors_total counter',
    'weir_frontends gauge',
    'weir_backends gauge',
    'weir_map_entries gauge',
    'weir_map_max_entries gauge',
    'weir_conntrack_entries gauge',
    'weir_packets_total counter',
    ...KUBE_TYPES,
  ]);
  // The bounds themselves, spelled out: both histograms, from 0.5 ms to 60 s.
  for (const name of ['weir_sync_proxy_rules_duration_seconds', 'weir_network_programming_duration_seconds']) {
    const le = family(text, name).flatMap((l) => /_bucket\{le="([^"]+)"\}/.exec(l)?.[1] ?? []);
    assert.equal(le, ['0.0005', '0.001', '0.0025', '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30', '60', '+Inf'], name);
  }
  assert.equal(family(text, 'weir_sync_proxy_rules_duration_seconds'), histogram('weir_sync_proxy_rules_duration_seconds', SYNC_HELP, [0.003, 0.2]));
  // 90 s is past the last bucket: only +Inf, _sum and _count have it.
  assert.equal(family(text, 'weir_network_programming_duration_seconds'), histogram('weir_network_programming_duration_seconds', PROG_HELP, [0.0004, 90]));
  assert.ok(text.includes('weir_network_programming_duration_seconds_bucket{le="60"} 1\n'));
  assert.ok(text.includes('weir_network_programming_duration_seconds_bucket{le="+Inf"} 2\n'));
  assert.equal(family(text, 'weir_drift_repaired_entries_total'), [
    '# HELP weir_drift_repaired_entries_total Map entries found different from the desired state by the periodic full comparison (--sync-period) and repaired, by map.',
    '# TYPE weir_drift_repaired_entries_total counter',
    'weir_drift_repaired_entries_total{map="weir1_revnat"} 3',
    'weir_drift_repaired_entries_total{map="weir1_be"} 1',
  ]);
  assert.equal(family(text, 'weir_syncs_total'), ['# HELP weir_syncs_total Successful syncs.', '# TYPE weir_syncs_total counter', 'weir_syncs_total 7']);
  assert.equal(family(text, 'weir_sync_errors_total'), ['# HELP weir_sync_errors_total Failed syncs (each is retried).', '# TYPE weir_sync_errors_total counter', 'weir_sync_errors_total 1']);
  assert.equal(family(text, 'weir_frontends'), ['# HELP weir_frontends Programmed frontends (service address, port, protocol).', '# TYPE weir_frontends gauge', 'weir_frontends 3']);
  assert.equal(family(text, 'weir_backends'), ['# HELP weir_backends Programmed backends.', '# TYPE weir_backends gauge', 'weir_backends 5']);
  assert.equal(family(text, 'weir_map_entries'), [
    '# HELP weir_map_entries Entries the agent keeps in each map it writes.',
    '# TYPE weir_map_entries gauge',
    'weir_map_entries{map="weir1_svc"} 4',
    'weir_map_entries{map="weir1_be"} 2',
  ]);
  assert.equal(family(text, 'weir_map_max_entries'), [
    '# HELP weir_map_max_entries How many entries each map the agent writes holds (--lb-map-entries for the service maps).',
    '# TYPE weir_map_max_entries gauge',
    'weir_map_max_entries{map="weir1_svc"} 262144',
    'weir_map_max_entries{map="weir1_be"} 65536',
  ]);
  assert.equal(family(text, 'weir_conntrack_entries'), [
    '# HELP weir_conntrack_entries Entries in the BPF conntrack map (two per flow).',
    '# TYPE weir_conntrack_entries gauge',
    'weir_conntrack_entries 4',
  ]);
  // Every verdict, summed over CPUs; one the map has no entry for is 0.
  assert.equal(family(text, 'weir_packets_total'), [
    '# HELP weir_packets_total Packets the BPF programs did not pass on untouched, by verdict (forward, revnat, reject_*, drop_*, icmp_local* for ICMP errors the node generated; frag_unmatched and pass_* are passed on unchanged) and IP family.',
    '# TYPE weir_packets_total counter',
    ...VERDICTS.map((v) => `weir_packets_total{verdict="${v}",family="ipv4"} ${v === 'forward' ? 15 : v === 'reject_no_endpoints' ? 2 : 0}`),
    ...VERDICTS.map((v) => `weir_packets_total{verdict="${v}",family="ipv6"} ${v === 'forward' ? 7 : 0}`),
  ]);
});

test("kube-proxy's series: kube-proxy's help, buckets and labels; values from the agent's state", async () => {
  const { state, iptables } = world();
  const m = agentMetrics(iptables);
  // Before the registry: replayed like the others.
  m.syncDuration.observe(0.003);
  m.triggerLatency.observe(2.5);
  m.answered('healthz', 200);
  const registry = m.registry();
  m.syncDuration.observe(20);
  m.triggerLatency.observe(0.1);
  m.answered('healthz', 200);
  m.answered('healthz', 503);
  m.answered('livez', 200);
  const text = await registry.metrics();
  const types = text.split('\n').filter((l) => l.startsWith('# TYPE kubeproxy_'));
  assert.equal(
    types.map((l) => l.slice('# TYPE '.length)),
    KUBE_TYPES,
  );
  // kube-proxy's buckets: ExponentialBuckets(0.001, 2, 15), and MergeBuckets(0; 0.25, 0.5; 1..59; 60..115 by 5; 120..300 by 30).
  const sync = family(text, 'kubeproxy_sync_proxy_rules_duration_seconds');
  assert.is(sync[0], '# HELP kubeproxy_sync_proxy_rules_duration_seconds SyncProxyRules latency in seconds');
  assert.equal(
    sync.flatMap((l) => /_bucket\{le="([^"]+)",ip_family="IPv4"\}/.exec(l)?.[1] ?? []),
    ['0.001', '0.002', '0.004', '0.008', '0.016', '0.032', '0.064', '0.128', '0.256', '0.512', '1.024', '2.048', '4.096', '8.192', '16.384', '+Inf'],
  );
  assert.ok(sync.includes('kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.004",ip_family="IPv4"} 1'), sync.join('\n'));
  assert.ok(sync.includes('kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="16.384",ip_family="IPv4"} 1'));
  assert.ok(sync.includes('kubeproxy_sync_proxy_rules_duration_seconds_sum{ip_family="IPv4"} 20.003'));
  assert.ok(sync.includes('kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"} 2'));
  const prog = family(text, 'kubeproxy_network_programming_duration_seconds');
  assert.is(prog[0], '# HELP kubeproxy_network_programming_duration_seconds In Cluster Network Programming Latency in seconds');
  const le = prog.flatMap((l) => /_bucket\{le="([^"]+)",ip_family="IPv4"\}/.exec(l)?.[1] ?? []);
  const want = ['0', '0.25', '0.5'];
  for (let s = 1; s <= 59; s++) want.push(String(s));
  for (let s = 60; s <= 115; s += 5) want.push(String(s));
  for (let s = 120; s <= 300; s += 30) want.push(String(s));
  assert.equal(le, [...want, '+Inf']);
  assert.ok(prog.includes('kubeproxy_network_programming_duration_seconds_bucket{le="0.25",ip_family="IPv4"} 1'));
  assert.ok(prog.includes('kubeproxy_network_programming_duration_seconds_bucket{le="2",ip_family="IPv4"} 1'));
  assert.ok(prog.includes('kubeproxy_network_programming_duration_seconds_bucket{le="3",ip_family="IPv4"} 2'));
  assert.ok(prog.includes('kubeproxy_network_programming_duration_seconds_sum{ip_family="IPv4"} 2.6'));
  assert.ok(prog.includes('kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"} 2'));
  assert.equal(family(text, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds').slice(1), [
    '# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge',
    'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"} 1700000000.5',
  ]);
  assert.equal(family(text, 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds'), [
    '# HELP kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds The last time a sync of proxy rules was queued',
    '# TYPE kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds gauge',
    'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family="IPv4"} 1700000001.25',
  ]);
  assert.equal(family(text, 'kubeproxy_sync_proxy_rules_endpoint_changes_pending'), [
    '# HELP kubeproxy_sync_proxy_rules_endpoint_changes_pending Pending proxy rules Endpoint changes',
    '# TYPE kubeproxy_sync_proxy_rules_endpoint_changes_pending gauge',
    'kubeproxy_sync_proxy_rules_endpoint_changes_pending 2',
  ]);
  assert.equal(family(text, 'kubeproxy_sync_proxy_rules_endpoint_changes_total'), [
    '# HELP kubeproxy_sync_proxy_rules_endpoint_changes_total Cumulative proxy rules Endpoint changes',
    '# TYPE kubeproxy_sync_proxy_rules_endpoint_changes_total counter',
    'kubeproxy_sync_proxy_rules_endpoint_changes_total 30',
  ]);
  assert.equal(family(text, 'kubeproxy_sync_proxy_rules_service_changes_pending').slice(1), [
    '# TYPE kubeproxy_sync_proxy_rules_service_changes_pending gauge',
    'kubeproxy_sync_proxy_rules_service_changes_pending 1',
  ]);
  assert.equal(family(text, 'kubeproxy_sync_proxy_rules_service_changes_total').slice(1), [
    '# TYPE kubeproxy_sync_proxy_rules_service_changes_total counter',
    'kubeproxy_sync_proxy_rules_service_changes_total 12',
  ]);
  assert.equal(family(text, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total'), [
    '# HELP kubeproxy_sync_proxy_rules_no_local_endpoints_total Number of services with a Local traffic policy and no endpoints',
    '# TYPE kubeproxy_sync_proxy_rules_no_local_endpoints_total gauge',
    'kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="internal"} 3',
    'kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="external"} 1',
  ]);
  assert.equal(family(text, 'kubeproxy_proxy_healthz_total'), [
    '# HELP kubeproxy_proxy_healthz_total Cumulative proxy healthz HTTP status',
    '# TYPE kubeproxy_proxy_healthz_total counter',
    'kubeproxy_proxy_healthz_total{code="200"} 2',
    'kubeproxy_proxy_healthz_total{code="503"} 1',
  ]);
  assert.equal(family(text, 'kubeproxy_proxy_livez_total'), [
    '# HELP kubeproxy_proxy_livez_total Cumulative proxy livez HTTP status',
    '# TYPE kubeproxy_proxy_livez_total counter',
    'kubeproxy_proxy_livez_total{code="200"} 1',
  ]);
  // Read at each scrape; a runner that never synced has no timestamps.
  state.changes = { services: 13, endpoints: 30, servicesPending: 0, endpointsPending: 0 };
  state.lastSuccessAt = 0;
  const again = await registry.metrics();
  assert.ok(again.includes('\nkubeproxy_sync_proxy_rules_service_changes_total 13\n'));
  assert.ok(again.includes('\nkubeproxy_sync_proxy_rules_endpoint_changes_pending 0\n'));
  assert.equal(family(again, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds').slice(2), []);
});

test('an observation made before the registry exists is in the first scrape', async () => {
  const { iptables } = world();
  const m = agentMetrics(iptables);
  // The first sync, before "ready": no registry, no prom-client metric yet.
  m.syncDuration.observe(0.004);
  m.programming.observe(0.03);
  m.programming.observe(0.0007);
  m.driftRepairs.inc({ map: 'weir1_svc' }, 2);
  const registry = m.registry();
  assert.is(m.registry(), registry, 'one registry per agent, made once');
  const first = await registry.metrics();
  assert.equal(family(first, 'weir_sync_proxy_rules_duration_seconds'), histogram('weir_sync_proxy_rules_duration_seconds', SYNC_HELP, [0.004]));
  assert.equal(family(first, 'weir_network_programming_duration_seconds'), histogram('weir_network_programming_duration_seconds', PROG_HELP, [0.03, 0.0007]));
  assert.ok(first.includes('\nweir_drift_repaired_entries_total{map="weir1_svc"} 2\n'), first);
  // Observations after the registry exists add to the replayed ones, once each.
  m.syncDuration.observe(0.5);
  const second = await registry.metrics();
  assert.equal(family(second, 'weir_sync_proxy_rules_duration_seconds'), histogram('weir_sync_proxy_rules_duration_seconds', SYNC_HELP, [0.004, 0.5]));
  assert.equal(family(second, 'weir_network_programming_duration_seconds'), histogram('weir_network_programming_duration_seconds', PROG_HELP, [0.03, 0.0007]));
});

test('no observations: histograms at zero, the labelled counter with no sample', async () => {
  const text = await agentMetrics(world().iptables).registry().metrics();
  assert.equal(family(text, 'weir_sync_proxy_rules_duration_seconds'), histogram('weir_sync_proxy_rules_duration_seconds', SYNC_HELP, []));
  assert.equal(family(text, 'weir_drift_repaired_entries_total').slice(2), []);
});

test('iptables mode: no series read from BPF maps', async () => {
  const text = await agentMetrics(world().iptables).registry().metrics();
  for (const name of ['weir_map_entries', 'weir_map_max_entries', 'weir_conntrack_entries', 'weir_packets_total']) assert.not.ok(text.includes(name), name);
  for (const name of ['weir_syncs_total 7', 'weir_sync_errors_total 1', 'weir_frontends 3', 'weir_backends 5']) assert.ok(text.includes(`\n${name}\n`), name);
});

test('collected series are read at each scrape; a map no longer reported leaves', async () => {
  const { state, bpf } = world();
  const registry = agentMetrics(bpf).registry();
  await registry.metrics();
  state.syncs = 9;
  state.frontends = 0;
  state.ct = 10;
  state.fill = [{ map: 'weir1_be', entries: 3, max: 65536 }];
  const text = await registry.metrics();
  assert.ok(text.includes('\nweir_syncs_total 9\n'));
  assert.ok(text.includes('\nweir_frontends 0\n'));
  assert.ok(text.includes('\nweir_conntrack_entries 10\n'));
  assert.equal(family(text, 'weir_map_entries').slice(2), ['weir_map_entries{map="weir1_be"} 3']);
  assert.ok(text.includes('\nweir_packets_total{verdict="forward",family="ipv4"} 15\n'), 'a counter set from the map is not added up across scrapes');
});

test("several agents in one process: separate registries, none on prom-client's global one", async () => {
  const { bpf } = world();
  const a = agentMetrics(bpf);
  const b = agentMetrics(bpf);
  a.syncDuration.observe(0.001);
  const [ta, tb] = [await a.registry().metrics(), await b.registry().metrics()];
  assert.ok(ta.includes('\nweir_sync_proxy_rules_duration_seconds_count 1\n'));
  assert.ok(tb.includes('\nweir_sync_proxy_rules_duration_seconds_count 0\n'));
  const { register } = require('prom-client') as typeof import('prom-client');
  assert.is(register.getSingleMetric('weir_syncs_total'), undefined);
});

test('prom-client is loaded by the first registry() call, not before', () => {
  const mod = path.resolve(__dirname, '../../ts/metrics/agent-metrics.js');
  const script = `
    const loaded = () => Object.keys(require.cache).some((k) => k.includes('/node_modules/prom-client/'));
    const m = require(${JSON.stringify(mod)}).agentMetrics({ reconciler: { frontendCount: () => 0, backendCount: () => 0 }, runner: () => undefined });
    m.syncDuration.observe(0.01);
    m.driftRepairs.inc({ map: 'x' }, 1);
    const before = loaded();
    m.registry();
    console.log(JSON.stringify({ before, after: loaded() }));`;
  const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })) as { before: boolean; after: boolean };
  assert.equal(out, { before: false, after: true });
});

function get(port: number, urlPath: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: urlPath }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
      })
      .on('error', reject);
  });
}

test("server: GET /metrics is the registry's exposition in its content type; other paths 404; a failing collect 500", async () => {
  const { state, bpf } = world();
  let failing = false;
  const m = agentMetrics({
    ...bpf,
    ct: {
      count: () => {
        if (failing) throw new Error('ct map gone');
        return state.ct;
      },
    },
  });
  m.syncDuration.observe(0.002);
  const registry = m.registry();
  const server = await startMetricsServer({ host: '127.0.0.1', port: 0, registry });
  try {
    const r = await get(server.port, '/metrics?x=1');
    assert.is(r.status, 200);
    assert.is(r.type, 'text/plain; version=0.0.4; charset=utf-8');
    assert.is(r.body, await registry.metrics());
    assert.ok(r.body.includes('\nweir_sync_proxy_rules_duration_seconds_bucket{le="0.0025"} 1\n'));
    assert.is((await get(server.port, '/other')).status, 404);
    failing = true;
    const bad = await get(server.port, '/metrics');
    assert.is(bad.status, 500);
    assert.match(bad.body, /ct map gone/);
  } finally {
    await server.close();
  }
});

test.run();
