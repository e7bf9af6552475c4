/**
 * The harness itself: a box is reachable inside and leaves nothing behind,
 * whether the test passes, throws, or is killed.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { withBox } from '../box/box';
import { run } from '../box/exec';

async function leftovers(prefix: string): Promise<string[]> {
  const out: string[] = [];
  const ns = await run(['ip', 'netns', 'list']);
  out.push(...ns.stdout.split('\n').filter((l) => l.startsWith(prefix)));
  const pin = `/sys/fs/bpf/${prefix.slice(0, -1)}`;
  if (fs.existsSync(pin)) out.push(pin);
  const ps = await run(['pgrep', '-af', prefix]);
  out.push(...ps.stdout.split('\n').filter((l) => l.trim() && !l.includes('pgrep')));
  return out;
}

test('pod to pod across nodes and from outside; nothing left after destroy', async () => {
  let prefix = '';
  await withBox({ nodes: 2 }, async (box) => {
    prefix = box.prefix;
    await box.addPod('n1', 'a');
    await box.addPod('n2', 'b');
    await box.startEcho('b', { tcp: [8080], udp: [5353] });
    const t = await box.tcp('a', `${box.pod('b').ip}:8080`);
    assert.ok(t.attempts[0]!.ok, JSON.stringify(t));
    assert.is(t.attempts[0]!.seenSrc!.split(':')[0], box.pod('a').ip);
    const u = await box.udp('outside', `${box.pod('b').ip}:5353`);
    assert.is(u.attempts[0]!.backend, 'b');
    const refused = await box.tcp('a', `${box.pod('b').ip}:9999`);
    assert.is(refused.attempts[0]!.error, 'ECONNREFUSED');
    await box.startAgent('n1');
  });
  assert.equal(await leftovers(prefix), []);
});

for (const mode of ['throw', 'signal']) {
  test(`a test process that dies (${mode}) still removes its box`, async () => {
    const fixture = path.resolve(__dirname, '../box/leak-fixture.js');
    const child = spawn(process.execPath, [fixture, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const prefix = await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`fixture did not start: ${out}`)), 30_000);
      child.stdout.on('data', () => {
        const m = /prefix (\S+)/.exec(out);
        if (m) {
          clearTimeout(t);
          resolve(m[1]!);
        }
      });
    });
    if (mode === 'signal') child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    assert.equal(await leftovers(prefix), [], out);
  });
}

test.run();
