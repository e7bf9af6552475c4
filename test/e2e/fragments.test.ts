/**
 * Fragmented UDP through services, with real packets: a 3000-byte datagram
 * is larger than every link's MTU (1500) in the box, so the sender's kernel
 * sends it as three IPv4 fragments, and the mirror backend's 3000-byte
 * answer comes back fragmented the same way. The client requires the reply
 * from the service address (a connected socket) and the 3000 bytes back
 * intact, so every fragment of both directions must have been translated.
 *
 *   n1 (192.168.77.10): a 10.244.1.10 (mirror backend), c 10.244.1.11 (client)
 *   n2 (192.168.77.11): b 10.244.2.10 (mirror backend)
 *   outside 192.168.77.200: routes 10.96/16 via n1
 *
 * A node process whose socket is bound to 127.0.0.1 sends its datagram
 * whole over lo (MTU 64 KiB): it must be fragmented where it leaves the node.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box, MODE } from '../box/box';

const s = suite<{ box: Box; agents: Agent[] }>(`fragments (${MODE})`);
const N1 = '192.168.77.10';
const MIRROR = 7777;
const SIZE = 3000;

function service(name: string, ip: string, nodePort: number, backend: { ip: string; node: string }): string {
  return (
    `---\napiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: frag}\nspec:\n  type: NodePort\n  clusterIP: ${ip}\n` +
    `  ports:\n    - {name: m, port: 7, targetPort: ${MIRROR}, protocol: UDP, nodePort: ${nodePort}}\n` +
    `---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: ${name}-1\n  namespace: frag\n  labels: {kubernetes.io/service-name: ${name}}\n` +
    `addressType: IPv4\nports:\n  - {name: m, port: ${MIRROR}, protocol: UDP}\nendpoints:\n  - addresses: [${backend.ip}]\n    nodeName: ${backend.node}\n`
  );
}

s.before(async (ctx) => {
  const box = await Box.create({ nodes: 2 });
  ctx.box = box;
  const a = await box.addPod('n1', 'a');
  await box.addPod('n1', 'c');
  const b = await box.addPod('n2', 'b');
  for (const p of ['a', 'b']) await box.startEcho(p, { udpMirror: [MIRROR] });
  await box.routeFromOutside('10.96.0.0/16', 'n1');
  box.writeManifest('frag.yaml', service('local', '10.96.5.1', 30701, { ip: a.ip, node: 'n1' }) + service('remote', '10.96.5.2', 30702, { ip: b.ip, node: 'n2' }));
  ctx.agents = await box.startAgentsServing(/10\.96\.5\.2:7\/UDP/);
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

interface Row {
  from: string;
  /** The client socket's bound address. */
  bind?: string;
  to: string;
  backend: string;
  /** Source the backend saw: the client's own address, or the node's (masquerade). */
  src: string;
  why: string;
  /** What kube-proxy (iptables) does with the same traffic. */
  kubeProxy: string;
}

const ROWS: Row[] = [
  {
    from: 'c',
    to: '10.96.5.1:7',
    backend: 'a',
    src: '10.244.1.11',
    why: 'pod -> ClusterIP, backend on the same node',
    kubeProxy: 'delivered: conntrack reassembles the datagram before the nat table, DNAT applies to the whole of it',
  },
  {
    from: 'c',
    to: '10.96.5.2:7',
    backend: 'b',
    src: '10.244.1.11',
    why: 'pod -> ClusterIP, backend on the other node',
    kubeProxy: 'delivered: reassembled, DNATed, refragmented on the way out',
  },
  {
    from: 'outside',
    to: `${N1}:30701`,
    backend: 'a',
    src: N1,
    why: 'outside -> NodePort (masqueraded), backend on this node',
    kubeProxy: 'delivered: reassembled, DNAT + masquerade, the reply is de-NATed whole',
  },
  {
    from: 'outside',
    to: `${N1}:30702`,
    backend: 'b',
    src: N1,
    why: 'outside -> NodePort (masqueraded), backend on the other node: the fragmented reply enters n1 from outside',
    kubeProxy: 'delivered: reassembled, DNAT + masquerade, the reply is de-NATed whole',
  },
  {
    from: 'n1',
    bind: '127.0.0.1',
    to: '127.0.0.1:30701',
    backend: 'a',
    src: N1,
    why: 'node socket bound to 127.0.0.1 -> localhost NodePort, backend on this node: the datagram leaves lo (64 KiB MTU) for a 1500-byte link',
    kubeProxy: 'delivered: DNAT in OUTPUT, masquerade, fragmented on the way out',
  },
  {
    from: 'n1',
    bind: '127.0.0.1',
    to: '127.0.0.1:30702',
    backend: 'b',
    src: N1,
    why: 'node socket bound to 127.0.0.1 -> localhost NodePort, backend on the other node',
    kubeProxy: 'delivered: DNAT in OUTPUT, masquerade, fragmented on the way out',
  },
];

for (const row of ROWS) {
  s(`${row.why}: a ${SIZE}-byte datagram and its ${SIZE}-byte reply arrive whole (kube-proxy: ${row.kubeProxy})`, async ({ box }) => {
    const r = await box.udp(row.from, row.to, { count: 3, connect: true, size: SIZE, timeoutMs: 2000, ...(row.bind ? { bind: row.bind } : {}) });
    for (const a of r.attempts) {
      assert.ok(a.ok, JSON.stringify(a));
      assert.is(a.echoed, SIZE);
      assert.is(a.backend, row.backend);
      assert.ok(a.seenSrc!.startsWith(`${row.src}:`), `backend saw ${a.seenSrc}`);
      assert.is(a.from, row.to, 'the reply comes from the service address');
    }
  });
}

if (MODE === 'bpf') {
  s('every fragment found its datagram: weir verdicts counts no frag_unmatched', async ({ box }) => {
    for (const n of ['n1', 'n2']) {
      const counts = JSON.parse(await box.weir(n, ['verdicts', '--json'])) as Array<{ verdict: string; packets: number }>;
      const count = (v: string): number => counts.find((c) => c.verdict === v)!.packets;
      assert.is(count('frag_unmatched'), 0, n);
      // n1 NATed every fragment of every request (3 per datagram, 4 rows x 3 datagrams).
      if (n === 'n1') assert.ok(count('forward') + count('forward_redirect') >= 36, JSON.stringify(counts));
    }
  });
}

s.run();
