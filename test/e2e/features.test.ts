/**
 * Service behaviours kube-proxy (Kubernetes 1.35) has beyond the basic types,
 * with real clients in both modes: topology hints, LoadBalancer ipMode,
 * draining nodes, and Node changes while the agent runs. Each flow names the
 * kube-proxy unit test case it comes from.
 *
 *   n1 (192.168.77.10, zone-a): a1 10.244.1.10, a2 10.244.1.11, c1 10.244.1.12
 *   n2 (192.168.77.11, zone-b): b1 10.244.2.10, b2 10.244.2.11, c2 10.244.2.12
 *   outside: 192.168.77.200, and the load balancer's own IPs 203.0.113.30/.31,
 *   answering as "lb" (a node that does not NAT them reaches it through its
 *   default route)
 */
import * as path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box, MODE, REPO, waitFor } from '../box/box';
import { Flow, runFlows } from '../box/flows';

const s = suite<{ box: Box; agents: Record<string, Agent> }>(`features (${MODE})`);
const N1 = '192.168.77.10';
const N1_OTHER = '192.168.77.50';
const LB_PROXY = '203.0.113.30';
const LB_VIP = '203.0.113.31';
const HEALTH = '127.0.0.1:10256';

interface Ep {
  pod: string;
  zones?: string[];
  nodes?: string[];
}

function nodeYaml(name: string, zone: string, ip: string, extra = ''): string {
  return `---\napiVersion: v1\nkind: Node\nmetadata:\n  name: ${name}\n  labels: {topology.kubernetes.io/zone: ${zone}}\n${extra}status:\n  addresses: [{type: InternalIP, address: ${ip}}]\n`;
}

function svcYaml(name: string, ip: string, o: { type?: string; nodePort?: number; extra?: string; status?: string } = {}): string {
  const np = o.nodePort ? `, nodePort: ${o.nodePort}` : '';
  return `---\napiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: f}\nspec:\n  type: ${o.type ?? 'ClusterIP'}\n  clusterIP: ${ip}\n${o.extra ?? ''}  ports: [{name: http, port: 80, targetPort: 8080${np}}]\n${o.status ?? ''}`;
}

function sliceYaml(box: Box, svc: string, eps: Ep[]): string {
  const e = eps
    .map((x) => {
      const p = box.pod(x.pod);
      const hints = [x.zones ? `forZones: [${x.zones.map((z) => `{name: ${z}}`).join(', ')}]` : '', x.nodes ? `forNodes: [${x.nodes.map((n) => `{name: ${n}}`).join(', ')}]` : ''].filter(Boolean);
      return `  - {addresses: [${p.ip}], nodeName: ${p.node.name}${hints.length ? `, hints: {${hints.join(', ')}}` : ''}}`;
    })
    .join('\n');
  return `---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: ${svc}-1, namespace: f, labels: {kubernetes.io/service-name: ${svc}}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n${e}\n`;
}

function manifests(box: Box): string {
  return [
    // Every endpoint hinted; zone-a has a1 (n1) and b1 (n2), zone-b has b2.
    svcYaml('zoned', '10.96.4.1', { type: 'NodePort', nodePort: 30100, extra: '  trafficDistribution: PreferSameZone\n' }) +
      sliceYaml(box, 'zoned', [
        { pod: 'a1', zones: ['zone-a'] },
        { pod: 'b1', zones: ['zone-a'] },
        { pod: 'b2', zones: ['zone-b'] },
      ]),
    // b2 has no hint: no topology.
    svcYaml('partial', '10.96.4.2', { extra: '  trafficDistribution: PreferClose\n' }) + sliceYaml(box, 'partial', [{ pod: 'a1', zones: ['zone-a'] }, { pod: 'b2' }]),
    // Node hints on every endpoint (and zone hints, as the controller writes them).
    svcYaml('noded', '10.96.4.3', { extra: '  trafficDistribution: PreferSameNode\n' }) +
      sliceYaml(box, 'noded', [
        { pod: 'a1', zones: ['zone-a'], nodes: ['n1'] },
        { pod: 'b1', zones: ['zone-a'], nodes: ['n2'] },
      ]),
    // Every endpoint hinted, none for zone-a.
    svcYaml('elsewhere', '10.96.4.4') +
      sliceYaml(box, 'elsewhere', [
        { pod: 'a1', zones: ['zone-b'] },
        { pod: 'b2', zones: ['zone-b'] },
      ]),
    // eTP=Local: local endpoints whatever their hints; in-cluster clients get the zone's.
    svcYaml('zl', '10.96.4.5', { type: 'NodePort', nodePort: 30101, extra: '  externalTrafficPolicy: Local\n' }) +
      sliceYaml(box, 'zl', [
        { pod: 'a1', zones: ['zone-b'] },
        { pod: 'a2', zones: ['zone-a'] },
        { pod: 'b1', zones: ['zone-a'] },
      ]),
    // One LoadBalancer, two ingress IPs: Proxy (the LB must see the traffic) and VIP.
    svcYaml('lbp', '10.96.4.6', {
      type: 'LoadBalancer',
      nodePort: 30102,
      status: `status:\n  loadBalancer:\n    ingress: [{ip: ${LB_PROXY}, ipMode: Proxy}, {ip: ${LB_VIP}, ipMode: VIP}]\n`,
    }) + sliceYaml(box, 'lbp', [{ pod: 'a1' }, { pod: 'b1' }]),
  ].join('');
}

