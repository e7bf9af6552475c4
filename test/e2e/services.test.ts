/**
 * Every Service type and policy across two nodes, with real clients:
 * pods on both nodes, an outside client, and node processes (inside the
 * agent's cgroup, like hostNetwork pods). A table of flows over one shared
 * set of services states what a kube-proxy user expects for each: which
 * backends may answer, or REJECT (refused at once) / DROP (timeout), and
 * which source address the backend sees (masquerade or not).
 *
 *   n1 (192.168.77.10): a1 10.244.1.10, a2 10.244.1.11, c1 10.244.1.12
 *   n2 (192.168.77.11): b1 10.244.2.10, c2 10.244.2.11
 *   outside: 192.168.77.200 and .201; routes 10.96/16 and 203.0.113/24 via n1
 *   (203.0.113.11, the eTP=Local LoadBalancer, via n2: the node a cloud LB
 *   would pick by its health check)
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box, MODE, OUTSIDE_IP, waitFor } from '../box/box';
import { Flow, IEM_CASES, runFlows } from '../box/flows';

const s = suite<{ box: Box; agents: Record<string, Agent> }>(`services (${MODE})`);
const N1 = '192.168.77.10';
const N2 = '192.168.77.11';
const OUT = OUTSIDE_IP;
const OUT2 = '192.168.77.201';

interface PortSpec {
  name: string;
  port: number;
  target: number;
  proto?: 'TCP' | 'UDP';
  nodePort?: number;
}

function svcYaml(name: string, o: { ip: string; ports: PortSpec[]; type?: string; extra?: string; status?: string }): string {
  const ports = o.ports.map((p) => `    - {name: ${p.name}, port: ${p.port}, targetPort: ${p.target}, protocol: ${p.proto ?? 'TCP'}${p.nodePort ? `, nodePort: ${p.nodePort}` : ''}}`).join('\n');
  return `---\napiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: t}\nspec:\n  type: ${o.type ?? 'ClusterIP'}\n  clusterIP: ${o.ip}\n${o.extra ?? ''}  ports:\n${ports}\n${o.status ?? ''}`;
}

interface Ep {
  ip: string;
  node: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
}

function sliceYaml(svc: string, eps: Ep[], ports: PortSpec[]): string {
  const p = ports.map((x) => `  - {name: ${x.name}, port: ${x.target}, protocol: ${x.proto ?? 'TCP'}}`).join('\n');
  const e = eps
    .map((x) => `  - addresses: [${x.ip}]\n    nodeName: ${x.node}\n    conditions: {ready: ${x.ready ?? true}, serving: ${x.serving ?? x.ready ?? true}, terminating: ${x.terminating ?? false}}`)
    .join('\n');
  return `---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: ${svc}-1\n  namespace: t\n  labels: {kubernetes.io/service-name: ${svc}}\naddressType: IPv4\nports:\n${p}\nendpoints:\n${e}\n`;
}

const HTTP: PortSpec = { name: 'http', port: 80, target: 8080 };
const A1: Ep = { ip: '10.244.1.10', node: 'n1' };
const A2: Ep = { ip: '10.244.1.11', node: 'n1' };
const B1: Ep = { ip: '10.244.2.10', node: 'n2' };

function manifests(): string {
  const np: PortSpec[] = [
    { ...HTTP, nodePort: 30080 },
    { name: 'dns', port: 53, target: 5353, proto: 'UDP', nodePort: 30053 },
  ];
  return [
    svcYaml('np', { ip: '10.96.3.1', type: 'NodePort', ports: np }) + sliceYaml('np', [A1, B1], np),
    svcYaml('npl', { ip: '10.96.3.2', type: 'NodePort', extra: '  externalTrafficPolicy: Local\n', ports: [{ ...HTTP, nodePort: 30081 }] }) + sliceYaml('npl', [A1], [HTTP]),
    svcYaml('lb', {
      ip: '10.96.3.3',
      type: 'LoadBalancer',
      extra: `  loadBalancerSourceRanges: [${OUT2}/32]\n`,
      ports: [{ ...HTTP, nodePort: 30082 }],
      status: 'status:\n  loadBalancer:\n    ingress: [{ip: 203.0.113.10}]\n',
    }) + sliceYaml('lb', [A1, B1], [HTTP]),
    svcYaml('lbl', {
      ip: '10.96.3.4',
      type: 'LoadBalancer',
      extra: '  externalTrafficPolicy: Local\n  healthCheckNodePort: 32001\n',
      ports: [{ ...HTTP, nodePort: 30083 }],
      status: 'status:\n  loadBalancer:\n    ingress: [{ip: 203.0.113.11}]\n',
    }) + sliceYaml('lbl', [B1], [HTTP]),
    svcYaml('ext', { ip: '10.96.3.5', extra: '  externalIPs: [203.0.113.20]\n', ports: [HTTP] }) + sliceYaml('ext', [B1], [HTTP]),
    svcYaml('itl', { ip: '10.96.3.6', extra: '  internalTrafficPolicy: Local\n', ports: [HTTP] }) + sliceYaml('itl', [A1, B1], [HTTP]),
    svcYaml('itl2', { ip: '10.96.3.7', extra: '  internalTrafficPolicy: Local\n', ports: [HTTP] }) + sliceYaml('itl2', [B1], [HTTP]),
    svcYaml('none', { ip: '10.96.3.8', ports: [HTTP, { name: 'dns', port: 53, target: 5353, proto: 'UDP' }] }),
    svcYaml('extl', { ip: '10.96.3.13', extra: '  externalIPs: [203.0.113.21]\n  externalTrafficPolicy: Local\n', ports: [HTTP] }) + sliceYaml('extl', [A1, B1], [HTTP]),
    svcYaml('lbl2', {
      ip: '10.96.3.14',
      type: 'LoadBalancer',
      extra: '  externalTrafficPolicy: Local\n  healthCheckNodePort: 32002\n',
      ports: [{ ...HTTP, nodePort: 30084 }],
      status: 'status:\n  loadBalancer:\n    ingress: [{ip: 203.0.113.12}]\n',
    }) + sliceYaml('lbl2', [A1, B1], [HTTP]),
    svcYaml('lbc', {
      ip: '10.96.3.15',
      type: 'LoadBalancer',
      ports: [{ ...HTTP, nodePort: 30085 }],
      status: 'status:\n  loadBalancer:\n    ingress: [{ip: 203.0.113.13}]\n',
    }) + sliceYaml('lbc', [A1, B1], [HTTP]),
    svcYaml('lbsr', {
      ip: '10.96.3.16',
      type: 'LoadBalancer',
      extra: `  loadBalancerSourceRanges: [${N1}/32, ${OUT2}/32]\n`,
      ports: [{ ...HTTP, nodePort: 30086 }],
      status: 'status:\n  loadBalancer:\n    ingress: [{ip: 203.0.113.14}]\n',
    }) + sliceYaml('lbsr', [A1, B1], [HTTP]),
    svcYaml('lbi', {
      ip: '10.96.3.17',
      type: 'LoadBalancer',
      extra: '  internalTrafficPolicy: Local\n',
      ports: [{ ...HTTP, nodePort: 30087 }],
      status: 'status:\n  loadBalancer:\n    ingress: [{ip: 203.0.113.15}]\n',
    }) + sliceYaml('lbi', [A1, B1], [HTTP]),
  ].join('');
}

s.before(async (ctx) => {
  const box = await Box.create({ nodes: 2 });
  ctx.box = box;
  for (const [node, pod] of [
    ['n1', 'a1'],
    ['n1', 'a2'],
    ['n1', 'c1'],
    ['n2', 'b1'],
    ['n2', 'c2'],
  ] as const) {
    await box.addPod(node, pod);
  }
  for (const p of ['a1', 'a2', 'b1']) await box.startEcho(p, { tcp: [8080], udp: [5353] });
  await box.exec(box.outside, ['ip', 'addr', 'add', `${OUT2}/24`, 'dev', 'eth0']);
  await box.routeFromOutside('10.96.0.0/16', 'n1');
  await box.routeFromOutside('203.0.113.0/24', 'n1');
  await box.routeFromOutside('203.0.113.11/32', 'n2');
  box.writeManifest('services.yaml', manifests());
  ctx.agents = { n1: await box.startAgent('n1'), n2: await box.startAgent('n2') };
  for (const n of ['n1', 'n2']) {
    await waitFor(async () => /10\.96\.3\.8:80\/TCP/.test(await box.weir(n, ['services'])), { timeoutMs: 5000, what: `${n} programmed` });
    if (MODE === 'bpf') await ctx.agents[n]!.proc.waitFor(/"device":"eth0"/, 3000);
  }
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

const FLOWS: Flow[] = [
  { from: 'c1', to: '10.96.3.1:80', expect: ['a1', 'b1'], src: 'client', why: 'ClusterIP from a pod: all endpoints, no masquerade' },
  { from: 'c2', to: '10.96.3.1:80', expect: ['a1', 'b1'], src: 'client', why: 'ClusterIP from a pod on the other node' },
  { from: 'c1', to: '10.96.3.1:53', proto: 'udp', expect: ['a1', 'b1'], src: 'client', why: 'UDP ClusterIP' },
  { from: 'outside', to: '10.96.3.1:80', expect: ['a1', 'b1'], src: N1, why: 'ClusterIP from outside the cluster CIDR is masqueraded' },
  { from: 'outside', to: `${N1}:30080`, expect: ['a1', 'b1'], src: N1, why: 'NodePort eTP=Cluster: local and remote backends, masqueraded' },
  { from: 'outside', to: `${N2}:30080`, expect: ['a1', 'b1'], src: N2, why: 'NodePort on the other node' },
  { from: 'outside', to: `${N1}:30053`, proto: 'udp', expect: ['a1', 'b1'], src: N1, why: 'UDP NodePort' },
  { from: 'c1', to: `${N1}:30080`, expect: ['a1', 'b1'], src: N1, why: "pod to its own node's NodePort (KUBE-EXT masquerades)" },
  { from: 'c2', to: `${N1}:30080`, expect: ['a1', 'b1'], src: N1, why: "pod to another node's NodePort" },
  { from: 'n1', to: '10.96.3.1:80', expect: ['a1', 'b1'], src: 'any', why: 'node process to a ClusterIP (socket hook)' },
  { from: 'n1', to: '10.96.3.1:53', proto: 'udp', expect: ['a1', 'b1'], src: 'any', why: 'node process, UDP ClusterIP' },
  { from: 'n1', to: `${N1}:30080`, expect: ['a1', 'b1'], src: 'any', why: 'node process to its own NodePort' },
  { from: 'n1', to: '127.0.0.1:30080', expect: ['a1', 'b1'], src: 'any', why: 'NodePort on localhost (--localhost-nodeports default)' },
  { from: 'n1', to: `${N2}:30080`, expect: ['a1', 'b1'], src: N2, why: "node process to another node's NodePort" },
  { from: 'outside', to: `${N1}:30081`, expect: ['a1'], src: 'client', why: 'NodePort eTP=Local: local endpoint, client IP kept' },
  { from: 'outside', to: `${N2}:30081`, expect: 'DROP', why: 'eTP=Local on a node without local endpoints drops' },
  { from: 'c2', to: `${N2}:30081`, expect: ['a1'], src: 'client', why: 'pods short-circuit eTP=Local to all endpoints' },
  { from: 'n2', to: `${N2}:30081`, expect: ['a1'], src: 'any', why: 'node processes short-circuit eTP=Local too' },
  { from: 'outside', bind: OUT2, to: '203.0.113.10:80', expect: ['a1', 'b1'], src: N1, why: 'LoadBalancer IP from an allowed source range' },
  { from: 'outside', bind: OUT, to: '203.0.113.10:80', expect: 'DROP', why: 'LoadBalancer IP from outside loadBalancerSourceRanges' },
  { from: 'outside', bind: OUT, to: `${N1}:30082`, expect: ['a1', 'b1'], src: N1, why: "the same service's NodePort is not filtered" },
  { from: 'outside', to: '203.0.113.11:80', expect: ['b1'], src: 'client', why: 'eTP=Local LoadBalancer at the node with the endpoint' },
  { from: 'outside', to: `${N1}:30083`, expect: 'DROP', why: 'eTP=Local LoadBalancer NodePort without local endpoint' },
  { from: 'outside', to: '203.0.113.20:80', expect: ['b1'], src: N1, why: 'externalIP to a remote backend, masqueraded' },
  { from: 'c1', to: '203.0.113.20:80', expect: ['b1'], src: N1, why: 'externalIP from a pod (KUBE-EXT masquerades)' },
  { from: 'n1', to: '203.0.113.20:80', expect: ['b1'], src: 'any', why: 'externalIP from a node process' },
  // kube-proxy drops; the BPF socket hook can only fail the call (EPERM).
  { from: 'n1', to: '203.0.113.10:80', expect: MODE === 'bpf' ? 'EPERM' : 'DROP', why: 'LoadBalancer IP from a node process outside the source ranges' },
  { from: 'n2', to: `${N2}:30053`, proto: 'udp', expect: ['a1', 'b1'], src: 'any', why: 'node process, UDP NodePort' },
  { from: 'c1', to: '10.96.3.6:80', expect: ['a1'], src: 'client', why: "internalTrafficPolicy Local: this node's endpoint" },
  { from: 'c2', to: '10.96.3.6:80', expect: ['b1'], src: 'client', why: 'internalTrafficPolicy Local on the other node' },
  { from: 'c1', to: '10.96.3.7:80', expect: 'DROP', why: 'iTP=Local without local endpoints drops (not rejects)' },
  { from: 'c1', to: '10.96.3.8:80', expect: 'REJECT', why: 'no endpoints: REJECT' },
  { from: 'outside', to: '10.96.3.8:80', expect: 'REJECT', why: 'no endpoints, from outside: REJECT' },
  // BPF: the socket hook fails connect() with ECONNREFUSED; iptables: REJECT in OUTPUT.
  { from: 'n1', to: '10.96.3.8:80', expect: 'REJECT', why: 'no endpoints, node process: refused at once' },
  // kube-proxy's REJECT rule in OUTPUT drops the datagram itself: the send fails with EPERM.
  { from: 'n1', to: '10.96.3.8:53', proto: 'udp', expect: 'EPERM', why: 'no endpoints, node process, UDP: refused' },
  { from: 'c1', to: '10.96.3.8:53', proto: 'udp', expect: 'REJECT', why: 'no endpoints, UDP from a pod: ICMP port unreachable' },
  // kube-proxy drops; the BPF socket hook fails the call at once instead.
  { from: 'n1', to: '10.96.3.7:80', expect: MODE === 'bpf' ? 'EPERM' : 'DROP', why: 'iTP=Local without local endpoints, node process' },
  { from: 'c1', to: '10.96.3.1:8080', expect: 'DROP', why: 'a port the service does not expose is not NATed (and goes nowhere)' },
  { from: 'c1', to: '203.0.113.21:80', expect: ['a1', 'b1'], src: 'client', why: 'externalIP eTP=Local from a pod: every endpoint', ref: 'TestExternalTrafficPolicyLocal / pod to external IP' },
  { from: 'c2', to: '203.0.113.21:80', expect: ['a1', 'b1'], src: 'client', why: 'externalIP eTP=Local from a pod on the other node', ref: 'TestExternalTrafficPolicyLocal / pod to external IP' },
  {
    from: 'outside',
    to: '203.0.113.21:80',
    expect: ['a1'],
    src: 'client',
    why: 'externalIP eTP=Local from outside: local endpoint, client kept',
    ref: 'TestExternalTrafficPolicyLocal / external to external IP',
  },
  { from: 'c1', to: `${N1}:30084`, expect: ['a1', 'b1'], src: 'client', why: 'NodePort eTP=Local from a pod: every endpoint', ref: 'TestInternalExternalMasquerade / pod to NodePort with eTP:Local' },
  {
    from: 'c1',
    to: '203.0.113.12:80',
    expect: ['a1', 'b1'],
    src: 'client',
    why: 'LoadBalancer eTP=Local from a pod: every endpoint',
    ref: 'TestInternalExternalMasquerade / pod to LB with eTP:Local',
  },
  { from: 'outside', to: `${N1}:30084`, expect: ['a1'], src: 'client', why: 'NodePort eTP=Local from outside', ref: 'TestInternalExternalMasquerade / external to NodePort with eTP:Local' },
  { from: 'outside', to: '203.0.113.12:80', expect: ['a1'], src: 'client', why: 'LoadBalancer eTP=Local from outside', ref: 'TestInternalExternalMasquerade / external to LB with eTP:Local' },
  { from: 'c1', to: '203.0.113.13:80', expect: ['a1', 'b1'], src: N1, why: 'LoadBalancer eTP=Cluster from a pod is masqueraded', ref: 'TestInternalExternalMasquerade / pod to LB' },
  // Node processes whose socket is bound before it connects.
  { from: 'n1', bind: N1, to: '10.96.3.1:80', expect: ['a1', 'b1'], src: N1, why: 'node process bound to the node IP, to a ClusterIP' },
  { from: 'n1', bind: N1, to: `${N1}:30080`, expect: ['a1', 'b1'], src: N1, why: 'node process bound to the node IP, to its NodePort' },
  {
    from: 'n1',
    bind: '127.0.0.1',
    to: '127.0.0.1:30080',
    expect: ['a1', 'b1'],
    src: N1,
    why: 'node process bound to 127.0.0.1, to a localhost NodePort: masqueraded',
    ref: 'TestNodePorts / localhost to NodePort',
  },
  { from: 'n1', bind: '127.0.0.1', to: '127.0.0.1:30053', proto: 'udp', expect: ['a1', 'b1'], src: N1, why: 'the same over UDP', ref: 'TestNodePorts / localhost to NodePort' },
  { from: 'n1', bind: N1, to: '10.96.3.1:53', proto: 'udp', expect: ['a1', 'b1'], src: N1, why: 'node process bound to the node IP, UDP ClusterIP' },
];

/** Restart n1's agent with other flags for one table, then restore the usual agent (also on failure). */
async function withAgent(ctx: { box: Box; agents: Record<string, Agent> }, flags: string[], fn: () => Promise<void>, opts: { clusterCidr?: boolean } = {}): Promise<void> {
  await ctx.agents.n1!.stop();
  ctx.agents.n1 = await ctx.box.startAgent('n1', flags, opts.clusterCidr === false ? { clusterCidr: false } : {});
  try {
    await fn();
  } finally {
    await ctx.agents.n1.stop();
    ctx.agents.n1 = await ctx.box.startAgent('n1');
  }
}

