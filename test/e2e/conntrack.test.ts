/**
 * kube-proxy's conntrack timeouts (--conntrack-udp-timeout and friends) with
 * real flows, in both modes: a UDP flow idle longer than its configured
 * timeout is a new flow (BPF: it chooses its backend again; iptables: the
 * kernel's entry is gone), while an established TCP connection idle for
 * less than its timeout keeps its backend and one idle for longer does not.
 * iptables mode sets the sysctls of the agent's namespace only.
 *
 *   n1 (192.168.77.10): a1 10.244.1.10, a2 10.244.1.11 (echo), c1 10.244.1.12
 */
import * as fs from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box, MODE, waitFor } from '../box/box';

const s = suite<{ box: Box; agent: Agent; rootSysctls: string[] }>(`conntrack timeouts (${MODE})`);
const VIP = '10.96.6.1';
const TIMEOUTS = ['--conntrack-udp-timeout', '2s', '--conntrack-udp-timeout-stream', '2s', '--conntrack-tcp-timeout-established', '5s'];
const SYSCTLS = ['nf_conntrack_udp_timeout', 'nf_conntrack_udp_timeout_stream', 'nf_conntrack_tcp_timeout_established'];

interface Ep {
  pod: string;
  ip: string;
  terminating?: boolean;
}

const A1: Ep = { pod: 'a1', ip: '10.244.1.10' };
const A2: Ep = { pod: 'a2', ip: '10.244.1.11' };

function manifests(eps: Ep[]): string {
  const svc = `---\napiVersion: v1\nkind: Service\nmetadata: {name: ct, namespace: t}\nspec:\n  clusterIP: ${VIP}\n  ports:\n  - {name: http, port: 80, targetPort: 8080, protocol: TCP}\n  - {name: dns, port: 53, targetPort: 5353, protocol: UDP}\n`;
  const e = eps.map((x) => `  - addresses: [${x.ip}]\n    nodeName: n1\n    conditions: {ready: ${!x.terminating}, serving: true, terminating: ${x.terminating ?? false}}`).join('\n');
  const slice = `---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: ct-1\n  namespace: t\n  labels: {kubernetes.io/service-name: ct}\naddressType: IPv4\nports:\n  - {name: http, port: 8080, protocol: TCP}\n  - {name: dns, port: 5353, protocol: UDP}\nendpoints:\n${e}\n`;
  return svc + slice;
}

/** New flows of the service go to this endpoint only (its single slot). */
async function programmedTo(box: Box, ep: Ep): Promise<void> {
  const re = new RegExp(`${VIP.replace(/\./g, '\\.')}:53/UDP .* 1 backend\\n {2}#1 backend \\d+ ${ep.ip.replace(/\./g, '\\.')}`);
  await waitFor(async () => re.test(await box.weir('n1', ['services'])), { timeoutMs: 5000, what: `new flows to ${ep.pod}` });
}

const readSysctls = (): string[] => SYSCTLS.map((n) => fs.readFileSync(`/proc/sys/net/netfilter/${n}`, 'utf8').trim());
/** A source port of its own per run: the flows of this suite are told apart by it. */
const sport = (): number => 40_000 + Math.floor(Math.random() * 20_000);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

s.before(async (ctx) => {
  // The root namespace's values, read (never written) to show the agent left them alone.
  ctx.rootSysctls = readSysctls();
  const box = await Box.create({ nodes: 1 });
  ctx.box = box;
  for (const p of ['a1', 'a2', 'c1']) await box.addPod('n1', p);
  for (const p of ['a1', 'a2']) await box.startEcho(p, { tcp: [8080], udp: [5353] });
  box.writeManifest('ct.yaml', manifests([A1]));
  ctx.agent = await box.startAgent('n1', TIMEOUTS);
  await programmedTo(box, A1);
  if (MODE === 'bpf') await ctx.agent.proc.waitFor(/"role":"pod"[\s\S]*"role":"pod"[\s\S]*"role":"pod"/, 5000);
});

s.after.each(({ box }) => box.writeManifest('ct.yaml', manifests([A1])));

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

