/**
 * The harness itself, without weir: a two-node box routes pod to pod (same
 * node and across nodes), outside to pod and node to pod; the clients tell
 * refused from timed out; pods come and go; and nothing is left behind —
 * whether the test passes, throws, rejects, or is killed by a signal.
 * Needs root and a real kernel (network namespaces, veth, bridge).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Box, CLI, OUTSIDE_IP6, Results, waitFor } from '../box/box';
import { run } from '../box/exec';
import type { FixtureState } from '../box/leak-fixture';

interface Ctx {
  box: Box;
}

const s = suite<Ctx>('box');

s.before(async (ctx) => {
  const box = await Box.create({ nodes: 2 });
  ctx.box = box;
  await box.addPod('n1', 'a1');
  await box.addPod('n1', 'a2');
  await box.addPod('n2', 'b1');
  await Promise.all([box.startEcho('a2', { tcp: [8080, 9090], udp: [5353] }), box.startEcho('b1', { tcp: [8080], udp: [5353] })]);
});

s.after(async (ctx) => {
  await ctx.box?.destroy();
});

/** Every attempt ok, answered by `backend`, which saw source `src`. */
function allFrom(r: Results, backend: string, src: string): void {
  assert.ok(r.attempts.length > 0, 'no attempts');
  for (const a of r.attempts) {
    assert.ok(a.ok, JSON.stringify(a));
    assert.is(a.backend, backend);
    assert.is(a.seenSrc!.split(':')[0], src);
  }
}

/** The message a promise rejects with ('' if it resolves). */
async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return '';
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

