/**
 * nftables mode's drift comparison: nft's JSON normalised to the text weir
 * writes, the comparison of a listing with what was committed, and (as
 * root, in a network namespace of its own) the real table of every golden
 * case reading back as no drift, hand edits with nft found by name, and
 * the next commit repairing them.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { IP, ObjectKey, parseCidr } from '../../ts/model/types';
import { PlannedBackend, PlannedFrontend, ServicePlan } from '../../ts/plan/plan';
import { SCOPE_ALL, SVC_F } from '../../ts/datapath/codecs';
import { NftContext } from '../../ts/fallback/nft-render';
import { NftablesDataplane } from '../../ts/fallback/nftables';
import { AsyncCommandRunner, CommandRunner } from '../../ts/fallback/command';
import { CommittedTable, compareTable, elementValue, formatDrift } from '../../ts/fallback/nft-drift';
import { KernelTable, atomText, parseNftJson, ruleRefs, ruleTextRefs } from '../../ts/fallback/nft-json';
import { NftDriftCheck } from '../../ts/runner/drift';
import { Runner } from '../../ts/runner/runner';
import { createLogger } from '../../ts/util/log';
import { TEST_SRC, casePlans as plans } from './pipeline';

const CTX: NftContext = { clusterCIDRs: [parseCidr('10.244.0.0/16')!, parseCidr('fd00:10:244::/56')!], masqueradeAll: false };

test('nft JSON values read as weir writes them: concatenations, verdicts, prefixes', () => {
  assert.is(atomText({ concat: ['10.96.0.1', 'tcp', 80] }), '10.96.0.1 . tcp . 80');
  assert.is(atomText({ concat: ['fd00::1', 80, 0] }), 'fd00::1 . 80 . 0');
  assert.is(atomText({ goto: { target: 'pick-cluster-2' } }), 'goto pick-cluster-2');
  assert.is(atomText({ jump: { target: 'x' } }), 'jump x');
  assert.is(atomText({ drop: null }), 'drop');
  assert.is(atomText({ prefix: { addr: '10.0.0.0', len: 8 } }), '10.0.0.0/8');
  assert.is(elementValue(' comment "t/a:http cluster-ip" : goto pick-cluster-2'), 'goto pick-cluster-2');
  assert.is(elementValue(' : 10.244.1.1 . 8080'), '10.244.1.1 . 8080');
  assert.is(elementValue(''), '');
});

test("a rule's references read the same from nft's JSON and from the text weir wrote", () => {
  // As `nft -j` prints `meta l4proto tcp dnat ip to ip daddr . tcp dport . numgen random mod 2 map @cluster-endpoints-tcp`.
  const pick = [
    { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'tcp' } },
    {
      dnat: {
        family: 'ip',
        addr: {
          map: {
            key: { concat: [{ payload: { protocol: 'ip', field: 'daddr' } }, { payload: { protocol: 'tcp', field: 'dport' } }, { numgen: { mode: 'random', mod: 2, offset: 0 } }] },
            data: '@cluster-endpoints-tcp',
          },
        },
      },
    },
  ];
  const text = 'meta l4proto tcp dnat ip to ip daddr . tcp dport . numgen random mod 2 map @cluster-endpoints-tcp';
  assert.equal(ruleRefs(pick), ['@cluster-endpoints-tcp', 'mod 2']);
  assert.equal(ruleTextRefs(text), ruleRefs(pick));
  const vmap = [{ vmap: { key: { concat: [] }, data: '@service-ips' } }];
  assert.equal(ruleTextRefs('ip daddr . meta l4proto . th dport vmap @service-ips'), ruleRefs(vmap));
  assert.equal(ruleTextRefs('fib saddr type local goto pick-local-1'), ['goto pick-local-1']);
  assert.equal(ruleTextRefs('ct state new jump firewall-check'), ruleRefs([{ match: {} }, { jump: { target: 'firewall-check' } }]));
});

function committed(): CommittedTable {
  return {
    chains: new Map([
      ['services', ['ip daddr . meta l4proto . th dport vmap @service-ips']],
      ['pick-cluster-2', ['meta l4proto tcp dnat ip to ip daddr . tcp dport . numgen random mod 2 map @cluster-endpoints-tcp']],
    ]),
    sets: new Map([
      ['service-ips', false],
      ['cluster-endpoints-tcp', false],
      ['affinity-x', true],
    ]),
    elements: new Map([
      ['service-ips\t10.96.0.1 . tcp . 80', { value: ' comment "t/a:http cluster-ip" : goto pick-cluster-2' }],
      ['cluster-endpoints-tcp\t10.96.0.1 . 80 . 0', { value: ' : 10.244.1.1 . 8080' }],
      ['cluster-endpoints-tcp\t10.96.0.1 . 80 . 1', { value: ' : 10.244.1.2 . 8080' }],
    ]),
  };
}

function kernel(): KernelTable {
  return {
    chains: new Map([
      ['services', { base: false, rules: [['@service-ips']] }],
      ['pick-cluster-2', { base: false, rules: [['@cluster-endpoints-tcp', 'mod 2']] }],
    ]),
    sets: new Map([
      ['service-ips', { map: true, dynamic: false, elements: new Map([['10.96.0.1 . tcp . 80', 'goto pick-cluster-2']]) }],
      [
        'cluster-endpoints-tcp',
        {
          map: true,
          dynamic: false,
          elements: new Map([
            ['10.96.0.1 . 80 . 0', '10.244.1.1 . 8080'],
            ['10.96.0.1 . 80 . 1', '10.244.1.2 . 8080'],
          ]),
        },
      ],
      ['affinity-x', { map: false, dynamic: true, elements: new Map([['10.0.0.9', '']]) }],
    ]),
  };
}

test('the same table compares equal; elements the kernel adds to affinity sets are not drift', () => {
  assert.equal([...compareTable(committed(), kernel())], []);
});

test('each kind of hand edit is found and named: elements missing, extra or changed, chains flushed, grown, missing or extra, sets missing', () => {
  const cases: Array<[string, (k: KernelTable) => void, string]> = [
    ['element deleted', (k) => k.sets.get('cluster-endpoints-tcp')!.elements.delete('10.96.0.1 . 80 . 1'), 'cluster-endpoints-tcp 1'],
    ['element added', (k) => k.sets.get('service-ips')!.elements.set('10.96.0.9 . tcp . 80', 'drop'), 'service-ips 1'],
    ['element changed', (k) => k.sets.get('cluster-endpoints-tcp')!.elements.set('10.96.0.1 . 80 . 0', '10.244.9.9 . 8080'), 'cluster-endpoints-tcp 1'],
    ['chain flushed', (k) => (k.chains.get('pick-cluster-2')!.rules.length = 0), 'pick-cluster-2 1'],
    ['rule added', (k) => k.chains.get('services')!.rules.push(['jump x']), 'services 1'],
    ['rule inserted first', (k) => k.chains.get('services')!.rules.unshift(['jump x']), 'services 1'],
    ['rule retargeted', (k) => (k.chains.get('pick-cluster-2')!.rules[0] = ['@cluster-endpoints-tcp', 'mod 3']), 'pick-cluster-2 1'],
    ['chain deleted', (k) => k.chains.delete('services'), 'services 1'],
    ['chain added', (k) => k.chains.set('mine', { base: true, rules: [] }), 'mine 1'],
    ['set deleted', (k) => k.sets.delete('affinity-x'), 'affinity-x 1'],
  ];
  for (const [what, edit, want] of cases) {
    const k = kernel();
    edit(k);
    assert.is(formatDrift(compareTable(committed(), k)), want, what);
  }
});

// --- the real kernel -------------------------------------------------------------

/** Commands in network namespace ns: `run` for the test's own, `dpRun` as the dataplane takes it. */
function inNetns(ns: string): { run: CommandRunner; dpRun: AsyncCommandRunner } {
  const run: CommandRunner = (argv, input) => {
    const r = spawnSync('ip', ['netns', 'exec', ns, ...argv], { input, encoding: 'utf8', maxBuffer: 1 << 28 });
    return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
  };
  return { run, dpRun: async (argv, o) => run(argv, o?.input) };
}

