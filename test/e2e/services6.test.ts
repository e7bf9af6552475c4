/**
 * The services flow table for IPv6, in a dual-stack box: every Service is
 * dual-stack (ipFamilies [IPv4, IPv6], a ClusterIP of each family, an
 * EndpointSlice of each address type) and the rows reach its IPv6 half with
 * real clients over IPv6 — pods on both nodes, an outside client, node
 * processes in the agent's cgroup. A few IPv4 rows check the same Service
 * answers on both families at once.
 *
 *   n1 fd00:77::10: a1 fd00:244:1::10, a2 ::11, c1 ::12
 *   n2 fd00:77::11: b1 fd00:244:2::10, c2 ::11
 *   outside fd00:77::200 and ::201; routes fd00:96::/64 and 2001:db8::/64 via
 *   n1 (2001:db8::11, the eTP=Local LoadBalancer, via n2)
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box, CLUSTER_CIDR, CLUSTER_CIDR6, MODE, OUTSIDE_IP6, waitFor } from '../box/box';
import { Flow, IEM_CASES, runFlows } from '../box/flows';

const s = suite<{ box: Box; agents: Record<string, Agent> }>(`services over IPv6 (${MODE})`);
const N1 = 'fd00:77::10';
const N2 = 'fd00:77::11';
const N1_4 = '192.168.77.10';
const OUT = OUTSIDE_IP6;
const OUT2 = 'fd00:77::201';
const at = (ip: string, port: number): string => `[${ip}]:${port}`;

interface PortSpec {
  name: string;
  port: number;
  target: number;
  proto?: 'TCP' | 'UDP';
  nodePort?: number;
}

/** A dual-stack Service: ClusterIPs [ip4, ip6]; `extra` and `status` are YAML lines under spec / at the end. */
function svcYaml(name: string, o: { ip4: string; ip6: string; ports: PortSpec[]; type?: string; extra?: string; status?: string }): string {
  const ports = o.ports.map((p) => `    - {name: ${p.name}, port: ${p.port}, targetPort: ${p.target}, protocol: ${p.proto ?? 'TCP'}${p.nodePort ? `, nodePort: ${p.nodePort}` : ''}}`).join('\n');
  return (
    `---\napiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: t}\nspec:\n  type: ${o.type ?? 'ClusterIP'}\n` +
    `  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n  clusterIP: ${o.ip4}\n  clusterIPs: [${o.ip4}, "${o.ip6}"]\n${o.extra ?? ''}  ports:\n${ports}\n${o.status ?? ''}`
  );
}

type Ep = 'a1' | 'a2' | 'b1';
const NODE_OF: Record<Ep, string> = { a1: 'n1', a2: 'n1', b1: 'n2' };

/** An endpoint: a pod, ready, or with its conditions. */
type EpSpec = Ep | { pod: Ep; ready: boolean; serving: boolean; terminating: boolean };

/** One EndpointSlice per address type, the pods' addresses of that family. */
function slicesYaml(box: Box, svc: string, eps: EpSpec[], ports: PortSpec[]): string {
  const p = ports.map((x) => `  - {name: ${x.name}, port: ${x.target}, protocol: ${x.proto ?? 'TCP'}}`).join('\n');
  return (['IPv4', 'IPv6'] as const)
    .map((family) => {
      const e = eps
        .map((spec) => {
          const x = typeof spec === 'string' ? { pod: spec, ready: true, serving: true, terminating: false } : spec;
          const addr = family === 'IPv4' ? box.pod(x.pod).ip : box.pod(x.pod).ip6;
          return `  - addresses: ["${addr}"]\n    nodeName: ${NODE_OF[x.pod]}\n    conditions: {ready: ${x.ready}, serving: ${x.serving}, terminating: ${x.terminating}}`;
        })
        .join('\n');
      return `---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: ${svc}-${family.toLowerCase()}\n  namespace: t\n  labels: {kubernetes.io/service-name: ${svc}}\naddressType: ${family}\nports:\n${p}\nendpoints:\n${e}\n`;
    })
    .join('');
}

