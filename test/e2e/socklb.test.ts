/**
 * Socket-level balancing for pods (BPF mode): pods whose cgroups lie under
 * the agent's --cgroup-root, as a DaemonSet's host root covers every pod.
 * A plain ClusterIP connect() is pointed at a backend by the socket hooks,
 * so its packets cross no NAT (no weir conntrack entry); everything whose
 * outcome depends on the pod's address or on an answer from the service
 * keeps the tc path, so a client sees what it sees without socket hooks.
 * --socket-lb-hostns-only leaves pods' sockets to the tc path altogether.
 * Both families, in a dual-stack cluster in a box.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box } from '../box/box';
import type { Attempt } from '../box/client';
import type { CtEntry } from '../../ts/cli/inspect';
import { loadShim } from '../../ts/datapath/ffi';
import { openPinned } from '../../ts/datapath/loader';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const s = suite<{ box: Box; agent: Agent }>('socket balancing for pods');

const V4 = { web: '10.96.9.1', aff: '10.96.9.2', empty: '10.96.9.3', np: '10.96.9.4', dns1: '10.96.9.5' };
const V6 = { web: 'fd00:96::9:1' };
const NODE_PORT = 30900;

/** The Services; dns1 has the one backend `dns1` (a or b). */
function manifests(box: Box, dns1: 'a' | 'b' = 'a'): string {
  const eps = (fam: 'ip' | 'ip6', pods = ['a', 'b']): string => pods.map((p) => `{addresses: ["${box.pod(p)[fam]}"], nodeName: n1}`).join(', ');
  const slices = (name: string, ports: string, pods?: string[]): string => `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ${name}-4, namespace: sl, labels: {kubernetes.io/service-name: ${name}}}
addressType: IPv4
ports: ${ports}
endpoints: [${eps('ip', pods)}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ${name}-6, namespace: sl, labels: {kubernetes.io/service-name: ${name}}}
addressType: IPv6
ports: ${ports}
endpoints: [${eps('ip6', pods)}]
`;
  return `apiVersion: v1
kind: Service
metadata: {name: web, namespace: sl}
spec:
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIP: ${V4.web}
  clusterIPs: [${V4.web}, "${V6.web}"]
  ports: [{name: http, port: 80, targetPort: 8080}, {name: dns, protocol: UDP, port: 53, targetPort: 5353}]
---
${slices('web', '[{name: http, port: 8080}, {name: dns, protocol: UDP, port: 5353}]')}---
apiVersion: v1
kind: Service
metadata: {name: aff, namespace: sl}
spec:
  clusterIP: ${V4.aff}
  sessionAffinity: ClientIP
  ports: [{name: http, port: 80, targetPort: 8080}]
---
${slices('aff', '[{name: http, port: 8080}]')}---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: sl}
spec:
  clusterIP: ${V4.empty}
  ports: [{name: http, port: 80}, {name: dns, protocol: UDP, port: 53}]
---
apiVersion: v1
kind: Service
metadata: {name: np, namespace: sl}
spec:
  type: NodePort
  clusterIP: ${V4.np}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: ${NODE_PORT}}]
---
${slices('np', '[{name: http, port: 8080}]')}---
apiVersion: v1
kind: Service
metadata: {name: dns1, namespace: sl}
spec:
  clusterIP: ${V4.dns1}
  ports: [{name: dns, protocol: UDP, port: 53, targetPort: 5353}]
---
${slices('dns1', '[{name: dns, protocol: UDP, port: 5353}]', [dns1])}`;
}

