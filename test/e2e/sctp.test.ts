/**
 * SCTP Services with real packets. This kernel has no SCTP sockets, so the
 * client and the backends are raw-socket programs (test/box/sctp.py) that
 * play an association's first exchange: INIT, and INIT ACK back. Both check
 * the CRC32c of what they receive and ignore a packet whose checksum is
 * wrong, as an SCTP stack does. Every service maps port 36412 to
 * targetPort 38412, so every translated packet needed its CRC32c updated.
 *
 *   n1 (192.168.77.10): a 10.244.1.10 (backend), c 10.244.1.11 (client)
 *   n2 (192.168.77.11): b 10.244.2.10 (backend)
 *   outside 192.168.77.200: routes 10.96/16 via n1
 */
import * as path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box, MODE, REPO } from '../box/box';
import type { Attempt } from '../box/client';

const s = suite<{ box: Box; agents: Agent[] }>(`sctp (${MODE})`);
const SCTP = path.join(REPO, 'test/box/sctp.py');
const N1 = '192.168.77.10';
const TARGET = 38412;

function service(name: string, ip: string, nodePort: number, backend: { ip: string; node: string }): string {
  return (
    `---\napiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: sctp}\nspec:\n  type: NodePort\n  clusterIP: ${ip}\n` +
    `  ports:\n    - {name: s1ap, port: 36412, targetPort: ${TARGET}, protocol: SCTP, nodePort: ${nodePort}}\n` +
    `---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: ${name}-1\n  namespace: sctp\n  labels: {kubernetes.io/service-name: ${name}}\n` +
    `addressType: IPv4\nports:\n  - {name: s1ap, port: ${TARGET}, protocol: SCTP}\nendpoints:\n  - addresses: [${backend.ip}]\n    nodeName: ${backend.node}\n`
  );
}

async function sctpClient(box: Box, from: string, to: string, count: number): Promise<Attempt[]> {
  const r = await box.exec(box.nsOf(from), ['python3', SCTP, 'client', '--to', to, '--count', String(count), '--timeout-ms', '1500'], { timeoutMs: count * 2000 + 5000 });
  try {
    return (JSON.parse(r.stdout) as { attempts: Attempt[] }).attempts;
  } catch {
    throw new Error(`sctp client in ${from} (exit ${r.code}): ${r.stdout} ${r.stderr}`);
  }
}

s.before(async (ctx) => {
  const box = await Box.create({ nodes: 2 });
  ctx.box = box;
  const a = await box.addPod('n1', 'a');
  await box.addPod('n1', 'c');
  const b = await box.addPod('n2', 'b');
  for (const p of [a, b]) await box.spawn(p.ns, ['python3', SCTP, 'server', '--name', p.name, '--port', String(TARGET)]).waitFor(/^ready$/m, 10_000);
  await box.routeFromOutside('10.96.0.0/16', 'n1');
  box.writeManifest('sctp.yaml', service('local', '10.96.6.1', 30412, { ip: a.ip, node: 'n1' }) + service('remote', '10.96.6.2', 30413, { ip: b.ip, node: 'n2' }));
  ctx.agents = await box.startAgentsServing(/10\.96\.6\.2:36412\/SCTP/);
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

interface Row {
  from: string;
  to: string;
  backend: string;
  /** Source the backend saw: the client's own address, or the node's (masquerade). */
  src: string;
  why: string;
  /** What kube-proxy (iptables) does with the same packets. */
  kubeProxy: string;
}

const ROWS: Row[] = [
  { from: 'c', to: '10.96.6.1:36412', backend: 'a', src: '10.244.1.11', why: 'pod -> ClusterIP, backend on the same node', kubeProxy: 'DNAT; netfilter rewrites the CRC32c' },
  { from: 'c', to: '10.96.6.2:36412', backend: 'b', src: '10.244.1.11', why: 'pod -> ClusterIP, backend on the other node', kubeProxy: 'DNAT; the INIT ACK is de-NATed by conntrack' },
  { from: 'outside', to: `${N1}:30412`, backend: 'a', src: N1, why: 'outside -> NodePort (masqueraded), backend on this node', kubeProxy: 'DNAT + masquerade' },
  { from: 'outside', to: `${N1}:30413`, backend: 'b', src: N1, why: 'outside -> NodePort (masqueraded), backend on the other node', kubeProxy: 'DNAT + masquerade' },
];

for (const row of ROWS) {
  s(`${row.why}: INIT reaches the backend, INIT ACK comes back from the service with a valid CRC32c (kube-proxy: ${row.kubeProxy})`, async ({ box }) => {
    const attempts = await sctpClient(box, row.from, row.to, 3);
    for (const a of attempts) {
      assert.ok(a.ok, JSON.stringify(a));
      assert.is(a.backend, row.backend);
      assert.ok(a.seenSrc!.startsWith(`${row.src}:`), `backend saw ${a.seenSrc}`);
      assert.is(a.from, row.to, 'the INIT ACK comes from the service address and port');
    }
  });
}

if (MODE === 'bpf') {
  s('weir trace --proto sctp shows where an INIT goes, through the loaded program', async ({ box }) => {
    const out = JSON.parse(await box.weir('n1', ['trace', '--src', box.pod('c').ip, '--dst', '10.96.6.1:36412', '--proto', 'sctp', '--json'])) as { verdict: string; out: { dst: string } };
    assert.is(out.verdict, 'forward');
    assert.is(out.out.dst, `${box.pod('a').ip}:${TARGET}`);
  });
}

s.run();
