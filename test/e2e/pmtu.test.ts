/**
 * Path MTU discovery through a ClusterIP when the client's own node has the
 * smaller link (bpf/lib/egress.h): n1 forwards c1's DNATed segments toward
 * b1 over a route with MTU 1280 while both pods have MTU 1500, so n1 itself
 * answers with ICMP fragmentation needed / ICMPv6 packet too big, quoting
 * c1 -> b1. Only translated to quote c1 -> the ClusterIP does the client's
 * socket (connected to the ClusterIP) lower its path MTU; untranslated, the
 * full-size segments are retransmitted until the transfer times out.
 *
 *   n1 192.168.77.10 / fd00:77::10: c1
 *   n2 192.168.77.11 / fd00:77::11: b1 (iperf3 server), reached from n1 via a 1280-byte route
 *
 * The other case too, for both families: b1's node has the smaller link,
 * sends the error, and n1 translates it at its external device's ingress
 * (icmp.h, icmp6.h; were that missed, at egress toward c1).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box, CLUSTER_CIDR, CLUSTER_CIDR6, MODE, waitFor } from '../box/box';

const s = suite<{ box: Box; n1: Agent }>(`path MTU through a ClusterIP: errors from the client's node and the backend's (${MODE})`);
const VIP4 = '10.96.7.1';
const VIP6 = 'fd00:96::7:1';
const FLAGS = ['--cluster-cidr', `${CLUSTER_CIDR},${CLUSTER_CIDR6}`];

function manifests(box: Box): string {
  const b1 = box.pod('b1');
  const slice = (family: 'IPv4' | 'IPv6', addr: string): string =>
    `---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: big-${family.toLowerCase()}\n  namespace: t\n  labels: {kubernetes.io/service-name: big}\n` +
    `addressType: ${family}\nports: [{name: iperf, port: 5201, protocol: TCP}]\nendpoints:\n  - addresses: ["${addr}"]\n    nodeName: n2\n    conditions: {ready: true}\n`;
  return (
    `apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: t}\nspec:\n  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n` +
    `  clusterIP: ${VIP4}\n  clusterIPs: [${VIP4}, "${VIP6}"]\n  ports: [{name: iperf, port: 5201, targetPort: 5201, protocol: TCP}]\n` +
    slice('IPv4', b1.ip) +
    slice('IPv6', b1.ip6)
  );
}

s.before(async (ctx) => {
  const box = await Box.create({ nodes: 2, ipv6: true });
  ctx.box = box;
  await box.addPod('n1', 'c1');
  await box.addPod('n2', 'b1');
  box.writeManifest('big.yaml', manifests(box));
  ctx.n1 = await box.startAgent('n1', FLAGS);
  await box.startAgent('n2', FLAGS);
  await waitFor(async () => /\[fd00:96::7:1\]:5201\/TCP .*1 backend/.test(await box.weir('n1', ['services'])), { timeoutMs: 5000, what: 'programmed' });
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

/** A verdict counter on n1 (BPF mode; iptables mode has none). */
async function verdict(box: Box, name: string): Promise<number> {
  if (MODE !== 'bpf') return 0;
  const counts = JSON.parse(await box.weir('n1', ['verdicts', '--json'])) as Array<{ verdict: string; packets: number }>;
  return counts.find((c) => c.verdict === name)?.packets ?? 0;
}

/**
 * A 4 MB iperf3 upload from c1 to the ClusterIP, with a 1280-byte hop:
 * n1's route to b1 (the client's node sends the error), or b1's host
 * device on n2 (the backend's node sends it, to arrive at n1's ingress).
 */