s('flow table: backends, REJECT/DROP and masquerade as kube-proxy', async ({ box }) => {
  const failures = await runFlows(box, FLOWS);
  assert.equal(failures, [], failures.join('\n'));
});

s('flow table with --masquerade-all: ClusterIP traffic masqueraded, external traffic by its policy', async (ctx) => {
  const flows: Flow[] = [
    { from: 'c1', to: '10.96.3.1:80', expect: ['a1', 'b1'], src: N1, why: 'pod to ClusterIP', ref: 'TestInternalExternalMasquerade masqueradeAll / pod to ClusterIP' },
    { from: 'c1', to: `${N1}:30080`, expect: ['a1', 'b1'], src: N1, why: 'pod to NodePort eTP=Cluster', ref: 'TestInternalExternalMasquerade masqueradeAll / pod to NodePort' },
    { from: 'c1', to: '203.0.113.13:80', expect: ['a1', 'b1'], src: N1, why: 'pod to LB eTP=Cluster', ref: 'TestInternalExternalMasquerade masqueradeAll / pod to LB' },
    {
      from: 'c1',
      to: `${N1}:30084`,
      expect: ['a1', 'b1'],
      src: 'client',
      why: 'pod to NodePort eTP=Local: every endpoint, not masqueraded',
      ref: 'TestInternalExternalMasquerade masqueradeAll / pod to NodePort with eTP:Local',
    },
    {
      from: 'c1',
      to: '203.0.113.12:80',
      expect: ['a1', 'b1'],
      src: 'client',
      why: 'pod to LB eTP=Local: every endpoint, not masqueraded',
      ref: 'TestInternalExternalMasquerade masqueradeAll / pod to LB with eTP:Local',
    },
    {
      from: 'outside',
      to: `${N1}:30084`,
      expect: ['a1'],
      src: 'client',
      why: 'outside to NodePort eTP=Local: local endpoint, not masqueraded',
      ref: 'TestInternalExternalMasquerade masqueradeAll / external to NodePort with eTP:Local',
    },
    {
      from: 'outside',
      to: '203.0.113.12:80',
      expect: ['a1'],
      src: 'client',
      why: 'outside to LB eTP=Local: local endpoint, not masqueraded',
      ref: 'TestInternalExternalMasquerade masqueradeAll / external to LB with eTP:Local',
    },
  ];
  let failures: string[] = [];
  await withAgent(ctx, ['--masquerade-all'], async () => {
    failures = await runFlows(ctx.box, flows);
  });
  assert.equal(failures, [], failures.join('\n'));
});