const HTTP: PortSpec = { name: 'http', port: 80, target: 8080 };
const DNS: PortSpec = { name: 'dns', port: 53, target: 5353, proto: 'UDP' };
/** The LoadBalancer whose source ranges admit the node (lbsr). */
const LBSR = '2001:db8::14';
const lbStatus = (ip: string): string => `status:\n  loadBalancer:\n    ingress: [{ip: "${ip}"}]\n`;

/*
 * kube-proxy's TestInternalExternalMasquerade over IPv6: LoadBalancers with
 * one endpoint on this node (a1) and one elsewhere (b1) under each traffic
 * policy, reached from a pod, the node and outside at the ClusterIP, the
 * NodePort and the LB IP. (Its localhost rows have no IPv6 form: no
 * NodePort answers on ::1.)
 */
const IEM_SERVICES = [
  { id: 'lbc', name: 'Cluster', suffix: '', ip4: '10.96.3.15', cip: 'fd00:96::3:f', np: 30085, lb: '2001:db8::13', extra: '' },
  { id: 'lbl2', name: 'eTP:Local', suffix: ' with eTP:Local', ip4: '10.96.3.14', cip: 'fd00:96::3:e', np: 30084, lb: '2001:db8::12', extra: '  externalTrafficPolicy: Local\n' },
  { id: 'lbi', name: 'iTP:Local', suffix: ' with iTP:Local', ip4: '10.96.3.17', cip: 'fd00:96::3:11', np: 30087, lb: '2001:db8::15', extra: '  internalTrafficPolicy: Local\n' },
] as const;

function internalExternalMasquerade(): Flow[] {
  return IEM_CASES.filter(([client]) => client !== 'localhost').flatMap(([client, dest, expects]) =>
    IEM_SERVICES.map((svc, i): Flow => {
      const [reach, masq] = expects[i]!;
      return {
        from: client === 'pod' ? 'c1' : client === 'external' ? 'outside' : 'n1',
        to: at(dest === 'ClusterIP' ? svc.cip : dest === 'LB' ? svc.lb : N1, dest === 'NodePort' ? svc.np : 80),
        expect: reach === 'all' ? ['a1', 'b1'] : ['a1'],
        src: masq ? N1 : 'client',
        why: `${client} to ${dest}${svc.suffix}`,
        ref: `TestInternalExternalMasquerade / ${client} to ${dest}${svc.suffix}`,
      };
    }),
  );
}

