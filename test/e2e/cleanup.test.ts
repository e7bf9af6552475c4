/**
 * `weir cleanup` leaves nothing on the node that costs per packet, in both
 * modes: no clsact qdisc it attached to (unless someone else's filter is on
 * it), and no iptables-nft `nat`/`filter` table whose base chains would keep
 * netfilter hooks, conntrack and NAT running for every packet (unless
 * someone else's rule is in it, which stays as it was).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box } from '../box/box';

const s = suite<{ box: Box }>('cleanup');

const VIP = '10.96.8.1';
const MANIFEST = (ip: string): string => `apiVersion: v1
kind: Service
metadata: {name: web, namespace: c}
spec:
  clusterIP: ${VIP}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: c, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [${ip}], nodeName: n1}]
`;

/** Run in the node namespace; the output (throws on failure). */
async function node(box: Box, argv: string[]): Promise<string> {
  const r = await box.exec(box.node('n1').ns, argv);
  if (r.code !== 0) throw new Error(`${argv.join(' ')}: exit ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** The devices of the node namespace with a clsact qdisc. */
async function clsactDevices(box: Box): Promise<string[]> {
  const links = JSON.parse(await node(box, ['ip', '-j', 'link', 'show'])) as Array<{ ifname: string }>;
  const out: string[] = [];
  for (const l of links) {
    const q = JSON.parse((await node(box, ['tc', '-j', 'qdisc', 'show', 'dev', l.ifname])) || '[]') as Array<{ kind: string }>;
    if (q.some((x) => x.kind === 'clsact')) out.push(l.ifname);
  }
  return out.sort();
}

/** `nft list tables` of the node namespace: "ip nat", "ip filter", ... */
async function tables(box: Box): Promise<string[]> {
  return (await node(box, ['nft', 'list', 'tables']))
    .split('\n')
    .filter((l) => l.startsWith('table '))
    .map((l) => l.slice('table '.length).trim())
    .sort();
}

async function serve(box: Box, mode: 'bpf' | 'iptables'): Promise<Agent> {
  const agent = await box.startAgent('n1', ['--mode', mode]);
  if (mode === 'bpf') await agent.proc.waitFor(/"device":"eth0"/, 5000);
  // The service answers through weir: it was programmed, and the test below checks what its removal leaves.
  for (let i = 0; i < 50; i++) {
    const r = await box.tcp('client', `${VIP}:80`, { timeoutMs: 1000 });
    if (r.attempts[0]?.ok) return agent;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`${mode}: ${VIP}:80 never answered`);
}

s.before(async (ctx) => {
  ctx.box = await Box.create({ nodes: 1 });
  await ctx.box.addPod('n1', 'a');
  await ctx.box.startEcho('a', { tcp: [8080] });
  await ctx.box.addPod('n1', 'client');
  ctx.box.writeManifest('web.yaml', MANIFEST(ctx.box.pod('a').ip));
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

s('BPF mode: cleanup removes the clsact qdiscs it attached to, and keeps one that carries another filter', async ({ box }) => {
  const other = box.pod('client').hostDev;
  const before = await tables(box);
  // Someone else's classifier on the client's device, in the clsact weir attaches to as well.
  await node(box, ['tc', 'qdisc', 'add', 'dev', other, 'clsact']);
  try {
    await node(box, ['tc', 'filter', 'add', 'dev', other, 'ingress', 'prio', '7', 'protocol', 'all', 'bpf', 'bytecode', '1,6 0 0 0,']);
    const agent = await serve(box, 'bpf');
    const attached = await clsactDevices(box);
    for (const dev of ['eth0', 'lo', box.pod('a').hostDev, other]) assert.ok(attached.includes(dev), `weir attached to ${dev} (${attached.join(', ')})`);
    await agent.stop();
    await box.weir('n1', ['cleanup']);
    assert.equal(await clsactDevices(box), [other], 'only the qdisc with the other filter is left');
    const kept = await node(box, ['tc', 'filter', 'show', 'dev', other, 'ingress']);
    assert.match(kept, /pref 7 bpf/, 'the other filter is untouched');
    assert.equal(await tables(box), before, 'BPF mode leaves no netfilter table behind');
  } finally {
    await box.exec(box.node('n1').ns, ['tc', 'qdisc', 'del', 'dev', other, 'clsact']);
  }
});

s('iptables mode: cleanup removes the nat and filter tables only weir used, and keeps a table holding another rule', async ({ box }) => {
  assert.not.ok(
    (await tables(box)).some((t) => t === 'ip nat' || t === 'ip filter'),
    'no table before',
  );
  let agent = await serve(box, 'iptables');
  const used = await tables(box);
  assert.ok(used.includes('ip nat') && used.includes('ip filter'), `weir's rules are in ip nat and ip filter (${used.join(', ')})`);
  await agent.stop();
  await box.weir('n1', ['cleanup']);
  const after = await tables(box);
  assert.not.ok(
    after.some((t) => t === 'ip nat' || t === 'ip filter'),
    `no table left (${after.join(', ')})`,
  );

  // Another program's rule in the filter table: that table stays, with its rule; weir's chains go.
  const rule = ['-p', 'tcp', '--dport', '9', '-m', 'comment', '--comment', 'another program', '-j', 'ACCEPT'];
  await node(box, ['iptables', '-w', '5', '-t', 'filter', '-A', 'INPUT', ...rule]);
  try {
    agent = await serve(box, 'iptables');
    await agent.stop();
    await box.weir('n1', ['cleanup']);
    const left = await tables(box);
    assert.ok(left.includes('ip filter'), 'the table with the other rule stays');
    assert.not.ok(left.includes('ip nat'), 'the nat table only weir used goes');
    const saved = await node(box, ['iptables-save', '-t', 'filter']);
    assert.match(saved, /-A INPUT -p tcp -m tcp --dport 9 -m comment --comment "another program" -j ACCEPT/);
    assert.not.match(saved, /WEIR-/);
  } finally {
    await box.exec(box.node('n1').ns, ['iptables', '-w', '5', '-t', 'filter', '-D', 'INPUT', ...rule]);
  }
});

s.run();
