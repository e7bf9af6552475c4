/**
 * Ids that cannot collide: a restarted agent hands out no rev_nat or
 * backend id that conntrack, affinity or an earlier agent may still hold,
 * and adoption repairs a rev_nat id that two frontends share.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as C from '../../ts/datapath/codecs';
import { MemoryMap, keyString } from '../../ts/datapath/maps';
import { ClusterStore } from '../../ts/model/store';
import { Reconciler } from '../../ts/reconcile/reconciler';
import { Syncer } from '../../ts/runner/sync';
import { createLogger } from '../../ts/util/log';
import { memoryMaps } from './pipeline';
import { putService } from './objects';

type Maps = ReturnType<typeof allMaps>;
function allMaps() {
  return {
    ...memoryMaps(),
    ids: new MemoryMap('weir1_ids', 4, C.ids.size),
    ct: new MemoryMap('weir1_ct', C.ctKey.size, C.ctVal.size),
    aff: new MemoryMap('weir1_aff', C.affKey.size, C.affVal.size),
    skrevnat: new MemoryMap('weir1_skrevnat', C.skKey.size, C.skVal.size),
  };
}

/** An agent on these maps: adopt, then sync the store's objects. */
function agent(maps: Maps) {
  const store = new ClusterStore(() => undefined);
  const reconciler = new Reconciler(maps);
  const report = reconciler.adopt();
  const syncer = new Syncer({ store, reconciler, log: createLogger('error', () => undefined), ctx: { nodeName: 'n1', nodePortAddrs: [] } });
  return { store, reconciler, report, sync: () => syncer.sync() };
}

/** rev_nat id of the master entry of ip:80/TCP, and the backend ids of its slots. */
function ids(maps: Maps, ip: string): { rev: number; backends: number[] } {
  let rev = -1;
  const backends: number[] = [];
  for (const [k, v] of maps.svc.entries) {
    const key = C.svcKey.decode(Buffer.from(k, 'latin1'));
    if (key.addr !== ip) continue;
    const val = C.svcVal.decode(v);
    if (key.slot === 0) rev = val.rev_nat_id;
    else backends.push(val.backend_id);
  }
  return { rev, backends };
}

test('ids still named by conntrack, affinity and socket rev-NAT entries are not handed out again', () => {
  const maps = allMaps();
  maps.ct.upsert([[keyString(C.ctKey.encode({ saddr: '10.244.9.9', daddr: '10.96.0.9', sport: 1, dport: 80, proto: 6 })), C.ctVal.encode({ backend_id: 70, rev_nat_id: 50 })]]);
  maps.aff.upsert([[keyString(C.affKey.encode({ client: '10.244.9.9', rev_nat_id: 60 })), C.affVal.encode({ backend_id: 90 })]]);
  maps.skrevnat.upsert([[keyString(C.skKey.encode({ cookie: 1n, addr: '10.244.9.8', port: 1 })), C.skVal.encode({ addr: '10.96.0.8', port: 80, rev_nat_id: 65 })]]);
  const a = agent(maps);
  putService(a.store, 'a', '10.96.0.1', ['10.244.1.10']);
  a.sync();
  const got = ids(maps, '10.96.0.1');
  assert.ok(got.rev > 65, `rev_nat id ${got.rev}`);
  assert.ok(
    got.backends.every((b) => b > 90),
    `backend ids ${got.backends.join(',')}`,
  );
});

test('a restart does not reuse the ids of services deleted before it (the pinned high-water marks)', () => {
  const maps = allMaps();
  const a = agent(maps);
  for (let i = 1; i <= 5; i++) {
    putService(a.store, `s${i}`, `10.96.0.${i}`, [`10.244.1.${i}`]);
  }
  a.sync();
  const used = [1, 2, 3, 4, 5].map((i) => ids(maps, `10.96.0.${i}`));
  for (let i = 2; i <= 5; i++) a.store.deleteService(a.store.services.get(`default/s${i}` as never)!.key);
  a.sync();
  const b = agent(maps);
  putService(b.store, 's1', '10.96.0.1', ['10.244.1.1']);
  putService(b.store, 'new', '10.96.0.77', ['10.244.1.77']);
  b.sync();
  const fresh = ids(maps, '10.96.0.77');
  assert.ok(!used.some((u) => u.rev === fresh.rev), `rev_nat id ${fresh.rev} was held by a deleted service`);
  assert.ok(!used.some((u) => u.backends.includes(fresh.backends[0]!)), `backend id ${fresh.backends[0]} was held by a deleted service`);
  assert.equal(ids(maps, '10.96.0.1'), used[0], 'a kept service keeps its ids');
});

test('a rev_nat id two frontends share stays with the one its revnat entry names; the other gets a new id', () => {
  const maps = allMaps();
  const a = agent(maps);
  putService(a.store, 'a', '10.96.0.1', ['10.244.1.10']);
  putService(a.store, 'b', '10.96.0.2', ['10.244.1.20']);
  a.sync();
  // What two writers left: b's master names a's rev_nat id.
  const aRev = ids(maps, '10.96.0.1').rev;
  const bRev = ids(maps, '10.96.0.2').rev;
  for (const [k, v] of maps.svc.entries) {
    const key = C.svcKey.decode(Buffer.from(k, 'latin1'));
    if (key.addr === '10.96.0.2' && key.slot === 0) maps.svc.upsert([[k, C.svcVal.encode({ ...C.svcVal.decode(v), rev_nat_id: aRev })]]);
  }
  maps.revnat.remove([keyString(C.u32Key.encode({ value: bRev }))]);

  const b = agent(maps);
  assert.equal(b.report.repaired, [`rev_nat id ${aRev} was held by 10.96.0.1:80/TCP and 10.96.0.2:80/TCP: 10.96.0.2:80/TCP gets a new id`]);
  for (const s of ['a', 'b']) {
    putService(b.store, s, s === 'a' ? '10.96.0.1' : '10.96.0.2', [s === 'a' ? '10.244.1.10' : '10.244.1.20']);
  }
  b.sync();
  const after = { a: ids(maps, '10.96.0.1').rev, b: ids(maps, '10.96.0.2').rev };
  assert.is(after.a, aRev);
  assert.ok(after.b !== aRev && after.b > Math.max(aRev, bRev), `b's new id ${after.b}`);
  const revnat = (id: number): string => {
    const v = maps.revnat.lookup(keyString(C.u32Key.encode({ value: id })));
    return v ? `${C.revnat.decode(v).addr}:${C.revnat.decode(v).port}` : 'missing';
  };
  assert.is(revnat(after.a), '10.96.0.1:80');
  assert.is(revnat(after.b), '10.96.0.2:80');
});

test('a master whose revnat entry is missing is reported and rewritten', () => {
  const maps = allMaps();
  const a = agent(maps);
  putService(a.store, 'a', '10.96.0.1', ['10.244.1.10']);
  a.sync();
  const rev = ids(maps, '10.96.0.1').rev;
  maps.revnat.remove([keyString(C.u32Key.encode({ value: rev }))]);
  const b = agent(maps);
  assert.equal(b.report.repaired, [`10.96.0.1:80/TCP: its revnat entry (id ${rev}) is missing; rewritten`]);
  putService(b.store, 'a', '10.96.0.1', ['10.244.1.10']);
  b.sync();
  assert.ok(maps.revnat.lookup(keyString(C.u32Key.encode({ value: rev }))));
});

test.run();