function nodes(o: { n1Zone?: string; n1IP?: string; n2Extra?: string } = {}): string {
  return nodeYaml('n1', o.n1Zone ?? 'zone-a', o.n1IP ?? N1) + nodeYaml('n2', 'zone-b', '192.168.77.11', o.n2Extra ?? '');
}

s.before(async (ctx) => {
  const box = await Box.create({ nodes: 2 });
  ctx.box = box;
  for (const [node, pod] of [
    ['n1', 'a1'],
    ['n1', 'a2'],
    ['n1', 'c1'],
    ['n2', 'b1'],
    ['n2', 'b2'],
    ['n2', 'c2'],
  ] as const) {
    await box.addPod(node, pod);
  }
  for (const p of ['a1', 'a2', 'b1', 'b2']) await box.startEcho(p, { tcp: [8080] });
  // The load balancer: holds its IPs and answers on them as "lb".
  for (const ip of [LB_PROXY, LB_VIP]) await box.exec(box.outside, ['ip', 'addr', 'add', `${ip}/32`, 'dev', 'lo']);
  const lb = box.spawn(box.outside, ['node', path.join(REPO, 'dist/test/box/echo.js'), '--name', 'lb', '--tcp', '80']);
  await lb.waitFor(/^ready$/m, 10_000);
  // A second address on n1, for the Node's InternalIP to move to.
  await box.exec(box.node('n1').ns, ['ip', 'addr', 'add', `${N1_OTHER}/24`, 'dev', 'eth0']);
  box.writeManifest('nodes.yaml', nodes());
  box.writeManifest('services.yaml', manifests(box));
  ctx.agents = {};
  for (const n of ['n1', 'n2']) {
    const agent = await box.startAgent(n, ['--health-addr', HEALTH]);
    ctx.agents[n] = agent;
    await waitFor(async () => /10\.96\.4\.6:80\/TCP/.test(await box.weir(n, ['services'])), { timeoutMs: 5000, what: `${n} programmed` });
    if (MODE === 'bpf') await agent.proc.waitFor(/"device":"eth0"/, 3000);
  }
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

const TOPO = 'pkg/proxy/topology_test.go TestCategorizeEndpoints';
const FLOWS: Flow[] = [
  { from: 'c1', to: '10.96.4.1:80', expect: ['a1', 'b1'], src: 'client', ref: `${TOPO} "normal endpoint filtering"`, why: "zone hints: zone-a's endpoints, on both nodes" },
  { from: 'c2', to: '10.96.4.1:80', expect: ['b2'], src: 'client', ref: `${TOPO} "normal endpoint filtering"`, why: "zone hints from zone-b: zone-b's endpoint" },
  { from: 'n1', to: '10.96.4.1:80', expect: ['a1', 'b1'], src: 'any', ref: `${TOPO} "normal endpoint filtering"`, why: 'zone hints for a node process too' },
  { from: 'outside', to: `${N1}:30100`, expect: ['a1', 'b1'], src: N1, ref: `${TOPO} "normal endpoint filtering"`, why: 'eTP=Cluster NodePort uses the topology-filtered cluster endpoints' },
  { from: 'c1', to: '10.96.4.2:80', expect: ['a1', 'b2'], src: 'client', ref: `${TOPO} "missing hints, no filtering applied"`, why: 'one endpoint without hints: every endpoint' },
  { from: 'c1', to: '10.96.4.3:80', expect: ['a1'], src: 'client', ref: `${TOPO} (PreferSameNode: every endpoint has a node hint)`, why: 'node hints: the endpoint hinted for n1' },
  { from: 'c2', to: '10.96.4.3:80', expect: ['b1'], src: 'client', ref: `${TOPO} (PreferSameNode: every endpoint has a node hint)`, why: 'node hints: the endpoint hinted for n2' },
  { from: 'c1', to: '10.96.4.4:80', expect: ['a1', 'b2'], src: 'client', ref: `${TOPO} "node in different zone, no endpoint filtering"`, why: 'no endpoint hinted for this zone: every endpoint' },
  {
    from: 'c1',
    to: '10.96.4.5:80',
    expect: ['a2', 'b1'],
    src: 'client',
    ref: `${TOPO} "externalTrafficPolicy: Local, topology ignored for Local endpoints"`,
    why: 'ClusterIP of an eTP=Local service: zone hints apply',
  },
  {
    from: 'outside',
    to: `${N1}:30101`,
    expect: ['a1', 'a2'],
    src: 'client',
    ref: `${TOPO} "externalTrafficPolicy: Local, topology ignored for Local endpoints"`,
    why: 'eTP=Local NodePort: every local endpoint, hints ignored',
  },
  {
    from: 'c1',
    to: `${LB_PROXY}:80`,
    expect: ['lb'],
    src: 'client',
    ref: 'pkg/proxy/service.go: ingress IPs only when proxyutil.IsVIPMode',
    why: 'ipMode Proxy: a pod reaches the load balancer itself',
  },
  {
    from: 'n1',
    to: `${LB_PROXY}:80`,
    expect: ['lb'],
    src: 'any',
    ref: 'pkg/proxy/service.go: ingress IPs only when proxyutil.IsVIPMode',
    why: 'ipMode Proxy: a node process reaches the load balancer itself',
  },
  {
    from: 'c1',
    to: `${LB_VIP}:80`,
    expect: ['a1', 'b1'],
    src: N1,
    ref: 'pkg/proxy/service.go: ingress IPs only when proxyutil.IsVIPMode',
    why: 'ipMode VIP: short-circuited to the endpoints (KUBE-EXT masquerades)',
  },
  { from: 'n1', to: `${LB_VIP}:80`, expect: ['a1', 'b1'], src: 'any', ref: 'pkg/proxy/service.go: ingress IPs only when proxyutil.IsVIPMode', why: 'ipMode VIP from a node process' },
];

s('flow table: topology hints and ipMode as kube-proxy', async ({ box }) => {
  const failures = await runFlows(box, FLOWS);
  assert.equal(failures, [], failures.join('\n'));
});

s('the topology in force is shown: logged per service, and in BPF mode by weir services', async ({ box, agents }) => {
  const logs = agents.n1!.logs();
  assert.match(logs, /"msg":"topology","object":"Service f\/zoned","trafficDistribution":"PreferSameZone","topology":"same-zone"/);
  assert.match(logs, /"msg":"topology","object":"Service f\/partial","trafficDistribution":"PreferClose","topology":"none"/);
  if (MODE !== 'bpf') return; // iptables mode reads its chains back, which carry no flags
  const out = await box.weir('n1', ['services']);
  assert.match(out, /10\.96\.4\.1:80\/TCP scope=all .*\[cluster-ip,topology-zone\]/);
  assert.match(out, /10\.96\.4\.3:80\/TCP scope=all .*\[cluster-ip,topology-node\]/);
  assert.match(out, /10\.96\.4\.2:80\/TCP scope=all .*\[cluster-ip\]/);
  assert.not.match(out, new RegExp(LB_PROXY.replace(/\./g, '\\.')));
});

async function healthz(box: Box, node: string, p = '/healthz'): Promise<{ status: string; body: string }> {
  const r = await box.exec(box.node(node).ns, ['curl', '-s', '-m', '2', '-w', '\\n%{http_code}', `http://${HEALTH}${p}`]);
  const lines = r.stdout.trimEnd().split('\n');
  return { status: lines.pop() ?? '', body: lines.join('\n') };
}

// pkg/proxy/healthcheck/proxy_health_test.go (TestHealthzServer: node deletionTimestamp / ToBeDeleted taint), KEP-3836.
s('draining: /healthz answers 503 once the Node has a deletionTimestamp (or the autoscaler taint), /livez stays 200', async ({ box }) => {
  try {
    let h = await healthz(box, 'n2');
    assert.is(h.status, '200', h.body);
    assert.is((JSON.parse(h.body) as { nodeEligible?: boolean }).nodeEligible, true);
    box.writeManifest('nodes.yaml', nodes({ n2Extra: '  deletionTimestamp: "2026-01-01T00:00:00Z"\n' }));
    h = await waitFor(
      async () => {
        const x = await healthz(box, 'n2');
        return x.status === '503' ? x : null;
      },
      { timeoutMs: 3000, what: 'n2 /healthz 503' },
    );
    assert.is((JSON.parse(h.body) as { nodeEligible?: boolean }).nodeEligible, false);
    assert.is((await healthz(box, 'n2', '/livez')).status, '200', 'liveness ignores the Node');
    assert.is((await healthz(box, 'n1')).status, '200', 'the other node is not draining');
    // Still serving while it drains: established and new in-cluster traffic is not cut.
    assert.ok((await box.tcp('c2', '10.96.4.1:80', { count: 2 })).attempts.every((a) => a.ok));
    box.writeManifest('nodes.yaml', nodes());
    await waitFor(async () => (await healthz(box, 'n2')).status === '200', { timeoutMs: 3000, what: 'n2 /healthz 200 again' });
    box.writeManifest('nodes.yaml', nodes({ n2Extra: 'spec:\n  taints: [{key: ToBeDeletedByClusterAutoscaler, effect: NoSchedule}]\n' }));
    await waitFor(async () => (await healthz(box, 'n2')).status === '503', { timeoutMs: 3000, what: 'n2 /healthz 503 with the taint' });
  } finally {
    box.writeManifest('nodes.yaml', nodes());
  }
  await waitFor(async () => (await healthz(box, 'n2')).status === '200', { timeoutMs: 3000, what: 'n2 /healthz 200 at the end' });
});

s("a Node's zone label changing while the agent runs re-plans topology", async ({ box }) => {
  try {
    box.writeManifest('nodes.yaml', nodes({ n1Zone: 'zone-b' }));
    await waitFor(async () => /10\.96\.4\.1:80\/TCP .* 1 backend\n {2}#1 backend \d+ 10\.244\.2\.11/.test(await box.weir('n1', ['services'])), { timeoutMs: 5000, what: 'n1 re-planned for zone-b' });
    const failures = await runFlows(box, [
      { from: 'c1', to: '10.96.4.1:80', expect: ['b2'], src: 'client', ref: `${TOPO} "normal endpoint filtering"`, why: 'n1 relabelled zone-b: zone-b endpoint' },
      { from: 'c1', to: '10.96.4.4:80', expect: ['a1', 'b2'], src: 'client', ref: `${TOPO} "normal endpoint filtering"`, why: 'n1 relabelled zone-b: both are zone-b' },
      { from: 'c1', to: '10.96.4.3:80', expect: ['a1'], src: 'client', ref: `${TOPO} (PreferSameNode)`, why: 'node hints do not depend on the zone' },
    ]);
    assert.equal(failures, [], failures.join('\n'));
  } finally {
    box.writeManifest('nodes.yaml', nodes());
  }
  await waitFor(async () => /10\.96\.4\.1:80\/TCP .* 2 backends/.test(await box.weir('n1', ['services'])), { timeoutMs: 5000, what: 'n1 back in zone-a' });
});

s('node IPs from the Node object: its InternalIP changing moves the NodePorts and the masquerade source', async (ctx) => {
  const { box } = ctx;
  await ctx.agents.n1!.stop();
  // No --node-ips and no external device: the node IPs are the Node's InternalIPs.
  ctx.agents.n1 = await box.startAgent('n1', ['--health-addr', HEALTH, '--external-devices=']);
  const refused = async (to: string): Promise<boolean> => (await box.tcp('c1', to, { count: 1, timeoutMs: 1000 })).attempts[0]!.error === 'ECONNREFUSED';
  try {
    assert.match(ctx.agents.n1.logs(), /"msg":"node from the Node object".*"nodeIPs":"192\.168\.77\.10"/);
    let failures = await runFlows(box, [{ from: 'c1', to: `${N1}:30102`, expect: ['a1', 'b1'], src: MODE === 'bpf' ? N1 : 'any', ref: 'NodePort on the node IP', why: 'NodePort on the InternalIP' }]);
    assert.equal(failures, [], failures.join('\n'));
    assert.ok(await refused(`${N1_OTHER}:30102`), 'not a node IP yet: the node itself refuses');
    box.writeManifest('nodes.yaml', nodes({ n1IP: N1_OTHER }));
    await ctx.agents.n1.waitForNext(/"msg":"node changed; re-planning every service".*"nodeIPs":"192\.168\.77\.50"/, 5000);
    await waitFor(async () => /192\.168\.77\.50:30102\/TCP/.test(await box.weir('n1', ['services'])), { timeoutMs: 5000, what: 'NodePort on the new IP' });
    // The masquerade source follows in BPF mode (iptables mode: MASQUERADE picks it per route).
    failures = await runFlows(box, [
      { from: 'c1', to: `${N1_OTHER}:30102`, expect: ['a1', 'b1'], src: MODE === 'bpf' ? N1_OTHER : 'any', ref: 'NodePort on the node IP', why: 'NodePort on the new InternalIP' },
    ]);
    assert.equal(failures, [], failures.join('\n'));
    assert.ok(await refused(`${N1}:30102`), 'the old address is no NodePort any more');
  } finally {
    box.writeManifest('nodes.yaml', nodes());
    await ctx.agents.n1.stop();
    ctx.agents.n1 = await box.startAgent('n1', ['--health-addr', HEALTH]);
  }
});

s.run();