async function upload(box: Box, family: 4 | 6, hop: 'client node' | 'backend node'): Promise<void> {
  const b1 = box.pod('b1');
  const n1 = box.node('n1');
  const n2 = box.node('n2');
  const [to, via, vip] = family === 4 ? [`${b1.ip}/32`, n2.ip, VIP4] : [`${b1.ip6}/128`, n2.ip6, VIP6];
  const route = ['ip', `-${family}`, 'route'];
  const server = box.spawn(b1.ns, ['iperf3', '-s', '-p', '5201', '-1', '--forceflush']);
  try {
    await server.waitFor(/Server listening/, 5000);
    if (hop === 'client node') await box.exec(n1.ns, [...route, 'replace', to, 'via', via, 'dev', 'eth0', 'mtu', '1280']);
    else await box.exec(n2.ns, ['ip', 'link', 'set', b1.hostDev, 'mtu', '1280']);
    const r = await box.exec(box.pod('c1').ns, ['iperf3', `-${family}`, '-c', vip, '-p', '5201', '-n', '4M', '-l', '64K', '--connect-timeout', '3000'], { timeoutMs: 15_000 });
    assert.is(r.code, 0, `iperf3 through ${vip}: ${r.stdout.slice(-600)} ${r.stderr}`);
    assert.match(r.stdout, /sender/);
    // The client's route to the ClusterIP learned the smaller path MTU.
    const cached = await box.exec(box.pod('c1').ns, [...route, 'get', vip]);
    assert.match(cached.stdout, /mtu 1280/, cached.stdout);
  } finally {
    if (hop === 'client node') await box.exec(n1.ns, [...route, 'del', to]);
    else await box.exec(n2.ns, ['ip', 'link', 'set', b1.hostDev, 'mtu', '1500']);
    // Forget the learned path MTU, so the next upload starts from full-size segments.
    await box.exec(box.pod('c1').ns, [...route, 'flush', 'cache']);
    await box.stopProc(server);
  }
}

s('IPv4: a large TCP upload through a ClusterIP completes when the client node drops the MTU (its fragmentation needed reaches the client translated)', async ({ box }) => {
  const before = await verdict(box, 'icmp_local');
  await upload(box, 4, 'client node');
  if (MODE === 'bpf') assert.ok((await verdict(box, 'icmp_local')) > before, 'counted as icmp_local');
});

s('IPv6: the same with ICMPv6 packet too big from the client node', async ({ box }) => {
  const before = await verdict(box, 'icmp_local/ipv6');
  await upload(box, 6, 'client node');
  if (MODE === 'bpf') assert.ok((await verdict(box, 'icmp_local/ipv6')) > before, 'counted as icmp_local/ipv6');
});

s("IPv4: and when the backend node drops the MTU (its fragmentation needed is translated at the client node's external ingress)", async ({ box }) => {
  await upload(box, 4, 'backend node');
});

s('IPv6: the same with packet too big from the backend node', async ({ box }) => {
  await upload(box, 6, 'backend node');
});

/** weir_tc_egress filters at egress of n1's devices, by device. */
async function egressFilters(box: Box): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const dev of ['eth0', box.pod('c1').hostDev, 'lo']) {
    const r = await box.exec(box.node('n1').ns, ['tc', 'filter', 'show', 'dev', dev, 'egress']);
    out[dev] = r.stdout.split('\n').filter((l) => /handle 0x7765 .*weir_tc_egress/.test(l)).length;
  }
  return out;
}

s('the egress program sits on pod and external devices, is replaced in place on restart, and weir cleanup removes it', async (ctx) => {
  if (MODE !== 'bpf') return;
  const { box } = ctx;
  const c1 = box.pod('c1').hostDev;
  assert.equal(await egressFilters(box), { eth0: 1, [c1]: 1, lo: 0 });
  await ctx.n1.stop();
  ctx.n1 = await box.startAgent('n1', FLAGS);
  await ctx.n1.proc.waitFor(/"role":"pod"/, 5000);
  assert.equal(await egressFilters(box), { eth0: 1, [c1]: 1, lo: 0 }, 'one filter each after a restart');
  await upload(box, 4, 'client node');
  await ctx.n1.stop();
  const out = await box.weir('n1', ['cleanup']);
  assert.match(out, /eth0\/egress/);
  assert.match(out, new RegExp(`${c1}/egress`));
  assert.equal(await egressFilters(box), { eth0: 0, [c1]: 0, lo: 0 });
});

s.run();
