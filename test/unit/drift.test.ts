/**
 * The drift scan: digests of the maps against digests of the desired
 * state, in slices. Clean after any sync; a changed, added or removed entry
 * names its map; syncs between slices do not confuse it.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import * as C from '../../ts/datapath/codecs';
import { keyString } from '../../ts/datapath/maps';
import { ClusterStore } from '../../ts/model/store';
import { Reconciler } from '../../ts/reconcile/reconciler';
import { Syncer } from '../../ts/runner/sync';
import { createLogger } from '../../ts/util/log';
import { memoryMaps, memoryPortsMap } from './pipeline';

function world(services: number, dualStack = false) {
  const maps = { ...memoryMaps(), ports: memoryPortsMap() };
  const store = new ClusterStore(() => undefined);
  const reconciler = new Reconciler(maps);
  reconciler.adopt();
  reconciler.setClusterCidrs([{ base: '10.244.0.0', bits: 16 } as never]);
  const syncer = new Syncer({ store, reconciler, log: createLogger('error', () => undefined), ctx: { nodeName: 'n1', nodePortAddrs: [] } });
  for (let i = 0; i < services; i++) {
    const svc: V1Service = {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: `s${i}`, namespace: 'd' },
      spec: {
        type: 'LoadBalancer',
        clusterIP: `10.96.1.${i + 1}`,
        ...(dualStack ? { clusterIPs: [`10.96.1.${i + 1}`, `fd00:96::${i + 1}`] } : {}),
        ports: [{ port: 80, nodePort: 30000 + i }],
        loadBalancerSourceRanges: ['10.0.0.0/8', ...(dualStack ? ['fd00:10::/32'] : [])],
      },
      status: { loadBalancer: { ingress: [{ ip: `172.30.0.${i + 1}` }, ...(dualStack ? [{ ip: `2001:db8::${i + 1}` }] : [])] } },
    };
    const slice: V1EndpointSlice = {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `s${i}-1`, namespace: 'd', labels: { 'kubernetes.io/service-name': `s${i}` } },
      addressType: 'IPv4',
      ports: [{ port: 8080 }],
      endpoints: [{ addresses: [`10.244.1.${i + 1}`] }, { addresses: [`10.244.2.${i + 1}`] }],
    };
    store.upsertService(svc, 't');
    store.upsertSlice(slice, 't');
    if (dualStack) {
      store.upsertSlice(
        { ...slice, metadata: { ...slice.metadata, name: `s${i}-6` }, addressType: 'IPv6', endpoints: [{ addresses: [`fd00:244::${i + 1}`] }, { addresses: [`fd00:244::1:${i + 1}`] }] },
        't',
      );
    }
  }
  syncer.sync();
  return { maps, store, reconciler, sync: () => syncer.sync() };
}

/** Run a scan to its end (no sync between slices). */
function scan(r: Reconciler): string[] | null {
  const it = r.driftScan(3);
  for (;;) {
    const s = it.next();
    if (s.done) return s.value;
  }
}

test('a hand edit of the port filter is found and repaired: a cleared bit would hide a service from the programs', () => {
  const w = world(3);
  const word = (k: number): bigint => w.maps.ports.lookup(keyString(C.u32Key.encode({ value: k })))!.readBigUInt64LE(0);
  const before = word(80 >> 6);
  assert.ok((before >> 16n) & 1n, 'port 80 marked');
  w.maps.ports.upsert([[keyString(C.u32Key.encode({ value: 80 >> 6 })), Buffer.alloc(8)]]);
  assert.equal(scan(w.reconciler), ['weir1_ports']);
  assert.equal(w.reconciler.repairDrift(), { weir1_ports: 1 });
  assert.is(word(80 >> 6), before);
  assert.equal(scan(w.reconciler), []);
});