function manifests(box: Box): string {
  const np: PortSpec[] = [
    { ...HTTP, nodePort: 30080 },
    { ...DNS, nodePort: 30053 },
  ];
  return [
    svcYaml('np', { ip4: '10.96.3.1', ip6: 'fd00:96::3:1', type: 'NodePort', ports: np }) + slicesYaml(box, 'np', ['a1', 'b1'], np),
    svcYaml('npl', { ip4: '10.96.3.2', ip6: 'fd00:96::3:2', type: 'NodePort', extra: '  externalTrafficPolicy: Local\n', ports: [{ ...HTTP, nodePort: 30081 }] }) +
      slicesYaml(box, 'npl', ['a1'], [HTTP]),
    svcYaml('lb', {
      ip4: '10.96.3.3',
      ip6: 'fd00:96::3:3',
      type: 'LoadBalancer',
      extra: `  loadBalancerSourceRanges: ["${OUT2}/128"]\n`,
      ports: [{ ...HTTP, nodePort: 30082 }],
      status: lbStatus('2001:db8::10'),
    }) + slicesYaml(box, 'lb', ['a1', 'b1'], [HTTP]),
    svcYaml('lbl', {
      ip4: '10.96.3.4',
      ip6: 'fd00:96::3:4',
      type: 'LoadBalancer',
      extra: '  externalTrafficPolicy: Local\n  healthCheckNodePort: 32001\n',
      ports: [{ ...HTTP, nodePort: 30083 }],
      status: lbStatus('2001:db8::11'),
    }) + slicesYaml(box, 'lbl', ['b1'], [HTTP]),
    svcYaml('ext', { ip4: '10.96.3.5', ip6: 'fd00:96::3:5', extra: '  externalIPs: ["2001:db8::20"]\n', ports: [HTTP] }) + slicesYaml(box, 'ext', ['b1'], [HTTP]),
    svcYaml('itl', { ip4: '10.96.3.6', ip6: 'fd00:96::3:6', extra: '  internalTrafficPolicy: Local\n', ports: [HTTP] }) + slicesYaml(box, 'itl', ['a1', 'b1'], [HTTP]),
    svcYaml('itl2', { ip4: '10.96.3.7', ip6: 'fd00:96::3:7', extra: '  internalTrafficPolicy: Local\n', ports: [HTTP] }) + slicesYaml(box, 'itl2', ['b1'], [HTTP]),
    svcYaml('none', { ip4: '10.96.3.8', ip6: 'fd00:96::3:8', ports: [HTTP, DNS] }),
    svcYaml('lbsr', {
      ip4: '10.96.3.16',
      ip6: 'fd00:96::3:10',
      type: 'LoadBalancer',
      extra: `  loadBalancerSourceRanges: ["${N1}/128", "${OUT2}/128"]\n`,
      ports: [{ ...HTTP, nodePort: 30086 }],
      status: lbStatus(LBSR),
    }) + slicesYaml(box, 'lbsr', ['a1', 'b1'], [HTTP]),
    svcYaml('aff', { ip4: '10.96.3.9', ip6: 'fd00:96::3:9', extra: '  sessionAffinity: ClientIP\n', ports: [HTTP] }) + slicesYaml(box, 'aff', ['a1', 'a2', 'b1'], [HTTP]),
    ...IEM_SERVICES.map(
      (x) =>
        svcYaml(x.id, { ip4: x.ip4, ip6: x.cip, type: 'LoadBalancer', extra: x.extra, ports: [{ ...HTTP, nodePort: x.np }], status: lbStatus(x.lb) }) + slicesYaml(box, x.id, ['a1', 'b1'], [HTTP]),
    ),
  ].join('');
}