test('as the kernel lists it, every golden table is what was committed; hand edits are found, and the next commit repairs them', async () => {
  if (process.getuid?.() !== 0) return; // needs a network namespace of its own
  const ns = `weir-nft-drift-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    const { run, dpRun } = inNetns(ns);
    const nft = (...args: string[]): void => assert.is(run(['nft', ...args]).code, 0, args.join(' '));
    const dir = path.join(TEST_SRC, 'golden-nft');
    for (const name of fs.readdirSync(dir).filter((n) => fs.statSync(path.join(dir, n)).isDirectory())) {
      const dp = new NftablesDataplane({ ctx: CTX, log: createLogger('error', () => undefined), run: dpRun });
      for (const p of await plans(path.join(dir, name))) dp.setService(p.service, p);
      await dp.commit();
      assert.equal([...((await dp.checkDrift()) ?? [['not compared', 0]])], [], `${name}: no drift right after the commit`);
      // A partial commit (an endpoint replaced, a service gone) is compared as well.
      const first = (await plans(path.join(dir, name)))[0]!;
      dp.setService(first.service, null);
      await dp.commit();
      assert.equal([...((await dp.checkDrift()) ?? [['not compared', 0]])], [], `${name}: no drift after a partial commit`);
      dp.setService(first.service, first);
      await dp.commit();
    }
    const dp = new NftablesDataplane({ ctx: CTX, log: createLogger('error', () => undefined), run: dpRun });
    for (const p of await plans(path.join(dir, 'kube-proxy-shapes'))) dp.setService(p.service, p);
    await dp.commit();
    const listing = run(['nft', '-j', 'list', 'table', 'inet', 'weir']).stdout;
    const eps = parseNftJson(listing).sets.get('cluster-endpoints-tcp')!.elements;
    const key = [...eps.keys()][0]!;
    const ext = [...parseNftJson(listing).chains.keys()].find((c) => c.startsWith('external-'))!;
    const fw = [...parseNftJson(listing).chains.keys()].find((c) => c.startsWith('firewall-') && c !== 'firewall-check')!;
    const edits: Array<[string[], string]> = [
      [['delete', 'element', 'inet', 'weir', 'cluster-endpoints-tcp', `{ ${key} }`], 'cluster-endpoints-tcp 1'],
      [['flush', 'chain', 'inet', 'weir', ext], `${ext} `],
      [['add', 'rule', 'inet', 'weir', 'services', 'ip daddr 10.96.0.250 drop'], 'services 1'],
      [['add', 'chain', 'inet', 'weir', 'stray'], 'stray 1'],
      [['delete', 'chain', 'inet', 'weir', fw], `${fw} 1,firewall-ips 1`],
    ];
    for (const [edit, want] of edits) {
      if (edit[0] === 'delete' && edit[1] === 'chain') {
        // A chain something refers to cannot be deleted: its map element goes first, as someone tidying by hand would do it.
        nft('delete', 'element', 'inet', 'weir', 'firewall-ips', `{ ${[...parseNftJson(listing).sets.get('firewall-ips')!.elements.keys()][0]!} }`);
      }
      nft(...edit);
      const found = await dp.checkDrift();
      assert.ok(found && formatDrift(found).includes(want), `${edit.join(' ')}: ${found ? formatDrift(found) : 'null'}`);
      await dp.commit();
      assert.equal([...(dp.takeRepaired() ?? [])], [...found], 'the commit after the check rewrote the table');
      assert.equal([...((await dp.checkDrift()) ?? [['not compared', 0]])], [], `${edit.join(' ')}: repaired`);
    }
    // The table deleted outright.
    nft('delete', 'table', 'inet', 'weir');
    assert.equal([...((await dp.checkDrift()) ?? [])], [['inet weir', 1]]);
    await dp.commit();
    assert.equal([...((await dp.checkDrift()) ?? [['not compared', 0]])], []);
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
});

function plan(name: string, vip: string, eps: string[], affinity = 0, nodePort = 0): ServicePlan {
  const backends = eps.map((a) => ({ addr: a as IP, ip: 0, port: 8080 as PlannedBackend['port'], proto: 'TCP' as const, local: false, terminating: false }));
  const idx = backends.map((_, i) => i);
  const fe: PlannedFrontend = {
    servicePort: 'http/TCP',
    addr: vip as IP,
    port: 80 as PlannedBackend['port'],
    proto: 'TCP' as const,
    scope: SCOPE_ALL,
    flags: SVC_F.CLUSTER_IP | (affinity ? SVC_F.AFFINITY : 0),
    affinityTimeout: affinity,
    backends: idx,
    members: idx,
    sourceRanges: [],
  };
  const np: PlannedFrontend = { ...fe, addr: '192.168.77.10' as IP, port: nodePort as PlannedBackend['port'], flags: SVC_F.NODE_PORT | (affinity ? SVC_F.AFFINITY : 0) };
  return { service: `t/${name}` as ObjectKey, backends, frontends: nodePort ? [fe, np] : [fe] };
}

test('partial commits of every kind leave no drift: pick chains added, endpoints replaced, shared hairpin pairs, affinity redeclared, chains flushed then deleted', async () => {
  if (process.getuid?.() !== 0) return;
  const ns = `weir-nft-drift3-${process.pid}`;
  const fresh = `weir-nft-drift4-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  execFileSync('ip', ['netns', 'add', fresh]);
  try {
    const { run, dpRun } = inNetns(ns);
    const dp = new NftablesDataplane({ ctx: CTX, log: createLogger('error', () => undefined), run: dpRun });
    const steps: Array<[string, ServicePlan | null]> = [
      ['a', plan('a', '10.96.0.1', ['10.244.1.1', '10.244.1.2'])],
      ['b', plan('b', '10.96.0.2', ['10.244.1.1'], 0, 30002)],
      ['a', plan('a', '10.96.0.1', ['10.244.1.1', '10.244.1.3', '10.244.1.4'])],
      ['s', plan('s', '10.96.0.5', ['10.244.1.5', '10.244.2.5'], 600, 30005)],
      ['s', plan('s', '10.96.0.5', ['10.244.1.5', '10.244.2.5'], 300, 30005)],
      ['c', plan('c', '10.96.0.3', [])],
      ['b', null],
      ['s', null],
      ['a', plan('a', '10.96.0.1', ['10.244.1.9'])],
      ['c', plan('c', '10.96.0.3', ['10.244.1.1'])],
    ];
    for (const [i, [name, p]] of steps.entries()) {
      dp.setService(`t/${name}` as ObjectKey, p);
      await dp.commit();
      assert.equal([...((await dp.checkDrift()) ?? [['not compared', 0]])], [], `step ${i}: ${name}`);
    }
    // One more commit deletes what the last one flushed; then the table holds the
    // chains a first commit of the same services writes, and no pick chain the
    // steps stopped using (pick-cluster-2 and -3: a service's endpoints went 2 -> 3 -> 1).
    const last = plan('d', '10.96.0.4', ['10.244.1.7']);
    dp.setService(last.service, last);
    await dp.commit();
    const other = inNetns(fresh);
    const first = new NftablesDataplane({ ctx: CTX, log: createLogger('error', () => undefined), run: other.dpRun });
    for (const p of [plan('a', '10.96.0.1', ['10.244.1.9']), plan('c', '10.96.0.3', ['10.244.1.1']), last]) first.setService(p.service, p);
    await first.commit();
    const chains = (r: CommandRunner): string[] => [...parseNftJson(r(['nft', '-j', 'list', 'table', 'inet', 'weir']).stdout).chains.keys()].sort();
    assert.equal(chains(run), chains(other.run));
    assert.equal([...((await dp.checkDrift()) ?? [['not compared', 0]])], [], 'after the pick chains went');
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
    execFileSync('ip', ['netns', 'del', fresh]);
  }
});