function alive(pid: number): boolean {
  try {
    // A zombie still answers kill(0); it is gone for our purposes.
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** What is left of a box: namespaces, pin and cgroup directories, live processes. */
async function leftovers(prefix: string, dirs: string[], pids: number[]): Promise<string[]> {
  const out: string[] = [];
  const ns = await run(['ip', 'netns', 'list']);
  out.push(...ns.stdout.split('\n').filter((l) => l.startsWith(prefix)));
  out.push(...dirs.filter((d) => d && fs.existsSync(d)));
  out.push(...pids.filter(alive).map((p) => `pid ${p}`));
  return out;
}

s('topology: addresses, names, devices, routes', async ({ box }) => {
  assert.match(box.prefix, /^weir-[0-9a-f]{6}-$/);
  assert.equal(
    box.nodes.map((n) => [n.name, n.ip, n.podCidr]),
    [
      ['n1', '192.168.77.10', '10.244.1.0/24'],
      ['n2', '192.168.77.11', '10.244.2.0/24'],
    ],
  );
  assert.equal(
    ['a1', 'a2', 'b1'].map((p) => box.pod(p).ip),
    ['10.244.1.10', '10.244.1.11', '10.244.2.10'],
  );
  const a1 = box.pod('a1');
  assert.match(a1.hostDev, /^veth[0-9a-z]{1,11}$/);
  const n1 = box.node('n1');
  const sys = async (ns: string, key: string): Promise<string> => (await box.exec(ns, ['sysctl', '-n', key])).stdout.trim();
  assert.is(await sys(n1.ns, `net.ipv4.conf.${a1.hostDev}.proxy_arp`), '1');
  assert.is(await sys(n1.ns, 'net.ipv4.ip_forward'), '1');
  assert.is(await sys(n1.ns, `net.ipv4.conf.${a1.hostDev}.rp_filter`), '0');
  assert.is(await sys(n1.ns, 'net.ipv4.conf.all.send_redirects'), '0');
  // Default routes: none in the underlay and outside; nodes' lead to the
  // outside namespace, which does not forward (a dead end inside the box).
  for (const ns of [box.underlay, box.outside]) {
    assert.is((await box.exec(ns, ['ip', 'route', 'show', 'default'])).stdout.trim(), '', ns);
  }
  assert.is(await sys(box.outside, 'net.ipv4.ip_forward'), '0');
  assert.is(await sys(box.underlay, 'net.ipv4.ip_forward'), '0');
  assert.match((await box.exec(n1.ns, ['ip', 'route', 'show', 'default'])).stdout, /default via 192\.168\.77\.200 dev eth0/);
  assert.match((await box.exec(a1.ns, ['ip', 'route', 'show', 'default'])).stdout, /default via 169\.254\.1\.1 dev eth0/);
  assert.match((await box.exec(n1.ns, ['ip', 'route', 'show', '10.244.2.0/24'])).stdout, /via 192\.168\.77\.11 dev eth0/);
  // Nothing of the box in the root namespace.
  const rootLinks = (await run(['ip', '-o', 'link', 'show'])).stdout;
  assert.not.match(rootLinks, new RegExp(`${a1.hostDev}|${box.id.slice(5)}`));
});

s('pod to pod on the same node: TCP and UDP, source is the client pod', async ({ box }) => {
  const a1 = box.pod('a1').ip;
  allFrom(await box.tcp('a1', `${box.pod('a2').ip}:8080`, { count: 3 }), 'a2', a1);
  allFrom(await box.tcp('a1', `${box.pod('a2').ip}:9090`), 'a2', a1);
  allFrom(await box.udp('a1', `${box.pod('a2').ip}:5353`, { count: 3 }), 'a2', a1);
});

s('pod to pod across nodes: TCP, UDP (new sockets and one connected socket)', async ({ box }) => {
  const a1 = box.pod('a1').ip;
  allFrom(await box.tcp('a1', `${box.pod('b1').ip}:8080`, { count: 2, holdMs: 50 }), 'b1', a1);
  allFrom(await box.udp('a1', `${box.pod('b1').ip}:5353`, { count: 2 }), 'b1', a1);
  const same = await box.udp('a1', `${box.pod('b1').ip}:5353`, { count: 4, sameSocket: true });
  allFrom(same, 'b1', a1);
  // One socket: every reply saw the same source port.
  assert.is(new Set(same.attempts.map((a) => a.seenSrc)).size, 1);
  allFrom(await box.tcp('b1', `${box.pod('a2').ip}:8080`), 'a2', box.pod('b1').ip);
});

s('outside and node processes reach pods; curl sees the echo body', async ({ box }) => {
  allFrom(await box.tcp('outside', `${box.pod('b1').ip}:8080`), 'b1', '192.168.77.200');
  allFrom(await box.udp('outside', `${box.pod('a2').ip}:5353`), 'a2', '192.168.77.200');
  allFrom(await box.tcp('n1', `${box.pod('b1').ip}:8080`), 'b1', '192.168.77.10');
  const c = await box.curl('outside', `http://${box.pod('a2').ip}:8080/x`);
  assert.is(c.exitCode, 0);
  assert.match(c.body, /^a2 192\.168\.77\.200:\d+\n$/);
  const h = await box.exec(box.outside, ['curl', '-s', '-m', '3', '-D', '-', '-o', '/dev/null', `http://${box.pod('a2').ip}:8080/`]);
  assert.match(h.stdout, /x-backend: a2/i);
});

s('refused is ECONNREFUSED at once, TCP and UDP; curl exit 7', async ({ box }) => {
  const to = `${box.pod('a2').ip}:9999`;
  const t = await box.tcp('a1', to);
  assert.is(t.attempts[0]!.error, 'ECONNREFUSED');
  assert.ok(t.attempts[0]!.ms < 500, `refused in ${t.attempts[0]!.ms} ms`);
  const u = await box.udp('a1', to, { count: 2, sameSocket: true, timeoutMs: 500 });
  assert.ok(
    u.attempts.every((a) => a.error === 'ECONNREFUSED'),
    JSON.stringify(u),
  );
  const c = await box.udp('b1', to, { connect: true, timeoutMs: 500 });
  assert.is(c.attempts[0]!.error, 'ECONNREFUSED');
  assert.is((await box.curl('a1', `http://${to}/`)).exitCode, 7);
});

s('a server that never answers is a timeout, not a refusal', async ({ box }) => {
  // Stopped server: the kernel still completes the handshake, the response never comes.
  const p = box.spawn(box.pod('a2').ns, ['node', path.join(__dirname, '../box/echo.js'), '--name', 'stuck', '--tcp', '7070']);
  await p.waitFor(/^ready$/m);
  process.kill(p.pid!, 'SIGSTOP');
  try {
    const r = await box.tcp('a1', `${box.pod('a2').ip}:7070`, { timeoutMs: 300 });
    assert.is(r.attempts[0]!.error, 'timeout');
  } finally {
    process.kill(p.pid!, 'SIGCONT');
    await box.stopProc(p);
  }
});

s('hold: one connection, many requests, in the background', async ({ box }) => {
  const h = await box.hold('a1', `${box.pod('b1').ip}:8080`, { durationMs: 500, intervalMs: 100 });
  const r = await h.result();
  assert.ok(r.attempts.length >= 3, JSON.stringify(r));
  allFrom(r, 'b1', box.pod('a1').ip);
  assert.is(new Set(r.attempts.map((a) => a.seenSrc)).size, 1, 'one connection');
});

s('exec reports exit codes and timeouts', async ({ box }) => {
  assert.is((await box.exec(box.outside, ['sh', '-c', 'exit 3'])).code, 3);
  const t0 = Date.now();
  const r = await box.exec(box.outside, ['sleep', '5'], { timeoutMs: 200 });
  assert.ok(r.timedOut && r.code === 124 && Date.now() - t0 < 2000, JSON.stringify(r));
});

s('pods come and go; addresses are not reused', async ({ box }) => {
  const a2 = box.pod('a2');
  await box.removePod('a2');
  assert.throws(() => box.pod('a2'));
  const links = (await box.exec(box.node('n1').ns, ['ip', '-o', 'link', 'show'])).stdout;
  assert.not.ok(links.includes(a2.hostDev), 'host veth removed');
  assert.not.ok((await run(['ip', 'netns', 'list'])).stdout.includes(a2.ns), 'namespace removed');
  const a3 = await box.addPod('n1', 'a3');
  assert.is(a3.ip, '10.244.1.12');
  const a4 = await box.addPod('n2', 'a4', '10.244.2.50');
  assert.is(a4.ip, '10.244.2.50');
  await box.startEcho('a3', { tcp: [8080] });
  allFrom(await box.tcp('a4', `${a3.ip}:8080`), 'a3', a4.ip);
  assert.match(await failure(box.addPod('n1', 'a3')), /exists/);
});

s('agent: started in its node namespace, logs kept, stopped on destroy', async ({ box }) => {
  if (!fs.existsSync(CLI)) {
    process.stdout.write(`(skipped: ${CLI} not built)\n`);
    return;
  }
  // Only the harness's handling is checked here, not weir's behaviour.
  const agent = await box.startAgent('n1', [], { waitReady: false });
  await waitFor(() => agent.logs().length > 0 || !agent.proc.running, { timeoutMs: 10_000, what: 'agent output' });
  assert.ok(fs.existsSync(box.pinRoot('n1')));
  assert.ok(fs.existsSync(box.cgroupDir('n1')));
});

s('destroy removes namespaces, pins, cgroups and processes', async ({ box }) => {
  box.pinRoot('n2');
  box.cgroupDir('n2');
  const pids = box.processes.map((p) => p.pid!);
  assert.ok(pids.length >= 2 && pids.every(alive), box.logs());
  await box.destroy();
  assert.equal(await leftovers(box.prefix, [box.pinBase, box.cgroupBase, box.manifestDir], pids), []);
  assert.match(await failure(box.addPod('n1', 'late')), /destroyed/);
});

s.run();

// --- a dual-stack box --------------------------------------------------------

const d = suite<{ box: Box }>('box (dual-stack)');

d.before(async (ctx) => {
  ctx.box = await Box.create({ nodes: 2, ipv6: true });
  await ctx.box.addPod('n1', 'a');
  await ctx.box.addPod('n2', 'b');
  await ctx.box.addPod('n1', 'c');
  for (const p of ['b', 'c']) await ctx.box.startEcho(p, { tcp: [8080], udp: [5353] });
});

d.after(async (ctx) => {
  await ctx.box?.destroy();
});

d('pods, nodes and the outside have IPv6 addresses of their own; IPv4 works as before', ({ box }) => {
  assert.match(box.pod('a').ip6, /^fd00:244:1::\d+$/);
  assert.match(box.pod('b').ip6, /^fd00:244:2::\d+$/);
  assert.is(box.node('n2').podCidr6, 'fd00:244:2::/64');
  assert.is(box.node('n1').ip6, 'fd00:77::10');
});

d('IPv6 TCP and UDP: pod to pod on a node and across nodes, and from outside; the server sees the client address', async ({ box }) => {
  for (const [from, to, src] of [
    ['a', 'c', box.pod('a').ip6],
    ['a', 'b', box.pod('a').ip6],
    ['outside', 'b', OUTSIDE_IP6],
  ] as const) {
    const t = await box.tcp(from, `[${box.pod(to).ip6}]:8080`, { count: 2 });
    assert.ok(
      t.attempts.every((x) => x.ok && x.backend === to && x.seenSrc!.startsWith(`[${src}]:`)),
      `${from} -> ${to} TCP ${JSON.stringify(t.attempts)}`,
    );
    const u = await box.udp(from, `[${box.pod(to).ip6}]:5353`, { count: 2 });
    assert.ok(
      u.attempts.every((x) => x.ok && x.backend === to),
      `${from} -> ${to} UDP ${JSON.stringify(u.attempts)}`,
    );
  }
  const v4 = await box.tcp('a', `${box.pod('b').ip}:8080`);
  assert.is(v4.attempts[0]!.seenSrc, `${box.pod('a').ip}:${v4.attempts[0]!.seenSrc!.split(':')[1]}`, 'IPv4 peers are written without brackets');
});

d.run();

// --- failures: the test process dies, the box still goes -------------------

const f = suite('box cleanup on failure');

for (const mode of ['throw', 'reject', 'withbox', 'SIGTERM', 'SIGINT']) {
  f(`a test process that fails (${mode}) removes its box`, async () => {
    const fixture = path.resolve(__dirname, '../box/leak-fixture.js');
    const child = spawn(process.execPath, [fixture, mode.startsWith('SIG') ? 'signal' : mode], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    let state: FixtureState | null = null;
    try {
      state = await waitFor(
        () => {
          const m = /^state (.*)$/m.exec(out);
          return m ? (JSON.parse(m[1]!) as FixtureState) : null;
        },
        { timeoutMs: 20_000, intervalMs: 20, what: `fixture state; output: ${out}` },
      );
      if (mode.startsWith('SIG')) child.kill(mode as NodeJS.Signals);
      const code = await exited;
      assert.is.not(code, 0, 'the failure is reported');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    const st = state;
    // Reparented strays are reaped by init shortly after they die.
    const left = await waitFor(
      async () => {
        const l = await leftovers(st.prefix, [st.pinBase, st.cgroupBase], st.pids);
        return l.length === 0 ? l : null;
      },
      { timeoutMs: 2000, what: 'cleanup' },
    ).catch(async () => leftovers(st.prefix, [st.pinBase, st.cgroupBase], st.pids));
    assert.equal(left, [], out);
  });
}

f.run();
