/**
 * The Syncer when the dataplane throws: a service whose plan or setService
 * throws is reported and left as last programmed while the others commit,
 * and a failed commit loses no service. After the retry, the maps hold what
 * a clean sync of the same store writes.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { formatServices, readServices } from '../../ts/datapath/dump';
import { ClusterStore } from '../../ts/model/store';
import { ObjectKey } from '../../ts/model/types';
import { ServicePlan } from '../../ts/plan/plan';
import { Dataplane } from '../../ts/reconcile/dataplane';
import { CommitStats, Reconciler } from '../../ts/reconcile/reconciler';
import { Syncer } from '../../ts/runner/sync';
import { createLogger } from '../../ts/util/log';
import { memoryMaps } from './pipeline';
import { service, slice } from './objects';
import { thrown } from './thrown';

const key = (name: string): ObjectKey => `default/${name}` as ObjectKey;

/** A Reconciler on the in-memory maps that throws where a test says, once each. */
class FaultyDataplane implements Dataplane {
  readonly maps = memoryMaps();
  readonly inner = new Reconciler(this.maps);
  /** Services whose next setService throws (before the inner one sees it). */
  readonly failSet = new Set<ObjectKey>();
  /** Commits still to fail (before the inner one writes). */
  failCommits = 0;
  constructor() {
    this.inner.adopt();
  }
  get conflicts() {
    return this.inner.conflicts;
  }
  get truncated() {
    return this.inner.truncated;
  }
  setService(service: ObjectKey, plan: ServicePlan | null): void {
    if (this.failSet.delete(service)) throw new Error(`injected failure for ${service}`);
    this.inner.setService(service, plan);
  }
  commit(): CommitStats {
    if (this.failCommits > 0) {
      this.failCommits--;
      throw new Error('injected commit failure');
    }
    return this.inner.commit();
  }
  flush(): void {
    this.inner.flush();
  }
  expectBackends(n: number): void {
    this.inner.expectBackends(n);
  }
  frontendOwner(frontend: string): ObjectKey | undefined {
    return this.inner.frontendOwner(frontend);
  }
  frontendCount(): number {
    return this.inner.frontendCount();
  }
  backendCount(): number {
    return this.inner.backendCount();
  }
}

/**
 * Map contents with ids left out (and the backend table, listed by id,
 * sorted by address): ids depend on the order of past writes, not on what
 * is programmed.
 */
function programmed(maps: FaultyDataplane['maps']): string {
  const text = formatServices(readServices(maps)).replace(/\b(backend|frontend=) ?\d+/g, '$1#');
  const [frontends, backends] = text.split('backends:\n');
  return `${frontends}backends:\n${backends!.split('\n').filter(Boolean).sort().join('\n')}\n`;
}

function setup(names: string[]) {
  const logs: Array<Record<string, unknown>> = [];
  const store = new ClusterStore(() => undefined);
  const dp = new FaultyDataplane();
  const syncer = new Syncer({ store, reconciler: dp, log: createLogger('warn', (l) => logs.push(JSON.parse(l) as Record<string, unknown>)), ctx: { nodeName: 'n1', nodePortAddrs: [] } });
  const raw = new Map<string, { svc: V1Service; slice: V1EndpointSlice }>();
  const put = (name: string, i: number, gen: number): void => {
    const r = { svc: service(name, `10.96.${gen}.${i + 1}`), slice: slice(name, [`10.244.${gen}.${i + 1}`]) };
    raw.set(name, r);
    store.upsertService(r.svc, 't');
    store.upsertSlice(r.slice, 't');
  };
  names.forEach((n, i) => put(n, i, 0));
  /** The maps a clean sync of every object as it is now writes. */
  const expected = (): string => {
    const s = new ClusterStore(() => undefined);
    for (const r of raw.values()) {
      s.upsertService(r.svc, 't');
      s.upsertSlice(r.slice, 't');
    }
    const clean = new FaultyDataplane();
    new Syncer({ store: s, reconciler: clean, log: createLogger('error', () => undefined), ctx: { nodeName: 'n1', nodePortAddrs: [] } }).sync();
    return programmed(clean.maps);
  };
  return { store, dp, syncer, logs, put, expected };
}

