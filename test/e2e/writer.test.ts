/**
 * One writer per pin root, and a start that fails stops whole: a second
 * agent waits for the first, `weir cleanup` will not pull the state from
 * under a running agent, and an agent that cannot start exits instead of
 * writing maps nobody asked it to write.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Box, CLI, waitFor } from '../box/box';
import { webService } from '../box/manifests';

const s = suite<{ box: Box }>('single writer');

s.before(async (ctx) => {
  ctx.box = await Box.create({ nodes: 1 });
  await ctx.box.addPod('n1', 'a');
  await ctx.box.startEcho('a', { tcp: [8080] });
  await ctx.box.addPod('n1', 'client');
  ctx.box.writeManifest('web.yaml', webService({ namespace: 'w', clusterIP: '10.96.9.1', endpoints: [ctx.box.pod('a').ip] }));
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

s('a second agent on the same pin root waits for the first, says for which pid, and takes over when it exits', async ({ box }) => {
  const a = await box.startAgent('n1');
  const b = await box.startAgent('n1', [], { waitReady: false });
  await b.proc.waitFor(/another weir agent holds the pin root; waiting/, 10_000);
  assert.match(b.logs(), new RegExp(`"pid":${a.proc.pid}\\b`), 'names the holder');
  // It neither loads nor writes while it waits.
  await new Promise((r) => setTimeout(r, 1500));
  assert.not.match(b.logs(), /"msg":"(starting|adopted pinned state|ready)"/, b.logs());
  assert.is(b.proc.running, true);
  await a.stop();
  await b.proc.waitFor(/"msg":"ready"/, 20_000);
  const r = await box.tcp('client', '10.96.9.1:80', { count: 3 });
  assert.is(r.attempts.filter((x) => x.backend === 'a').length, 3, JSON.stringify(r));
  await b.stop();
});

s('weir cleanup refuses while an agent runs on the pin root; --force removes it anyway', async ({ box }) => {
  const agent = await box.startAgent('n1');
  const cleanup = (extra: string[]): ReturnType<Box['exec']> => box.exec(box.node('n1').ns, ['node', CLI, 'cleanup', '--bpffs-root', box.pinRoot('n1'), ...extra], { timeoutMs: 20_000 });
  const refused = await cleanup([]);
  assert.is(refused.code, 1);
  assert.match(refused.stderr, new RegExp(`an agent \\(pid ${agent.proc.pid}\\) is running on ${box.pinRoot('n1')}`));
  assert.ok(fs.readdirSync(box.pinRoot('n1')).length > 0, 'pins untouched');
  const forced = await cleanup(['--force']);
  assert.is(forced.code, 0, forced.stderr);
  await agent.stop();
  // With no agent running, cleanup needs no --force.
  await box.startAgent('n1');
  await box.processes.at(-1)!.stop();
  const plain = await cleanup([]);
  assert.is(plain.code, 0, plain.stderr);
  assert.is(fs.existsSync(box.pinRoot('n1')) ? fs.readdirSync(box.pinRoot('n1')).length : 0, 0);
});

s('a taken health port: the agent exits non-zero with one message and stops writing', async ({ box }) => {
  const holder = box.spawn(box.node('n1').ns, ['socat', 'TCP-LISTEN:10256,bind=127.0.0.1,reuseaddr,fork', 'SYSTEM:true']);
  await waitFor(async () => (await box.exec(box.node('n1').ns, ['ss', '-ltnH', 'sport = :10256'])).stdout.includes('10256'), { timeoutMs: 5000, what: 'port held' });
  const agent = await box.startAgent('n1', ['--health-addr', '127.0.0.1:10256'], { waitReady: false });
  const code = await Promise.race([agent.proc.wait(), new Promise<string>((r) => setTimeout(() => r('still running'), 15_000))]);
  assert.is(code, 1, agent.logs());
  const failures = agent
    .logs()
    .split('\n')
    .filter((l) => /"msg":"start failed"/.test(l));
  assert.is(failures.length, 1, agent.logs());
  assert.match(failures[0]!, /EADDRINUSE/);
  await box.stopProc(holder);
});

s('a start that fails before its first sync leaves no pin it created', async ({ box }) => {
  await box.weir('n1', ['cleanup']);
  const root = box.pinRoot('n1');
  assert.equal(fs.readdirSync(root), []);
  const agent = await box.startAgent('n1', ['--source', 'file:/nonexistent-weir-dir'], { waitReady: false });
  const code = await Promise.race([agent.proc.wait(), new Promise<string>((r) => setTimeout(() => r('still running'), 15_000))]);
  assert.is(code, 1, agent.logs());
  assert.equal(fs.existsSync(root) ? fs.readdirSync(root) : [], [], `pins left: ${path.join(root, '*')}`);
});

s.run();
