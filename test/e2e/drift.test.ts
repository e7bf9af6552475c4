/**
 * What the kernel holds is compared with the plan after start too: `weir
 * check` finds a hand edit made with bpftool, with or without an agent
 * running, and a running agent repairs it on its sync period, counts it by
 * map and says so. Real traffic shows the repair.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box, CLI, waitFor } from '../box/box';
import type { ServicesView } from '../../ts/datapath/dump';
import { webService } from '../box/manifests';

const s = suite<{ box: Box; agent?: Agent }>('drift');

s.before(async (ctx) => {
  ctx.box = await Box.create({ nodes: 1 });
  for (const p of ['a', 'b']) {
    await ctx.box.addPod('n1', p);
    await ctx.box.startEcho(p, { tcp: [8080] });
  }
  await ctx.box.addPod('n1', 'client');
  ctx.box.writeManifest('web.yaml', webService({ namespace: 'd', clusterIP: '10.96.8.1', endpoints: [ctx.box.pod('a').ip, ctx.box.pod('b').ip] }));
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

async function check(box: Box): Promise<{ code: number; lines: string[] }> {
  const r = await box.exec(box.node('n1').ns, ['node', CLI, 'check', '--bpffs-root', box.pinRoot('n1')], { timeoutMs: 20_000 });
  return { code: r.code, lines: r.stdout.trim().split('\n') };
}

/** The rev_nat id of 10.96.8.1:80 and the hex bytes of it as a u32 key (host order, little-endian here). */
async function revNat(box: Box): Promise<{ id: number; hex: string[] }> {
  const view = JSON.parse(await box.weir('n1', ['services', '--json'])) as ServicesView;
  const id = view.frontends.find((f) => f.addr === '10.96.8.1')!.revNatId;
  return { id, hex: [id & 0xff, (id >> 8) & 0xff, (id >> 16) & 0xff, id >>> 24].map((b) => b.toString(16).padStart(2, '0')) };
}

async function bpftool(box: Box, args: string[]): Promise<void> {
  const r = await box.exec(box.node('n1').ns, ['bpftool', ...args]);
  assert.is(r.code, 0, r.stderr);
}

s('weir check is clean against a running agent; a revnat entry deleted with bpftool is reported, also with no agent running', async (ctx) => {
  const { box } = ctx;
  ctx.agent = await box.startAgent('n1', ['--sync-period', '0']);
  assert.equal(await check(box), { code: 0, lines: [`consistent: every invariant holds under ${box.pinRoot('n1')}`] });
  const rn = await revNat(box);
  await bpftool(box, ['map', 'delete', 'pinned', `${box.pinRoot('n1')}/weir1_revnat`, 'key', 'hex', ...rn.hex]);
  const running = await check(box);
  assert.is(running.code, 1);
  assert.equal(running.lines, [`weir1_svc 10.96.8.1:80/TCP all slot 0: revnat entry for its rev_nat id ${rn.id} is missing`]);
  await ctx.agent.stop();
  assert.equal((await check(box)).lines, running.lines);
  // A new agent's first sync compares everything and puts it back.
  ctx.agent = await box.startAgent('n1', ['--sync-period', '1s']);
  assert.is((await check(box)).code, 0);
});

s('a running agent repairs a hand edit on its sync period, counts it by map, and traffic is right again', async (ctx) => {
  const { box } = ctx;
  const agent = ctx.agent!;
  const metricsAddr = /"msg":"metrics server listening","addr":"([^"]+)"/.exec(agent.logs())![1]!;
  const rn = await revNat(box);
  // A reply is then not reverse-NATed: the client never sees an answer.
  const mark = agent.proc.mark();
  await bpftool(box, ['map', 'delete', 'pinned', `${box.pinRoot('n1')}/weir1_revnat`, 'key', 'hex', ...rn.hex]);
  await agent.proc.waitFor(/"msg":"the maps differed from the desired state; repaired","entries":"weir1_revnat 1"/, 5000, mark);
  assert.is((await check(box)).code, 0);
  const metrics = await box.exec(box.node('n1').ns, ['curl', '-s', '-m', '3', `http://${metricsAddr}/metrics`]);
  assert.match(metrics.stdout, /weir_drift_repaired_entries_total\{map="weir1_revnat"\} 1\n/);
  const r = await box.tcp('client', '10.96.8.1:80', { count: 4 });
  assert.ok(
    r.attempts.every((x) => x.ok && (x.backend === 'a' || x.backend === 'b')),
    JSON.stringify(r),
  );
  // A stray backend and a removed slot: both put right, nothing else written.
  const m2 = agent.proc.mark();
  await bpftool(box, ['map', 'update', 'pinned', `${box.pinRoot('n1')}/weir1_be`, 'key', 'hex', 'ff', 'ff', '00', '00', 'value', 'hex', '0a', 'f4', '09', '09', '1f', '90', '06', '00']);
  await waitFor(async () => (await check(box)).code === 0, { timeoutMs: 5000, what: 'stray backend removed' });
  await agent.proc.waitFor(/"msg":"the maps differed from the desired state; repaired","entries":"weir1_be 1"/, 5000, m2);
});

s.run();
