/**
 * nftables mode compares table inet weir with what it committed after
 * start too: `weir check` finds a hand edit made with nft, with or without
 * an agent running, and a running agent repairs it on its sync period,
 * counts it by chain or map and says so. Real traffic shows the break and
 * the repair. A rewrite of thousands of services runs in a child process,
 * so /livez answers throughout. Runs in nftables mode whatever
 * WEIR_TEST_MODE says.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box, CLI, waitFor } from '../box/box';
import { assertAnsweredDuring, probeLivez } from '../box/livez';
import { manyServices, webService } from '../box/manifests';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const s = suite<{ box: Box; agent?: Agent }>('nft-drift');
const VIP = '10.96.8.2';

s.before(async (ctx) => {
  ctx.box = await Box.create({ nodes: 1 });
  for (const p of ['a', 'b']) {
    await ctx.box.addPod('n1', p);
    await ctx.box.startEcho(p, { tcp: [8080] });
  }
  await ctx.box.addPod('n1', 'client');
  ctx.box.writeManifest('web.yaml', webService({ namespace: 'nd', clusterIP: VIP, endpoints: [ctx.box.pod('a').ip, ctx.box.pod('b').ip] }));
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

const nftAgent = (box: Box, syncPeriod: string): Promise<Agent> => box.startAgent('n1', ['--mode', 'nftables', '--sync-period', syncPeriod]);

async function check(box: Box): Promise<{ code: number; lines: string[] }> {
  const r = await box.exec(box.node('n1').ns, ['node', CLI, 'check', '--bpffs-root', box.pinRoot('n1')], { timeoutMs: 20_000 });
  return { code: r.code, lines: r.stdout.trim().split('\n') };
}

async function nft(box: Box, cmd: string): Promise<void> {
  const r = await box.exec(box.node('n1').ns, ['nft', cmd]);
  assert.is(r.code, 0, `nft ${cmd}: ${r.stderr}`);
}

async function reachesBackends(box: Box): Promise<void> {
  const r = await box.tcp('client', `${VIP}:80`, { count: 4 });
  assert.ok(
    r.attempts.every((x) => x.ok && (x.backend === 'a' || x.backend === 'b')),
    JSON.stringify(r),
  );
}

const CONSISTENT = { code: 0, lines: ['consistent: every invariant holds in table inet weir'] };

s('weir check is clean against a running nftables-mode agent; endpoint slots deleted with nft are reported, also with no agent running, and traffic breaks', async (ctx) => {
  const { box } = ctx;
  // No drift check: the edit stays for check to see.
  ctx.agent = await nftAgent(box, '0');
  await waitFor(async () => (await box.weir('n1', ['services'])).includes(VIP), { timeoutMs: 5000, what: 'service programmed' });
  assert.equal(await check(box), CONSISTENT);
  await reachesBackends(box);
  await nft(box, `delete element inet weir cluster-endpoints-tcp { ${VIP} . 80 . 0, ${VIP} . 80 . 1 }`);
  const running = await check(box);
  assert.is(running.code, 1);
  assert.equal(
    running.lines,
    [0, 1].map((slot) => `cluster-endpoints-tcp ${VIP} . 80 . ${slot}: missing: pick-cluster-2 draws slot ${slot} of 2 for ${VIP} . tcp . 80, whose connections there go untranslated`),
  );
  const broken = await box.tcp('client', `${VIP}:80`, { count: 2, timeoutMs: 700 });
  assert.ok(
    broken.attempts.every((x) => !x.ok),
    JSON.stringify(broken),
  );
  await ctx.agent.stop();
  assert.equal((await check(box)).lines, running.lines);
  // A new agent's first commit rewrites the whole table.
  ctx.agent = await nftAgent(box, '1s');
  await waitFor(async () => (await check(box)).code === 0, { timeoutMs: 5000, what: 'table rewritten' });
  await reachesBackends(box);
});

s('a running agent repairs hand edits on its sync period, counts them by chain or map, and traffic reaches the backends again', async (ctx) => {
  const { box } = ctx;
  const agent = ctx.agent!;
  const metricsAddr = /"msg":"metrics server listening","addr":"([^"]+)"/.exec(agent.logs())![1]!;
  const edits: Array<[string, string]> = [
    // An endpoint slot gone: half the new connections go untranslated.
    [`delete element inet weir cluster-endpoints-tcp { ${VIP} . 80 . 1 }`, 'cluster-endpoints-tcp 1'],
    // The pick chain flushed (its three rules, one per protocol): every connection does.
    ['flush chain inet weir pick-cluster-2', 'pick-cluster-2 3'],
    // A rule added in one of weir's chains: drops the service.
    [`insert rule inet weir services ip daddr ${VIP} drop`, 'services 1'],
  ];
  for (const [edit, entries] of edits) {
    const mark = agent.proc.mark();
    await nft(box, edit);
    await agent.proc.waitFor(new RegExp(`"msg":"table inet weir differed from what was committed; repaired","entries":"${entries}"`), 5000, mark);
    assert.equal(await check(box), CONSISTENT);
    await reachesBackends(box);
  }
  const metrics = await box.exec(box.node('n1').ns, ['curl', '-s', '-m', '3', `http://${metricsAddr}/metrics`]);
  for (const [name, n] of [
    ['cluster-endpoints-tcp', 1],
    ['pick-cluster-2', 3],
    ['services', 1],
  ] as const)
    assert.match(metrics.stdout, new RegExp(`weir_drift_repaired_entries_total\\{map="${name}"\\} ${n}\\n`));
});

s('changes that never leave room for a listing: after 20 sync periods syncs wait for one, and a hand edit is still repaired', async (ctx) => {
  const { box } = ctx;
  await ctx.agent?.stop();
  // Enough services that one listing (~0.4 s) outlasts the gap between two changes.
  box.writeManifest('fill.json', manyServices(1500));
  // Comparisons every 250 ms: one must finish within 20 × 250 ms = 5 s.
  const agent = (ctx.agent = await nftAgent(box, '250ms'));
  await waitFor(async () => (await box.weir('n1', ['services'])).includes('10.97.5.219'), { timeoutMs: 15_000, what: 'every service programmed' });
  const [a, b] = [box.pod('a').ip, box.pod('b').ip];
  let stop = false;
  // One service's endpoints change every 40 ms (bounded: at most 30 s).
  const churn = (async () => {
    for (let i = 0; !stop && i < 750; i++) {
      box.writeManifest('churn.yaml', webService({ namespace: 'churn', clusterIP: '10.96.8.3', endpoints: i % 2 ? [a] : [a, b] }));
      await new Promise((r) => setTimeout(r, 40));
    }
  })();
  try {
    await new Promise((r) => setTimeout(r, 1000));
    const mark = agent.proc.mark();
    await nft(box, `delete element inet weir cluster-endpoints-tcp { ${VIP} . 80 . 1 }`);
    await agent.proc.waitFor(/"msg":"no moment quiet enough to compare table inet weir; syncs wait for one listing"/, 15_000, mark);
    await agent.proc.waitFor(/"msg":"table inet weir differed from what was committed; repaired","entries":"cluster-endpoints-tcp 1"/, 15_000, mark);
    const synced = agent.proc.outputSince(mark).match(/"msg":"synced"/g)?.length ?? 0;
    assert.ok(synced >= 20, `${synced} syncs while the edit waited for its repair: the changes kept syncing`);
  } finally {
    stop = true;
    await churn;
  }
  assert.equal(await check(box), CONSISTENT);
  await reachesBackends(box);
});

s('a rewrite of 6,000 services runs in a child process: /livez answers throughout', async (ctx) => {
  const { box } = ctx;
  await ctx.agent?.stop();
  box.writeManifest('fill.json', manyServices(6000));
  const agent = (ctx.agent = await box.startAgent('n1', ['--mode', 'nftables', '--sync-period', '1s'], { readyTimeoutMs: 60_000 }));
  // /livez every 100 ms, at most 400 times (40 s); stopped once the rewrite is done.
  const probe = await probeLivez(box, 'n1', agent, 400);
  try {
    await sleep(500);
    const mark = agent.proc.mark();
    await nft(box, `delete element inet weir cluster-endpoints-tcp { ${VIP} . 80 . 1 }`);
    await agent.proc.waitFor(/"msg":"table inet weir differed from what was committed; repaired"/, 40_000, mark);
    // The rewrite: the last sync before the repair was reported.
    const log = agent.proc.outputSince(mark);
    const synced = [...log.slice(0, log.indexOf('"msg":"table inet weir differed')).matchAll(/^.*"msg":"synced".*$/gm)].at(-1)![0];
    await sleep(300);
    assertAnsweredDuring(probe.answers(), synced);
  } finally {
    await probe.stop();
  }
  await reachesBackends(box);
});

s.run();
