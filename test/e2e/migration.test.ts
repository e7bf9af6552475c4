/**
 * Moving a node from kube-proxy to weir's BPF dataplane and back, with
 * connections held across each switch: none may break or change backend,
 * and no new connection may be refused while the proxies change places.
 *
 * kube-proxy is played by weir's own iptables mode: its rules, saved and
 * renamed from WEIR- to KUBE-, are rules weir does not own (weir removes
 * only its own chains), installed and removed the way kube-proxy and
 * `kube-proxy --cleanup` would. BPF mode only (the subject is the handover
 * between the tc programs and netfilter).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box, CLI, HoldHandle, MODE, Results, waitFor } from '../box/box';
import { nsMust } from '../box/exec';

const s = suite<{ box: Box; kubeProxyRules: string }>('migration from and to kube-proxy (bpf)');

const VIP = '10.96.9.1';
const NODE_PORT = 30990;

function service(ips: readonly string[]): string {
  return `apiVersion: v1
kind: Service
metadata: {name: mig, namespace: e2e}
spec:
  type: NodePort
  clusterIP: ${VIP}
  ports: [{port: 80, targetPort: 8080, nodePort: ${NODE_PORT}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: mig-1, namespace: e2e, labels: {kubernetes.io/service-name: mig}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [${ips.map((ip) => `{addresses: [${ip}], nodeName: n1}`).join(', ')}]
`;
}

/** Held connections: pods through the ClusterIP, the outside through the NodePort. */
async function holdMany(box: Box, durationMs: number): Promise<HoldHandle[]> {
  const nodePort = `${box.node('n1').ip}:${NODE_PORT}`;
  const targets: Array<[string, string]> = [
    ['client', `${VIP}:80`],
    ['client', `${VIP}:80`],
    ['client', `${VIP}:80`],
    ['outside', nodePort],
    ['outside', nodePort],
  ];
  return Promise.all(targets.map(([from, to]) => box.hold(from, to, { durationMs, intervalMs: 100 })));
}

/** Every request of every held connection answered, each connection by one backend throughout. */
async function assertHeld(holds: HoldHandle[]): Promise<void> {
  const results = await Promise.all(holds.map((h) => h.result()));
  const seqs = results.map((r) => r.attempts.map((a) => (a.ok ? a.backend : a.error)).join(' '));
  for (const [i, r] of results.entries()) {
    const failed = r.attempts.filter((a) => !a.ok);
    assert.equal(failed, [], `hold ${i}: failed requests; all holds:\n${seqs.join('\n')}`);
    assert.ok(r.attempts.length >= 20, `hold ${i}: ${r.attempts.length} requests`);
    assert.is(new Set(r.attempts.map((a) => a.backend)).size, 1, `hold ${i}: one backend for the whole connection`);
  }
}

/** New connections, one every ~50 ms, while the proxies change places. */
function probe(box: Box, count: number): Promise<Results> {
  return box.tcp('client', `${VIP}:80`, { count, holdMs: 50 });
}

function assertAllServed(r: Results, what: string): void {
  const failed = r.attempts.filter((a) => !a.ok);
  assert.equal(failed, [], `${what}: refused or timed out`);
}

async function verdict(box: Box, name: string): Promise<number> {
  const out = await box.weir('n1', ['verdicts']);
  const m = new RegExp(`^\\s*${name}\\s+(\\d+)`, 'm').exec(out);
  return m ? Number(m[1]) : 0;
}

async function installKubeProxy(box: Box, rules: string): Promise<void> {
  await nsMust(box.node('n1').ns, ['iptables-restore', '-w', '5'], { input: rules });
}

/**
 * What `kube-proxy --cleanup` does: the jumps to its chains and its chains
 * deleted, everything else in the tables left as it is.
 */
async function removeKubeProxy(box: Box): Promise<void> {
  const ns = box.node('n1').ns;
  const saved = await nsMust(ns, ['iptables-save']);
  let text = '';
  for (const section of saved.split(/^(?=\*)/m).filter((t) => t.startsWith('*'))) {
    const lines = section.split('\n');
    const chains = lines.filter((l) => l.startsWith(':KUBE-')).map((l) => l.slice(1).split(' ')[0]!);
    const jumps = lines.filter((l) => /^-A (?!KUBE-)\S+ .*-j KUBE-/.test(l));
    if (!chains.length && !jumps.length) continue;
    text += [lines[0], ...jumps.map((l) => l.replace(/^-A/, '-D')), ...chains.map((c) => `:${c} - [0:0]`), ...chains.map((c) => `-X ${c}`), 'COMMIT'].join('\n') + '\n';
  }
  if (text) await nsMust(ns, ['iptables-restore', '-w', '5', '--noflush'], { input: text });
}

async function tcFilters(box: Box): Promise<string> {
  return nsMust(box.node('n1').ns, ['tc', 'filter', 'show', 'dev', 'eth0', 'ingress']);
}