s('flow table without --cluster-cidr: no local-traffic detector, so pods are external clients of eTP=Local', async (ctx) => {
  const flows: Flow[] = [
    {
      from: 'c1',
      to: `${N1}:30084`,
      expect: ['a1'],
      src: 'client',
      why: 'pod to NodePort eTP=Local: local endpoint only',
      ref: 'TestInternalExternalMasquerade no LocalTrafficDetector / pod to NodePort with eTP:Local; TestOnlyLocalNodePortsNoClusterCIDR',
    },
    {
      from: 'c1',
      to: '203.0.113.12:80',
      expect: ['a1'],
      src: 'client',
      why: 'pod to LB eTP=Local: local endpoint only',
      ref: 'TestInternalExternalMasquerade no LocalTrafficDetector / pod to LB with eTP:Local',
    },
    { from: 'outside', to: `${N1}:30084`, expect: ['a1'], src: 'client', why: 'outside to NodePort eTP=Local', ref: 'TestOnlyLocalNodePortsNoClusterCIDR / external to NodePort' },
    { from: 'c1', to: '10.96.3.1:80', expect: ['a1', 'b1'], src: 'client', why: 'pod to ClusterIP: unchanged', ref: 'TestInternalExternalMasquerade no LocalTrafficDetector / pod to ClusterIP' },
  ];
  let failures: string[] = [];
  await withAgent(
    ctx,
    [],
    async () => {
      failures = await runFlows(ctx.box, flows);
    },
    { clusterCidr: false },
  );
  assert.equal(failures, [], failures.join('\n'));
});

