/**
 * An agent over pins it did not size by default, and a second agent over
 * the first one's pins: `weir trace` loads its private copy of the programs
 * against service maps of whatever size they were pinned with, and a
 * restarted agent replaces its own tc filters quietly, in place.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent, Box, MODE } from '../box/box';
import { emptyService, webService } from '../box/manifests';
import type { TraceResult } from '../../ts/cli/inspect';

const s = suite<{ box: Box; agent: Agent }>('restart');

s.before(async (ctx) => {
  ctx.box = await Box.create({ nodes: 1 });
  for (const p of ['a', 'b']) {
    await ctx.box.addPod('n1', p);
    await ctx.box.startEcho(p, { tcp: [8080] });
  }
  await ctx.box.addPod('n1', 'client');
  ctx.box.writeManifest(
    'web.yaml',
    webService({ namespace: 'r', clusterIP: '10.96.9.1', endpoints: [ctx.box.pod('a').ip, ctx.box.pod('b').ip] }) + '---\n' + emptyService({ namespace: 'r', clusterIP: '10.96.9.2' }),
  );
  ctx.agent = await ctx.box.startAgent('n1', ['--lb-map-entries', '4096']);
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

async function traceTo(box: Box, dst: string): Promise<TraceResult> {
  return JSON.parse(await box.weir('n1', ['trace', '--src', box.pod('client').ip, '--dst', dst, '--json'])) as TraceResult;
}

s('weir trace over service maps pinned with --lb-map-entries 4096', async ({ box }) => {
  if (MODE !== 'bpf') return;
  const svc = (await box.exec(box.node('n1').ns, ['bpftool', 'map', 'show', 'pinned', `${box.node('n1').pinRoot}/weir1_svc`])).stdout;
  assert.match(svc, /max_entries 4096 /, 'the pinned map has the size asked for, not the default');
  const web = await traceTo(box, '10.96.9.1:80');
  assert.is(web.verdict, 'forward');
  assert.equal(web.possibleBackends.sort(), [`${box.pod('a').ip}:8080`, `${box.pod('b').ip}:8080`]);
  assert.ok(web.possibleBackends.includes(web.out!.dst));
  assert.is((await traceTo(box, '10.96.9.2:80')).verdict, 'reject_no_endpoints');
});

s('a restarted agent replaces its own tc filters in place, without a kernel error', async (ctx) => {
  if (MODE !== 'bpf') return;
  const { box } = ctx;
  const ns = box.node('n1').ns;
  // The devices weir attaches to: the program ids of the weir filters (handle TC_HANDLE) each has at ingress.
  const devs = ['eth0', box.pod('a').hostDev, box.pod('b').hostDev, box.pod('client').hostDev];
  const filters = async (): Promise<string[][]> => {
    const out: string[][] = [];
    for (const dev of devs) {
      const r = await box.exec(ns, ['tc', 'filter', 'show', 'dev', dev, 'ingress']);
      assert.is(r.code, 0, r.stderr);
      out.push([...r.stdout.matchAll(/ handle 0x7765 .*weir_tc_(?:pod|ext).* id (\d+) /g)].map((m) => m[1]!));
    }
    return out;
  };
  const before = await filters();
  assert.equal(
    before.map((ids) => ids.length),
    devs.map(() => 1),
    JSON.stringify(before),
  );
  assert.is(await ctx.agent.stop(), 0);
  ctx.agent = await box.startAgent('n1', ['--lb-map-entries', '4096']);
  assert.match(ctx.agent.logs(), /"msg":"adopted pinned state"/);
  assert.not.match(ctx.agent.logs(), /Exclusivity flag on|libbpf: Kernel error/, ctx.agent.logs());
  const after = await filters();
  assert.equal(
    after.map((ids) => ids.length),
    devs.map(() => 1),
    `replaced, not stacked: ${JSON.stringify(after)}`,
  );
  after.forEach((ids, i) => assert.is.not(ids[0], before[i]![0], `${devs[i]} runs the new agent's program`));
  const r = await box.tcp('client', '10.96.9.1:80', { count: 6 });
  assert.is(r.attempts.filter((a) => a.ok).length, 6, JSON.stringify(r.attempts));
  assert.is((await traceTo(box, '10.96.9.1:80')).verdict, 'forward');
});

s.run();
