/**
 * nftables mode: golden test of the renderer (manifests in
 * test/golden-nft/<case>/ -> the `nft -f` text of a full sync, compared
 * with test/golden-nft/<case>.golden; WEIR_UPDATE_GOLDEN=1 rewrites them),
 * and the transactions the dataplane writes for a change, with a recording
 * command runner in place of nft.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { IP, ObjectKey, parseCidr } from '../../ts/model/types';
import { PlannedBackend, ServicePlan } from '../../ts/plan/plan';
import { NftContext, renderAllNft } from '../../ts/fallback/nft-render';
import { NftablesDataplane, cleanupNftables } from '../../ts/fallback/nftables';
import { AsyncCommandRunner, CommandRunner } from '../../ts/fallback/command';
import { SCOPE_ALL, SVC_F } from '../../ts/datapath/codecs';
import { createLogger } from '../../ts/util/log';
import { TEST_SRC, casePlans as plans } from './pipeline';

const dir = path.join(TEST_SRC, 'golden-nft');
const CTX: NftContext = { clusterCIDRs: [parseCidr('10.244.0.0/16')!, parseCidr('fd00:10:244::/56')!], masqueradeAll: false };

for (const name of fs.readdirSync(dir).filter((n) => fs.statSync(path.join(dir, n)).isDirectory())) {
  test(`nftables golden: ${name}`, async () => {
    const text = renderAllNft(await plans(path.join(dir, name)), CTX);
    const file = path.join(dir, `${name}.golden`);
    if (process.env.WEIR_UPDATE_GOLDEN === '1') fs.writeFileSync(file, text);
    assert.fixture(text, fs.readFileSync(file, 'utf8'));
  });
}

test('no chain per endpoint: without affinity, endpoints are map elements chosen by a shared pick chain', async () => {
  const text = renderAllNft(await plans(path.join(dir, 'kube-proxy-shapes')), CTX);
  const chains = text.split('\n').filter((l) => /^add chain inet weir endpoint6?-/.test(l));
  assert.ok(chains.length > 0);
  for (const c of chains) assert.match(c, /-g\/web\//, 'only the ClientIP-affinity service g/web has endpoint chains');
  // Only ClientIP affinity services have endpoint chains (their affinity set must learn the endpoint chosen).
  const rules = text.split('\n').filter((l) => /^add rule inet weir endpoint6?-/.test(l));
  for (const l of rules) assert.match(l, /update @affinity|dnat ip6? to/);
  assert.ok(chains.every((c) => text.includes(`goto ${c.split(' ').pop()!}`)));
  assert.match(text, /^add rule inet weir pick-cluster-2 meta l4proto tcp dnat ip to ip daddr \. tcp dport \. numgen random mod 2 map @cluster-endpoints-tcp$/m);
});

test('--masquerade-all: every ClusterIP frontend is marked, by one rule per family on the cluster-ips set', async () => {
  const p = await plans(path.join(dir, 'kube-proxy-shapes'));
  const base = renderAllNft(p, CTX).split('\n');
  const all = renderAllNft(p, { ...CTX, masqueradeAll: true }).split('\n');
  assert.equal(
    all.filter((l) => !base.includes(l)),
    [
      'add rule inet weir services ip daddr . meta l4proto . th dport @cluster-ips jump mark-for-masquerade',
      'add rule inet weir services ip6 daddr . meta l4proto . th dport @cluster-ips6 jump mark-for-masquerade',
    ],
  );
});

function be(addr: string, port = 8080): PlannedBackend {
  return { addr: addr as IP, ip: 0, port: port as PlannedBackend['port'], proto: 'TCP', local: false, terminating: false };
}

function plan(name: string, vip: string, eps: string[]): ServicePlan {
  const backends = eps.map((a) => be(a));
  const idx = backends.map((_, i) => i);
  return {
    service: `t/${name}` as ObjectKey,
    backends,
    frontends: [
      {
        servicePort: 'http/TCP',
        addr: vip as IP,
        port: 80 as PlannedBackend['port'],
        proto: 'TCP',
        scope: SCOPE_ALL,
        flags: SVC_F.CLUSTER_IP,
        affinityTimeout: 0,
        backends: idx,
        members: idx,
        sourceRanges: [],
      },
    ],
  };
}

/** A NodePort service with ClientIP affinity: a ClusterIP and a NodePort frontend. */
function sticky(name: string, vip: string, nodePort: number, eps: string[], timeout: number): ServicePlan {
  const p = plan(name, vip, eps);
  const f = p.frontends[0]!;
  return {
    ...p,
    frontends: [
      { ...f, affinityTimeout: timeout, flags: SVC_F.CLUSTER_IP | SVC_F.AFFINITY },
      { ...f, addr: '192.168.77.10' as IP, port: nodePort as PlannedBackend['port'], affinityTimeout: timeout, flags: SVC_F.NODE_PORT | SVC_F.AFFINITY },
    ],
  };
}

