/**
 * What kube-proxy's series are made of, from the store to a sync's result:
 * the EndpointSlice trigger time (endpoints.kubernetes.io/last-change-trigger-time)
 * and the programming latency measured from it, the Service and EndpointSlice
 * change counts, and the service ports with a Local policy and no endpoint
 * on this node.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { TRIGGER_TIME_ANNOTATION, parseEndpointSlice } from '../../ts/model/endpoints';
import { ClusterStore } from '../../ts/model/store';
import { ObjectKey } from '../../ts/model/types';
import { Reconciler } from '../../ts/reconcile/reconciler';
import { Syncer } from '../../ts/runner/sync';
import { createLogger } from '../../ts/util/log';
import { memoryMaps } from './pipeline';
import { service, slice } from './objects';

const key = (name: string): ObjectKey => `default/${name}` as ObjectKey;

/** A slice whose trigger annotation is `at` (ms), or none. */
function annotated(svc: string, addrs: string[], at?: number | string): V1EndpointSlice {
  const s = slice(svc, addrs);
  if (at !== undefined) s.metadata!.annotations = { [TRIGGER_TIME_ANNOTATION]: typeof at === 'number' ? new Date(at).toISOString() : at };
  return s;
}

function setup(startedAt = Date.now() - 60_000) {
  const store = new ClusterStore(() => undefined, startedAt);
  const reconciler = new Reconciler(memoryMaps());
  reconciler.adopt();
  const syncer = new Syncer({ store, reconciler, log: createLogger('error', () => undefined), ctx: { nodeName: 'n1', nodePortAddrs: [] } });
  return { store, syncer };
}

test('the trigger annotation is kept on the slice as ms; a slice without one (or with one that does not parse) has none and is still valid', () => {
  const with_ = parseEndpointSlice(annotated('a', ['10.244.0.1'], '2026-12-04T18:00:00.123456789Z'));
  assert.is(with_.ok, true);
  assert.is(with_.ok === true && with_.value.triggerTime, Date.UTC(2026, 11, 4, 18, 0, 0, 123));
  for (const raw of [annotated('a', ['10.244.0.1']), annotated('a', ['10.244.0.1'], 'yesterday')]) {
    const r = parseEndpointSlice(raw);
    assert.is(r.ok, true);
    assert.not.ok(r.ok === true && 'triggerTime' in r.value);
  }
});

test('a slice change with a trigger time is measured from it when programmed; one without is not measured', () => {
  const { store, syncer } = setup();
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertService(service('b', '10.96.0.2'), 't');
  const triggered = Date.now() - 3000;
  store.upsertSlice(annotated('a', ['10.244.0.1'], triggered), 't');
  store.upsertSlice(annotated('b', ['10.244.0.2']), 't');
  const r = syncer.sync();
  assert.is(r.services, 2);
  assert.is(r.triggerLatenciesMs.length, 1, 'only the annotated slice');
  const ms = r.triggerLatenciesMs[0]!;
  assert.ok(ms >= 3000 && ms < 3000 + 500, String(ms));
  // Measured once: a later sync of the same service (its Service changed) measures nothing.
  store.upsertService(service('a', '10.96.0.9'), 't');
  assert.equal(syncer.sync().triggerLatenciesMs, []);
});

test("trigger times from before the store was made are not measured (a starting agent would report every slice's age)", () => {
  const { store, syncer } = setup(Date.now() - 1000);
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertSlice(annotated('a', ['10.244.0.1'], Date.now() - 5000), 't');
  assert.equal(syncer.sync().triggerLatenciesMs, []);
});

test('two changes to one service before a sync: both measured; a deleted slice drops what its service had pending', () => {
  const { store, syncer } = setup();
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertSlice(annotated('a', ['10.244.0.1'], Date.now() - 4000), 't');
  store.upsertSlice(annotated('a', ['10.244.0.1', '10.244.0.2'], Date.now() - 2000), 't');
  const r = syncer.sync();
  assert.is(r.triggerLatenciesMs.length, 2);
  assert.ok(r.triggerLatenciesMs[0]! >= 4000 && r.triggerLatenciesMs[1]! >= 2000 && r.triggerLatenciesMs[1]! < 4000);
  store.upsertSlice(annotated('a', ['10.244.0.3'], Date.now() - 1000), 't');
  store.deleteSlice(key('a-1'));
  assert.equal(syncer.sync().triggerLatenciesMs, []);
});

