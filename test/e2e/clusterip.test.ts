/**
 * ClusterIP end to end: real packets from real clients in pod namespaces,
 * through the real tc program, programmed by a real agent from manifests.
 * One box for the suite; each test owns its services (distinct VIPs).
 *
 * Node n1 pods: a, b, c (backends: HTTP 8080/9090, UDP 5353), client, and
 * late (added during a test). Every assertion is about what a client sees:
 * which backend answered, whether the connection was refused or timed out.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box, MODE, waitFor } from '../box/box';
import { VERDICTS } from '../../ts/datapath/verdicts';
import { Results } from '../box/box';

const s = suite<{ box: Box; agent: Agent }>(`clusterip (${MODE})`);

function service(name: string, ip: string, ports: Array<{ name?: string; port: number; targetPort?: number | string; protocol?: string }>): string {
  const p = ports
    .map((x) => `    - {${x.name ? `name: ${x.name}, ` : ''}port: ${x.port}${x.targetPort !== undefined ? `, targetPort: ${x.targetPort}` : ''}, protocol: ${x.protocol ?? 'TCP'}}`)
    .join('\n');
  return `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: e2e}\nspec:\n  clusterIP: ${ip}\n  ports:\n${p}\n`;
}

function slice(svc: string, ips: string[], ports: Array<{ name?: string; port: number; protocol?: string }>, suffix = '1'): string {
  const p = ports.map((x) => `  - {${x.name ? `name: ${x.name}, ` : ''}port: ${x.port}, protocol: ${x.protocol ?? 'TCP'}}`).join('\n');
  const e = ips.map((ip) => `  - addresses: [${ip}]\n    nodeName: n1`).join('\n');
  return `---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: ${svc}-${suffix}\n  namespace: e2e\n  labels: {kubernetes.io/service-name: ${svc}}\naddressType: IPv4\nports:\n${p}\nendpoints:\n${e}\n`;
}

const backends = (r: Results): string[] => r.attempts.filter((a) => a.ok).map((a) => a.backend!);
const distinct = (r: Results): string[] => [...new Set(backends(r))].sort();
const okCount = (r: Results): number => r.attempts.filter((a) => a.ok).length;

/** Wait until the agent has programmed a frontend (as `weir services` shows it). */
async function programmed(box: Box, re: RegExp): Promise<void> {
  await waitFor(async () => re.test(await box.weir('n1', ['services'])), { timeoutMs: 3000, what: `weir services to match ${re}` });
}

