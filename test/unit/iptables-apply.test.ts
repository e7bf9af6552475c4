/**
 * The iptables applier with a recording command runner: partial syncs
 * rewrite only the changed service's chains, a failed restore makes the
 * next sync a full one, and chains no longer produced are deleted; the
 * periodic reading of marker chains and hooks (checkRules) against a
 * scripted listing.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { IptablesDataplane, cleanupIptables } from '../../ts/fallback/iptables';
import { AsyncCommandRunner, CommandRunner } from '../../ts/fallback/command';
import { HOOKS, MARKER_CHAINS } from '../../ts/fallback/render';
import { ClusterStore } from '../../ts/model/store';
import { objectKey, parseCidr } from '../../ts/model/types';
import { rng as seeded } from './rng';
import { Syncer } from '../../ts/runner/sync';
import { createLogger } from '../../ts/util/log';

const quiet = createLogger('error', () => undefined);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A recording runner as the dataplane takes one: without blocking. */
function asyncRun(run: CommandRunner): AsyncCommandRunner {
  return async (argv, o) => run(argv, o?.input);
}

function service(name: string, ip: string, ...more: string[]): V1Service {
  return { metadata: { name, namespace: 'default' }, spec: { clusterIP: ip, clusterIPs: [ip, ...more], ports: [{ port: 80, protocol: 'UDP' }] } };
}
function slice(svc: string, ips: string[], family: 'IPv4' | 'IPv6' = 'IPv4'): V1EndpointSlice {
  return {
    metadata: { name: `${svc}-${family}`, namespace: 'default', labels: { 'kubernetes.io/service-name': svc } },
    addressType: family,
    ports: [{ port: 8080, protocol: 'UDP' }],
    endpoints: ips.map((ip) => ({ addresses: [ip] })),
  };
}

function setup(failRestore = () => false, ipv6 = true) {
  const calls: Array<{ argv: readonly string[]; input?: string }> = [];
  const run: CommandRunner = (argv, input) => {
    calls.push({ argv, ...(input !== undefined ? { input } : {}) });
    if (argv[0]!.endsWith('-restore') && failRestore()) return { code: 1, stdout: '', stderr: 'iptables-restore: line 3 failed' };
    // -C: the hook is "missing" the first time only.
    if (argv.includes('-C')) return { code: calls.filter((c) => c.argv.join(' ') === argv.join(' ')).length > 1 ? 0 : 1, stdout: '', stderr: '' };
    return { code: 0, stdout: '', stderr: '' };
  };
  const logs: string[] = [];
  const dp = new IptablesDataplane({ ctx: { clusterCIDRs: [], masqueradeAll: false }, log: createLogger('warn', (l) => logs.push(l)), run: asyncRun(run), ipv6 });
  const store = new ClusterStore(() => undefined);
  const syncer = new Syncer({ store, reconciler: dp, log: quiet, ctx: { nodeName: 'n1', nodePortAddrs: [] } });
  const restores = (cmd = 'iptables-restore') => calls.filter((c) => c.argv[0] === cmd).map((c) => c.input!);
  return { calls, store, syncer, restores, logs };
}

const chainsDeclared = (text: string): string[] => [...text.matchAll(/^:(WEIR-\S+)/gm)].map((m) => m[1]!);

