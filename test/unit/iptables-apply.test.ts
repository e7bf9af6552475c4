/**
 * The iptables applier with a recording command runner: partial syncs
 * rewrite only the changed service's chains, a failed restore makes the
 * next sync a full one, and chains no longer produced are deleted.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { IptablesDataplane, CommandRunner } from '../../ts/fallback/iptables';
import { ClusterStore } from '../../ts/model/store';
import { Syncer } from '../../ts/runner/sync';
import { createLogger } from '../../ts/util/log';

const quiet = createLogger('error', () => undefined);

function service(name: string, ip: string): V1Service {
  return { metadata: { name, namespace: 'default' }, spec: { clusterIP: ip, ports: [{ port: 80, protocol: 'UDP' }] } };
}
function slice(svc: string, ips: string[]): V1EndpointSlice {
  return {
    metadata: { name: `${svc}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': svc } },
    addressType: 'IPv4',
    ports: [{ port: 8080, protocol: 'UDP' }],
    endpoints: ips.map((ip) => ({ addresses: [ip] })),
  };
}

function setup(failRestore = () => false) {
  const calls: Array<{ argv: readonly string[]; input?: string }> = [];
  const run: CommandRunner = (argv, input) => {
    calls.push({ argv, ...(input !== undefined ? { input } : {}) });
    if (argv[0] === 'iptables-restore' && failRestore()) return { code: 1, stdout: '', stderr: 'iptables-restore: line 3 failed' };
    // -C: the hook is "missing" the first time only.
    if (argv.includes('-C')) return { code: calls.filter((c) => c.argv.join(' ') === argv.join(' ')).length > 1 ? 0 : 1, stdout: '', stderr: '' };
    return { code: 0, stdout: '', stderr: '' };
  };
  const dp = new IptablesDataplane({ ctx: { clusterCIDRs: [], masqueradeAll: false }, log: quiet, run });
  const store = new ClusterStore(() => undefined);
  const syncer = new Syncer({ store, reconciler: dp, log: quiet, ctx: { nodeName: 'n1', nodePortAddrs: [] } });
  const restores = () => calls.filter((c) => c.argv[0] === 'iptables-restore').map((c) => c.input!);
  return { calls, store, syncer, restores };
}

const chainsDeclared = (text: string): string[] => [...text.matchAll(/^:(WEIR-\S+)/gm)].map((m) => m[1]!);

test("a change to one service rewrites the shared chains and that service's chains only", () => {
  const { store, syncer, restores } = setup();
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertSlice(slice('a', ['10.244.1.1']), 't');
  store.upsertService(service('b', '10.96.0.2'), 't');
  store.upsertSlice(slice('b', ['10.244.1.2']), 't');
  syncer.sync();
  const first = chainsDeclared(restores()[0]!);
  assert.is(first.filter((c) => c.startsWith('WEIR-SVC-')).length, 2, 'first sync is full');
  store.upsertSlice(slice('b', ['10.244.1.2', '10.244.1.3']), 't');
  syncer.sync();
  const second = restores()[1]!;
  const svcChains = chainsDeclared(second).filter((c) => c.startsWith('WEIR-SVC-') || c.startsWith('WEIR-SEP-'));
  assert.is(svcChains.filter((c) => c.startsWith('WEIR-SVC-')).length, 1, "only b's service chain");
  assert.ok(chainsDeclared(second).includes('WEIR-SERVICES'));
  assert.match(second, /10\.244\.1\.3:8080/);
  assert.not.match(second, /10\.244\.1\.1/);
});

test("a removed endpoint's chain is deleted, and its UDP conntrack entries flushed", () => {
  const { store, syncer, restores, calls } = setup();
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertSlice(slice('a', ['10.244.1.1', '10.244.1.2']), 't');
  syncer.sync();
  store.upsertSlice(slice('a', ['10.244.1.2']), 't');
  syncer.sync();
  assert.match(restores()[1]!, /^-X WEIR-SEP-/m);
  const ct = calls.find((c) => c.argv[0] === 'conntrack');
  assert.equal(ct?.argv, ['conntrack', '-D', '-p', 'udp', '--orig-dst', '10.96.0.1', '--orig-port-dst', '80', '--dst-nat', '10.244.1.1']);
});

test('after a failed restore the retry is a full sync; hooks are installed once', () => {
  let fail = false;
  const { store, syncer, restores, calls } = setup(() => fail);
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertSlice(slice('a', ['10.244.1.1']), 't');
  store.upsertService(service('b', '10.96.0.2'), 't');
  store.upsertSlice(slice('b', ['10.244.1.2']), 't');
  syncer.sync();
  fail = true;
  store.upsertSlice(slice('b', ['10.244.1.3']), 't');
  assert.throws(() => syncer.sync(), /iptables-restore failed/);
  fail = false;
  syncer.sync();
  const retry = restores().at(-1)!;
  assert.is(chainsDeclared(retry).filter((c) => c.startsWith('WEIR-SVC-')).length, 2, 'both services rewritten');
  const inserts = calls.filter((c) => c.argv.includes('-I'));
  assert.is(inserts.length, 11, 'each hook inserted once');
});

test.run();