const at = (addr: string, port: number): string => (addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`);

async function conntrack(box: Box): Promise<CtEntry[]> {
  return JSON.parse(await box.weir('n1', ['ct', '--json'])) as CtEntry[];
}

/** weir's conntrack entries of flows from `src` to the service address `dst` (ADDR:PORT). */
async function flowsTo(box: Box, src: string, dst: string): Promise<CtEntry[]> {
  return (await conntrack(box)).filter((e) => e.dir === 'fwd' && e.src.startsWith(src.includes(':') ? `[${src}]` : `${src}:`) && e.dst === dst);
}

/** The address part of the echo server's "ADDR:PORT" (or "[ADDR]:PORT"). */
const addrOf = (seen: string | undefined): string => (seen ?? '').replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');

function allOk(attempts: readonly Attempt[], what: string): void {
  const bad = attempts.filter((a) => !a.ok);
  assert.is(bad.length, 0, `${what}: ${JSON.stringify(bad)}`);
}

s.before(async (ctx) => {
  ctx.box = await Box.create({ nodes: 1, ipv6: true, podsUnderCgroup: true });
  for (const p of ['a', 'b']) {
    await ctx.box.addPod('n1', p);
    await ctx.box.startEcho(p, { tcp: [8080], udp: [5353] });
  }
  await ctx.box.addPod('n1', 'client');
  ctx.box.writeManifest('sl.yaml', manifests(ctx.box));
  ctx.agent = await ctx.box.startAgent('n1');
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

s('a pod connecting to a ClusterIP is balanced at connect(): no NAT, the backend sees the pod, getpeername shows the ClusterIP', async ({ box }) => {
  for (const [vip, src] of [
    [V4.web, box.pod('client').ip],
    [V6.web, box.pod('client').ip6],
  ] as const) {
    const r = await box.tcp('client', at(vip, 80), { count: 16 });
    allOk(r.attempts, vip);
    assert.equal(new Set(r.attempts.map((a) => a.backend)), new Set(['a', 'b']), `${vip}: both backends chosen`);
    for (const a of r.attempts) {
      assert.is(a.peer, at(vip, 80), 'getpeername shows the service address');
      assert.is(addrOf(a.seenSrc), src, 'the backend sees the pod itself');
    }
    assert.equal(await flowsTo(box, src, at(vip, 80)), [], `${vip}: no packet of these connections was NATed`);
  }
});

s('getpeername shows the ClusterIP however many sockets connected since: a TCP socket keeps its translation itself', async ({ box }) => {
  // The socket rev-NAT map is an LRU of 65,536 entries: enough other sockets would evict an open
  // connection's entry. Emptied by hand here while each connection is open, before getpeername().
  const shim = loadShim();
  const empty = (): void => {
    const maps = openPinned(shim, box.pinRoot('n1'), ['skrevnat', 'skrevnat6']);
    try {
      for (const m of Object.values(maps)) m.remove(m.dump().map(([k]) => k));
    } finally {
      for (const m of Object.values(maps)) m.close();
    }
  };
  for (const from of ['client', 'n1']) {
    for (const vip of [V4.web, V6.web]) {
      const run = box.tcp(from, at(vip, 80), { count: 1, peerAfterMs: 2500 });
      await sleep(1500);
      empty();
      const r = await run;
      allOk(r.attempts, `${from} -> ${vip}`);
      assert.is(r.attempts[0]!.peer, at(vip, 80), `${from} -> ${vip}: getpeername after the map was emptied`);
    }
  }
});

s('connected UDP keeps the tc path: replies and getpeername show the ClusterIP', async ({ box }) => {
  for (const [vip, src] of [
    [V4.web, box.pod('client').ip],
    [V6.web, box.pod('client').ip6],
  ] as const) {
    const r = await box.udp('client', at(vip, 53), { count: 3, connect: true });
    allOk(r.attempts, vip);
    for (const a of r.attempts) {
      assert.is(a.peer, at(vip, 53));
      assert.is(a.from, `${vip}:53`);
    }
    assert.is((await flowsTo(box, src, at(vip, 53))).length, 3, 'one tracked flow per socket');
  }
});

s("a pod's connected UDP socket moves to another backend when its backend leaves the Service", async ({ box }) => {
  const run = box.udp('client', at(V4.dns1, 53), { sameSocket: true, count: 30, intervalMs: 100 });
  await new Promise((r) => setTimeout(r, 1000));
  box.writeManifest('sl.yaml', manifests(box, 'b'));
  const r = await run;
  allOk(r.attempts, 'one socket across the change');
  const seq = r.attempts.map((a) => a.backend).join('');
  assert.match(seq, /^a+b+$/, `a until the change, then b, on the same socket: ${seq}`);
  box.writeManifest('sl.yaml', manifests(box));
});

s("a node process's connected UDP socket left on a backend that leaves the Service is destroyed; connecting again reaches a live one", async ({ box }) => {
  const run = box.udp('n1', at(V4.dns1, 53), { sameSocket: true, count: 30, intervalMs: 100 });
  await new Promise((r) => setTimeout(r, 1000));
  box.writeManifest('sl.yaml', manifests(box, 'b'));
  const r = await run;
  const seq = r.attempts.map((a) => a.backend ?? `[${a.error}]`);
  const firstErr = seq.findIndex((x) => x.startsWith('['));
  assert.ok(seq[0] === 'a' && firstErr > 0, `answers from a, then the socket fails: ${seq.join(' ')}`);
  assert.ok(!seq.slice(firstErr).includes('a'), `nothing reaches the removed backend once the socket is destroyed: ${seq.join(' ')}`);
  const again = await box.udp('n1', at(V4.dns1, 53), { connect: true, count: 2 });
  allOk(again.attempts, 'a new socket');
  for (const a of again.attempts) assert.is(a.backend, 'b');
  box.writeManifest('sl.yaml', manifests(box));
});

s('unconnected UDP keeps the tc path: one backend per source port, replies from the ClusterIP', async ({ box }) => {
  const client = box.pod('client').ip;
  const r = await box.udp('client', at(V4.web, 53), { count: 3, sport: 40531 });
  allOk(r.attempts, 'sendmsg');
  assert.is(new Set(r.attempts.map((a) => a.backend)).size, 1, 'conntrack keeps the source port on one backend');
  for (const a of r.attempts) assert.is(a.from, `${V4.web}:53`);
  const flows = (await flowsTo(box, client, at(V4.web, 53))).filter((e) => e.src === `${client}:40531`);
  assert.is(flows.length, 1, 'the tc path tracked the flow');
});

s('ClientIP affinity holds (tc path): every connection reaches one backend', async ({ box }) => {
  const r = await box.tcp('client', at(V4.aff, 80), { count: 8 });
  allOk(r.attempts, 'affinity');
  assert.is(new Set(r.attempts.map((a) => a.backend)).size, 1, JSON.stringify(r.attempts.map((a) => a.backend)));
  assert.ok((await flowsTo(box, box.pod('client').ip, at(V4.aff, 80))).length > 0, 'affinity flows are NATed on the tc path');
});

s('a Service without endpoints REJECTs as on the tc path: TCP refused, connected UDP gets the ICMP error', async ({ box }) => {
  const tcp = await box.tcp('client', at(V4.empty, 80), { timeoutMs: 1500 });
  assert.is(tcp.attempts[0]!.error, 'ECONNREFUSED');
  const udp = await box.udp('client', at(V4.empty, 53), { connect: true, timeoutMs: 1500 });
  assert.is(udp.attempts[0]!.error, 'ECONNREFUSED', JSON.stringify(udp.attempts));
});

s("a pod reaching a NodePort keeps the tc path: masqueraded to the node's address, as kube-proxy", async ({ box }) => {
  const r = await box.tcp('client', at(box.node('n1').ip, NODE_PORT), { count: 2 });
  allOk(r.attempts, 'nodeport');
  for (const a of r.attempts) assert.is(addrOf(a.seenSrc), box.node('n1').ip);
});

s("--socket-lb-hostns-only: pods' connections keep the ClusterIP on the wire (tc path); node processes are still balanced at connect()", async (ctx) => {
  const { box } = ctx;
  await ctx.agent.stop();
  ctx.agent = await box.startAgent('n1', ['--socket-lb-hostns-only']);
  const client = box.pod('client').ip;
  const r = await box.tcp('client', at(V4.web, 80), { count: 3 });
  allOk(r.attempts, 'hostns-only');
  for (const a of r.attempts) assert.is(a.peer, at(V4.web, 80));
  assert.is((await flowsTo(box, client, at(V4.web, 80))).length, 3, 'each connection NATed by the tc path');
  const node = await box.tcp('n1', at(V4.web, 80), { count: 2 });
  allOk(node.attempts, 'node process');
  assert.equal(await flowsTo(box, box.node('n1').ip, at(V4.web, 80)), [], 'the node process was balanced at connect()');
});

s.run();