test('a listing taken across a commit is not compared', async () => {
  const log = createLogger('error', () => undefined);
  let dp: NftablesDataplane | null = null;
  const run: AsyncCommandRunner = async (argv) => {
    if (!argv.includes('list')) return { code: 0, stdout: '', stderr: '' };
    // A sync commits while nft lists the table.
    dp!.setService('t/a' as ObjectKey, null);
    await dp!.commit();
    return { code: 0, stdout: '{"nftables":[]}', stderr: '' };
  };
  dp = new NftablesDataplane({ ctx: CTX, log, run });
  const [a] = await plans(path.join(TEST_SRC, 'golden-nft', 'kube-proxy-shapes'));
  dp.setService('t/a' as ObjectKey, a!);
  await dp.commit();
  assert.is(await dp.checkDrift(), null);
});

test('a commit stops the listing in flight: its result could not be compared, and its CPU would slow the commit', async () => {
  const log = createLogger('error', () => undefined);
  let signal: AbortSignal | undefined;
  const run: AsyncCommandRunner = async (argv, opts) => {
    if (!argv.includes('list')) return { code: 0, stdout: '', stderr: '' };
    signal = opts?.signal;
    // Answers only when stopped, as the real runner does when its child is killed.
    return new Promise((resolve) => signal?.addEventListener('abort', () => resolve({ code: 1, stdout: '', stderr: 'aborted' })));
  };
  const dp = new NftablesDataplane({ ctx: CTX, log, run });
  const [a] = await plans(path.join(TEST_SRC, 'golden-nft', 'kube-proxy-shapes'));
  dp.setService('t/a' as ObjectKey, a!);
  await dp.commit();
  const check = dp.checkDrift();
  assert.ok(signal && !signal.aborted, 'the listing runs');
  dp.setService('t/a' as ObjectKey, null);
  await dp.commit();
  assert.ok(signal.aborted, 'the commit stopped it');
  assert.is(await check, null);
});