function recorder(): { run: AsyncCommandRunner; scripts: string[] } {
  const scripts: string[] = [];
  return { scripts, run: async (argv, o) => (argv[0] === 'nft' && o?.input !== undefined && scripts.push(o.input), { code: 0, stdout: '', stderr: '' }) };
}

/** A synchronous runner as the dataplane takes it. */
const awaitable =
  (run: CommandRunner): AsyncCommandRunner =>
  async (argv, o) =>
    run(argv, o?.input);

test('a change writes only that service: an endpoint replaced is two element changes and no rule', async () => {
  const { run, scripts } = recorder();
  const dp = new NftablesDataplane({ ctx: CTX, log: createLogger('error', () => undefined), run });
  dp.setService('t/a' as ObjectKey, plan('a', '10.96.0.1', ['10.244.1.1', '10.244.1.2']));
  dp.setService('t/b' as ObjectKey, plan('b', '10.96.0.2', ['10.244.2.1']));
  await dp.commit();
  assert.match(scripts[0]!, /^delete table inet weir$/m, 'the first commit replaces the whole table');
  dp.setService('t/a' as ObjectKey, plan('a', '10.96.0.1', ['10.244.1.1', '10.244.1.3']));
  await dp.commit();
  assert.equal(scripts[1]!.trim().split('\n'), [
    'delete element inet weir hairpin { 10.244.1.2 . 10.244.1.2 }',
    'delete element inet weir cluster-endpoints-tcp { 10.96.0.1 . 80 . 1 }',
    'add element inet weir cluster-endpoints-tcp { 10.96.0.1 . 80 . 1 : 10.244.1.3 . 8080 }',
    'add element inet weir hairpin { 10.244.1.3 . 10.244.1.3 }',
  ]);
  // One more endpoint: the frontend moves to the pick chain for three, created once.
  dp.setService('t/a' as ObjectKey, plan('a', '10.96.0.1', ['10.244.1.1', '10.244.1.3', '10.244.1.4']));
  await dp.commit();
  assert.match(scripts[2]!, /^add chain inet weir pick-cluster-3$/m);
  assert.match(scripts[2]!, /^delete element inet weir service-ips \{ 10\.96\.0\.1 \. tcp \. 80 \}\nadd element/m);
  assert.match(scripts[2]!, /^add element inet weir service-ips \{ 10\.96\.0\.1 \. tcp \. 80 comment "t\/a:http cluster-ip" : goto pick-cluster-3 \}$/m);
  assert.not.match(scripts[2]!, /10\.96\.0\.2|10\.244\.2\.1/, 'the other service is not touched');
  // A service removed: its elements go; an endpoint address another service still uses keeps its hairpin pair.
  dp.setService('t/c' as ObjectKey, plan('c', '10.96.0.3', ['10.244.2.1']));
  await dp.commit();
  assert.not.match(scripts[3]!, /hairpin/, 'the pair existed already');
  dp.setService('t/b' as ObjectKey, null);
  await dp.commit();
  assert.not.match(scripts[4]!, /hairpin/, 'c still holds the pair');
  assert.match(scripts[4]!, /^delete element inet weir service-ips \{ 10\.96\.0\.2 \. tcp \. 80 \}$/m);
  // Nothing changed: nothing is run.
  await dp.commit();
  assert.is(scripts.length, 5);
});