test('clean after a sync; each kind of edit names its map; the repair makes it clean again', () => {
  const w = world(10);
  assert.equal(scan(w.reconciler), []);
  const [bk, bv] = [...w.maps.be.entries][0]!;
  w.maps.be.upsert([[bk, C.backend.encode({ ...C.backend.decode(bv), port: 1 })]]); // changed
  w.maps.member.upsert([[keyString(C.memberKey.encode({ rev_nat_id: 900, backend_id: 1 })), C.u32Key.encode({ value: 1 })]]); // added
  const [rk] = [...w.maps.revnat.entries][0]!;
  w.maps.revnat.remove([rk]); // removed
  assert.equal(scan(w.reconciler), ['weir1_revnat', 'weir1_member', 'weir1_be']);
  const repairs = w.reconciler.repairDrift();
  assert.equal(repairs, { weir1_revnat: 1, weir1_member: 1, weir1_be: 1 });
  assert.equal(scan(w.reconciler), []);
});

test('a value that differs in one bit is found in every map', () => {
  for (const m of ['svc', 'be', 'revnat', 'member', 'cidr'] as const) {
    const w = world(3);
    const [k, v] = [...w.maps[m].entries].at(-1)!;
    const flipped = Buffer.from(v);
    flipped[flipped.length - 1]! ^= 1;
    w.maps[m].upsert([[k, flipped]]);
    assert.equal(scan(w.reconciler), [w.maps[m].name], m);
  }
});

test('the IPv6 maps are scanned too: an edit to any of them names it, and the repair makes it clean', () => {
  for (const m of ['svc6', 'be6', 'revnat6', 'cidr6', 'member'] as const) {
    const w = world(3, true);
    assert.equal(scan(w.reconciler), [], 'clean after a dual-stack sync');
    const [k, v] = [...w.maps[m].entries].at(-1)!;
    const flipped = Buffer.from(v);
    flipped[flipped.length - 1]! ^= 1;
    w.maps[m].upsert([[k, flipped]]);
    assert.equal(scan(w.reconciler), [w.maps[m].name], m);
    w.reconciler.repairDrift();
    assert.equal(scan(w.reconciler), [], `${m} repaired`);
  }
});

test('syncs between the steps of a walk do not make the two sides disagree', () => {
  const w = world(10);
  // Two entries per step: every map is walked over many steps, with a sync between each two.
  const it = w.reconciler.driftScan(3, 2);
  let s = it.next();
  for (let step = 0; !s.done; step++) {
    // A service goes, or its endpoints change, between every two steps.
    const svc = w.store.services.get(`d/s${step % 10}` as never);
    // (One service always stays, for the edit below: the IPv6 twins make the walk longer.)
    if (svc && step % 3 === 0 && w.store.services.size > 1) w.store.deleteService(svc.key);
    else
      w.store.upsertSlice(
        {
          apiVersion: 'discovery.k8s.io/v1',
          kind: 'EndpointSlice',
          metadata: { name: `s${step % 10}-1`, namespace: 'd', labels: { 'kubernetes.io/service-name': `s${step % 10}` } },
          addressType: 'IPv4',
          ports: [{ port: 8080 }],
          endpoints: [{ addresses: [`10.244.3.${step % 250}`] }],
        },
        't',
      );
    w.sync();
    s = it.next();
  }
  assert.equal(s.value, []);
  // And an edit by someone else during such a walk is still found (by the next scan at the latest).
  const it2 = w.reconciler.driftScan(3, 2);
  it2.next();
  const [rk] = [...w.maps.revnat.entries][0]!;
  w.maps.revnat.remove([rk]);
  let s2 = it2.next();
  while (!s2.done) s2 = it2.next();
  const again = scan(w.reconciler);
  assert.ok(s2.value?.includes('weir1_revnat') || again?.includes('weir1_revnat'), JSON.stringify([s2.value, again]));
});

test('nothing is concluded while a failed write awaits its retry', () => {
  const w = world(3);
  const it = w.reconciler.driftScan(3);
  it.next();
  (w.reconciler as unknown as { resync: boolean }).resync = true;
  let s = it.next();
  while (!s.done) s = it.next();
  assert.is(s.value, null);
});

test.run();