/*
 * kube-proxy's TestInternalExternalMasquerade, case by case: three
 * LoadBalancer services with one endpoint on this node (a1) and one
 * elsewhere (b1) — traffic policies Cluster (lbc), eTP=Local (lbl2) and
 * iTP=Local (lbi) — reached from a pod, the node, 127.0.0.1 and outside,
 * at the ClusterIP, the NodePort and the LB IP. "all" is both endpoints,
 * "local" a1 alone; masq means the backend sees the node IP.
 */
const IEM_SERVICES = [
  { name: 'Cluster', suffix: '', cip: '10.96.3.15', np: 30085, lb: '203.0.113.13' },
  { name: 'eTP:Local', suffix: ' with eTP:Local', cip: '10.96.3.14', np: 30084, lb: '203.0.113.12' },
  { name: 'iTP:Local', suffix: ' with iTP:Local', cip: '10.96.3.17', np: 30087, lb: '203.0.113.15' },
] as const;

function internalExternalMasquerade(): Flow[] {
  const flows: Flow[] = [];
  for (const [client, dest, expects] of IEM_CASES) {
    IEM_SERVICES.forEach((svc, i) => {
      const [reach, masq] = expects[i]!;
      const to = dest === 'ClusterIP' ? `${svc.cip}:80` : dest === 'LB' ? `${svc.lb}:80` : `${client === 'localhost' ? '127.0.0.1' : N1}:${svc.np}`;
      const from = client === 'pod' ? 'c1' : client === 'external' ? 'outside' : 'n1';
      flows.push({
        from,
        ...(client === 'localhost' ? { bind: '127.0.0.1' } : {}),
        to,
        expect: reach === 'all' ? ['a1', 'b1'] : ['a1'],
        src: masq ? N1 : 'client',
        why: `${client} to ${dest}${svc.suffix}`,
        ref: `TestInternalExternalMasquerade / ${client} to ${dest}${svc.suffix}`,
      });
    });
  }
  return flows;
}