test('a new local-traffic detector rewrites the table with every service rendered for it', async () => {
  const { run, scripts } = recorder();
  const dp = new NftablesDataplane({ ctx: CTX, log: createLogger('error', () => undefined), run });
  const p = plan('l', '10.96.0.7', ['10.244.1.7']);
  const f = p.frontends[0]!;
  const np = { ...f, addr: '192.168.77.10' as IP, port: 30007 as PlannedBackend['port'], flags: SVC_F.NODE_PORT | SVC_F.ETP_LOCAL };
  dp.setService('t/l' as ObjectKey, { ...p, frontends: [f, np, { ...np, scope: 1 }] });
  await dp.commit();
  assert.match(scripts[0]!, /^add rule inet weir external-\S+ ip saddr \{ 10\.244\.0\.0\/16 \} goto pick-cluster-1$/m);
  dp.setLocalTraffic({ kind: 'devices', prefix: 'veth', bridge: '' });
  await dp.commit();
  assert.match(scripts[1]!, /^delete table inet weir$/m);
  assert.match(scripts[1]!, /^add rule inet weir services ip daddr \. meta l4proto \. th dport @cluster-ips iifname != "veth\*" jump mark-for-masquerade$/m);
  assert.match(scripts[1]!, /^add rule inet weir external-\S+ iifname "veth\*" goto pick-cluster-1$/m, 'the service is rendered for the new detector');
  assert.not.match(scripts[1]!, /10\.244\.0\.0\/16/);
});

test('cleanup deletes table inet weir by name, with no listing of the tables; a table that is not there is nothing to remove', async () => {
  const calls: string[] = [];
  const run =
    (has: boolean): AsyncCommandRunner =>
    async (argv) => (calls.push(argv.join(' ')), has ? { code: 0, stdout: '', stderr: '' } : { code: 1, stdout: '', stderr: 'Error: No such file or directory' });
  assert.is(await cleanupNftables(run(true)), true);
  assert.equal(calls, ['nft delete table inet weir']);
  assert.is(await cleanupNftables(run(false)), false);
  assert.equal(calls.slice(1), ['nft delete table inet weir', 'nft list table inet weir']);
});

test('a failed transaction names the service and line, and the next commit rewrites the whole table', async () => {
  const scripts: string[] = [];
  let fail = false;
  const run: CommandRunner = (_argv, input) => {
    scripts.push(input ?? '');
    if (!fail) return { code: 0, stdout: '', stderr: '' };
    const at = input!.split('\n').findIndex((l) => l.includes('10.96.0.9')) + 1;
    return { code: 1, stdout: '', stderr: `/dev/stdin:${at}:1-10: Error: Could not process rule: No such file or directory\n` };
  };
  const dp = new NftablesDataplane({ ctx: CTX, log: createLogger('error', () => undefined), run: awaitable(run) });
  dp.setService('t/a' as ObjectKey, plan('a', '10.96.0.1', ['10.244.1.1']));
  await dp.commit();
  fail = true;
  dp.setService('t/z' as ObjectKey, plan('z', '10.96.0.9', ['10.244.1.9']));
  const failed = await dp.commit().then(
    () => null,
    (e: Error) => e,
  );
  assert.ok(failed && /Service t\/z/.test(failed.message) && /10\.96\.0\.9/.test(failed.message) && /No such file/.test(failed.message), String(failed));
  fail = false;
  await dp.commit();
  assert.match(scripts.at(-1)!, /^delete table inet weir$/m);
  assert.match(scripts.at(-1)!, /10\.96\.0\.1 \. tcp \. 80/);
  assert.match(scripts.at(-1)!, /10\.96\.0\.9 \. tcp \. 80/, 'the service of the failed commit is written by the next');
});