s('iptables and nftables mode set the timeouts given in their own namespace only', async ({ box, agent, rootSysctls }) => {
  if (MODE === 'bpf') return;
  await agent.proc.waitFor(/"msg":"conntrack timeouts set"/, 5000);
  const inNode = await box.exec(box.node('n1').ns, ['sh', '-c', SYSCTLS.map((n) => `cat /proc/sys/net/netfilter/${n}`).join(';')]);
  assert.equal(inNode.stdout.trim().split('\n'), ['2', '2', '5']);
  assert.equal(readSysctls(), rootSysctls, "the machine's root namespace keeps its values");
});

s('a UDP flow idle longer than --conntrack-udp-timeout is a new flow', async ({ box }) => {
  const port = sport();
  let r = await box.udp('c1', `${VIP}:53`, { sport: port });
  assert.equal(
    r.attempts.map((a) => a.backend),
    ['a1'],
  );
  if (MODE !== 'bpf') {
    // The kernel's conntrack is the flow table here: its entry lives 2 s, not the kernel's default.
    const entries = async (): Promise<number> => {
      const out = await box.exec(box.node('n1').ns, ['conntrack', '-L', '-p', 'udp', '--orig-port-src', String(port)]);
      return out.stdout.split('\n').filter((l) => l.includes(`sport=${port}`)).length;
    };
    assert.is(await entries(), 1, 'the flow has its entry');
    await sleep(3000);
    assert.is(await entries(), 0, 'expired after 2 s idle');
    return;
  }
  // It saw a reply: a stream (netfilter's ASSURED), both entries, as `weir ct` shows.
  const entries = JSON.parse(await box.weir('n1', ['ct', '--json'])) as Array<{ src: string; dst: string; flags: string[] }>;
  const flow = entries.filter((e) => e.src === `${box.pod('c1').ip}:${port}` || e.dst === `${box.pod('c1').ip}:${port}`);
  assert.equal(
    flow.map((e) => e.flags.includes('replied')),
    [true, true],
    JSON.stringify(flow),
  );
  // a1 starts terminating, a2 is ready: new flows go to a2; a flow kept busy
  // (a datagram every 500 ms) stays on a1 meanwhile.
  const busy = box.udp('c1', `${VIP}:53`, { sport: port, sameSocket: true, count: 8, intervalMs: 500 });
  box.writeManifest('ct.yaml', manifests([{ ...A1, terminating: true }, A2]));
  await programmedTo(box, A2);
  r = await box.udp('c1', `${VIP}:53`, { count: 4 });
  assert.equal([...new Set(r.attempts.map((a) => a.backend))], ['a2'], 'new flows');
  r = await busy;
  assert.equal([...new Set(r.attempts.map((a) => a.backend))], ['a1'], 'the busy flow keeps its backend');
  // Idle 3 s, past its 2 s: the same source port is a new flow, on a2.
  await sleep(3000);
  r = await box.udp('c1', `${VIP}:53`, { sport: port });
  assert.equal(
    r.attempts.map((a) => a.backend),
    ['a2'],
    'idle past the timeout: chosen again',
  );
});

s('an established TCP connection keeps its backend while idle within --conntrack-tcp-timeout-established, and not past it', async ({ box }) => {
  // Requests 3 s apart on one connection, across the switch to a2.
  const within = await box.hold('c1', `${VIP}:80`, { durationMs: 6500, intervalMs: 3000 });
  box.writeManifest('ct.yaml', manifests([{ ...A1, terminating: true }, A2]));
  await programmedTo(box, A2);
  const kept = await within.result();
  assert.ok(kept.attempts.length === 3 && kept.attempts.every((a) => a.ok && a.backend === 'a1'), JSON.stringify(kept.attempts));

  // Idle 6.5 s, past its 5 s: the connection's next packet is no longer its flow's.
  box.writeManifest('ct.yaml', manifests([A1]));
  await programmedTo(box, A1);
  const past = await box.hold('c1', `${VIP}:80`, { durationMs: 7000, intervalMs: 6500 });
  box.writeManifest('ct.yaml', manifests([{ ...A1, terminating: true }, A2]));
  await programmedTo(box, A2);
  const lost = await past.result();
  assert.is(lost.attempts[0]?.backend, 'a1', JSON.stringify(lost.attempts));
  assert.ok(lost.attempts.length === 2 && !lost.attempts[1]!.ok, `expired: the second request fails: ${JSON.stringify(lost.attempts)}`);
});

s.run();
