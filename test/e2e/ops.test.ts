/**
 * Operating weir: health and metrics endpoints, and the inspection commands
 * (backends, ct, trace) against a live agent and real traffic.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box, REPO, waitFor } from '../box/box';
import type { CtEntry, TraceResult } from '../../ts/cli/inspect';

const s = suite<{ box: Box; agent: Agent; servingAt: number }>('operations');

const MANIFEST = (a: string, b: string): string => `apiVersion: v1
kind: Service
metadata: {name: web, namespace: o}
spec:
  clusterIP: 10.96.7.1
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: o, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [${a}], nodeName: n1}, {addresses: [${b}], nodeName: n1}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: o}
spec:
  clusterIP: 10.96.7.2
  ports: [{port: 80}]
`;

async function http(box: Box, url: string): Promise<{ status: string; body: string }> {
  const r = await box.exec(box.node('n1').ns, ['curl', '-s', '-m', '3', '-w', '\\n%{http_code}', url]);
  const lines = r.stdout.split('\n');
  return { status: lines.pop()!, body: lines.join('\n') };
}

s.before(async (ctx) => {
  ctx.box = await Box.create({ nodes: 1 });
  for (const p of ['a', 'b']) {
    await ctx.box.addPod('n1', p);
    await ctx.box.startEcho(p, { tcp: [8080] });
  }
  await ctx.box.addPod('n1', 'client');
  ctx.box.writeManifest('web.yaml', MANIFEST(ctx.box.pod('a').ip, ctx.box.pod('b').ip));
  ctx.agent = await ctx.box.startAgent('n1', ['--health-addr', '127.0.0.1:10256', '--metrics-addr', '127.0.0.1:10249']);
  await ctx.agent.proc.waitFor(/"msg":"metrics server listening"/, 5000);
  ctx.servingAt = Date.now();
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

s('the agent logs one line naming the devices and the cgroup it attached to', async ({ box, agent }) => {
  await agent.proc.waitFor(/"msg":"dataplane attached/, 5000);
  const line = agent
    .logs()
    .split('\n')
    .find((l) => l.includes('"msg":"dataplane attached'));
  const summary = JSON.parse(line!) as Record<string, unknown>;
  // Its own namespace, not the machine's: no warning about the default globs.
  assert.is(summary['level'], 'info');
  assert.is(summary['msg'], 'dataplane attached');
  assert.is(summary['rootNetns'], false);
  assert.is(summary['externalDevices'], 'eth0');
  assert.is(summary['hostDevices'], 'lo');
  const pods = ['a', 'b', 'client'].map((p) => box.pod(p).hostDev).sort();
  assert.is(summary['podDevices'], pods.join(','));
  assert.is(summary['podDeviceCount'], 3);
  assert.is(summary['cgroup'], box.cgroupDir('n1'));
});

s("/healthz and /livez answer 200 with kube-proxy's fields", async ({ box }) => {
  for (const p of ['/healthz', '/livez']) {
    const r = await http(box, `http://127.0.0.1:10256${p}`);
    assert.is(r.status, '200');
    const body = JSON.parse(r.body) as { lastUpdated: string; currentTime: string };
    assert.ok(Date.parse(body.lastUpdated) <= Date.parse(body.currentTime));
  }
});

s('weir backends lists what the maps hold', async ({ box }) => {
  const list = JSON.parse(await box.weir('n1', ['backends', '--json'])) as Array<{ addr: string; port: number }>;
  assert.equal(list.map((b) => `${b.addr}:${b.port}`).sort(), [`${box.pod('a').ip}:8080`, `${box.pod('b').ip}:8080`]);
});

s('weir ct shows both directions of a live flow; trace follows it without touching conntrack', async ({ box }) => {
  const hold = await box.hold('client', '10.96.7.1:80', { durationMs: 2500, intervalMs: 100 });
  const ct = JSON.parse(await box.weir('n1', ['ct', '--json'])) as CtEntry[];
  const fwd = ct.find((e) => e.dir === 'fwd' && e.dst === '10.96.7.1:80' && e.src.startsWith(`${box.pod('client').ip}:`));
  assert.ok(fwd, JSON.stringify(ct));
  assert.ok(
    ct.some((e) => e.dir === 'rev' && e.dst === fwd.src),
    'reply entry',
  );

  const est = JSON.parse(await box.weir('n1', ['trace', '--src', fwd.src, '--dst', '10.96.7.1:80', '--json'])) as TraceResult;
  assert.is(est.verdict, 'forward');
  assert.is(est.established, true);
  const backend = (await hold.result()).attempts[0]!.backend!;
  assert.is(est.out!.dst, `${box.pod(backend).ip}:8080`, 'trace agrees with where the flow really goes');

  const before = (JSON.parse(await box.weir('n1', ['ct', '--json'])) as CtEntry[]).length;
  const fresh = JSON.parse(await box.weir('n1', ['trace', '--src', box.pod('client').ip, '--dst', '10.96.7.1:80', '--json'])) as TraceResult;
  assert.is(fresh.established, false);
  assert.equal(fresh.possibleBackends.sort(), [`${box.pod('a').ip}:8080`, `${box.pod('b').ip}:8080`]);
  assert.ok(fresh.possibleBackends.includes(fresh.out!.dst));
  const after = (JSON.parse(await box.weir('n1', ['ct', '--json'])) as CtEntry[]).length;
  assert.is(after, before, 'trace left conntrack alone');
});

s('weir trace explains rejects, drops and packets that are not for a service', async ({ box }) => {
  const reject = await box.weir('n1', ['trace', '--src', box.pod('client').ip, '--dst', '10.96.7.2:80']);
  assert.match(reject, /REJECT, the service has no endpoints \(TCP RST sent back\)/);
  const udp = await box.weir('n1', ['trace', '--src', box.pod('client').ip, '--dst', '10.96.7.2:80', '--proto', 'udp']);
  assert.match(udp, /not a service packet/);
  const other = await box.weir('n1', ['trace', '--src', box.pod('client').ip, '--dst', `${box.pod('a').ip}:8080`]);
  assert.match(other, /not a service packet, passed on untouched/);
  // The loopback path: a node socket bound to 127.0.0.1 is masqueraded to the node IP; the same source from a pod is forged.
  const host = await box.weir('n1', ['trace', '--from', 'host', '--src', '127.0.0.1', '--dst', '10.96.7.1:80']);
  assert.match(host, /from a node socket on lo: new flow to one of .*, source NATed to 192\.168\.77\.10:6\d{4}/);
  const forged = await box.weir('n1', ['trace', '--src', '127.0.0.1', '--dst', '10.96.7.1:80']);
  assert.match(forged, /from a pod: DROP \(drop_loopback_source\)/);
  const bad = await box.exec(box.node('n1').ns, ['node', `${__dirname}/../../ts/cli/main.js`, 'trace', '--dst', '10.96.7.1', '--bpffs-root', box.node('n1').pinRoot]);
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /--src is required|--dst: expected IP:PORT/);
});

s('/metrics: sync and programming latency, gauges, verdicts, errors', async ({ box }) => {
  await box.tcp('client', '10.96.7.1:80', { count: 4 });
  await box.tcp('client', '10.96.7.2:80', { count: 2 });
  box.writeManifest('web.yaml', MANIFEST(box.pod('a').ip, box.pod('client').ip));
  await waitFor(async () => (await box.weir('n1', ['services'])).includes(box.pod('client').ip), { timeoutMs: 3000, what: 'change applied' });
  const m = (await http(box, 'http://127.0.0.1:10249/metrics')).body;
  const value = (re: RegExp): number => Number(re.exec(m)?.[1] ?? NaN);
  assert.ok(value(/^weir_sync_proxy_rules_duration_seconds_count (\d+)/m) >= 2, m);
  assert.ok(value(/^weir_network_programming_duration_seconds_count (\d+)/m) >= 1);
  assert.ok(value(/^weir_network_programming_duration_seconds_bucket\{le="1"\} (\d+)/m) >= 1, 'programmed within a second');
  assert.is(value(/^weir_frontends (\d+)/m), 2);
  assert.is(value(/^weir_backends (\d+)/m), 2);
  assert.ok(value(/^weir_conntrack_entries (\d+)/m) >= 2);
  assert.ok(value(/^weir_packets_total\{verdict="forward",family="ipv4"\} (\d+)/m) >= 4);
  assert.ok(value(/^weir_packets_total\{verdict="reject_no_endpoints",family="ipv4"\} (\d+)/m) >= 2);
  assert.is(value(/^weir_sync_errors_total (\d+)/m), 0);
  // web (master + 2 slots) and empty (master): 4 service entries; members and backends of web's 2 endpoints.
  assert.is(value(/^weir_map_entries\{map="weir1_svc"\} (\d+)/m), 4);
  assert.is(value(/^weir_map_entries\{map="weir1_member"\} (\d+)/m), 2);
  assert.is(value(/^weir_map_entries\{map="weir1_be"\} (\d+)/m), 2);
  assert.is(value(/^weir_map_max_entries\{map="weir1_svc"\} (\d+)/m), 262144);
});

/** kube-proxy's series weir serves: name -> [type, label names of its samples (histograms: besides le)]. */
const KUBE_SERIES: Record<string, [string, string[]]> = {
  kubeproxy_sync_proxy_rules_duration_seconds: ['histogram', ['ip_family']],
  kubeproxy_network_programming_duration_seconds: ['histogram', ['ip_family']],
  kubeproxy_sync_proxy_rules_last_timestamp_seconds: ['gauge', ['ip_family']],
  kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds: ['gauge', ['ip_family']],
  kubeproxy_sync_proxy_rules_endpoint_changes_pending: ['gauge', []],
  kubeproxy_sync_proxy_rules_endpoint_changes_total: ['counter', []],
  kubeproxy_sync_proxy_rules_service_changes_pending: ['gauge', []],
  kubeproxy_sync_proxy_rules_service_changes_total: ['counter', []],
  kubeproxy_sync_proxy_rules_no_local_endpoints_total: ['gauge', ['ip_family', 'traffic_policy']],
  kubeproxy_proxy_healthz_total: ['counter', ['code']],
  kubeproxy_proxy_livez_total: ['counter', ['code']],
};