test("a transaction runs without blocking: a service changed meanwhile is the next commit's, and a drift check started meanwhile compares nothing", async () => {
  const scripts: string[] = [];
  let listings = 0;
  let release = (): void => undefined;
  const run: AsyncCommandRunner = (argv, o) => {
    if (argv.includes('list')) return (listings++, Promise.resolve({ code: 0, stdout: '{"nftables":[]}', stderr: '' }));
    scripts.push(o?.input ?? '');
    return new Promise((resolve) => (release = () => resolve({ code: 0, stdout: '', stderr: '' })));
  };
  const dp = new NftablesDataplane({ ctx: CTX, log: createLogger('error', () => undefined), run });
  dp.setService('t/a' as ObjectKey, plan('a', '10.96.0.1', ['10.244.1.1']));
  const first = dp.commit();
  dp.setService('t/b' as ObjectKey, plan('b', '10.96.0.2', ['10.244.2.1']));
  assert.is(await dp.checkDrift(), null, 'not compared while a transaction is applied');
  assert.is(listings, 0);
  release();
  await first;
  assert.not.match(scripts[0]!, /10\.96\.0\.2/, 'b changed after the commit began');
  const second = dp.commit();
  release();
  await second;
  assert.match(scripts[1]!, /^add element inet weir service-ips \{ 10\.96\.0\.2 \. tcp \. 80 /m);
  assert.not.match(scripts[1]!, /10\.96\.0\.1 /, 'a was written already');
});

test('the kernel takes every transaction: a full table, then changes that add pick chains, replace, add and remove endpoints and services', async () => {
  if (process.getuid?.() !== 0) return; // needs a network namespace of its own
  const ns = `weir-nft-unit-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    const run: CommandRunner = (argv, input) => {
      const r = spawnSync('ip', ['netns', 'exec', ns, ...argv], { input, encoding: 'utf8' });
      return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
    };
    const dp = new NftablesDataplane({ ctx: CTX, log: createLogger('error', () => undefined), run: awaitable(run) });
    const steps: Array<[string, string, string[]]> = [
      ['a', '10.96.0.1', ['10.244.1.1', '10.244.1.2']],
      ['b', '10.96.0.2', ['10.244.2.1']],
      ['a', '10.96.0.1', ['10.244.1.1', '10.244.1.3']],
      ['a', '10.96.0.1', ['10.244.1.1', '10.244.1.3', '10.244.1.4']],
      ['c', '10.96.0.3', []],
      ['b', '10.96.0.2', ['10.244.2.1', '10.244.2.2', '10.244.2.3', '10.244.2.4']],
    ];
    for (const [name, vip, eps] of steps) {
      dp.setService(`t/${name}` as ObjectKey, plan(name, vip, eps));
      await dp.commit();
    }
    dp.setService('t/a' as ObjectKey, null);
    await dp.commit();
    const table = run(['nft', 'list', 'table', 'inet', 'weir']).stdout;
    assert.match(table, /chain pick-cluster-4 \{/, 'a pick chain added by a later transaction');
    assert.match(table, /10\.96\.0\.2 \. 80 \. 3 : 10\.244\.2\.4 \. 8080/);
    assert.match(table, /10\.96\.0\.3 \. tcp \. 80 comment "t\/c:http cluster-ip" : goto reject-chain/);
    assert.not.match(table, /10\.96\.0\.1 /, 'a removed service leaves nothing');
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
});

test('the kernel takes affinity changes: a new timeout redeclares the sets, and the chains of a removed service are gone after the next commit', async () => {
  if (process.getuid?.() !== 0) return;
  const ns = `weir-nft-unit2-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    const run: CommandRunner = (argv, input) => {
      const r = spawnSync('ip', ['netns', 'exec', ns, ...argv], { input, encoding: 'utf8' });
      return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
    };
    const dp = new NftablesDataplane({ ctx: CTX, log: createLogger('error', () => undefined), run: awaitable(run) });
    const key = 't/s' as ObjectKey;
    dp.setService('t/a' as ObjectKey, plan('a', '10.96.0.1', ['10.244.1.1']));
    await dp.commit();
    dp.setService(key, sticky('s', '10.96.0.5', 30005, ['10.244.1.5', '10.244.2.5'], 600));
    await dp.commit();
    dp.setService(key, sticky('s', '10.96.0.5', 30005, ['10.244.1.5', '10.244.2.5'], 300));
    await dp.commit();
    let table = run(['nft', 'list', 'table', 'inet', 'weir']).stdout;
    assert.match(table, /set affinity-\S+__10\.244\.2\.5\/8080 \{[^}]*timeout 5m/);
    assert.match(table, /chain external-\S+t\/s\/tcp\/http \{/);
    dp.setService(key, null);
    await dp.commit();
    dp.setService('t/a' as ObjectKey, plan('a', '10.96.0.1', ['10.244.1.2']));
    await dp.commit();
    table = run(['nft', 'list', 'table', 'inet', 'weir']).stdout;
    assert.not.match(table, /t\/s\//, 'no chain or set of the removed service is left');
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
});

test.run();
