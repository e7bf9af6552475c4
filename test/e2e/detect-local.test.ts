/**
 * kube-proxy's detectLocalMode with real clients, in both modes: which
 * senders count as this node's pods decides whether ClusterIP traffic is
 * masqueraded and whether an eTP=Local NodePort short-circuits to every
 * endpoint. Only n1 runs an agent (restarted per mode).
 *
 *   n1 (192.168.77.10, podCIDR 10.244.1.0/24): a1 10.244.1.10 (echo), c1 .11, c3 .12,
 *      c4 .13 on the bridge podbr0 (its veth a port of it, the cni0 layout),
 *      and c9 10.244.9.10: in the cluster CIDR, not in n1's pod CIDR
 *   n2 (192.168.77.11, podCIDR 10.244.2.0/24): b1 10.244.2.10 (echo)
 *   outside: 192.168.77.200, routes 10.96/16 and 10.244.9.10 via n1
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box, CLUSTER_CIDR, MODE, waitFor } from '../box/box';
import { Flow, runFlows } from '../box/flows';

const s = suite<{ box: Box }>(`detect local (${MODE})`);
const N1 = '192.168.77.10';
const CLUSTER_IP = '10.96.7.1:80';
const NODE_PORT = `${N1}:30300`;
const C9 = '10.244.9.10';
const BRIDGE = 'podbr0';

function manifests(box: Box): string {
  const node = (name: string, ip: string, cidr: string): string =>
    `---\napiVersion: v1\nkind: Node\nmetadata: {name: ${name}}\nspec: {podCIDR: ${cidr}, podCIDRs: [${cidr}]}\nstatus:\n  addresses: [{type: InternalIP, address: ${ip}}]\n`;
  const svc = (name: string, ip: string, extra: string): string =>
    `---\napiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: d}\nspec:\n  type: ${extra ? 'NodePort' : 'ClusterIP'}\n  clusterIP: ${ip}\n${extra}  ports: [{name: http, port: 80, targetPort: 8080${extra ? ', nodePort: 30300' : ''}}]\n`;
  const slice = (name: string): string =>
    `---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: ${name}-1, namespace: d, labels: {kubernetes.io/service-name: ${name}}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n  - {addresses: [${box.pod('a1').ip}], nodeName: n1}\n  - {addresses: [${box.pod('b1').ip}], nodeName: n2}\n`;
  return [
    node('n1', N1, '10.244.1.0/24'),
    node('n2', '192.168.77.11', '10.244.2.0/24'),
    svc('clip', CLUSTER_IP.split(':')[0]!, '') + slice('clip'),
    svc('loc', '10.96.7.2', '  externalTrafficPolicy: Local\n') + slice('loc'),
  ].join('');
}

s.before(async (ctx) => {
  const box = await Box.create({ nodes: 2 });
  ctx.box = box;
  for (const [node, pod] of [
    ['n1', 'a1'],
    ['n1', 'c1'],
    ['n1', 'c3'],
    ['n2', 'b1'],
  ] as const) {
    await box.addPod(node, pod);
  }
  await box.addPod('n1', 'c4');
  await box.addPod('n1', 'c9', C9);
  // c4's veth becomes a port of podbr0, which routes c4 and answers its ARP as the veth did.
  const n1 = box.node('n1').ns;
  for (const cmd of [
    ['ip', 'link', 'add', BRIDGE, 'type', 'bridge'],
    ['ip', 'link', 'set', BRIDGE, 'up'],
    ['ip', 'link', 'set', box.pod('c4').hostDev, 'master', BRIDGE],
    ['ip', 'route', 'replace', `${box.pod('c4').ip}/32`, 'dev', BRIDGE],
    ['sh', '-c', `echo 1 > /proc/sys/net/ipv4/conf/${BRIDGE}/proxy_arp`],
  ]) {
    await box.exec(n1, cmd);
  }
  for (const p of ['a1', 'b1']) await box.startEcho(p, { tcp: [8080] });
  await box.routeFromOutside('10.96.0.0/16', 'n1');
  // c9 is outside n1's pod CIDR: the others reach it through n1.
  await box.routeFromOutside(`${C9}/32`, 'n1');
  await box.exec(box.node('n2').ns, ['ip', 'route', 'add', `${C9}/32`, 'via', N1]);
  box.writeManifest('detect.yaml', manifests(box));
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

/** n1's agent with these flags (and no --cluster-cidr unless given), ready with its pod devices attached. */
async function withAgent<T>(box: Box, args: string[], fn: (agent: Agent) => Promise<T>): Promise<T> {
  const agent = await box.startAgent('n1', args, { clusterCidr: false });
  try {
    await waitFor(async () => /10\.96\.7\.2:80\/TCP/.test(await box.weir('n1', ['services'])), { timeoutMs: 5000, what: 'n1 programmed' });
    if (MODE === 'bpf') await agent.proc.waitFor(/("role":"pod"[\s\S]*){5}/, 5000);
    return await fn(agent);
  } finally {
    await agent.stop();
  }
}