test('a slice delivered again with only a new trigger time changes nothing and is not measured', () => {
  const { store, syncer } = setup();
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertSlice(annotated('a', ['10.244.0.1'], Date.now() - 100), 't');
  syncer.sync();
  assert.is(store.upsertSlice(annotated('a', ['10.244.0.1'], Date.now() - 50), 't'), false);
  const r = syncer.sync();
  assert.is(r.services, 0);
  assert.equal(r.triggerLatenciesMs, []);
});

test('a service whose sync failed keeps its trigger times: measured when it is programmed, up to then', () => {
  const store = new ClusterStore(() => undefined, Date.now() - 60_000);
  let failFor: string | null = 'default/a';
  const reconciler = new (class extends Reconciler {
    override setService(...args: Parameters<Reconciler['setService']>): void {
      if (args[0] === failFor) {
        failFor = null;
        throw new Error('injected');
      }
      super.setService(...args);
    }
  })(memoryMaps());
  reconciler.adopt();
  const syncer = new Syncer({ store, reconciler, log: createLogger('error', () => undefined), ctx: { nodeName: 'n1', nodePortAddrs: [] } });
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertSlice(annotated('a', ['10.244.0.1'], Date.now() - 2000), 't');
  const first = syncer.sync();
  assert.equal(first.failed, [key('a')]);
  assert.equal(first.triggerLatenciesMs, []);
  const retry = syncer.sync();
  assert.equal(retry.failed, []);
  assert.is(retry.triggerLatenciesMs.length, 1);
  assert.ok(retry.triggerLatenciesMs[0]! >= 2000);
});

test("change counts: every event in the totals, the changing ones pending until a sync takes them (kube-proxy's *_changes_total / *_pending)", () => {
  const { store, syncer } = setup();
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertService(service('a', '10.96.0.1'), 't'); // unchanged: counted, not pending
  store.upsertSlice(slice('a', ['10.244.0.1']), 't');
  store.upsertSlice(slice('a', ['10.244.0.1', '10.244.0.2']), 't');
  store.deleteSlice(key('nothing')); // unknown: counted, not pending
  assert.equal(store.changes, { services: 2, endpoints: 3, servicesPending: 1, endpointsPending: 2 });
  syncer.sync();
  assert.equal(store.changes, { services: 2, endpoints: 3, servicesPending: 0, endpointsPending: 0 });
  store.deleteService(key('a'));
  assert.equal(store.changes, { services: 3, endpoints: 3, servicesPending: 1, endpointsPending: 0 });
});

/** A service with a Local policy: internal (ClusterIP) or external (an external IP), one or two ports. */
function localService(name: string, ip: string, policy: 'internal' | 'external', ports = 1): V1Service {
  const svc = service(name, ip);
  svc.spec!.ports = Array.from({ length: ports }, (_, i) => ({ name: `p${i}`, port: 80 + i }));
  if (policy === 'internal') svc.spec!.internalTrafficPolicy = 'Local';
  else Object.assign(svc.spec!, { externalIPs: ['192.0.2.1'], externalTrafficPolicy: 'Local' });
  return svc;
}

function nodeSlice(svc: string, nodes: string[], ports = 1): V1EndpointSlice {
  const s = slice(
    svc,
    nodes.map((_, i) => `10.244.9.${i + 1}`),
  );
  s.ports = Array.from({ length: ports }, (_, i) => ({ name: `p${i}`, port: 8080 + i }));
  s.endpoints.forEach((e, i) => (e.nodeName = nodes[i]));
  return s;
}

test('service ports with a Local policy whose endpoints are all elsewhere, by policy; none when there are no endpoints at all, or a local one', () => {
  const { store, syncer } = setup();
  store.upsertService(localService('i', '10.96.0.1', 'internal', 2), 't');
  store.upsertSlice(nodeSlice('i', ['n2'], 2), 't');
  store.upsertService(localService('e', '10.96.0.2', 'external'), 't');
  store.upsertSlice(nodeSlice('e', ['n2', 'n3']), 't');
  store.upsertService(localService('none', '10.96.0.3', 'internal'), 't'); // no endpoints at all: REJECT, not counted
  store.upsertService(localService('here', '10.96.0.4', 'internal'), 't');
  store.upsertSlice(nodeSlice('here', ['n1']), 't');
  syncer.sync();
  assert.equal(syncer.noLocalEndpoints, { internal: 2, external: 1 });
  // A local endpoint arrives for e; i goes away.
  store.upsertSlice(nodeSlice('e', ['n2', 'n1']), 't');
  store.deleteService(key('i'));
  syncer.sync();
  assert.equal(syncer.noLocalEndpoints, { internal: 0, external: 0 });
});

test.run();