s.before(async (ctx) => {
  const box = await Box.create({ nodes: 2, ipv6: true });
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
  // Deprecated (preferred_lft 0): used only by a client bound to it, as IPv4's secondary address.
  await box.exec(box.outside, ['ip', '-6', 'addr', 'add', `${OUT2}/64`, 'dev', 'eth0', 'nodad', 'preferred_lft', '0']);
  for (const [cidr, via] of [
    ['fd00:96::/64', N1],
    ['2001:db8::/64', N1],
    ['2001:db8::11/128', N2],
  ] as const) {
    await box.exec(box.outside, ['ip', '-6', 'route', 'replace', cidr, 'via', via]);
  }
  await box.routeFromOutside('10.96.0.0/16', 'n1');
  box.writeManifest('services.yaml', manifests(box));
  const flags = ['--cluster-cidr', `${CLUSTER_CIDR},${CLUSTER_CIDR6}`];
  ctx.agents = { n1: await box.startAgent('n1', flags), n2: await box.startAgent('n2', flags) };
  for (const n of ['n1', 'n2']) {
    await waitFor(async () => /\[fd00:96::3:8\]:80\/TCP/.test(await box.weir(n, ['services'])), { timeoutMs: 5000, what: `${n} programmed` });
    if (MODE === 'bpf') await ctx.agents[n]!.proc.waitFor(/"device":"eth0"/, 3000);
  }
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

/*
 * iptables mode answers a TCP SYN to a Service without endpoints with
 * ICMPv6 port unreachable (kube-proxy's REJECT). Linux takes the first one
 * as a soft error while connect() still holds the socket, and the second,
 * for the SYN retransmitted a second later, as the refusal: ~1 s, where the
 * BPF programs' RST refuses at once.
 */
const SLOW_REJECT6 = MODE === 'iptables' ? { within: 1500 } : {};

s('flow table over IPv6: backends, REJECT/DROP and masquerade as kube-proxy', async ({ box }) => {
  const flows: Flow[] = [
    { from: 'c1', to: at('fd00:96::3:1', 80), expect: ['a1', 'b1'], src: 'client', why: 'ClusterIP from a pod: all endpoints, no masquerade' },
    { from: 'c2', to: at('fd00:96::3:1', 80), expect: ['a1', 'b1'], src: 'client', why: 'ClusterIP from a pod on the other node' },
    { from: 'c1', to: at('fd00:96::3:1', 53), proto: 'udp', expect: ['a1', 'b1'], src: 'client', why: 'UDP ClusterIP' },
    { from: 'c1', to: '10.96.3.1:80', expect: ['a1', 'b1'], src: 'client', why: "the same Service's IPv4 ClusterIP answers too" },
    { from: 'outside', to: at('fd00:96::3:1', 80), expect: ['a1', 'b1'], src: N1, why: 'ClusterIP from outside the cluster CIDR is masqueraded to the node IPv6 address' },
    { from: 'outside', to: at(N1, 30080), expect: ['a1', 'b1'], src: N1, why: 'NodePort on the node IPv6 address, eTP=Cluster: masqueraded' },
    { from: 'outside', to: `${N1_4}:30080`, expect: ['a1', 'b1'], src: N1_4, why: 'and on its IPv4 address, by the IPv4 endpoints' },
    { from: 'outside', to: at(N2, 30080), expect: ['a1', 'b1'], src: N2, why: 'NodePort on the other node' },
    { from: 'outside', to: at(N1, 30053), proto: 'udp', expect: ['a1', 'b1'], src: N1, why: 'UDP NodePort' },
    { from: 'c1', to: at(N1, 30080), expect: ['a1', 'b1'], src: N1, why: "pod to its own node's NodePort (KUBE-EXT masquerades)" },
    { from: 'n1', to: at('fd00:96::3:1', 80), expect: ['a1', 'b1'], src: 'any', why: 'node process to an IPv6 ClusterIP' },
    { from: 'n1', to: at('fd00:96::3:1', 53), proto: 'udp', expect: ['a1', 'b1'], src: 'any', why: 'node process, UDP IPv6 ClusterIP' },
    { from: 'n1', to: at(N1, 30080), expect: ['a1', 'b1'], src: 'any', why: 'node process to its own IPv6 NodePort' },
    { from: 'n1', to: at('::1', 30080), expect: 'REJECT', why: 'no NodePorts on ::1, as kube-proxy (nothing listens there)' },
    { from: 'outside', to: at(N1, 30081), expect: ['a1'], src: 'client', why: 'NodePort eTP=Local: local endpoint, client IP kept' },
    { from: 'outside', to: at(N2, 30081), expect: 'DROP', why: 'eTP=Local on a node without local endpoints drops' },
    { from: 'c2', to: at(N2, 30081), expect: ['a1'], src: 'client', why: 'pods short-circuit eTP=Local to all endpoints' },
    { from: 'outside', bind: OUT2, to: at('2001:db8::10', 80), expect: ['a1', 'b1'], src: N1, why: 'LoadBalancer IP from an allowed IPv6 source range' },
    { from: 'outside', bind: OUT, to: at('2001:db8::10', 80), expect: 'DROP', why: 'LoadBalancer IP from outside loadBalancerSourceRanges' },
    { from: 'outside', to: at('2001:db8::11', 80), expect: ['b1'], src: 'client', why: 'eTP=Local LoadBalancer at the node with the endpoint' },
    { from: 'outside', to: at(N1, 30083), expect: 'DROP', why: 'eTP=Local LoadBalancer NodePort without local endpoint' },
    { from: 'outside', to: at('2001:db8::20', 80), expect: ['b1'], src: N1, why: 'IPv6 externalIP to a remote backend, masqueraded' },
    { from: 'c1', to: at('2001:db8::20', 80), expect: ['b1'], src: N1, why: 'IPv6 externalIP from a pod (KUBE-EXT masquerades)' },
    { from: 'c1', to: at('fd00:96::3:6', 80), expect: ['a1'], src: 'client', why: "internalTrafficPolicy Local: this node's endpoint" },
    { from: 'c2', to: at('fd00:96::3:6', 80), expect: ['b1'], src: 'client', why: 'internalTrafficPolicy Local on the other node' },
    { from: 'c1', to: at('fd00:96::3:7', 80), expect: 'DROP', why: 'iTP=Local without local endpoints drops (not rejects)' },
    { from: 'c1', to: at('fd00:96::3:8', 80), expect: 'REJECT', why: 'no endpoints: REJECT (TCP RST from the service address)', ...SLOW_REJECT6 },
    { from: 'outside', to: at('fd00:96::3:8', 80), expect: 'REJECT', why: 'no endpoints, from outside: REJECT', ...SLOW_REJECT6 },
    { from: 'c1', to: at('fd00:96::3:8', 53), proto: 'udp', expect: 'REJECT', why: 'no endpoints, UDP from a pod: ICMPv6 port unreachable' },
    { from: 'n1', to: at('fd00:96::3:8', 80), expect: 'REJECT', why: 'no endpoints, node process: refused at once', ...SLOW_REJECT6 },
    { from: 'c1', to: at('fd00:96::3:1', 8080), expect: 'DROP', why: 'a port the service does not expose is not NATed (and goes nowhere)' },
    // Node processes whose socket is bound before it connects.
    { from: 'n1', bind: N1, to: at('fd00:96::3:1', 80), expect: ['a1', 'b1'], src: N1, why: 'node process bound to the node IPv6 address, to a ClusterIP' },
    { from: 'n1', bind: N1, to: at(N1, 30080), expect: ['a1', 'b1'], src: N1, why: 'node process bound to the node IPv6 address, to its own NodePort' },
    { from: 'n1', bind: N1, to: at('fd00:96::3:1', 53), proto: 'udp', expect: ['a1', 'b1'], src: N1, why: 'node process bound to the node IPv6 address, UDP ClusterIP' },
  ];
  const failures = await runFlows(box, flows);
  assert.equal(failures, [], failures.join('\n'));
});

s("flow table over IPv6: kube-proxy's TestInternalExternalMasquerade, every case that has an IPv6 form", async ({ box }) => {
  const failures = await runFlows(box, internalExternalMasquerade());
  assert.equal(failures, [], failures.join('\n'));
});

s('flow table over IPv6 with --masquerade-all: ClusterIP traffic masqueraded to the node IPv6 address, external traffic by its policy', async (ctx) => {
  const flags = ['--cluster-cidr', `${CLUSTER_CIDR},${CLUSTER_CIDR6}`];
  await ctx.agents.n1!.stop();
  ctx.agents.n1 = await ctx.box.startAgent('n1', [...flags, '--masquerade-all']);
  let failures: string[] = [];
  try {
    await waitFor(async () => /\[fd00:96::3:1\]:80\/TCP/.test(await ctx.box.weir('n1', ['services'])), { timeoutMs: 5000, what: 'programmed' });
    failures = await runFlows(ctx.box, [
      { from: 'c1', to: at('fd00:96::3:1', 80), expect: ['a1', 'b1'], src: N1, why: 'pod to ClusterIP', ref: 'TestInternalExternalMasquerade masqueradeAll / pod to ClusterIP' },
      {
        from: 'c1',
        to: at(N1, 30084),
        expect: ['a1', 'b1'],
        src: 'client',
        why: 'pod to NodePort eTP=Local: not masqueraded',
        ref: 'TestInternalExternalMasquerade masqueradeAll / pod to NodePort with eTP:Local',
      },
      {
        from: 'outside',
        to: at(N1, 30084),
        expect: ['a1'],
        src: 'client',
        why: 'outside to NodePort eTP=Local',
        ref: 'TestInternalExternalMasquerade masqueradeAll / external to NodePort with eTP:Local',
      },
    ]);
  } finally {
    await ctx.agents.n1.stop();
    ctx.agents.n1 = await ctx.box.startAgent('n1', flags);
  }
  assert.equal(failures, [], failures.join('\n'));
});

s('flow table over IPv6 without --cluster-cidr: no local-traffic detector, so pods are external clients of eTP=Local', async (ctx) => {
  await ctx.agents.n1!.stop();
  ctx.agents.n1 = await ctx.box.startAgent('n1', [], { clusterCidr: false });
  let failures: string[] = [];
  try {
    await waitFor(async () => /\[fd00:96::3:1\]:80\/TCP/.test(await ctx.box.weir('n1', ['services'])), { timeoutMs: 5000, what: 'programmed' });
    if (MODE === 'bpf') await ctx.agents.n1.proc.waitFor(/"device":"eth0"/, 3000);
    failures = await runFlows(ctx.box, [
      {
        from: 'c1',
        to: at(N1, 30084),
        expect: ['a1'],
        src: 'client',
        why: 'pod to NodePort eTP=Local: local endpoint only',
        ref: 'TestInternalExternalMasquerade no LocalTrafficDetector / pod to NodePort with eTP:Local; TestOnlyLocalNodePortsNoClusterCIDR',
      },
      {
        from: 'c1',
        to: at('2001:db8::12', 80),
        expect: ['a1'],
        src: 'client',
        why: 'pod to LB eTP=Local: local endpoint only',
        ref: 'TestInternalExternalMasquerade no LocalTrafficDetector / pod to LB with eTP:Local',
      },
      { from: 'outside', to: at(N1, 30084), expect: ['a1'], src: 'client', why: 'outside to NodePort eTP=Local', ref: 'TestOnlyLocalNodePortsNoClusterCIDR / external to NodePort' },
      {
        from: 'c1',
        to: at('fd00:96::3:1', 80),
        expect: ['a1', 'b1'],
        src: 'client',
        why: 'pod to ClusterIP: unchanged',
        ref: 'TestInternalExternalMasquerade no LocalTrafficDetector / pod to ClusterIP',
      },
    ]);
  } finally {
    await ctx.agents.n1.stop();
    ctx.agents.n1 = await ctx.box.startAgent('n1', ['--cluster-cidr', `${CLUSTER_CIDR},${CLUSTER_CIDR6}`]);
  }
  assert.equal(failures, [], failures.join('\n'));
});

s('flow table over IPv6: loadBalancerSourceRanges that admit the node also admit the LB IP as source', async ({ box }) => {
  const flows: Flow[] = [
    {
      from: 'n1',
      to: at(LBSR, 80),
      expect: ['a1', 'b1'],
      src: N1,
      why: 'node process to an LB IP whose source ranges hold the node IPv6 address',
      ref: 'TestLoadBalancer / node to LB1 (allowed by LoadBalancerSourceRanges)',
    },
    {
      from: 'n1',
      bind: LBSR,
      to: at(LBSR, 80),
      expect: ['a1', 'b1'],
      src: N1,
      why: 'a VIP-like LB loops the request back with the LB IP as source: served, masqueraded',
      ref: 'TestLoadBalancer / same node to LB1, SNATted to LB1',
    },
    { from: 'outside', bind: OUT2, to: at(LBSR, 80), expect: ['a1', 'b1'], src: N1, why: 'an allowed outside source', ref: 'TestLoadBalancer / accepted external to LB1' },
    { from: 'outside', bind: OUT, to: at(LBSR, 80), expect: 'DROP', why: 'a source outside the ranges', ref: 'TestLoadBalancer / blocked external to LB1' },
  ];
  // The LB IP is a local address of n1, as a VIP-like load balancer makes it;
  // deprecated (preferred_lft 0), so the kernel never picks it as the source of other traffic.
  const n1 = box.node('n1').ns;
  await box.exec(n1, ['ip', '-6', 'addr', 'add', `${LBSR}/128`, 'dev', 'lo', 'nodad', 'preferred_lft', '0']);
  try {
    const failures = await runFlows(box, flows);
    assert.equal(failures, [], failures.join('\n'));
  } finally {
    await box.exec(n1, ['ip', '-6', 'addr', 'del', `${LBSR}/128`, 'dev', 'lo']);
  }
});

s('healthCheckNodePort over IPv6: 200 on the node with a ready local endpoint, 503 elsewhere (an IPv6 health checker reaches it)', async ({ box }) => {
  const status = async (node: string): Promise<string> => (await box.exec(box.outside, ['curl', '-s', '-m', '3', '-o', '/dev/null', '-w', '%{http_code}', `http://[${node}]:32001/healthz`])).stdout;
  assert.is(await status(N2), '200');
  assert.is(await status(N1), '503');
});

s('readiness over IPv6: only ready endpoints get new connections; terminating ones serve when none is ready, and keep established flows', async ({ box }) => {
  const yaml = (list: EpSpec[]): string => svcYaml('rdy', { ip4: '10.96.3.12', ip6: 'fd00:96::3:c', ports: [HTTP] }) + slicesYaml(box, 'rdy', list, [HTTP]);
  const only = async (pod: string): Promise<void> => {
    const re = new RegExp(`\\[fd00:96::3:c\\]:80/TCP .* 1 backend\\n {2}#1 backend \\d+ \\[${box.pod(pod).ip6}\\]`);
    await waitFor(async () => re.test(await box.weir('n1', ['services'])), { timeoutMs: 3000, what: String(re) });
  };
  const backends = async (count: number): Promise<string[]> => [...new Set((await box.tcp('c1', at('fd00:96::3:c', 80), { count })).attempts.map((a) => a.backend ?? a.error!))];
  box.writeManifest('rdy.yaml', yaml(['a1', { pod: 'a2', ready: false, serving: false, terminating: false }]));
  await only('a1');
  assert.equal(await backends(12), ['a1'], 'not-ready a2 gets nothing');
  const hold = await box.hold('c1', at('fd00:96::3:c', 80), { durationMs: 2500, intervalMs: 100 });
  // a1 starts terminating while a2 becomes ready: new flows go to a2 only, the established one stays on a1.
  box.writeManifest('rdy.yaml', yaml([{ pod: 'a1', ready: false, serving: true, terminating: true }, 'a2']));
  await only('a2');
  assert.equal(await backends(12), ['a2']);
  const held = await hold.result();
  assert.ok(held.attempts.length > 10 && held.attempts.every((a) => a.ok && a.backend === 'a1'), JSON.stringify(held.attempts.slice(-3)));
  // Nothing ready: serving+terminating endpoints take new connections.
  box.writeManifest(
    'rdy.yaml',
    yaml([
      { pod: 'a1', ready: false, serving: true, terminating: true },
      { pod: 'a2', ready: false, serving: false, terminating: true },
    ]),
  );
  await only('a1');
  assert.equal(await backends(8), ['a1']);
  box.removeManifest('rdy.yaml');
});

s('sessionAffinity ClientIP over IPv6: one backend per client', async ({ box }) => {
  for (const client of ['c1', 'c2']) {
    const r = await box.tcp(client, at('fd00:96::3:9', 80), { count: 12 });
    const seen = new Set(r.attempts.map((a) => (a.ok ? a.backend : a.error)));
    assert.is(seen.size, 1, `${client}: ${[...seen].join(',')}`);
    assert.ok(r.attempts.every((a) => a.ok));
  }
});

s('hairpin over IPv6: a pod reaching itself through its service is answered', async ({ box }) => {
  box.writeManifest('hairpin.yaml', svcYaml('self', { ip4: '10.96.3.10', ip6: 'fd00:96::3:a', ports: [HTTP] }) + slicesYaml(box, 'self', ['a1'], [HTTP]));
  await waitFor(async () => /\[fd00:96::3:a\]:80\/TCP/.test(await box.weir('n1', ['services'])), { timeoutMs: 5000, what: 'programmed' });
  const r = await box.tcp('a1', at('fd00:96::3:a', 80), { count: 3 });
  assert.ok(
    r.attempts.every((a) => a.ok && a.backend === 'a1'),
    JSON.stringify(r.attempts),
  );
  box.removeManifest('hairpin.yaml');
});

s('weir trace follows an IPv6 packet: a new flow to one of the backends, REJECT where there are none (BPF mode)', async ({ box }) => {
  if (MODE !== 'bpf') return;
  const c1 = box.pod('c1').ip6;
  const fwd = await box.weir('n1', ['trace', '--src', c1, '--dst', at('fd00:96::3:1', 80)]);
  assert.match(fwd, new RegExp(`new flow to one of \\[${box.pod('a1').ip6}\\]:8080, \\[${box.pod('b1').ip6}\\]:8080`), fwd);
  const udp = await box.weir('n1', ['trace', '--src', c1, '--dst', at('fd00:96::3:8', 53), '--proto', 'udp']);
  assert.match(udp, /REJECT, the service has no endpoints \(ICMPv6 port unreachable sent back\)/, udp);
  const ext = await box.weir('n1', ['trace', '--src', `[${OUT}]:40000`, '--dst', at(N1, 30080), '--from', 'external']);
  assert.match(ext, new RegExp(`source NATed to \\[${N1}\\]:\\d+`), ext);
});

s('path MTU over IPv6: a large TCP upload through a ClusterIP completes across a link with a smaller MTU (ICMPv6 packet too big reaches the client translated)', async ({ box }) => {
  // b1's node forwards into b1's veth at 1280 bytes while b1 itself (MTU 1500)
  // advertises a 1440-byte MSS: n2 answers the client's full-size segments
  // with packet too big, about client -> b1, which must reach c1 (on n1) as
  // about c1 -> the ClusterIP for its socket to lower its path MTU.
  const b1 = box.pod('b1');
  box.writeManifest(
    'big.yaml',
    svcYaml('big', { ip4: '10.96.3.11', ip6: 'fd00:96::3:b', ports: [{ name: 'iperf', port: 5201, target: 5201 }] }) + slicesYaml(box, 'big', ['b1'], [{ name: 'iperf', port: 5201, target: 5201 }]),
  );
  await waitFor(async () => /\[fd00:96::3:b\]:5201\/TCP .*1 backend/.test(await box.weir('n1', ['services'])), { timeoutMs: 5000, what: 'programmed' });
  const server = box.spawn(b1.ns, ['iperf3', '-s', '-p', '5201', '-1', '--forceflush']);
  try {
    await server.waitFor(/Server listening/, 5000);
    await box.exec(b1.node.ns, ['ip', 'link', 'set', b1.hostDev, 'mtu', '1280']);
    const r = await box.exec(box.pod('c1').ns, ['iperf3', '-6', '-c', 'fd00:96::3:b', '-p', '5201', '-n', '4M', '-l', '64K', '--connect-timeout', '3000'], { timeoutMs: 20_000 });
    assert.is(r.code, 0, `iperf3 through the ClusterIP: ${r.stdout.slice(-600)} ${r.stderr}`);
    assert.match(r.stdout, /sender/);
  } finally {
    await box.exec(b1.node.ns, ['ip', 'link', 'set', b1.hostDev, 'mtu', '1500']);
    await box.stopProc(server);
    box.removeManifest('big.yaml');
  }
});

s.run();