// The rows every mode has, and what differs: whether the sender counts as one of n1's pods.
type Client = 'c1' | 'c3' | 'c4' | 'c9' | 'outside';
function flows(local: Record<Client, boolean>, why: string): Flow[] {
  const clusterIP = (from: Client): Flow => ({
    from,
    to: CLUSTER_IP,
    expect: ['a1', 'b1'],
    src: local[from] ? 'client' : N1,
    why: `${why}: ${from} → ClusterIP ${local[from] ? 'is a pod: not masqueraded' : 'is not a pod: masqueraded'}`,
    ref: 'TestMasqueradeRule / localdetector_test.go',
  });
  const nodePort = (from: Client): Flow => ({
    from,
    to: NODE_PORT,
    expect: local[from] ? ['a1', 'b1'] : ['a1'],
    src: local[from] ? 'any' : 'client',
    why: `${why}: ${from} → eTP=Local NodePort ${local[from] ? 'is a pod: every endpoint' : 'is not a pod: local endpoints only'}`,
    ref: 'TestOverallIPTablesRules "pod traffic for ... external destinations"',
  });
  return (['c1', 'c3', 'c4', 'c9', 'outside'] as const).flatMap((c) => [clusterIP(c), nodePort(c)]);
}

s('ClusterCIDR (the default): every pod in the cluster CIDR is one, on any node', async ({ box }) => {
  await withAgent(box, ['--cluster-cidr', CLUSTER_CIDR], async () => {
    const failures = await runFlows(box, flows({ c1: true, c3: true, c4: true, c9: true, outside: false }, 'ClusterCIDR'));
    assert.equal(failures, [], failures.join('\n'));
  });
});

s("InterfaceNamePrefix: traffic entering on the box's pod devices (veth*) is from pods, with no cluster CIDR given", async ({ box }) => {
  await withAgent(box, ['--detect-local-mode', 'InterfaceNamePrefix', '--pod-interface-name-prefix', 'veth'], async (agent) => {
    assert.match(agent.logs(), /"msg":"local traffic detector","detectLocalMode":"InterfaceNamePrefix","pods":"entered on a device named veth\*"/);
    // c4 enters through podbr0: not a veth* device as kube-proxy's `-i veth+` sees it.
    const failures = await runFlows(box, flows({ c1: true, c3: true, c4: false, c9: true, outside: false }, 'InterfaceNamePrefix veth'));
    assert.equal(failures, [], failures.join('\n'));
  });
});

s('BridgeInterface: traffic entering from the bridge (through any of its ports) is from pods; other pods are not', async ({ box }) => {
  await withAgent(box, ['--detect-local-mode', 'BridgeInterface', '--pod-bridge-interface', BRIDGE], async () => {
    const failures = await runFlows(box, flows({ c1: false, c3: false, c4: true, c9: false, outside: false }, `BridgeInterface ${BRIDGE}`));
    assert.equal(failures, [], failures.join('\n'));
  });
});

s("NodeCIDR: only this node's pods (its Node's spec.podCIDRs) are", async ({ box }) => {
  await withAgent(box, ['--detect-local-mode', 'NodeCIDR', '--cluster-cidr', CLUSTER_CIDR], async (agent) => {
    await agent.proc.waitFor(/"msg":"local traffic detector from the Node","detectLocalMode":"NodeCIDR","pods":"source in 10\.244\.1\.0\/24"/, 5000);
    const failures = await runFlows(box, flows({ c1: true, c3: true, c4: true, c9: false, outside: false }, 'NodeCIDR'));
    assert.equal(failures, [], failures.join('\n'));
  });
});

s.run();