s.before(async (ctx) => {
  if (MODE !== 'bpf') return;
  const box = (ctx.box = await Box.create({ nodes: 1 }));
  for (const name of ['a', 'b', 'c']) {
    await box.addPod('n1', name);
    await box.startEcho(name, { tcp: [8080] });
  }
  await box.addPod('n1', 'client');
  box.writeManifest('mig.yaml', service(['a', 'b', 'c'].map((p) => box.pod(p).ip)));
  // kube-proxy's rules for these manifests: an iptables-mode agent's, on a pin root of its own, renamed.
  const standIn = await box.startAgent('n1', ['--mode', 'iptables', '--bpffs-root', `${box.pinBase}/kube-proxy`]);
  const saved = await waitFor(
    async () => {
      const text = await nsMust(box.node('n1').ns, ['iptables-save']);
      return text.includes(`${NODE_PORT}`) && text.includes(VIP) ? text : null;
    },
    { timeoutMs: 5000, what: 'iptables-mode rules' },
  );
  await standIn.stop();
  ctx.kubeProxyRules = saved.replace(/WEIR-/g, 'KUBE-');
  await nsMust(box.node('n1').ns, ['iptables-restore', '-w', '5'], { input: '*nat\nCOMMIT\n*filter\nCOMMIT\n' });
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

s('kube-proxy -> weir: held connections keep their backends, new ones are served throughout', async ({ box, kubeProxyRules }) => {
  if (MODE !== 'bpf') return;
  await installKubeProxy(box, kubeProxyRules);
  assert.ok(
    (await probe(box, 3)).attempts.every((a) => a.ok),
    'kube-proxy rules serve',
  );
  const holds = await holdMany(box, 5000);
  const probing = probe(box, 100);
  const agent: Agent = await box.startAgent('n1');
  try {
    await migrateTo(box, agent, holds, probing);
  } finally {
    await agent.stop();
  }
});

async function migrateTo(box: Box, agent: Agent, holds: HoldHandle[], probing: Promise<Results>): Promise<void> {
  await agent.proc.waitFor(/"device":"eth0"/, 3000);
  await agent.proc.waitFor(/("role":"pod"[\s\S]*){4}/, 5000);
  // kube-proxy --cleanup while the connections it opened still run: its conntrack keeps them.
  assertAllServed(await probing, 'new connections during the switch');
  await assertHeld(holds);
  // kube-proxy --cleanup once its connections are gone (see the README: removing the
  // last NAT rule of a node can stop netfilter tracking, and with it their NAT).
  await removeKubeProxy(box);
  // The held connections' segments went to the stack; new connections are weir's.
  assert.ok((await verdict(box, 'pass_midflow')) > 0, 'mid-flow segments left to the stack');
  const before = await verdict(box, 'forward');
  assertAllServed(await probe(box, 10), 'new connections after kube-proxy is gone');
  assert.ok((await verdict(box, 'forward')) >= before + 10, 'new connections NATed by weir');
}

s("weir -> kube-proxy: `weir cleanup --drain` keeps weir's connections until they end, new ones go to kube-proxy", async ({ box, kubeProxyRules }) => {
  if (MODE !== 'bpf') return;
  const agent = await box.startAgent('n1');
  await waitFor(async () => /10\.96\.9\.1:80\/TCP/.test(await box.weir('n1', ['services'])), { timeoutMs: 5000, what: 'programmed' });
  await agent.proc.waitFor(/("role":"pod"[\s\S]*){4}/, 5000);
  const holds = await holdMany(box, 6000);
  // Roll back: kube-proxy starts (its rules see no service traffic while weir translates first) ...
  await installKubeProxy(box, kubeProxyRules);
  // ... weir's agent leaves the node (its programs stay pinned and attached) ...
  assert.is(await agent.stop(), 0);
  // ... and the drain hands new connections over while weir's own run to their end.
  const drain = box.spawn(box.node('n1').ns, ['node', CLI, 'cleanup', '--drain', '30s', '--bpffs-root', box.pinRoot('n1')]);
  await drain.waitFor(/draining: [1-9]\d* open flow/, 5000);
  const drainedBefore = await verdict(box, 'pass_draining');
  assertAllServed(await probe(box, 20), 'new connections while draining');
  assert.ok((await verdict(box, 'pass_draining')) >= drainedBefore + 20, 'new connections left to kube-proxy');
  await assertHeld(holds);
  // The connections ended: the drain finishes and removes weir.
  assert.is(await drain.wait(), 0, drain.output());
  assert.match(drain.output(), /draining: 0 open flow/);
  assert.match(drain.output(), /removed \d+ tc filter/);
  assert.not.match(await tcFilters(box), /weir|bpf/);
  assertAllServed(await probe(box, 10), 'new connections after weir is gone');
  await removeKubeProxy(box);
});

s.run();
