/**
 * The reconciler's parts, each on its own: the builder (plan -> record, ids
 * from the allocators, slot positions kept), the differ (record against
 * record) and the writes (make-before-break order, a full map's deletes
 * first).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import * as C from '../../ts/datapath/codecs';
import { MapIO, MemoryMap, ServiceMaps } from '../../ts/datapath/maps';
import { ClusterStore } from '../../ts/model/store';
import { ObjectKey } from '../../ts/model/types';
import { ServicePlan, planService } from '../../ts/plan/plan';
import { BackendTable } from '../../ts/reconcile/backends';
import { RecordBuilder } from '../../ts/reconcile/builder';
import { diffPending } from '../../ts/reconcile/differ';
import { IdTable } from '../../ts/reconcile/ids';
import { S_MASTERS, S_MEMBER, S_SLOTS, SECTIONS } from '../../ts/reconcile/layout';
import { ServiceRecord, entryCount, sectionView } from '../../ts/reconcile/record';
import { IMMEDIATE_WRITES } from '../../ts/datapath/maps';
import { Writes } from '../../ts/reconcile/writes';
import type { FrontendConflict, TruncatedFrontend } from '../../ts/reconcile/reconciler';

const KEY = 'default/web' as ObjectKey;

function plan(addrs: string[]): ServicePlan {
  const store = new ClusterStore(() => undefined);
  const svc: V1Service = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'default' }, spec: { clusterIP: '10.96.0.1', ports: [{ port: 80, targetPort: 8080 }] } };
  const slice: V1EndpointSlice = {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'web-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    ports: [{ port: 8080 }],
    endpoints: addrs.map((a) => ({ addresses: [a] })),
  };
  store.upsertService(svc, 't');
  store.upsertSlice(slice, 't');
  return planService(store.services.get(KEY)!, store.slicesOf(KEY), { nodeName: 'n1', nodePortAddrs: [] });
}

function builder() {
  const be = new BackendTable();
  const conflicts: FrontendConflict[] = [];
  const truncated: TruncatedFrontend[] = [];
  const b = new RecordBuilder({ be, frontendIds: new IdTable(), owners: new Map(), conflicts, truncated, fullDue: () => false, kernelSvc: () => null });
  return { b, be };
}

/** Backend addresses by slot, from a record's slot section. */
function slots(r: ServiceRecord, be: BackendTable): string[] {
  const v = sectionView(r, SECTIONS, S_SLOTS);
  const out: string[] = [];
  for (let i = 0; i < v.count; i++) {
    const slot = v.buf.readUInt16LE(v.keyOff + i * v.keySize + C.svcKey.at.slot);
    const id = v.buf.readUInt32LE(v.valOff + i * v.valueSize);
    const row = [...be.rows()].find((r2) => be.idOf(r2) === id)!;
    const a = be.addr[row]!;
    out[slot - 1] = `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
  }
  return out;
}

test('builder: one master, a slot and a member per endpoint; a removed endpoint frees its slot and only the last slot moves', () => {
  const { b, be } = builder();
  const r1 = b.build(KEY, plan(['10.244.1.1', '10.244.1.2', '10.244.1.3', '10.244.1.4']), null);
  assert.is(entryCount(r1, S_MASTERS), 1);
  assert.is(entryCount(r1, S_SLOTS), 4);
  assert.is(entryCount(r1, S_MEMBER), 4);
  const before = slots(r1, be);
  const r2 = b.build(KEY, plan(['10.244.1.1', '10.244.1.3', '10.244.1.4']), r1);
  const after = slots(r2, be);
  // The slot of .2 is taken by the last slot's backend; the others stay put.
  assert.equal(after, [before[0], before[3], before[2]]);
});

test('differ: one endpoint added rewrites its slot, its member and the count, nothing else', () => {
  const { b, be } = builder();
  const r1 = b.build(KEY, plan(['10.244.1.1', '10.244.1.2']), null);
  be.clearPending();
  const r2 = b.build(KEY, plan(['10.244.1.1', '10.244.1.2', '10.244.1.3']), r1);
  const w = new Writes();
  diffPending(w, { pending: new Map([[KEY, r1]]), records: new Map([[KEY, r2]]), be });
  const counts = SECTIONS.map((_, s) => `${w.ups[s]!.count}/${w.dels[s]!.count}`);
  // revnat, member, cidr, slots, masters, then the IPv6 ones (revnat6, cidr6, slots6, masters6)
  assert.equal(counts, ['0/0', '1/0', '0/0', '1/0', '1/0', '0/0', '0/0', '0/0', '0/0']);
  assert.is(w.beUps.count, 1, 'the new backend');
  assert.is(w.beDels.count, 0);
});

test('writes: make before break, and a full map has its deletes first', () => {
  const ops: string[] = [];
  const rec = (name: string, keySize: number, valueSize: number): MapIO => {
    const m = new MemoryMap(name, keySize, valueSize);
    return {
      ...m,
      name,
      keySize,
      valueSize,
      updateBatch: (_k, _v, n) => void ops.push(`${name}+${n}`),
      removeBatch: (_k, n) => void ops.push(`${name}-${n}`),
      upsert: () => undefined,
      remove: () => undefined,
      dump: () => [],
      dumpPacked: () => m.dumpPacked(),
      lookup: () => null,
    };
  };
  const maps: ServiceMaps = {
    svc: rec('svc', C.svcKey.size, C.svcVal.size),
    be: rec('be', 4, C.backend.size),
    revnat: rec('revnat', 4, C.revnat.size),
    member: rec('member', C.memberKey.size, 4),
    cidr: rec('cidr', C.cidrKey.size, 4),
  };
  const fill = (w: Writes, v6 = false): void => {
    for (let s = 0; s < (v6 ? SECTIONS.length : S_MASTERS + 1); s++) {
      w.ups[s]!.push();
      w.dels[s]!.push();
    }
    w.beUps.push();
    w.beDels.push();
    if (!v6) return;
    w.be6Ups.push();
    w.be6Dels.push();
  };
  const w = new Writes();
  fill(w);
  w.submit(maps, IMMEDIATE_WRITES);
  assert.equal(ops.splice(0), ['be+1', 'revnat+1', 'member+1', 'cidr+1', 'svc+1', 'svc+1', 'svc-1', 'svc-1', 'cidr-1', 'member-1', 'revnat-1', 'be-1']);
  const full = new Writes();
  fill(full);
  full.roomFirst.add('member');
  full.submit(maps, IMMEDIATE_WRITES);
  assert.equal(ops.splice(0), ['member-1', 'be+1', 'revnat+1', 'member+1', 'cidr+1', 'svc+1', 'svc+1', 'svc-1', 'svc-1', 'cidr-1', 'revnat-1', 'be-1']);
  // With the IPv6 twins: backends of both families first, IPv6 entries after the IPv4 ones in the same
  // order (shared members before any IPv6 master), deletes in reverse, backends last.
  const maps6 = { ...maps, svc6: rec('svc6', C.svc6Key.size, C.svcVal.size), be6: rec('be6', 4, C.backend6.size), revnat6: rec('revnat6', 4, C.revnat6.size), cidr6: rec('cidr6', C.cidr6Key.size, 4) };
  const both = new Writes();
  fill(both, true);
  both.submit(maps6, IMMEDIATE_WRITES);
  assert.equal(ops.splice(0), [
    'be+1',
    'be6+1',
    'revnat+1',
    'member+1',
    'cidr+1',
    'svc+1',
    'svc+1',
    'revnat6+1',
    'cidr6+1',
    'svc6+1',
    'svc6+1',
    'svc6-1',
    'svc6-1',
    'cidr6-1',
    'revnat6-1',
    'svc-1',
    'svc-1',
    'cidr-1',
    'member-1',
    'revnat-1',
    'be-1',
    'be6-1',
  ]);
});

test.run();