s("flow table: kube-proxy's TestInternalExternalMasquerade, every case", async ({ box }) => {
  const failures = await runFlows(box, internalExternalMasquerade());
  assert.equal(failures, [], failures.join('\n'));
});

s('flow table: loadBalancerSourceRanges that admit the node also admit the LB IP as source', async ({ box }) => {
  const flows: Flow[] = [
    {
      from: 'n1',
      to: '203.0.113.14:80',
      expect: ['a1', 'b1'],
      src: N1,
      why: 'node process to an LB IP whose source ranges hold the node IP',
      ref: 'TestLoadBalancer / node to LB1 (allowed by LoadBalancerSourceRanges)',
    },
    {
      from: 'n1',
      bind: '203.0.113.14',
      to: '203.0.113.14:80',
      expect: ['a1', 'b1'],
      src: N1,
      why: 'a VIP-like LB loops the request back with the LB IP as source: served, masqueraded',
      ref: 'TestLoadBalancer / same node to LB1, SNATted to LB1',
    },
    { from: 'outside', bind: OUT2, to: '203.0.113.14:80', expect: ['a1', 'b1'], src: N1, why: 'an allowed outside source', ref: 'TestLoadBalancer / accepted external to LB1' },
    { from: 'outside', bind: OUT, to: '203.0.113.14:80', expect: 'DROP', why: 'a source outside the ranges', ref: 'TestLoadBalancer / blocked external to LB1' },
  ];
  // The LB IP is a local address of n1, as a VIP-like load balancer makes it (host scope, so the kernel
  // never picks it as the source of other traffic).
  await box.exec(box.node('n1').ns, ['ip', 'addr', 'add', '203.0.113.14/32', 'dev', 'lo', 'scope', 'host']);
  try {
    const failures = await runFlows(box, flows);
    assert.equal(failures, [], failures.join('\n'));
  } finally {
    await box.exec(box.node('n1').ns, ['ip', 'addr', 'del', '203.0.113.14/32', 'dev', 'lo']);
  }
});

