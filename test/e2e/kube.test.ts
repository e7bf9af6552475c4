/**
 * --source kube: the real @kubernetes/client-node informers against the test
 * API server (test/apiserver), driving a real agent and dataplane in a
 * cluster in a box. Objects created, changed and deleted on the server reach
 * the maps within a second; bookmarks, 410 Gone, a server restart and
 * refused credentials are survived without disturbing a live connection.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box, MODE, waitFor } from '../box/box';
import { ApiServer, K8sObject } from '../apiserver/harness';

const s = suite<{ box: Box; api: ApiServer; agent: Agent }>('kube source');

const service = (name: string, ip: string, labels?: Record<string, string>): K8sObject => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'k', ...(labels ? { labels } : {}) },
  spec: { clusterIP: ip, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
});

const slice = (svc: string, ips: string[], labels: Record<string, string> = {}): K8sObject => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: `${svc}-1`, namespace: 'k', labels: { 'kubernetes.io/service-name': svc, ...labels } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints: ips.map((ip) => ({ addresses: [ip], nodeName: 'n1', conditions: { ready: true } })),
});

async function services(box: Box): Promise<string> {
  return box.weir('n1', ['services']);
}

s.before(async (ctx) => {
  ctx.box = await Box.create({ nodes: 1 });
  for (const p of ['a', 'b']) {
    await ctx.box.addPod('n1', p);
    await ctx.box.startEcho(p, { tcp: [8080] });
  }
  await ctx.box.addPod('n1', 'client');
  ctx.api = await ApiServer.start(ctx.box, 'n1');
  await ctx.api.apply({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1' }, status: { addresses: [{ type: 'InternalIP', address: ctx.box.node('n1').ip }] } });
  await ctx.api.apply(service('web', '10.96.5.1'));
  await ctx.api.apply(slice('web', [ctx.box.pod('a').ip]));
  ctx.agent = await ctx.box.startAgent('n1', ['--source', 'kube', '--kubeconfig', ctx.api.kubeconfig]);
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

s('the first list is programmed before the agent reports ready', async ({ box, agent }) => {
  assert.match(agent.logs(), /"msg":"kube source synced"/);
  assert.match(await services(box), /10\.96\.5\.1:80\/TCP .* 1 backend/);
  const r = await box.tcp('client', '10.96.5.1:80', { count: 4 });
  assert.ok(
    r.attempts.every((a) => a.ok && a.backend === 'a'),
    JSON.stringify(r.attempts),
  );
});

s('created, changed and deleted objects reach the maps within 1 s', async ({ box, api }) => {
  let t0 = Date.now();
  await api.apply(service('new', '10.96.5.2'));
  await api.apply(slice('new', [box.pod('b').ip]));
  await waitFor(async () => /10\.96\.5\.2:80\/TCP .* 1 backend/.test(await services(box)), { timeoutMs: 1000, intervalMs: 20, what: 'created' });
  const created = Date.now() - t0;
  t0 = Date.now();
  await api.apply(slice('new', [box.pod('a').ip, box.pod('b').ip]));
  await waitFor(async () => /10\.96\.5\.2:80\/TCP .* 2 backends/.test(await services(box)), { timeoutMs: 1000, intervalMs: 20, what: 'changed' });
  const changed = Date.now() - t0;
  t0 = Date.now();
  await api.delete('Service', 'k', 'new');
  await api.delete('EndpointSlice', 'k', 'new-1');
  await waitFor(async () => !/10\.96\.5\.2/.test(await services(box)), { timeoutMs: 1000, intervalMs: 20, what: 'deleted' });
  const deleted = Date.now() - t0;
  assert.ok(Math.max(created, changed, deleted) <= 1000, `${created}/${changed}/${deleted} ms`);
});

s("kube-proxy filters: another proxy's services and headless slices are not programmed", async ({ box, api }) => {
  await api.apply(service('other', '10.96.5.3', { 'service.kubernetes.io/service-proxy-name': 'someone-else' }));
  await api.apply(slice('other', [box.pod('a').ip]));
  await api.apply(service('mine', '10.96.5.4'));
  await api.apply(slice('mine', [box.pod('a').ip], { 'service.kubernetes.io/headless': '' }));
  await waitFor(async () => /10\.96\.5\.4:80\/TCP .* no endpoints/.test(await services(box)), { timeoutMs: 2000, what: 'mine without the headless slice' });
  assert.not.match(await services(box), /10\.96\.5\.3/);
});

s("bookmarks: a re-opened watch resumes from the bookmark's resourceVersion", async ({ api }) => {
  await api.apply(service('bm', '10.96.5.5'));
  const { rv } = await api.bookmark();
  await new Promise((r) => setTimeout(r, 200));
  await api.closeWatches();
  await waitFor(async () => (await api.stats()).watches.includes(`Service@${rv}`), { timeoutMs: 3000, what: `a Service watch from ${rv}` });
});

s('Node changes from the API server: a zone relabel re-plans topology hints; a deletionTimestamp turns /healthz 503', async ({ box, api, agent }) => {
  const node = (labels: Record<string, string>, meta: Record<string, unknown> = {}): K8sObject => ({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: 'n1', labels, ...meta },
    status: { addresses: [{ type: 'InternalIP', address: box.node('n1').ip }] },
  });
  const zoned: K8sObject = {
    ...slice('zoned', []),
    endpoints: [
      { addresses: [box.pod('a').ip], nodeName: 'n1', conditions: { ready: true }, hints: { forZones: [{ name: 'zone-a' }] } },
      { addresses: [box.pod('b').ip], nodeName: 'n1', conditions: { ready: true }, hints: { forZones: [{ name: 'zone-b' }] } },
    ],
  };
  const backends = async (): Promise<string[]> => [...new Set((await box.tcp('client', '10.96.5.8:80', { count: 12 })).attempts.map((a) => (a.ok ? a.backend! : a.error!)))].sort();
  const port = /"msg":"health server listening","addr":"127\.0\.0\.1:(\d+)"/.exec(agent.logs())?.[1];
  assert.ok(port, 'health port in the log');
  const healthz = async (): Promise<string> => (await box.exec(box.node('n1').ns, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${port}/healthz`])).stdout;
  try {
    await api.apply(node({ 'topology.kubernetes.io/zone': 'zone-a' }));
    await api.apply(service('zoned', '10.96.5.8'));
    await api.apply(zoned);
    await waitFor(async () => /10\.96\.5\.8:80\/TCP .*topology-zone\] 1 backend/.test(await services(box)), { timeoutMs: 3000, what: 'zoned programmed for zone-a' });
    assert.equal(await backends(), ['a'], "zone-a: the endpoint hinted for zone-a (kube-proxy TestCategorizeEndpoints 'normal endpoint filtering')");
    await api.apply(node({ 'topology.kubernetes.io/zone': 'zone-b' }));
    await agent.waitForNext(/"msg":"node changed; re-planning every service".*"zone":"zone-b"/, 3000);
    await waitFor(async () => (await backends()).join() === 'b', { timeoutMs: 3000, what: 'zone-b endpoint after the relabel' });
    assert.is(await healthz(), '200');
    await api.apply(node({ 'topology.kubernetes.io/zone': 'zone-b' }, { deletionTimestamp: new Date().toISOString() }));
    await waitFor(async () => (await healthz()) === '503', { timeoutMs: 3000, what: '/healthz 503 while the Node is being deleted' });
  } finally {
    await api.apply(node({}));
    await api.delete('Service', 'k', 'zoned');
    await api.delete('EndpointSlice', 'k', 'zoned-1');
  }
  await waitFor(async () => (await healthz()) === '200', { timeoutMs: 3000, what: '/healthz 200 again' });
});

s('410 Gone and a server restart relist without flushing; a live connection is not disturbed', async ({ box, api, agent }) => {
  const hold = await box.hold('client', '10.96.5.1:80', { durationMs: 5000, intervalMs: 100 });
  const lists = (await api.stats()).lists.length;
  await api.compact();
  await api.closeWatches();
  await waitFor(async () => (await api.stats()).lists.length >= lists + 3, { timeoutMs: 5000, what: 'relist after 410' });
  await api.apply(slice('web', [box.pod('a').ip, box.pod('b').ip]));
  await waitFor(async () => /10\.96\.5\.1:80\/TCP .* 2 backends/.test(await services(box)), { timeoutMs: 2000, what: 'change after relist' });
  await api.restart();
  await agent.waitForNext(/"msg":"synced"|"msg":"watch failed/, 5000).catch(() => undefined);
  await api.apply(service('after', '10.96.5.6'));
  await waitFor(async () => /10\.96\.5\.6:80\/TCP/.test(await services(box)), { timeoutMs: 5000, what: 'change after restart' });
  const res = await hold.result();
  assert.ok(res.attempts.length >= 20 && res.attempts.every((a) => a.ok), JSON.stringify(res.attempts.filter((a) => !a.ok)));
  assert.match(await services(box), /10\.96\.5\.1:80\/TCP .* 2 backends/);
});

s('403 Forbidden: a clear error, the last state is kept, and it recovers', async ({ box, api, agent }) => {
  await api.forbid(true);
  await api.closeWatches();
  await agent.proc.waitFor(/not allowed to list\/watch \w+ \(403 Forbidden\)/, 5000);
  const r = await box.tcp('client', '10.96.5.1:80', { count: 4 });
  assert.ok(
    r.attempts.every((a) => a.ok),
    'traffic still served',
  );
  assert.match(await services(box), /10\.96\.5\.1:80\/TCP .* 2 backends/);
  await api.forbid(false);
  await api.apply(service('back', '10.96.5.7'));
  await waitFor(async () => /10\.96\.5\.7:80\/TCP/.test(await services(box)), { timeoutMs: 8000, what: 'recovered after 403' });
});

s('401 Unauthorized: a clear error, and a restarted agent keeps serving the pinned state', async (ctx) => {
  const { box, api } = ctx;
  await ctx.agent.stop();
  const bad = api.writeKubeconfig('wrong-token', `${api.kubeconfig}.bad`);
  const agent = await box.startAgent('n1', ['--source', 'kube', '--kubeconfig', bad], { waitReady: false });
  await agent.proc.waitFor(/API server rejected our credentials \(401 Unauthorized\)/, 8000);
  assert.ok(agent.proc.running, 'agent keeps running');
  const r = await box.tcp('client', '10.96.5.1:80', { count: 4 });
  assert.ok(
    r.attempts.every((a) => a.ok),
    'pinned state still serves',
  );
  await agent.stop();
  ctx.agent = await box.startAgent('n1', ['--source', 'kube', '--kubeconfig', api.kubeconfig]);
});

s('node IPs from the Node object: an InternalIP changed on the API server moves the NodePort and the masquerade source', async (ctx) => {
  const { box, api } = ctx;
  const n1 = box.node('n1').ip;
  const other = '192.168.77.50';
  const node = (ip: string): K8sObject => ({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1' }, status: { addresses: [{ type: 'InternalIP', address: ip }] } });
  await box.exec(box.node('n1').ns, ['ip', 'addr', 'add', `${other}/24`, 'dev', 'eth0']);
  await api.apply({ ...service('np', '10.96.5.9'), spec: { type: 'NodePort', clusterIP: '10.96.5.9', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30200 }] } });
  await api.apply(slice('np', [box.pod('a').ip]));
  await ctx.agent.stop();
  // No --node-ips and no external device: the node IPs are the Node's InternalIPs.
  ctx.agent = await box.startAgent('n1', ['--source', 'kube', '--kubeconfig', api.kubeconfig, '--external-devices=']);
  const reach = async (ip: string): Promise<string[]> => [
    ...new Set((await box.tcp('client', `${ip}:30200`, { count: 4, timeoutMs: 1000 })).attempts.map((a) => (a.ok ? `${a.backend!} saw ${a.seenSrc!.split(':')[0]!}` : a.error!))),
  ];
  const masq = (ip: string): string => (MODE === 'bpf' ? ip : n1); // iptables: MASQUERADE picks the route's source
  try {
    assert.equal(await reach(n1), [`a saw ${masq(n1)}`]);
    assert.equal(await reach(other), ['ECONNREFUSED'], 'not a node IP yet');
    await api.apply(node(other));
    await ctx.agent.waitForNext(/"msg":"node changed; re-planning every service".*"nodeIPs":"192\.168\.77\.50"/, 3000);
    await waitFor(async () => (await reach(other)).join() === `a saw ${masq(other)}`, { timeoutMs: 3000, what: 'NodePort on the new InternalIP' });
    assert.equal(await reach(n1), ['ECONNREFUSED'], 'the old InternalIP is no NodePort address any more');
  } finally {
    await api.apply(node(n1));
    await ctx.agent.stop();
    ctx.agent = await box.startAgent('n1', ['--source', 'kube', '--kubeconfig', api.kubeconfig]);
  }
});

s.run();