test('setService throwing for one service: the others commit, it keeps its last state, and the next sync programs it', () => {
  const { dp, syncer, logs, put, expected } = setup(['a', 'b', 'c', 'd']);
  syncer.sync();
  assert.fixture(programmed(dp.maps), expected());
  const before = programmed(dp.maps);
  // Every service changes; b's setService throws. c and d come after it in the sync.
  ['a', 'b', 'c', 'd'].forEach((n, i) => put(n, i, 1));
  dp.failSet.add(key('b'));
  const r = syncer.sync();
  assert.equal(r.failed, [key('b')]);
  assert.is(syncer.pending, 1);
  const text = programmed(dp.maps);
  for (const ip of ['10.96.1.1', '10.96.1.3', '10.96.1.4']) assert.ok(text.includes(`${ip}:80/TCP`), `${ip} programmed`);
  assert.ok(text.includes('10.96.0.2:80/TCP') && before.includes('10.96.0.2:80/TCP'), 'b keeps what was programmed before');
  assert.not.ok(text.includes('10.96.1.2:'));
  const err = logs.find((l) => l.object === 'Service default/b');
  assert.ok(err, 'reported naming the service');
  assert.is(err.level, 'error');
  assert.match(String(err.error), /injected failure for default\/b/);
  // The retry: nothing changed in the store, and b is planned again.
  const again = syncer.sync();
  assert.equal(again.failed, []);
  assert.is(again.services, 1);
  assert.is(syncer.pending, 0);
  assert.fixture(programmed(dp.maps), expected());
});

test('a service whose setService always throws does not hold the others back', () => {
  const { dp, syncer, logs, put, expected } = setup(['a', 'b', 'c']);
  const fail = (): void => void dp.failSet.add(key('a'));
  fail();
  syncer.sync();
  for (let gen = 1; gen <= 3; gen++) {
    fail();
    put('c', 2, gen);
    const r = syncer.sync();
    assert.equal(r.failed, [key('a')]);
    assert.ok(programmed(dp.maps).includes(`10.96.${gen}.3:80/TCP`), `c at generation ${gen}`);
  }
  assert.is(logs.filter((l) => l.object === 'Service default/a').length, 4, 'reported every sync');
  assert.not.ok(programmed(dp.maps).includes('10.96.0.1:'));
  syncer.sync();
  assert.fixture(programmed(dp.maps), expected());
});

test('a commit that throws: the retry plans every service of the failed sync again', () => {
  const { dp, syncer, put, expected } = setup(['a', 'b', 'c']);
  syncer.sync();
  put('b', 1, 1);
  put('c', 2, 1);
  dp.failCommits = 1;
  const e = thrown(() => syncer.sync());
  assert.match(String(e), /injected commit failure/);
  const r = syncer.sync();
  assert.is(r.services, 2, 'both services of the failed sync planned again');
  assert.is(r.programmingMs.length, 2);
  assert.fixture(programmed(dp.maps), expected());
  assert.is(syncer.pending, 0);
});

test('a conflict found in a sync whose commit throws is reported after the retry', () => {
  const { dp, store, syncer, logs } = setup(['a']);
  syncer.sync();
  store.upsertService(service('z', '10.96.0.1'), 't');
  dp.failCommits = 1;
  assert.ok(thrown(() => syncer.sync()));
  syncer.sync();
  const err = logs.find((l) => l.msg === 'frontend already served by another service; skipped');
  assert.ok(err, 'reported');
  assert.is(err.object, 'Service default/z');
});

test('a failed commit after a failed setService: both retried', () => {
  const { dp, syncer, expected } = setup(['a', 'b']);
  dp.failSet.add(key('a'));
  dp.failCommits = 1;
  assert.ok(thrown(() => syncer.sync()));
  const r = syncer.sync();
  assert.fixture(programmed(dp.maps), expected());
  assert.is(r.services, 2);
  assert.equal(r.failed, []);
});

test('a plan that throws (a model the planner cannot read) is reported; the others commit', () => {
  const { dp, store, syncer, logs, expected } = setup(['a', 'b']);
  const good = store.services.get(key('a'))!;
  let reads = 0;
  // A model whose ports throw on the first read: planService throws for a.
  store.services.set(
    key('a'),
    Object.defineProperty({ ...good }, 'ports', {
      get: () => {
        if (reads++ === 0) throw new TypeError('cannot read ports');
        return good.ports;
      },
    }),
  );
  const r = syncer.sync();
  assert.equal(r.failed, [key('a')]);
  assert.ok(logs.some((l) => l.object === 'Service default/a' && String(l.error).includes('cannot read ports')));
  assert.ok(programmed(dp.maps).includes('10.96.0.2:80/TCP'));
  syncer.sync();
  assert.fixture(programmed(dp.maps), expected());
});

test.run();
