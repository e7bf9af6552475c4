/**
 * iptables mode after start: something else flushing a table, replacing
 * it or removing one of weir's hooks (a firewall's reload, a node script's
 * `iptables -F`) breaks Services, and partial syncs alone would leave them
 * broken until the hourly full sync. A running agent finds it on its sync
 * period, rewrites that family's tables, says what was missing and counts
 * it; real traffic shows the break and the repair, in both families. A
 * rewrite of thousands of services runs in child processes, so /livez
 * answers throughout, and an agent told to stop lets its restore finish
 * before the next agent may start. Runs in iptables mode whatever
 * WEIR_TEST_MODE says.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box, CLI, waitFor } from '../box/box';
import { assertAnsweredDuring, probeLivez } from '../box/livez';
import { manyServices } from '../box/manifests';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const s = suite<{ box: Box; agent?: Agent }>('ipt-drift');
const VIP = '10.96.8.2';
const VIP6 = 'fd00:96::8:2';

s.before(async (ctx) => {
  ctx.box = await Box.create({ nodes: 1, ipv6: true });
  for (const p of ['a', 'b']) {
    await ctx.box.addPod('n1', p);
    await ctx.box.startEcho(p, { tcp: [8080] });
  }
  await ctx.box.addPod('n1', 'client');
  const slice = (family: 'IPv4' | 'IPv6', ips: string[]): string => `---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-${family.toLowerCase()}, namespace: id, labels: {kubernetes.io/service-name: web}}
addressType: ${family}
ports: [{port: 8080}]
endpoints: [${ips.map((ip) => `{addresses: ["${ip}"]}`).join(', ')}]
`;
  const { a, b } = { a: ctx.box.pod('a'), b: ctx.box.pod('b') };
  ctx.box.writeManifest(
    'web.yaml',
    `apiVersion: v1
kind: Service
metadata: {name: web, namespace: id}
spec:
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIP: ${VIP}
  clusterIPs: [${VIP}, "${VIP6}"]
  ports: [{port: 80, targetPort: 8080}]
${slice('IPv4', [a.ip, b.ip])}${slice('IPv6', [a.ip6, b.ip6])}`,
  );
});

s.after(async (ctx) => {
  await ctx.agent?.stop();
  await ctx.box?.destroy();
});

const iptAgent = (box: Box, syncPeriod: string): Promise<Agent> => box.startAgent('n1', ['--mode', 'iptables', '--sync-period', syncPeriod]);

async function sh(box: Box, cmd: string): Promise<void> {
  const r = await box.exec(box.node('n1').ns, ['sh', '-c', cmd]);
  assert.is(r.code, 0, `${cmd}: ${r.stderr}`);
}

async function reachesBackends(box: Box, vip: string): Promise<void> {
  const r = await box.tcp('client', `${vip}:80`, { count: 4 });
  assert.ok(
    r.attempts.every((x) => x.ok && (x.backend === 'a' || x.backend === 'b')),
    JSON.stringify(r),
  );
}

async function broken(box: Box, vip: string): Promise<void> {
  const r = await box.tcp('client', `${vip}:80`, { count: 2, timeoutMs: 700 });
  assert.ok(
    r.attempts.every((x) => !x.ok),
    JSON.stringify(r),
  );
}

s('without the check, a flushed nat table stays broken, also through a change to another service', async (ctx) => {
  const { box } = ctx;
  ctx.agent = await iptAgent(box, '0');
  await reachesBackends(box, VIP);
  await sh(box, 'iptables -t nat -F');
  await broken(box, VIP);
  box.writeManifest('other.yaml', `apiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: id}\nspec: {clusterIP: 10.96.8.9, ports: [{port: 80}]}\n`);
  await waitFor(async () => (await box.weir('n1', ['services'])).includes('10.96.8.9'), { timeoutMs: 5000, what: 'the other service programmed' });
  await broken(box, VIP);
  await ctx.agent.stop();
  ctx.agent = undefined;
});

s('a running agent rewrites a family whose table was flushed, replaced, or lost a hook, says what was missing, counts it, and traffic flows again', async (ctx) => {
  const { box } = ctx;
  const agent = (ctx.agent = await iptAgent(box, '1s'));
  await reachesBackends(box, VIP);
  await reachesBackends(box, `[${VIP6}]`);
  const metricsAddr = /"msg":"metrics server listening","addr":"([^"]+)"/.exec(agent.logs())![1]!;
  const natHooks = ['PREROUTING: the jump to WEIR-SERVICES', 'OUTPUT: the jump to WEIR-SERVICES', 'POSTROUTING: the jump to WEIR-POSTROUTING'];
  const edits: Array<{ cmd: string; vip: string; missing: string[] }> = [
    // Every chain of the table flushed, weir's and the built-in ones.
    { cmd: 'iptables -t nat -F', vip: VIP, missing: ['WEIR-MARK-MASQ: empty', ...natHooks].map((m) => `iptables nat ${m}`) },
    // The table replaced, as a firewall's own iptables-restore (without --noflush) does: weir's chains are deleted.
    {
      cmd: 'printf "*nat\\n:PREROUTING ACCEPT [0:0]\\n:INPUT ACCEPT [0:0]\\n:OUTPUT ACCEPT [0:0]\\n:POSTROUTING ACCEPT [0:0]\\nCOMMIT\\n" | iptables-restore',
      vip: VIP,
      missing: ['WEIR-MARK-MASQ: gone', ...natHooks].map((m) => `iptables nat ${m}`),
    },
    // One hook removed.
    { cmd: 'iptables -t nat -D PREROUTING -m comment --comment "weir service portals" -j WEIR-SERVICES', vip: VIP, missing: ['iptables nat PREROUTING: the jump to WEIR-SERVICES'] },
    // The other family.
    { cmd: 'ip6tables -t nat -F', vip: `[${VIP6}]`, missing: ['WEIR-MARK-MASQ: empty', ...natHooks].map((m) => `ip6tables nat ${m}`) },
  ];
  for (const { cmd, vip, missing } of edits) {
    const mark = agent.proc.mark();
    await sh(box, cmd);
    const warning = /^.*"msg":"weir's iptables rules were flushed or removed by something else; rewritten".*$/m;
    await agent.proc.waitFor(warning, 5000, mark);
    assert.is((JSON.parse(warning.exec(agent.proc.outputSince(mark))![0]) as { missing: string }).missing, missing.join(','), cmd);
    await reachesBackends(box, vip);
  }
  const metrics = await box.exec(box.node('n1').ns, ['curl', '-s', '-m', '3', `http://${metricsAddr}/metrics`]);
  assert.match(metrics.stdout, /weir_drift_repaired_entries_total\{map="iptables nat"\} 9\n/);
  assert.match(metrics.stdout, /weir_drift_repaired_entries_total\{map="ip6tables nat"\} 4\n/);
});

s('weir check is clean against a running iptables-mode agent; a hand edit inside a service chain is reported by chain, in either family, until a full rewrite', async (ctx) => {
  const { box } = ctx;
  const ns = box.node('n1').ns;
  const check = async (): Promise<{ code: number; lines: string[] }> => {
    const r = await box.exec(ns, ['node', CLI, 'check', '--bpffs-root', box.pinRoot('n1')], { timeoutMs: 20_000 });
    return { code: r.code, lines: r.stdout.trim().split('\n') };
  };
  const clean = { code: 0, lines: ["consistent: every invariant holds in weir's iptables chains"] };
  assert.equal(await check(), clean);
  // web's choice between a and b: its last, unconditional jump deleted, so half of new connections match nothing.
  const svc = /^-A (WEIR-SVC-\S+) .*-j WEIR-SEP-/m.exec((await box.exec(ns, ['iptables-save', '-t', 'nat'])).stdout)![1]!;
  await sh(box, `iptables -t nat -D ${svc} 2`);
  // And in ip6tables, one endpoint chain flushed.
  const sep6 = /^-A (WEIR-SEP-\S+) .*-j DNAT/m.exec((await box.exec(ns, ['ip6tables-save', '-t', 'nat'])).stdout)![1]!;
  await sh(box, `ip6tables -t nat -F ${sep6}`);
  const found = await check();
  assert.is(found.code, 1);
  assert.ok(found.lines.includes(`iptables nat ${svc} rule 1: the last endpoint's jump has probability 0.50000000000: the packets it leaves go on untranslated`), found.lines.join('\n'));
  assert.ok(
    found.lines.some((l) => /^iptables nat WEIR-SEP-\S+: no rule jumps to it$/.test(l)),
    found.lines.join('\n'),
  );
  assert.ok(found.lines.includes(`ip6tables nat ${sep6}: 0 DNAT rules: an endpoint chain translates to its endpoint once`), found.lines.join('\n'));
  // A restarted agent's first sync rewrites every chain.
  await ctx.agent?.stop();
  ctx.agent = await iptAgent(box, '1s');
  assert.equal(await check(), clean);
  await reachesBackends(box, VIP);
  await reachesBackends(box, `[${VIP6}]`);
});

s('a rewrite of 3,000 services runs in child processes: /livez answers throughout', async (ctx) => {
  const { box } = ctx;
  await ctx.agent?.stop();
  box.writeManifest('fill.json', manyServices(3000));
  const agent = (ctx.agent = await box.startAgent('n1', ['--mode', 'iptables', '--sync-period', '1s'], { readyTimeoutMs: 60_000 }));
  // /livez every 100 ms, at most 300 times (30 s); stopped once the rewrite is done.
  const probe = await probeLivez(box, 'n1', agent, 300);
  try {
    await sleep(500);
    const mark = agent.proc.mark();
    await sh(box, 'iptables -t nat -F');
    await agent.proc.waitFor(/"msg":"weir's iptables rules were flushed or removed by something else; rewritten"/, 60_000, mark);
    const synced = /^.*"msg":"synced".*$/m.exec(agent.proc.outputSince(mark))![0];
    await sleep(300);
    assertAnsweredDuring(probe.answers(), synced);
  } finally {
    await probe.stop();
  }
  await reachesBackends(box, VIP);
});

s('SIGTERM during a cold start of 3,000 services: the agent lets go of the node only once its restore has finished, so the next agent never writes beside it', async (ctx) => {
  const { box } = ctx;
  await ctx.agent?.stop();
  const ns = box.node('n1').ns;
  const cleanup = await box.exec(ns, ['node', CLI, 'cleanup', '--bpffs-root', box.pinRoot('n1')], { timeoutMs: 60_000 });
  assert.is(cleanup.code, 0, cleanup.stdout + cleanup.stderr);
  const first = await box.startAgent('n1', ['--mode', 'iptables', '--sync-period', '1s'], { waitReady: false });
  // Its start is done (the last line it logs), and its first sync is writing.
  await first.proc.waitFor(/"msg":"metrics server listening"/, 30_000);
  // The next agent, as in a rolling update, waits for the pin root's lock.
  const next = (ctx.agent = await box.startAgent('n1', ['--mode', 'iptables', '--sync-period', '1s'], { waitReady: false }));
  await next.proc.waitFor(/another weir agent holds the pin root; waiting/, 20_000);
  assert.not.match(first.logs(), /"msg":"synced"/, 'the first sync is still writing when the agent is told to stop');
  const code = await first.proc.stop(60_000);
  assert.is(code, 0, first.logs());
  const at = (a: Agent, msg: string): number => {
    const line = new RegExp(`^.*"msg":"${msg}".*$`, 'm').exec(a.logs());
    assert.ok(line, `${msg} in\n${a.logs()}`);
    return Date.parse((JSON.parse(line[0]) as { ts: string }).ts);
  };
  assert.match(first.logs(), /"msg":"stopping once the sync in progress has written"/);
  // Its write ended (synced) before it let go (stopped), and the next agent started writing after that.
  assert.ok(at(first, 'synced') <= at(first, 'stopped; dataplane left programmed'));
  await next.proc.waitFor(/"msg":"ready"/, 60_000);
  assert.ok(at(next, 'starting') >= at(first, 'stopped; dataplane left programmed'));
  await reachesBackends(box, VIP);
});

s.run();