test('changes that never leave room for a listing hold syncs for one after 20 sync periods: drift is still found, and the changes sync after it', async () => {
  const log = createLogger('error', () => undefined);
  const lines: string[] = [];
  const checkLog = createLogger('debug', (l) => lines.push(l));
  const commits: number[] = [];
  // A listing takes 150 ms; a commit comes every 5 ms and stops it.
  const run: AsyncCommandRunner = (argv, opts) =>
    new Promise((resolve) => {
      if (!argv.includes('list')) return resolve((commits.push(Date.now()), { code: 0, stdout: '', stderr: '' }));
      const t = setTimeout(() => resolve({ code: 0, stdout: '{"nftables":[]}', stderr: '' }), 150);
      opts?.signal?.addEventListener('abort', () => (clearTimeout(t), resolve({ code: 1, stdout: '', stderr: 'aborted' })));
    });
  const dp = new NftablesDataplane({ ctx: CTX, log, run });
  const [a] = await plans(path.join(TEST_SRC, 'golden-nft', 'kube-proxy-shapes'));
  let on = false;
  const runner = new Runner({
    minSyncPeriodMs: 0,
    log,
    sync: () => {
      on = !on;
      dp.setService('t/a' as ObjectKey, on ? a! : null);
      return dp.commit().then(() => undefined);
    },
  });
  runner.syncNow();
  type Held = { from: number; to?: number };
  let held: Held | null = null;
  let found = 0;
  const periodMs = 10;
  const check = new NftDriftCheck({
    table: dp,
    log: checkLog,
    requestSync: () => void found++,
    format: formatDrift,
    periodMs,
    holdSyncs: (until) => {
      const h: Held = (held = { from: Date.now() });
      void until.finally(() => (h.to = Date.now()));
      runner.hold(until);
    },
  });
  const t0 = Date.now();
  const churn = setInterval(() => runner.request(), 5);
  const scans = setInterval(() => check.scan(), periodMs);
  try {
    while (found === 0 && Date.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50));
  } finally {
    clearInterval(churn);
    clearInterval(scans);
    runner.stop();
  }
  assert.is(found, 1, 'the comparison finished and found the (empty) listing differs');
  assert.ok(held, 'syncs were held');
  const { from, to } = held as Held;
  assert.ok(to !== undefined && from - t0 >= 20 * periodMs, `held from ${from - t0} ms to ${to === undefined ? '-' : to - t0} ms`);
  assert.is(commits.filter((c) => c > from && c < to).length, 0, 'no commit while the listing ran');
  assert.ok(commits.filter((c) => c >= to).length > 0, 'the changes synced after it');
  assert.ok(commits.filter((c) => c < from).length > 20, 'changes committed every few ms before the hold');
  assert.ok(
    lines.some((l) => l.includes('no moment quiet enough to compare table inet weir')),
    lines.join('\n'),
  );
});

test.run();