const TRIGGERED = (ip: string, triggeredAt?: number): string => `apiVersion: v1
kind: Service
metadata: {name: trig, namespace: o}
spec:
  clusterIP: 10.96.7.3
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: trig-1
  namespace: o
  labels: {kubernetes.io/service-name: trig}
${triggeredAt === undefined ? '' : `  annotations: {endpoints.kubernetes.io/last-change-trigger-time: "${new Date(triggeredAt).toISOString()}"}\n`}addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [${ip}], nodeName: n1}]
`;

s("/metrics: kube-proxy's series, with kube-proxy's types and labels; programming latency measured from a slice's trigger time", async ({ box, servingAt }) => {
  const scrape = async (): Promise<string> => (await http(box, 'http://127.0.0.1:10249/metrics')).body;
  const value = (m: string, series: string): number => Number(new RegExp(`^${series.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(m)?.[1] ?? NaN);
  for (const p of ['/healthz', '/livez']) assert.is((await http(box, `http://127.0.0.1:10256${p}`)).status, '200');
  const m = await scrape();
  for (const [name, [type, labels]] of Object.entries(KUBE_SERIES)) {
    assert.ok(m.includes(`\n# TYPE ${name} ${type}\n`), `${name} ${type}`);
    const samples = m.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `) || (type === 'histogram' && /^\w+_(bucket|sum|count)[{ ]/.test(l) && l.startsWith(`${name}_`)));
    assert.ok(samples.length > 0, `${name} has samples`);
    for (const l of samples) {
      const keys = [...(/\{(.*)\}/.exec(l)?.[1] ?? '').matchAll(/(\w+)="/g)].map((k) => k[1]!).filter((k) => k !== 'le');
      assert.equal(keys.sort(), [...labels].sort(), l);
    }
  }
  assert.ok(value(m, 'kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"}') >= 1);
  assert.ok(value(m, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}') * 1000 <= Date.now());
  assert.ok(value(m, 'kubeproxy_sync_proxy_rules_service_changes_total') >= 2);
  assert.ok(value(m, 'kubeproxy_proxy_healthz_total{code="200"}') >= 1);
  assert.ok(value(m, 'kubeproxy_proxy_livez_total{code="200"}') >= 1);
  assert.is(value(m, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="internal"}'), 0);

  // Trigger times from before the agent made its store are not measured: let a second and a half pass since it serves.
  await waitFor(() => Promise.resolve(Date.now() > servingAt + 1500), { timeoutMs: 3000, what: 'agent up for 1.5 s' });
  const count = 'kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"}';
  const sum = 'kubeproxy_network_programming_duration_seconds_sum{ip_family="IPv4"}';
  const programmed = (ip: string) => waitFor(async () => (await box.weir('n1', ['services'])).includes(ip), { timeoutMs: 3000, what: `${ip} programmed` });
  try {
    const before = await scrape();
    box.writeManifest('trig.yaml', TRIGGERED(box.pod('a').ip));
    await programmed(box.pod('a').ip);
    const unannotated = await scrape();
    assert.is(value(unannotated, count), value(before, count), 'a slice without the annotation is not measured');
    assert.is(value(unannotated, sum), value(before, sum));
    const triggeredAt = Date.now() - 1000;
    box.writeManifest('trig.yaml', TRIGGERED(box.pod('b').ip, triggeredAt));
    await programmed(box.pod('b').ip);
    const after = await scrape();
    assert.is(value(after, count), value(before, count) + 1, after);
    const observed = value(after, sum) - value(before, sum);
    assert.ok(observed >= 1 && observed < 1 + (Date.now() - triggeredAt - 1000) / 1000 + 0.01, String(observed));
    assert.ok(
      value(after, 'kubeproxy_network_programming_duration_seconds_bucket{le="1",ip_family="IPv4"}') ===
        value(before, 'kubeproxy_network_programming_duration_seconds_bucket{le="1",ip_family="IPv4"}'),
    );
  } finally {
    box.removeManifest('trig.yaml');
  }
});

s('node IPs of --external-devices: up devices without a child process, a down one through ip, in kernel order', async ({ box }) => {
  // In the client pod's namespace (its own, so the agent never sees these devices).
  const ns = box.pod('client').ns;
  for (const argv of [
    // veth pairs (this kernel has no dummy driver); d0 runs, d1 stays down.
    ['ip', 'link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd0p'],
    ['ip', 'addr', 'add', '10.77.0.1/24', 'dev', 'd0'],
    ['ip', 'addr', 'add', '10.77.0.2/24', 'dev', 'd0', 'label', 'd0:x'],
    ['ip', 'link', 'set', 'd0p', 'up'],
    ['ip', 'link', 'set', 'd0', 'up'],
    ['ip', 'link', 'add', 'd1', 'type', 'veth', 'peer', 'name', 'd1p'],
    ['ip', 'addr', 'add', '10.78.0.1/24', 'dev', 'd1'],
  ]) {
    const r = await box.exec(ns, argv);
    assert.is(r.code, 0, `${argv.join(' ')}: ${r.stderr}`);
  }
  const script = `
    const d = require(${JSON.stringify(`${REPO}/dist/ts/datapath/devices`)});
    const a = require(${JSON.stringify(`${REPO}/dist/ts/runner/agent`)});
    (async () => console.log(JSON.stringify({
      up: d.upDeviceAddrs(['d0']),
      withDown: d.upDeviceAddrs(['d0', 'd1']),
      resolved: await a.resolveNodeIPs({ nodeIPs: [], externalDevices: ['d1', 'd0'] }),
      viaIp: (await d.listLinks()).filter((l) => l.name === 'd0' || l.name === 'd1').flatMap((l) => l.addrs),
    })))();`;
  const r = await box.exec(ns, ['node', '-e', script]);
  assert.is(r.code, 0, r.stderr);
  const got = JSON.parse(r.stdout) as Record<string, string[] | null>;
  assert.equal(got.up, ['10.77.0.1', '10.77.0.2'], 'the labelled address counts for its device');
  assert.is(got.withDown, null, 'a device that is down is not listed: the caller must ask ip');
  assert.equal(got.resolved, ['10.77.0.1', '10.77.0.2', '10.78.0.1'], "the down device still contributes; order is the kernel's, not the flag's");
  assert.equal(got.viaIp, got.resolved);
});

s('--log-level error keeps info lines out', async (ctx) => {
  await ctx.agent.stop();
  ctx.agent = await ctx.box.startAgent('n1', ['--log-level', 'error'], { waitReady: false });
  await new Promise((r) => setTimeout(r, 1500));
  assert.not.match(ctx.agent.logs(), /"level":"info"/);
  assert.ok(ctx.agent.proc.running);
});

s('a service map too small: the agent names it and keeps running, and is ready once the services fit', async (ctx) => {
  await ctx.agent.stop();
  await ctx.box.weir('n1', ['cleanup']); // a pinned map keeps its size
  const many = (n: number): string => {
    const items: object[] = [];
    for (let i = 0; i < n; i++) {
      items.push({ apiVersion: 'v1', kind: 'Service', metadata: { name: `m${i}`, namespace: 'o' }, spec: { clusterIP: `10.96.8.${i}`, ports: [{ port: 80 }] } });
      items.push({
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: `m${i}-1`, namespace: 'o', labels: { 'kubernetes.io/service-name': `m${i}` } },
        addressType: 'IPv4',
        ports: [{ port: 8080 }],
        endpoints: Array.from({ length: 10 }, (_, j) => ({ addresses: [`10.245.${i}.${j + 1}`], nodeName: 'n1' })),
      });
    }
    return JSON.stringify({ apiVersion: 'v1', kind: 'List', items });
  };
  // web (1 + 2 entries), empty (1) and 100 services of 1 + 10: 1104 entries for a map of 1024.
  ctx.box.writeManifest('many.json', many(100));
  ctx.agent = await ctx.box.startAgent('n1', ['--lb-map-entries', '1024'], { waitReady: false });
  await ctx.agent.proc.waitFor(/"msg":"a BPF map is full/, 15000);
  const full = ctx.agent
    .logs()
    .split('\n')
    .map((l) => (l.startsWith('{') ? (JSON.parse(l) as Record<string, unknown>) : {}))
    .find((l) => String(l.msg).startsWith('a BPF map is full'))!;
  assert.is(full.maps, 'weir1_svc 1104/1024');
  assert.match(String(full.hint), /--lb-map-entries sizes weir1_svc and weir1_member \(now 1024\)/);
  assert.not.match(ctx.agent.logs(), /"msg":"ready"/);
  assert.ok(ctx.agent.proc.running);
  // Half of them go: the retry programs everything that is left.
  ctx.box.writeManifest('many.json', many(50));
  await ctx.agent.proc.waitFor(/"msg":"ready"/, 40000);
  const services = await ctx.box.weir('n1', ['services']);
  assert.ok(services.includes('10.96.8.49:80/TCP'), 'the last service that fits');
  assert.not.ok(services.includes('10.96.8.50:80/TCP'), 'a removed one');
});

s.run();