s.before(async (ctx) => {
  ctx.box = await Box.create({ nodes: 1 });
  for (const name of ['a', 'b', 'c']) {
    await ctx.box.addPod('n1', name);
    await ctx.box.startEcho(name, { tcp: [8080, 9090], udp: [5353] });
  }
  await ctx.box.addPod('n1', 'client');
  ctx.agent = await ctx.box.startAgent('n1');
  // Pod devices are attached by the watcher within its poll interval.
  if (MODE === 'bpf') await ctx.agent.proc.waitFor(/"device":"veth[^"]*".*[\s\S]*"device":"veth[^"]*"[\s\S]*"device":"veth[^"]*"[\s\S]*"device":"veth/, 5000);
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

s('TCP: 60 connections through a ClusterIP reach every backend', async ({ box }) => {
  const ips = ['a', 'b', 'c'].map((p) => box.pod(p).ip);
  box.writeManifest('spread.yaml', service('spread', '10.96.1.1', [{ port: 80, targetPort: 8080 }]) + slice('spread', ips, [{ port: 8080 }]));
  await programmed(box, /10\.96\.1\.1:80\/TCP .* 3 backends/);
  const r = await box.tcp('client', '10.96.1.1:80', { count: 60 });
  assert.is(okCount(r), 60, JSON.stringify(r.attempts.filter((a) => !a.ok).slice(0, 3)));
  assert.equal(distinct(r), ['a', 'b', 'c']);
  // ClusterIP traffic from a pod inside the cluster is not masqueraded.
  assert.ok(r.attempts.every((a) => a.seenSrc!.startsWith(`${box.pod('client').ip}:`)));
});

s('UDP request/response through the VIP; replies come from the VIP', async ({ box }) => {
  box.writeManifest('udp.yaml', service('udp', '10.96.1.2', [{ port: 53, targetPort: 5353, protocol: 'UDP' }]) + slice('udp', [box.pod('a').ip, box.pod('b').ip], [{ port: 5353, protocol: 'UDP' }]));
  await programmed(box, /10\.96\.1\.2:53\/UDP .* 2 backends/);
  // A connected socket only accepts datagrams from 10.96.1.2:53: a reply
  // that kept the pod's address would never arrive.
  const r = await box.udp('client', '10.96.1.2:53', { count: 20, connect: true });
  assert.is(okCount(r), 20, JSON.stringify(r.attempts.filter((a) => !a.ok).slice(0, 3)));
  assert.equal(distinct(r), ['a', 'b']);
});

s('multi-port service with named targetPorts; a TCP-only port does not catch UDP', async ({ box }) => {
  box.writeManifest(
    'multi.yaml',
    service('multi', '10.96.1.3', [
      { name: 'web', port: 80, targetPort: 'http' },
      { name: 'admin', port: 81, targetPort: 'admin' },
    ]) +
      slice(
        'multi',
        [box.pod('c').ip],
        [
          { name: 'web', port: 8080 },
          { name: 'admin', port: 9090 },
        ],
      ),
  );
  await programmed(box, /10\.96\.1\.3:81\/TCP .* 1 backend/);
  const web = await box.tcp('client', '10.96.1.3:80', { count: 3 });
  const admin = await box.tcp('client', '10.96.1.3:81', { count: 3 });
  assert.equal(backends(web), ['c', 'c', 'c']);
  assert.equal(backends(admin), ['c', 'c', 'c']);
  // No UDP frontend on 10.96.1.3:80: the datagram is not NATed and nothing answers.
  const u = await box.udp('client', '10.96.1.3:80', { count: 1, timeoutMs: 500 });
  assert.is(u.attempts[0]!.ok, false);
  assert.is(u.attempts[0]!.error, 'timeout');
});

s('no endpoints: TCP refused at once, connected UDP gets ECONNREFUSED', async ({ box }) => {
  box.writeManifest(
    'empty.yaml',
    service('empty', '10.96.1.4', [
      { name: 't', port: 80 },
      { name: 'u', port: 53, protocol: 'UDP' },
    ]),
  );
  await programmed(box, /10\.96\.1\.4:80\/TCP .* no endpoints: reject/);
  const t = await box.tcp('client', '10.96.1.4:80', { count: 3, timeoutMs: 2000 });
  for (const a of t.attempts) {
    assert.is(a.error, 'ECONNREFUSED');
    assert.ok(a.ms < 500, `refused in ${a.ms} ms`);
  }
  const curl = await box.curl('client', 'http://10.96.1.4/');
  assert.is(curl.code, 7, 'curl: connection refused');
  const u = await box.udp('client', '10.96.1.4:53', { count: 3, sameSocket: true, timeoutMs: 1000, intervalMs: 50 });
  assert.ok(
    u.attempts.some((a) => a.error === 'ECONNREFUSED'),
    JSON.stringify(u.attempts),
  );
  if (MODE === 'bpf') {
    // The REJECTs were counted under their name (per-CPU counters summed).
    const out = await box.exec(box.node('n1').ns, [
      'bpftool',
      '-j',
      'map',
      'lookup',
      'pinned',
      `${box.node('n1').pinRoot}/weir1_verdicts`,
      'key',
      String(VERDICTS.indexOf('reject_no_endpoints')),
      '0',
      '0',
      '0',
    ]);
    const entry = JSON.parse(out.stdout) as { formatted: { values: Array<{ value: number }> } };
    assert.ok(entry.formatted.values.reduce((n, v) => n + v.value, 0) >= 3, out.stdout);
  }
});

s('hairpin: a pod reaches itself through its service', async ({ box }) => {
  box.writeManifest('hairpin.yaml', service('self', '10.96.1.5', [{ port: 80, targetPort: 8080 }]) + slice('self', [box.pod('a').ip], [{ port: 8080 }]));
  await programmed(box, /10\.96\.1\.5:80\/TCP .* 1 backend/);
  const r = await box.tcp('a', '10.96.1.5:80', { count: 5 });
  assert.equal(backends(r), ['a', 'a', 'a', 'a', 'a']);
  // Like kube-proxy's hairpin masquerade, the backend sees another source:
  // --hairpin-addr in BPF mode, the node's address with iptables MASQUERADE.
  const hairpinSrc = MODE === 'bpf' ? '169.254.42.1' : box.node('n1').ip;
  assert.ok(
    r.attempts.every((a) => a.seenSrc!.startsWith(`${hairpinSrc}:`)),
    JSON.stringify(r.attempts[0]),
  );
  const u = await box.exec(box.pod('a').ns, ['curl', '-s', '-m', '2', 'http://10.96.1.5/']);
  assert.match(u.stdout, /^a /);
});

s('endpoint added: new connections within 1 s; removed: none', async ({ box }) => {
  const a = box.pod('a').ip;
  const b = box.pod('b').ip;
  box.writeManifest('churn.yaml', service('churn', '10.96.1.6', [{ port: 80, targetPort: 8080 }]) + slice('churn', [a], [{ port: 8080 }]));
  await programmed(box, /10\.96\.1\.6:80\/TCP .* 1 backend/);
  const t0 = Date.now();
  box.writeManifest('churn.yaml', service('churn', '10.96.1.6', [{ port: 80, targetPort: 8080 }]) + slice('churn', [a, b], [{ port: 8080 }]));
  await waitFor(async () => backends(await box.tcp('client', '10.96.1.6:80', { count: 4 })).includes('b'), { timeoutMs: 1000, intervalMs: 0, what: 'b to get connections' });
  const added = Date.now() - t0;
  assert.ok(added <= 1000, `added endpoint served after ${added} ms`);
  box.writeManifest('churn.yaml', service('churn', '10.96.1.6', [{ port: 80, targetPort: 8080 }]) + slice('churn', [b], [{ port: 8080 }]));
  await programmed(box, /10\.96\.1\.6:80\/TCP .* 1 backend\n {2}#1 backend \d+ 10\.244\.1\.11/);
  const r = await box.tcp('client', '10.96.1.6:80', { count: 30 });
  assert.equal(distinct(r), ['b']);
});

s('a pod added after the agent started is attached within 1 s and served', async ({ box, agent }) => {
  const attached = MODE === 'bpf' ? agent.waitForNext(/"msg":"attached","device":"veth/, 1000) : Promise.resolve();
  const late = await box.addPod('n1', 'late');
  await attached;
  if (MODE === 'bpf') assert.match(agent.logs(), new RegExp(`"device":"${late.hostDev}"`));
  await box.startEcho('late', { tcp: [8080] });
  box.writeManifest('late.yaml', service('late', '10.96.1.7', [{ port: 80, targetPort: 8080 }]) + slice('late', [late.ip], [{ port: 8080 }]));
  await programmed(box, /10\.96\.1\.7:80\/TCP .* 1 backend/);
  // From the new pod (its veth must carry the program) to itself and to others.
  const self = await box.tcp('late', '10.96.1.7:80', { count: 2 });
  assert.equal(backends(self), ['late', 'late']);
  const other = await box.tcp('late', '10.96.1.1:80', { count: 6 });
  assert.is(okCount(other), 6);
});

s('UDP: a client on one socket moves to a live backend within 1 s of its backend being removed', async ({ box }) => {
  const a = box.pod('a').ip;
  const b = box.pod('b').ip;
  box.writeManifest('stale.yaml', service('stale', '10.96.1.8', [{ port: 53, targetPort: 5353, protocol: 'UDP' }]) + slice('stale', [a], [{ port: 5353, protocol: 'UDP' }]));
  await programmed(box, /10\.96\.1\.8:53\/UDP .* 1 backend/);
  const sender = box.spawn(box.pod('client').ns, [
    'node',
    `${__dirname}/../box/client.js`,
    'udp',
    '--to',
    '10.96.1.8:53',
    '--count',
    '60',
    '--same-socket',
    '--interval-ms',
    '50',
    '--timeout-ms',
    '300',
  ]);
  await new Promise((r) => setTimeout(r, 600));
  box.writeManifest('stale.yaml', service('stale', '10.96.1.8', [{ port: 53, targetPort: 5353, protocol: 'UDP' }]) + slice('stale', [b], [{ port: 5353, protocol: 'UDP' }]));
  await sender.wait();
  const res = JSON.parse(sender.output().trim().split('\n').pop()!) as Results;
  const seq = res.attempts.map((x) => (x.ok ? x.backend : 'x')).join('');
  assert.match(seq, /^a+[ax]*b+$/, `sequence ${seq}`);
  // Failed or stale answers after the switch fit in one second of 50 ms sends.
  const firstB = seq.indexOf('b');
  const lastA = seq.lastIndexOf('a');
  assert.ok((firstB - lastA) * 50 <= 1000 + 300, `gap ${seq.slice(lastA, firstB + 1)}`);
});

s('an established TCP connection survives unrelated updates and an agent restart', async (ctx) => {
  const { box } = ctx;
  box.writeManifest('keep.yaml', service('keep', '10.96.1.9', [{ port: 80, targetPort: 8080 }]) + slice('keep', [box.pod('a').ip, box.pod('b').ip, box.pod('c').ip], [{ port: 8080 }]));
  await programmed(box, /10\.96\.1\.9:80\/TCP .* 3 backends/);
  const hold = await box.hold('client', '10.96.1.9:80', { durationMs: 6000, intervalMs: 100 });
  // Unrelated churn while the connection lives.
  for (let i = 0; i < 5; i++) {
    box.writeManifest(`noise-${i}.yaml`, service(`noise-${i}`, `10.96.2.${i + 1}`, [{ port: 80, targetPort: 8080 }]) + slice(`noise-${i}`, [box.pod('c').ip], [{ port: 8080 }]));
    await new Promise((r) => setTimeout(r, 100));
  }
  // Restart: SIGTERM leaves the dataplane programmed; the next agent adopts it.
  assert.is(await ctx.agent.stop(), 0);
  ctx.agent = await box.startAgent('n1');
  if (MODE === 'bpf') assert.match(ctx.agent.logs(), /"msg":"adopted pinned state","frontends":\d+/);
  const res = await hold.result();
  assert.ok(res.attempts.length >= 30, `${res.attempts.length} requests`);
  assert.ok(
    res.attempts.every((a) => a.ok),
    JSON.stringify(res.attempts.filter((a) => !a.ok)),
  );
  assert.is(new Set(res.attempts.map((a) => a.backend)).size, 1, 'one backend for the whole connection');
});

s('bad input while running: one clear line, everything else keeps working', async (ctx) => {
  const { box } = ctx;
  box.writeManifest('broken.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: broken\n');
  box.writeManifest('invalid.yaml', service('invalid', '10.96.1.300', [{ port: 80 }]));
  await ctx.agent.waitForNext(/"object":"Service e2e\/invalid","field":"spec.clusterIP"/, 3000).catch(() => undefined);
  await waitFor(() => /malformed document/.test(ctx.agent.logs()) && /"field":"spec.clusterIP"/.test(ctx.agent.logs()), { timeoutMs: 3000, what: 'error lines' });
  assert.ok(ctx.agent.proc.running, 'agent still running');
  const r = await box.tcp('client', '10.96.1.1:80', { count: 6 });
  assert.is(okCount(r), 6);
  box.removeManifest('broken.yaml');
  box.removeManifest('invalid.yaml');
});

s("--mode auto falls back to nftables with the reason; each mode removes the others' state", async (ctx) => {
  if (MODE !== 'bpf') return; // one pass covers every direction
  const { box } = ctx;
  const ns = box.node('n1').ns;
  const state = async (): Promise<{ pins: boolean; filters: boolean; chains: boolean; table: boolean }> => ({
    // The pin root itself stays in iptables and nftables mode: the agent's lock is on it.
    pins: (await box.exec(ns, ['ls', '-A', box.node('n1').pinRoot])).stdout.trim() !== '',
    filters: (await box.exec(ns, ['tc', 'filter', 'show', 'dev', box.pod('a').hostDev, 'ingress'])).stdout.includes('weir_tc_pod'),
    chains: (await box.exec(ns, ['iptables-save'])).stdout.includes(':WEIR-SERVICES'),
    table: (await box.exec(ns, ['nft', 'list', 'table', 'inet', 'weir'])).code === 0,
  });
  const served = async (): Promise<void> => assert.is((await box.tcp('client', '10.96.1.1:80', { count: 6 })).attempts.filter((a) => a.ok).length, 6);
  assert.equal(await state(), { pins: true, filters: true, chains: false, table: false });
  await ctx.agent.stop();
  // BPF objects that cannot be loaded stand in for an old kernel or missing privileges.
  ctx.agent = await box.startAgent('n1', ['--mode', 'auto'], { env: { WEIR_BPF_DIR: '/nonexistent' } });
  assert.match(ctx.agent.logs(), /"mode":"nftables","reason":"auto: BPF unavailable \(obj_load: ENOENT[^"]*; nft works in this network namespace"/);
  assert.equal(await state(), { pins: false, filters: false, chains: false, table: true });
  await served();
  await ctx.agent.stop();
  // iptables mode takes over from nftables mode: the table goes once the chains serve.
  ctx.agent = await box.startAgent('n1', ['--mode', 'iptables']);
  await waitFor(async () => !(await state()).table, { timeoutMs: 2000, what: 'nftables table removed' });
  assert.equal(await state(), { pins: false, filters: false, chains: true, table: false });
  await served();
  await ctx.agent.stop();
  ctx.agent = await box.startAgent('n1', ['--mode', 'auto']);
  assert.match(ctx.agent.logs(), /"mode":"bpf","reason":"auto: BPF programs load on this kernel"/);
  // Programs attach and the iptables rules go right after "ready" (the rules serve until the programs take over).
  await waitFor(
    async () => {
      const st = await state();
      return st.filters && !st.chains;
    },
    { timeoutMs: 2000, what: 'filters re-attached, iptables rules removed' },
  );
  assert.equal(await state(), { pins: true, filters: true, chains: false, table: false });
  await served();
});

s('weir cleanup removes every filter and pin', async (ctx) => {
  const { box } = ctx;
  await ctx.agent.stop();
  const ns = box.node('n1').ns;
  const loKnobs = async (): Promise<string> => (await box.exec(ns, ['cat', '/proc/sys/net/ipv4/conf/lo/route_localnet', '/proc/sys/net/ipv4/conf/lo/accept_local'])).stdout.replace(/\n/g, ' ').trim();
  if (MODE === 'bpf') assert.is(await loKnobs(), '1 1', 'the loopback path set its sysctls on lo');
  const out = await box.weir('n1', ['cleanup']);
  assert.match(out, /removed \d+ tc filter/);
  if (MODE === 'bpf') {
    assert.match(out, /lo\/ingress/);
    assert.match(out, /reset net\.ipv4\.conf\.lo\.route_localnet, net\.ipv4\.conf\.lo\.accept_local to 0/);
    assert.is(await loKnobs(), '0 0', 'and cleanup takes them back');
  }
  const filters = await box.exec(box.node('n1').ns, ['tc', 'filter', 'show', 'dev', box.pod('a').hostDev, 'ingress']);
  assert.is(filters.stdout.trim(), '');
  const pins = await box.exec(box.node('n1').ns, ['ls', box.node('n1').pinRoot]);
  assert.is.not(pins.code, 0, 'pin directory gone');
  const rules = await box.exec(box.node('n1').ns, ['iptables-save']);
  assert.not.match(rules.stdout, /WEIR-/, 'no iptables chains either');
  assert.is.not((await box.exec(box.node('n1').ns, ['nft', 'list', 'table', 'inet', 'weir'])).code, 0, 'no nftables table either');
  if (MODE === 'nftables') assert.match(out, /removed nftables table inet weir/);
  // Without weir the VIP is just an unrouted address again.
  const r = await box.tcp('client', '10.96.1.1:80', { count: 1, timeoutMs: 500 });
  assert.is(r.attempts[0]!.ok, false);
});

s.run();