test("an endpoint change rewrites that service's chains only; a new service also rewrites the shared chains", async () => {
  const { store, syncer, restores } = setup();
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertSlice(slice('a', ['10.244.1.1']), 't');
  store.upsertService(service('b', '10.96.0.2'), 't');
  store.upsertSlice(slice('b', ['10.244.1.2']), 't');
  await syncer.syncAsync();
  const first = chainsDeclared(restores()[0]!);
  assert.is(first.filter((c) => c.startsWith('WEIR-SVC-')).length, 2, 'first sync is full');
  store.upsertSlice(slice('b', ['10.244.1.2', '10.244.1.3']), 't');
  await syncer.syncAsync();
  const second = restores()[1]!;
  const svcChains = chainsDeclared(second).filter((c) => c.startsWith('WEIR-SVC-') || c.startsWith('WEIR-SEP-'));
  assert.is(svcChains.filter((c) => c.startsWith('WEIR-SVC-')).length, 1, "only b's service chain");
  assert.match(second, /10\.244\.1\.3:8080/);
  assert.not.match(second, /10\.244\.1\.1/);
  // WEIR-SERVICES holds a jump per frontend (ten thousand on a large node): it is not rewritten when its rules stay the same.
  assert.equal(
    chainsDeclared(second).filter((c) => !c.startsWith('WEIR-SVC-') && !c.startsWith('WEIR-SEP-')),
    [],
    'no shared chain',
  );
  // A new service: its jump is inserted into WEIR-SERVICES, which is not rewritten; a deleted one's is deleted.
  store.upsertService(service('c', '10.96.0.3'), 't');
  store.upsertSlice(slice('c', ['10.244.1.4']), 't');
  await syncer.syncAsync();
  const third = restores()[2]!;
  assert.not.ok(chainsDeclared(third).includes('WEIR-SERVICES'), 'WEIR-SERVICES is edited, not rewritten');
  assert.match(third, /^-I WEIR-SERVICES 1 .*-d 10\.96\.0\.3\/32 .*-j WEIR-SVC-/m);
  assert.not.match(third, /10\.96\.0\.1\//);
  store.deleteService(objectKey('default', 'a'));
  await syncer.syncAsync();
  assert.match(restores()[3]!, /^-D WEIR-SERVICES .*-d 10\.96\.0\.1\/32 .*-j WEIR-SVC-/m);
});

/**
 * iptables-restore --noflush as far as weir uses it, on chains in memory:
 * fails like the real one on a jump to a missing chain, a -D of a missing
 * rule, or an -X of a chain still jumped to; each COMMIT applies its section.
 */
function netfilterModel(): { run: CommandRunner; chains: Map<string, string[]> } {
  const chains = new Map<string, string[]>();
  const run: CommandRunner = (argv, input) => {
    if (!argv[0]!.endsWith('-restore') || argv[0]!.startsWith('ip6')) return { code: 0, stdout: '', stderr: '' };
    for (const section of input!.split(/^COMMIT\n/m)) {
      const next = new Map([...chains].map(([c, r]) => [c, [...r]]));
      const table = /^\*(\S+)/m.exec(section)?.[1];
      // Chains are "table/chain": both tables have a WEIR-SERVICES.
      for (const line of section.split('\n')) {
        let m: RegExpExecArray | null;
        if ((m = /^:(\S+)/.exec(line))) next.set(`${table}/${m[1]}`, []);
        else if ((m = /^-A (\S+) (.*)$/.exec(line))) next.get(`${table}/${m[1]}`)!.push(m[2]!);
        else if ((m = /^-I (\S+) 1 (.*)$/.exec(line))) next.get(`${table}/${m[1]}`)!.unshift(m[2]!);
        else if ((m = /^-D (\S+) (.*)$/.exec(line))) {
          const rules = next.get(`${table}/${m[1]}`)!;
          const i = rules.indexOf(m[2]!);
          if (i < 0) return { code: 1, stdout: '', stderr: `-D ${m[1]}: no such rule` };
          rules.splice(i, 1);
        } else if ((m = /^-X (\S+)/.exec(line))) next.delete(`${table}/${m[1]}`);
      }
      for (const [c, rules] of next)
        for (const r of rules) {
          const target = / -j (WEIR-\S+)/.exec(` ${r}`)?.[1];
          if (target && !next.has(`${c.split('/')[0]}/${target}`)) return { code: 1, stdout: '', stderr: `${c}: jump to missing ${target}` };
        }
      chains.clear();
      for (const [c, r] of next) chains.set(c, r);
    }
    return { code: 0, stdout: '', stderr: '' };
  };
  return { run, chains };
}

test('after any sequence of partial syncs the chains hold what a full sync writes, each service in its own order', async () => {
  const model = netfilterModel();
  const dp = new IptablesDataplane({ ctx: { clusterCIDRs: [parseCidr('10.244.0.0/16')!], masqueradeAll: false }, log: quiet, run: asyncRun(model.run), ipv6: false });
  const store = new ClusterStore(() => undefined);
  const syncer = new Syncer({ store, reconciler: dp, log: quiet, ctx: { nodeName: 'n1', nodePortAddrs: [] } });
  const rng = seeded(7);
  const objects = new Map<number, { svc: V1Service; slice: V1EndpointSlice }>();
  for (let step = 0; step < 60; step++) {
    // A few services at a time: added, resized, emptied (REJECT), or deleted.
    for (let k = 0, n = 1 + ((rng() * 3) | 0); k < n; k++) {
      const i = (rng() * 12) | 0;
      const what = rng();
      if (what < 0.2) {
        store.deleteService(objectKey('default', `s${i}`));
        objects.delete(i);
      } else {
        const n = what < 0.35 ? 0 : 1 + ((rng() * 3) | 0);
        const o = {
          svc: service(`s${i}`, `10.96.0.${i + 1}`),
          slice: slice(
            `s${i}`,
            Array.from({ length: n }, (_, j) => `10.244.${i}.${j + 1}`),
          ),
        };
        objects.set(i, o);
        store.upsertService(o.svc, 't');
        store.upsertSlice(o.slice, 't');
      }
    }
    await syncer.syncAsync();
    // What a full sync of the same services writes.
    const full = netfilterModel();
    const fresh = new IptablesDataplane({ ctx: { clusterCIDRs: [parseCidr('10.244.0.0/16')!], masqueradeAll: false }, log: quiet, run: asyncRun(full.run), ipv6: false });
    const freshStore = new ClusterStore(() => undefined);
    for (const o of objects.values()) {
      freshStore.upsertService(o.svc, 't');
      freshStore.upsertSlice(o.slice, 't');
    }
    await new Syncer({ store: freshStore, reconciler: fresh, log: quiet, ctx: { nodeName: 'n1', nodePortAddrs: [] } }).syncAsync();
    assert.equal([...model.chains.keys()].sort(), [...full.chains.keys()].sort(), `step ${step}: the same chains`);
    for (const [c, rules] of full.chains) {
      const got = model.chains.get(c)!;
      assert.equal([...got].sort(), [...rules].sort(), `step ${step}: ${c} holds the same rules`);
      // Each service's lines in the order a full sync writes them (its masquerade jump before its service jump), the NodePort jump last.
      for (const name of new Set(rules.map((r) => /--comment "(\S+)/.exec(r)?.[1] ?? ''))) {
        const mine = (rs: string[]) => rs.filter((r) => r.includes(`--comment "${name} `) || r.includes(`--comment "${name}"`));
        assert.equal(mine(got), mine(rules), `step ${step}: ${c}, ${name}'s lines in order`);
      }
      if (c === 'nat/WEIR-SERVICES') assert.match(got.at(-1)!, /-j WEIR-NODEPORTS$/);
    }
  }
});

test('a large sync is cut into transactions of whole services, each jump written after its target and chains removed after their callers', async () => {
  const { store, syncer, restores } = setup();
  const n = 700; // 700 services of two endpoints: 2,100 service chains, more than one section holds
  const eps = (i: number) => [`10.244.${i >> 6}.${(i & 63) * 2 + 1}`, `10.244.${i >> 6}.${(i & 63) * 2 + 2}`];
  for (let i = 0; i < n; i++) {
    store.upsertService(service(`s${i}`, `10.96.${i >> 8}.${i & 255}`), 't');
    store.upsertSlice(slice(`s${i}`, eps(i)), 't');
  }
  await syncer.syncAsync();
  const sections = (text: string) => text.split(/^COMMIT\n/m).filter((s) => s.trim());
  const check = (text: string) => {
    const there = new Set(['WEIR-SERVICES', 'WEIR-PROXY-FIREWALL', 'WEIR-FORWARD', 'WEIR-NODEPORTS', 'WEIR-MARK-MASQ', 'WEIR-POSTROUTING', 'WEIR-MASQ-OFFCLUSTER']);
    for (const sec of sections(text)) {
      const declared = chainsDeclared(sec);
      assert.ok(declared.length <= 1000, `a section of ${declared.length} chains`);
      for (const c of declared) there.add(c);
      for (const m of sec.matchAll(/^-A \S+ .*-j (WEIR-\S+)/gm)) assert.ok(there.has(m[1]!), `${m[1]} jumped to before it was written`);
      for (const m of sec.matchAll(/^-X (\S+)/gm)) there.delete(m[1]!);
      // Nothing still there jumps to a removed chain: only removed chains' own callers are removed before them.
    }
    return sections(text).length;
  };
  assert.ok(check(restores()[0]!) >= 3, 'the first sync is several transactions');
  assert.match(restores()[0]!, /^-A WEIR-SERVICES .*-d 10\.96\.2\.187\/32/m, 'every service is in WEIR-SERVICES');
  // All of them go: their chains are removed in sections, services before their endpoints.
  for (let i = 0; i < n; i++) store.deleteService(objectKey('default', `s${i}`));
  await syncer.syncAsync();
  const gone = restores()[1]!;
  const removed = sections(gone).map((s) => [...s.matchAll(/^-X (WEIR-\S+)/gm)].map((m) => m[1]!.slice(0, 9)));
  assert.ok(removed.length >= 3);
  const flat = removed.flat();
  assert.is(flat.length, n * 3);
  assert.ok(flat.lastIndexOf('WEIR-SVC-') < flat.indexOf('WEIR-SEP-'), 'service chains go before the endpoint chains they jump to');
});

test("a removed endpoint's chain is deleted, and its UDP conntrack entries flushed", async () => {
  const { store, syncer, restores, calls } = setup();
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertSlice(slice('a', ['10.244.1.1', '10.244.1.2']), 't');
  await syncer.syncAsync();
  store.upsertSlice(slice('a', ['10.244.1.2']), 't');
  await syncer.syncAsync();
  assert.match(restores()[1]!, /^-X WEIR-SEP-/m);
  const ct = calls.find((c) => c.argv[0] === 'conntrack');
  assert.equal(ct?.argv, ['conntrack', '-D', '-p', 'udp', '--orig-dst', '10.96.0.1', '--orig-port-dst', '80', '--dst-nat', '10.244.1.1']);
});

test('after a failed restore the retry is a full sync; hooks are installed once', async () => {
  let fail = false;
  const { store, syncer, restores, calls } = setup(() => fail);
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertSlice(slice('a', ['10.244.1.1']), 't');
  store.upsertService(service('b', '10.96.0.2'), 't');
  store.upsertSlice(slice('b', ['10.244.1.2']), 't');
  await syncer.syncAsync();
  fail = true;
  store.upsertSlice(slice('b', ['10.244.1.3']), 't');
  await syncer.syncAsync().then(
    () => assert.unreachable('the sync should fail'),
    (e: Error) => assert.match(e.message, /iptables-restore failed/),
  );
  fail = false;
  await syncer.syncAsync();
  const retry = restores().at(-1)!;
  assert.is(chainsDeclared(retry).filter((c) => c.startsWith('WEIR-SVC-')).length, 2, 'both services rewritten');
  const inserts = calls.filter((c) => c.argv.includes('-I'));
  assert.is(inserts.length, 11, 'each hook inserted once');
});

test('a dual-stack service: its IPv4 half through iptables-restore, its IPv6 half through ip6tables-restore, hooks in both', async () => {
  const { store, syncer, restores, calls } = setup();
  store.upsertService(service('a', '10.96.0.1', 'fd00:96::1'), 't');
  store.upsertSlice(slice('a', ['10.244.1.1']), 't');
  store.upsertSlice(slice('a', ['fd00:10:244::1'], 'IPv6'), 't');
  await syncer.syncAsync();
  const v4 = restores()[0]!;
  const v6 = restores('ip6tables-restore')[0]!;
  assert.match(v4, /-d 10\.96\.0\.1\/32 .*-j WEIR-SVC-/);
  assert.match(v4, /--to-destination 10\.244\.1\.1:8080/);
  assert.not.match(v4, /fd00/);
  assert.match(v6, /-d fd00:96::1\/128 .*-j WEIR-SVC-/);
  assert.match(v6, /--to-destination \[fd00:10:244::1\]:8080/);
  assert.not.match(v6, /10\.2/);
  assert.is(calls.filter((c) => c.argv[0] === 'ip6tables' && c.argv.includes('-I')).length, 11, 'each hook inserted in ip6tables');
  // The IPv6 endpoint leaves: its UDP flows are deleted with the IPv6 family named.
  store.upsertSlice(slice('a', ['fd00:10:244::2'], 'IPv6'), 't');
  await syncer.syncAsync();
  const ct = calls.find((c) => c.argv[0] === 'conntrack');
  assert.equal(ct?.argv, ['conntrack', '-D', '-f', 'ipv6', '-p', 'udp', '--orig-dst', 'fd00:96::1', '--orig-port-dst', '80', '--dst-nat', 'fd00:10:244::1']);
  assert.match(restores('ip6tables-restore')[1]!, /^-X WEIR-SEP-/m);
});

test('an IPv4-only node writes nothing with ip6tables (it reads it once, for what an earlier agent left); without ip6tables, IPv6 frontends are skipped with one warning', async () => {
  const v4only = setup();
  v4only.store.upsertService(service('a', '10.96.0.1'), 't');
  await v4only.syncer.syncAsync();
  v4only.store.upsertService(service('b', '10.96.0.2'), 't');
  await v4only.syncer.syncAsync();
  assert.equal(
    v4only.calls.filter((c) => c.argv[0]!.startsWith('ip6tables')),
    [{ argv: ['ip6tables-save'] }],
  );
  const noV6 = setup(() => false, false);
  noV6.store.upsertService(service('a', '10.96.0.1', 'fd00:96::1'), 't');
  noV6.store.upsertService(service('b', 'fd00:96::2'), 't');
  await noV6.syncer.syncAsync();
  assert.equal(
    noV6.calls.filter((c) => c.argv[0]!.startsWith('ip6tables')),
    [],
  );
  assert.match(noV6.restores()[0]!, /10\.96\.0\.1/);
  assert.is(noV6.logs.filter((l) => l.includes('ip6tables is not usable')).length, 1);
});

test("a first sync removes the chains an earlier agent left: services deleted while none ran, and ip6tables' when no service has an IPv6 frontend now", async () => {
  const saves: Record<string, string> = {
    'iptables-save': '*nat\n:PREROUTING ACCEPT [0:0]\n:WEIR-SERVICES - [0:0]\n:WEIR-SVC-GONE - [0:0]\n:WEIR-SEP-GONE - [0:0]\n-A WEIR-SVC-GONE -j WEIR-SEP-GONE\nCOMMIT\n',
    'ip6tables-save':
      '*nat\n:PREROUTING ACCEPT [0:0]\n:WEIR-SERVICES - [0:0]\n:WEIR-SVC-SIX - [0:0]\n-A PREROUTING -m comment --comment "weir service portals" -j WEIR-SERVICES\n-A WEIR-SERVICES -d fd00:96::1/128 -j WEIR-SVC-SIX\nCOMMIT\n',
  };
  const calls: Array<{ argv: readonly string[]; input?: string }> = [];
  const run: CommandRunner = (argv, input) => {
    calls.push({ argv, ...(input !== undefined ? { input } : {}) });
    return { code: argv.includes('-C') ? 1 : 0, stdout: saves[argv[0]!] ?? '', stderr: '' };
  };
  const dp = new IptablesDataplane({ ctx: { clusterCIDRs: [], masqueradeAll: false }, log: quiet, run: asyncRun(run) });
  const store = new ClusterStore(() => undefined);
  const syncer = new Syncer({ store, reconciler: dp, log: quiet, ctx: { nodeName: 'n1', nodePortAddrs: [] } });
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertSlice(slice('a', ['10.244.1.1']), 't');
  await syncer.syncAsync();
  const v4 = calls.filter((c) => c.argv[0] === 'iptables-restore').map((c) => c.input!);
  assert.match(v4[0]!, /^-X WEIR-SVC-GONE$/m);
  assert.match(v4[0]!, /^-X WEIR-SEP-GONE$/m);
  assert.not.match(v4[0]!, /^-X WEIR-SERVICES$/m, 'a chain it writes stays');
  const v6 = calls.filter((c) => c.argv[0] === 'ip6tables-restore').map((c) => c.input!);
  assert.is(v6.length, 1);
  assert.match(v6[0]!, /^-D PREROUTING -m comment --comment "weir service portals" -j WEIR-SERVICES$/m);
  assert.match(v6[0]!, /^-X WEIR-SVC-SIX$/m);
  // Once only: later syncs of an IPv4-only node leave ip6tables alone.
  const v6calls = (): number => calls.filter((c) => c.argv[0]!.startsWith('ip6tables')).length;
  const before = v6calls();
  store.upsertSlice(slice('a', ['10.244.1.2']), 't');
  await syncer.syncAsync();
  assert.is(v6calls(), before);
  // An IPv6 frontend comes and goes: ip6tables is written while it is there, and cleared after.
  const v6restores = (): string[] => calls.filter((c) => c.argv[0] === 'ip6tables-restore').map((c) => c.input!);
  store.upsertService(service('b', 'fd00:96::2'), 't');
  store.upsertSlice(slice('b', ['fd00:10:244::2'], 'IPv6'), 't');
  await syncer.syncAsync();
  assert.match(v6restores().at(-1)!, /-d fd00:96::2\/128 .*-j WEIR-SVC-/);
  store.deleteService(objectKey('default', 'b'));
  await syncer.syncAsync();
  assert.match(v6restores().at(-1)!, /^-D PREROUTING -m comment --comment "weir service portals" -j WEIR-SERVICES$/m);
  assert.match(v6restores().at(-1)!, /^-X WEIR-SERVICES$/m);
});

test('cleanup removes the chains of both families and the hooks into them, no other rule', async () => {
  const calls: Array<{ argv: string[]; input?: string }> = [];
  const run: CommandRunner = (argv, input) => {
    calls.push({ argv: [...argv], ...(input !== undefined ? { input } : {}) });
    const v6 = argv[0]!.startsWith('ip6');
    const nat = [
      '*nat',
      ':PREROUTING ACCEPT [0:0]',
      ':OTHER - [0:0]',
      ':WEIR-SERVICES - [0:0]',
      `:WEIR-SVC-${v6 ? 'SIX' : 'FOUR'} - [0:0]`,
      '-A PREROUTING -m comment --comment "weir service portals" -j WEIR-SERVICES',
      '-A PREROUTING -j OTHER',
      'COMMIT',
      '',
    ].join('\n');
    if (argv[0]!.endsWith('-save')) return { code: 0, stdout: argv[2] === 'filter' ? '' : nat, stderr: '' };
    return { code: 0, stdout: '', stderr: '' };
  };
  assert.equal(await cleanupIptables(asyncRun(run)), ['nat/WEIR-SERVICES', 'nat/WEIR-SVC-FOUR', 'ip6tables nat/WEIR-SERVICES', 'ip6tables nat/WEIR-SVC-SIX']);
  for (const restore of ['iptables-restore', 'ip6tables-restore']) {
    const input = calls.find((c) => c.argv[0] === restore)?.input ?? '';
    assert.match(input, /^\*nat\n-D PREROUTING -m comment --comment "weir service portals" -j WEIR-SERVICES\nCOMMIT\n/, 'the hook goes first');
    assert.not.match(input, /OTHER/, "another program's rule and chain stay");
    assert.match(input, /^-X WEIR-SERVICES$/m);
  }
});

test('cleanup removes many chains in transactions of bounded size, shared leaf chains last', async () => {
  const chains = ['WEIR-SERVICES', 'WEIR-MARK-MASQ', ...Array.from({ length: 2500 }, (_, i) => `WEIR-SEP-${String(i).padStart(16, '0')}`), 'WEIR-SVC-0000000000000001'];
  const save = `*nat\n${chains.map((c) => `:${c} - [0:0]`).join('\n')}\nCOMMIT\n`;
  let restore = '';
  const run: CommandRunner = (argv, input) => {
    if (argv[0] === 'iptables-save') return { code: 0, stdout: argv[2] === 'filter' ? '' : save, stderr: '' };
    if (argv[0] === 'iptables-restore') restore = input!;
    return { code: argv[0]!.startsWith('ip6') || argv.includes('-D') ? 1 : 0, stdout: '', stderr: '' };
  };
  assert.is((await cleanupIptables(asyncRun(run))).length, chains.length);
  const sections = restore.split(/^COMMIT\n/m).filter((x) => x.trim());
  assert.ok(sections.length >= 3, `${sections.length} transactions`);
  for (const sec of sections) assert.ok([...sec.matchAll(/^-X /gm)].length <= 1000);
  const order = [...restore.matchAll(/^-X (\S+)/gm)].map((m) => m[1]!);
  assert.ok(order.indexOf('WEIR-SVC-0000000000000001') < order.indexOf('WEIR-SEP-0000000000000000'), 'a service chain before the endpoint chains it jumps to');
  assert.is(order.at(-1), 'WEIR-MARK-MASQ', 'the chain every endpoint chain jumps to goes last');
});

test("cleanup deletes a table's base chains and the table only when nothing but built-in ACCEPT chains is left", async () => {
  const left: Record<string, string> = {
    filter: '*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n', // another's policy
    nat: '*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n',
  };
  let cleaned = false;
  const calls: string[][] = [];
  const run: CommandRunner = (argv, input) => {
    calls.push([...argv]);
    if (argv[0]!.startsWith('ip6')) return { code: 1, stdout: '', stderr: 'no ip6tables' };
    if (argv[0] === 'iptables-restore') cleaned = input!.includes('-X WEIR-SERVICES');
    if (argv[0] === 'iptables-save' && !cleaned && argv[2] !== 'filter')
      return { code: 0, stdout: `*nat\n:PREROUTING ACCEPT [0:0]\n:WEIR-SERVICES - [0:0]\n-A PREROUTING -j WEIR-SERVICES\nCOMMIT\n`, stderr: '' };
    if (argv[0] === 'iptables-save') return { code: 0, stdout: left[argv[2]!]!, stderr: '' };
    if (argv[0] === 'nft' && argv[1] === 'list') return { code: 0, stdout: `table ip ${argv[4]} {\n}\n`, stderr: '' };
    return { code: argv.includes('-D') ? 1 : 0, stdout: '', stderr: '' };
  };
  assert.equal(await cleanupIptables(asyncRun(run)), ['nat/WEIR-SERVICES', 'nat (table)']);
  const removals = calls.filter((c) => c.includes('-X') || c[1] === 'delete').map((c) => c.join(' '));
  assert.equal(removals, ['iptables -w 5 -t nat -X PREROUTING', 'iptables -w 5 -t nat -X INPUT', 'iptables -w 5 -t nat -X OUTPUT', 'iptables -w 5 -t nat -X POSTROUTING', 'nft delete table ip nat']);
});

/**
 * checkRules against listings of the tables as weir wrote them, minus what
 * `gone` names ("iptables nat WEIR-MARK-MASQ" for a whole chain,
 * "iptables nat PREROUTING WEIR-SERVICES" for one hook); `during` runs while
 * the first listing is read; restores wait for the gate set with setRestoreGate.
 */
async function readable() {
  const gone = new Set<string>();
  const listed: string[] = [];
  let during: (() => void) | null = null;
  const restores: string[] = [];
  const run: CommandRunner = (argv, input) => {
    if (argv[0]!.endsWith('-restore')) restores.push(`${argv[0]}\n${input}`);
    return { code: 0, stdout: '', stderr: '' };
  };
  let restoreGate: Promise<void> | null = null;
  const runAsync: AsyncCommandRunner = async (argv, o) => {
    if (argv[0]!.endsWith('-restore') && restoreGate) await restoreGate;
    if (!argv.includes('-S')) return run(argv, o?.input);
    const [cmd, , , , table, , chain] = argv as string[];
    listed.push(`${cmd} ${table} ${chain}`);
    const now = during;
    during = null;
    now?.();
    if (gone.has(`${cmd} ${table} ${chain}`)) return { code: 1, stdout: '', stderr: `${cmd}: No chain/target/match by that name.` };
    const marker = chain === MARKER_CHAINS[table as 'nat' | 'filter'];
    const rules = marker
      ? [`-A ${chain} -j MARK --set-xmark 0x40000/0x40000`]
      : HOOKS.filter((h) => h.table === table && h.chain === chain && !gone.has(`${cmd} ${table} ${chain} ${h.rule.split(' ').at(-1)}`)).map((h) => `-A ${chain} ${h.rule}`);
    return { code: 0, stdout: [marker ? `-N ${chain}` : `-P ${chain} ACCEPT`, ...rules].join('\n') + '\n', stderr: '' };
  };
  const dp = new IptablesDataplane({ ctx: { clusterCIDRs: [], masqueradeAll: false }, log: quiet, run: runAsync });
  const store = new ClusterStore(() => undefined);
  const syncer = new Syncer({ store, reconciler: dp, log: quiet, ctx: { nodeName: 'n1', nodePortAddrs: [] } });
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertSlice(slice('a', ['10.244.1.1']), 't');
  store.upsertService(service('b', '10.96.0.2'), 't');
  store.upsertSlice(slice('b', ['10.244.1.2']), 't');
  await syncer.syncAsync();
  /** Whether the next sync (with one endpoint changed) rewrites every service's chains in iptables. */
  const nextSyncIsFull = async (): Promise<boolean> => {
    store.upsertSlice(slice('b', [`10.244.1.${restores.length + 10}`]), 't');
    restores.length = 0;
    await syncer.syncAsync();
    const v4 = restores.find((r) => r.startsWith('iptables-restore\n'))!;
    return chainsDeclared(v4).filter((c) => c.startsWith('WEIR-SVC-')).length === 2;
  };
  return {
    dp,
    store,
    syncer,
    gone,
    listed,
    nextSyncIsFull,
    setDuring: (f: () => void) => (during = f),
    setRestoreGate: (p: Promise<void>): void => {
      restoreGate = p;
    },
  };
}

test('checkRules: with everything in place it finds nothing and the next sync stays partial; it reads IPv4 only while no service has an IPv6 frontend', async () => {
  const { dp, listed, nextSyncIsFull } = await readable();
  assert.equal(await dp.checkRules(), []);
  assert.equal(listed, [
    'iptables nat WEIR-MARK-MASQ',
    'iptables nat PREROUTING',
    'iptables nat OUTPUT',
    'iptables nat POSTROUTING',
    'iptables filter WEIR-FORWARD',
    'iptables filter INPUT',
    'iptables filter FORWARD',
    'iptables filter OUTPUT',
  ]);
  assert.not.ok(await nextSyncIsFull());
});

test('checkRules: a marker chain gone or a hook missing is reported by table, and the next sync rewrites that family whole', async () => {
  const { dp, gone, nextSyncIsFull } = await readable();
  gone.add('iptables nat WEIR-MARK-MASQ');
  gone.add('iptables filter FORWARD WEIR-PROXY-FIREWALL');
  assert.equal(await dp.checkRules(), [
    { table: 'iptables nat', what: 'WEIR-MARK-MASQ: gone' },
    { table: 'iptables filter', what: 'FORWARD: the jump to WEIR-PROXY-FIREWALL' },
  ]);
  // The rewrite is due: until it has run, a reading does not judge that family again.
  assert.equal(await dp.checkRules(), []);
  assert.ok(await nextSyncIsFull());
  gone.clear();
  assert.equal(await dp.checkRules(), []);
  assert.not.ok(await nextSyncIsFull());
});

test('checkRules: a reading that a commit overlapped judges nothing (the commit may have changed what it read)', async () => {
  const { dp, store, syncer, gone, setDuring, nextSyncIsFull } = await readable();
  gone.add('iptables nat PREROUTING WEIR-SERVICES');
  let during: Promise<unknown> = Promise.resolve();
  setDuring(() => {
    store.upsertSlice(slice('a', ['10.244.1.3']), 't');
    during = syncer.syncAsync();
  });
  assert.equal(await dp.checkRules(), []);
  await during;
  assert.not.ok(await nextSyncIsFull());
  assert.equal(await dp.checkRules(), [{ table: 'iptables nat', what: 'PREROUTING: the jump to WEIR-SERVICES' }]);
});

test('checkRules: ip6tables is read too while a service has an IPv6 frontend, and its losses are its own', async () => {
  const { dp, store, syncer, gone, listed } = await readable();
  store.upsertService(service('c', '10.96.0.3', 'fd00:96::3'), 't');
  await syncer.syncAsync();
  gone.add('ip6tables nat OUTPUT WEIR-SERVICES');
  assert.equal(await dp.checkRules(), [{ table: 'ip6tables nat', what: 'OUTPUT: the jump to WEIR-SERVICES' }]);
  assert.is(listed.filter((l) => l.startsWith('ip6tables ')).length, 8);
});

test('checkRules: a reading while a commit is being written judges nothing (the rewrite in flight may not have reached what it read)', async () => {
  const { dp, store, syncer, gone, setRestoreGate, nextSyncIsFull } = await readable();
  gone.add('iptables nat PREROUTING WEIR-SERVICES');
  let release!: () => void;
  setRestoreGate(new Promise<void>((r) => (release = r)));
  store.upsertSlice(slice('a', ['10.244.1.4']), 't');
  const writing = syncer.syncAsync();
  await sleep(5);
  assert.equal(await dp.checkRules(), []);
  release();
  await writing;
  assert.not.ok(await nextSyncIsFull());
});

test.run();