s('flow table with --localhost-nodeports=false: 127.0.0.1 is not a NodePort address', async (ctx) => {
  const flows: Flow[] = [
    { from: 'n1', to: '127.0.0.1:30080', expect: 'REJECT', why: 'nothing listens there: refused', ref: 'TestNodePorts localhost-nodeports disabled / localhost to NodePort' },
    { from: 'n1', bind: '127.0.0.1', to: '127.0.0.1:30080', expect: 'REJECT', why: 'bound to 127.0.0.1: refused too', ref: 'TestNodePorts localhost-nodeports disabled / localhost to NodePort' },
    { from: 'outside', to: `${N1}:30080`, expect: ['a1', 'b1'], src: N1, why: 'node IPs still answer, masqueraded', ref: 'TestNodePorts localhost-nodeports disabled / external to NodePort' },
  ];
  let failures: string[] = [];
  await withAgent(ctx, ['--localhost-nodeports=false'], async () => {
    failures = await runFlows(ctx.box, flows);
  });
  // 127.0.0.1 among --nodeport-addresses does not bring it back (kube-proxy ignores it, with a warning).
  await withAgent(ctx, ['--localhost-nodeports=false', '--nodeport-addresses', '192.168.77.0/24,127.0.0.1/32'], async () => {
    failures.push(...(await runFlows(ctx.box, flows)));
  });
  assert.equal(failures, [], failures.join('\n'));
});

s('node process, unconnected UDP: replies appear to come from the ClusterIP', async ({ box }) => {
  const r = await box.udp('n1', '10.96.3.1:53', { count: 6 });
  assert.ok(
    r.attempts.every((a) => a.ok && a.from === '10.96.3.1:53'),
    JSON.stringify(r.attempts),
  );
});

s("healthCheckNodePort: 200 where a local endpoint is ready, else 503, kube-proxy's body", async ({ box }) => {
  const n2 = await box.curl('outside', `http://${N2}:32001/healthz`);
  assert.is(n2.code, 0);
  assert.equal(JSON.parse(n2.body), { service: { namespace: 't', name: 'lbl' }, localEndpoints: 1, serviceProxyHealthy: true });
  const status = async (node: string): Promise<string> => (await box.exec(box.outside, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', `http://${node}:32001/anything`])).stdout;
  assert.is(await status(N2), '200');
  assert.is(await status(N1), '503');
  const n1 = JSON.parse((await box.curl('outside', `http://${N1}:32001/`)).body) as { localEndpoints: number };
  assert.is(n1.localEndpoints, 0);
});

s('sessionAffinity ClientIP: one backend per client; removing it moves the client at once', async ({ box }) => {
  const eps = [A1, A2, B1];
  const yaml = (list: Ep[]): string =>
    svcYaml('aff', { ip: '10.96.3.9', extra: '  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 2}}\n', ports: [HTTP] }) + sliceYaml('aff', list, [HTTP]);
  box.writeManifest('aff.yaml', yaml(eps));
  await waitFor(async () => /10\.96\.3\.9:80\/TCP .* 3 backends/.test(await box.weir('n1', ['services'])), { timeoutMs: 3000, what: 'aff programmed' });
  const first = await box.tcp('c1', '10.96.3.9:80', { count: 20 });
  assert.is(new Set(first.attempts.map((a) => a.backend)).size, 1, 'one backend for the client');
  const other = await box.tcp('c2', '10.96.3.9:80', { count: 10 });
  assert.is(new Set(other.attempts.map((a) => a.backend)).size, 1, 'another client sticks to its own choice');
  // After the timeout without new connections the choice is made afresh:
  // with three backends, eight idle periods all landing on one is ~1/2000.
  const picks = new Set<string>([first.attempts[0]!.backend!]);
  for (let i = 0; i < 8 && picks.size < 2; i++) {
    await new Promise((r) => setTimeout(r, 2100));
    picks.add((await box.tcp('c1', '10.96.3.9:80', { count: 1 })).attempts[0]!.backend!);
  }
  assert.ok(picks.size >= 2, 'a new choice after the affinity timeout');
  // Removing the current backend moves the client at once, and it sticks again.
  const chosen = [(await box.tcp('c1', '10.96.3.9:80', { count: 1 })).attempts[0]!.backend!];
  const rest = eps.filter((e) => e.ip !== box.pod(chosen[0]!).ip);
  box.writeManifest('aff.yaml', yaml(rest));
  await waitFor(async () => /10\.96\.3\.9:80\/TCP .* 2 backends/.test(await box.weir('n1', ['services'])), { timeoutMs: 3000, what: 'backend removed' });
  const moved = await box.tcp('c1', '10.96.3.9:80', { count: 10 });
  const now = [...new Set(moved.attempts.map((a) => a.backend))];
  assert.is(now.length, 1);
  assert.is.not(now[0], chosen[0]);
  box.removeManifest('aff.yaml');
});

s('readiness: only ready endpoints get new connections; terminating ones serve when none is ready, and keep established flows', async ({ box }) => {
  const yaml = (list: Ep[]): string => svcYaml('rdy', { ip: '10.96.3.10', ports: [HTTP] }) + sliceYaml('rdy', list, [HTTP]);
  const programmed = async (re: RegExp): Promise<void> => {
    await waitFor(async () => re.test(await box.weir('n1', ['services'])), { timeoutMs: 3000, what: String(re) });
  };
  box.writeManifest('rdy.yaml', yaml([A1, { ...A2, ready: false, serving: false }]));
  await programmed(/10\.96\.3\.10:80\/TCP .* 1 backend\n {2}#1 backend \d+ 10\.244\.1\.10/);
  let r = await box.tcp('c1', '10.96.3.10:80', { count: 12 });
  assert.equal([...new Set(r.attempts.map((a) => a.backend))], ['a1'], 'not-ready a2 gets nothing');

  const hold = await box.hold('c1', '10.96.3.10:80', { durationMs: 2500, intervalMs: 100 });
  // a1 starts terminating while a2 becomes ready: new flows go to a2 only,
  // the established flow stays on a1.
  box.writeManifest('rdy.yaml', yaml([{ ...A1, ready: false, serving: true, terminating: true }, A2]));
  await programmed(/10\.96\.3\.10:80\/TCP .* 1 backend\n {2}#1 backend \d+ 10\.244\.1\.11/);
  r = await box.tcp('c1', '10.96.3.10:80', { count: 12 });
  assert.equal([...new Set(r.attempts.map((a) => a.backend))], ['a2']);
  const held = await hold.result();
  assert.ok(held.attempts.length > 10 && held.attempts.every((a) => a.ok && a.backend === 'a1'), JSON.stringify(held.attempts.slice(-3)));

  // Nothing ready: serving+terminating endpoints take new connections.
  box.writeManifest(
    'rdy.yaml',
    yaml([
      { ...A1, ready: false, serving: true, terminating: true },
      { ...A2, ready: false, serving: false, terminating: true },
    ]),
  );
  await programmed(/10\.96\.3\.10:80\/TCP .* 1 backend\n {2}#1 backend \d+ 10\.244\.1\.10/);
  r = await box.tcp('c1', '10.96.3.10:80', { count: 8 });
  assert.equal([...new Set(r.attempts.map((a) => a.backend))], ['a1']);
  box.removeManifest('rdy.yaml');
});

s('BPF mode installs no iptables rules and needs no netfilter NAT', async ({ box }) => {
  if (MODE !== 'bpf') return;
  for (const n of ['n1', 'n2']) {
    const nat = await box.exec(box.node(n).ns, ['iptables-save']);
    assert.not.match(nat.stdout, /^-A /m, `${n} has rules:\n${nat.stdout}`);
  }
});

s('duplicate NodePort: a clear error naming the object and field; the first service keeps working', async ({ box, agents }) => {
  box.writeManifest('dup.yaml', svcYaml('dup', { ip: '10.96.3.11', type: 'NodePort', ports: [{ ...HTTP, nodePort: 30080 }] }) + sliceYaml('dup', [A2], [HTTP]));
  await agents.n1!.proc.waitFor(/"object":"Service t\/dup","field":"spec.ports\[\].nodePort"/, 3000);
  const r = await box.tcp('outside', `${N1}:30080`, { count: 8 });
  assert.ok(
    r.attempts.every((a) => a.ok && (a.backend === 'a1' || a.backend === 'b1')),
    JSON.stringify(r.attempts),
  );
  box.removeManifest('dup.yaml');
});

s("a nodePort outside 30000-32767 is served: the API server's range is its own", async ({ box }) => {
  box.writeManifest('range.yaml', svcYaml('range', { ip: '10.96.3.12', type: 'NodePort', ports: [{ ...HTTP, nodePort: 40000 }] }) + sliceYaml('range', [A2], [HTTP]));
  try {
    // Until it is programmed the node refuses the port; then every connection reaches a2.
    const r = await waitFor(
      async () => {
        const res = await box.tcp('outside', `${N1}:40000`, { count: 4, timeoutMs: 1000 });
        return res.attempts.every((a) => a.ok) ? res : null;
      },
      { timeoutMs: 5000, what: 'nodePort 40000 served' },
    );
    assert.ok(
      r.attempts.every((a) => a.backend === 'a2'),
      JSON.stringify(r.attempts),
    );
  } finally {
    box.removeManifest('range.yaml');
  }
});

s('--nodeport-addresses and --localhost-nodeports=false narrow where NodePorts answer', async (ctx) => {
  const { box } = ctx;
  await ctx.agents.n2!.stop();
  ctx.agents.n2 = await box.startAgent('n2', ['--nodeport-addresses', '10.0.0.0/8', '--localhost-nodeports=false']);
  // Not a NodePort any more: the node's own stack answers, and nothing listens there.
  const outside = await box.tcp('outside', `${N2}:30080`, { count: 1, timeoutMs: 1000 });
  assert.is(outside.attempts[0]!.error, 'ECONNREFUSED');
  const local = await box.tcp('n2', '127.0.0.1:30080', { count: 1, timeoutMs: 1000 });
  assert.is(local.attempts[0]!.error, 'ECONNREFUSED');
  assert.not.match(await box.weir('n2', ['services']), /:30080\/TCP/);
  await ctx.agents.n2.stop();
  ctx.agents.n2 = await box.startAgent('n2');
  assert.ok((await box.tcp('outside', `${N2}:30080`, { count: 2 })).attempts.every((a) => a.ok));
});

s('--masquerade-all: even pod-to-ClusterIP traffic is masqueraded', async (ctx) => {
  const { box } = ctx;
  await ctx.agents.n1!.stop();
  ctx.agents.n1 = await box.startAgent('n1', ['--masquerade-all']);
  const r = await box.tcp('c1', '10.96.3.1:80', { count: 6 });
  assert.ok(
    r.attempts.every((a) => a.ok && a.seenSrc!.startsWith(`${N1}:`)),
    JSON.stringify(r.attempts),
  );
  await ctx.agents.n1.stop();
  ctx.agents.n1 = await box.startAgent('n1');
  const back = await box.tcp('c1', '10.96.3.1:80', { count: 6 });
  assert.ok(
    back.attempts.every((a) => a.ok && a.seenSrc!.startsWith('10.244.1.12:')),
    JSON.stringify(back.attempts),
  );
});

s.run();
