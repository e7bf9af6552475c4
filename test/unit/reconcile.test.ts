/**
 * Reconcile semantics on the in-memory twin: write order (make before
 * break), minimal writes, adoption after restart, pruning, and recovery
 * from a failed write.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MapIO, MemoryMap, WriteQueue } from '../../ts/datapath/maps';
import { formatServices, readServices } from '../../ts/datapath/dump';
import { ClusterStore } from '../../ts/model/store';
import { Reconciler } from '../../ts/reconcile/reconciler';
import { Syncer } from '../../ts/runner/sync';
import { createLogger } from '../../ts/util/log';
import { memoryMaps } from './pipeline';
import { service, slice } from './objects';
import * as C from '../../ts/datapath/codecs';

type Op = { map: string; op: 'upsert' | 'remove'; slot?: number; n: number };

/** Wraps the twin maps and records every call in order. */
function recording(): { maps: ReturnType<typeof memoryMaps>; ops: Op[]; wrapped: Record<'svc' | 'be' | 'revnat' | 'member' | 'cidr', MapIO> } {
  const maps = memoryMaps();
  const ops: Op[] = [];
  const slotsIn = (name: string, keys: Buffer, n: number): Set<number | undefined> => {
    if (name !== 'svc') return new Set([undefined]);
    const out = new Set<number | undefined>();
    for (let i = 0; i < n; i++) out.add(keys[i * m0.keySize + 8]);
    return out;
  };
  const m0 = maps.svc;
  const wrap = (name: string, m: MemoryMap): MapIO => ({
    name: m.name,
    keySize: m.keySize,
    valueSize: m.valueSize,
    updateBatch(keys, values, n) {
      for (const s of slotsIn(name, keys, n)) ops.push({ map: name, op: 'upsert', ...(s === undefined ? {} : { slot: s }), n });
      m.updateBatch(keys, values, n);
    },
    removeBatch(keys, n) {
      for (const s of slotsIn(name, keys, n)) ops.push({ map: name, op: 'remove', ...(s === undefined ? {} : { slot: s }), n });
      m.removeBatch(keys, n);
    },
    upsert: (e) => m.upsert(e),
    remove: (k) => m.remove(k),
    dump: () => m.dump(),
    dumpPacked: () => m.dumpPacked(),
    lookup: (k) => m.lookup(k),
  });
  return { maps, ops, wrapped: { svc: wrap('svc', maps.svc), be: wrap('be', maps.be), revnat: wrap('revnat', maps.revnat), member: wrap('member', maps.member), cidr: wrap('cidr', maps.cidr) } };
}

function setup(maps: Record<'svc' | 'be' | 'revnat' | 'member' | 'cidr', MapIO>, writes?: WriteQueue) {
  const log = createLogger('error', () => undefined);
  const store = new ClusterStore(() => undefined);
  const reconciler = new Reconciler(maps, writes);
  reconciler.adopt();
  const syncer = new Syncer({ store, reconciler, log, ctx: { nodeName: 'n1', nodePortAddrs: [] } });
  return { store, reconciler, syncer };
}

test('growing a service writes backend, then slot, then the count', () => {
  const r = recording();
  const { store, syncer } = setup(r.wrapped);
  store.upsertService(service('web', '10.96.0.10'), 't');
  store.upsertSlice(slice('web', ['10.244.1.10']), 't');
  syncer.sync();
  r.ops.length = 0;
  store.upsertSlice(slice('web', ['10.244.1.10', '10.244.1.11']), 't');
  syncer.sync();
  assert.equal(
    r.ops.map((o) => `${o.op} ${o.map}${o.slot !== undefined ? ` slot${o.slot}` : ''}`),
    ['upsert be', 'upsert member', 'upsert svc slot2', 'upsert svc slot0'],
  );
});

test('shrinking lowers the count before deleting the slot, and the backend goes last', () => {
  const r = recording();
  const { store, syncer } = setup(r.wrapped);
  store.upsertService(service('web', '10.96.0.10'), 't');
  store.upsertSlice(slice('web', ['10.244.1.10', '10.244.1.11', '10.244.1.12']), 't');
  syncer.sync();
  r.ops.length = 0;
  // Remove the endpoint in slot 1: the last slot's backend moves into it.
  store.upsertSlice(slice('web', ['10.244.1.11', '10.244.1.12']), 't');
  syncer.sync();
  assert.equal(
    r.ops.map((o) => `${o.op} ${o.map}${o.slot !== undefined ? ` slot${o.slot}` : ''}`),
    ['upsert svc slot1', 'upsert svc slot0', 'remove svc slot3', 'remove member', 'remove be'],
  );
  const text = formatServices(readServices(r.maps));
  assert.match(text, /#1 backend 3 10\.244\.1\.12/);
  assert.match(text, /#2 backend 2 10\.244\.1\.11/);
});

test('one endpoint change among 1000 services costs a handful of map writes', () => {
  const maps = memoryMaps();
  const { store, syncer } = setup(maps);
  for (let i = 0; i < 1000; i++) {
    store.upsertService(service(`s${i}`, `10.96.${i >> 8}.${i & 255}`), 't');
    store.upsertSlice(slice(`s${i}`, [`10.244.${i >> 8}.${i & 255}`, `10.245.${i >> 8}.${i & 255}`]), 't');
  }
  syncer.sync();
  const before = Object.values(maps).reduce((n, m) => n + m.writes, 0);
  store.upsertSlice(slice('s500', ['10.244.1.244', '10.245.1.244', '10.246.1.244']), 't');
  const res = syncer.sync();
  const writes = Object.values(maps).reduce((n, m) => n + m.writes, 0) - before;
  assert.is(res.services, 1);
  assert.is(writes, 4, 'backend + membership + slot + master');
});

test('a restarted agent adopts pinned state: no writes, same ids and slots', () => {
  const maps = memoryMaps();
  const first = setup(maps);
  first.store.upsertService(service('web', '10.96.0.10'), 't');
  first.store.upsertService(service('api', '10.96.0.11'), 't');
  first.store.upsertSlice(slice('web', ['10.244.1.12', '10.244.1.10', '10.244.1.11']), 't');
  first.store.upsertSlice(slice('api', ['10.244.1.20']), 't');
  first.syncer.sync();
  // Shuffle slots the way a history of changes would, then "restart".
  first.store.upsertSlice(slice('web', ['10.244.1.11', '10.244.1.12']), 't');
  first.syncer.sync();
  first.store.upsertSlice(slice('web', ['10.244.1.11', '10.244.1.12', '10.244.1.10']), 't');
  first.syncer.sync();
  const before = formatServices(readServices(maps));
  const writesBefore = Object.values(maps).reduce((n, m) => n + m.writes, 0);

  const second = setup(maps);
  second.store.upsertService(service('web', '10.96.0.10'), 't');
  second.store.upsertService(service('api', '10.96.0.11'), 't');
  second.store.upsertSlice(slice('web', ['10.244.1.10', '10.244.1.11', '10.244.1.12']), 't');
  second.store.upsertSlice(slice('api', ['10.244.1.20']), 't');
  second.syncer.sync();
  assert.is(
    Object.values(maps).reduce((n, m) => n + m.writes, 0),
    writesBefore,
    'no map writes',
  );
  assert.fixture(formatServices(readServices(maps)), before);
});

test('the first sync after restart prunes services that vanished while the agent was down', () => {
  const maps = memoryMaps();
  const first = setup(maps);
  first.store.upsertService(service('web', '10.96.0.10'), 't');
  first.store.upsertService(service('gone', '10.96.0.99'), 't');
  first.store.upsertSlice(slice('web', ['10.244.1.10']), 't');
  first.store.upsertSlice(slice('gone', ['10.244.1.99']), 't');
  first.syncer.sync();

  const second = setup(maps);
  second.store.upsertService(service('web', '10.96.0.10'), 't');
  second.store.upsertSlice(slice('web', ['10.244.1.10']), 't');
  second.syncer.sync();
  const text = formatServices(readServices(maps));
  assert.not.match(text, /10\.96\.0\.99|10\.244\.1\.99/);
  assert.match(text, /10\.96\.0\.10:80\/TCP .* 1 backend/);
  assert.is(maps.revnat.entries.size, 1);
});

/**
 * web (two endpoints) synced through a service map whose write lands one
 * entry and then fails: the sync threw, and the map holds that one slot.
 */
function halfWritten(maps: ReturnType<typeof memoryMaps>): ReturnType<typeof setup> {
  let failNext = false;
  const flaky: MapIO = {
    ...maps.svc,
    name: maps.svc.name,
    keySize: maps.svc.keySize,
    valueSize: maps.svc.valueSize,
    updateBatch(keys, values, n) {
      if (failNext) {
        failNext = false;
        maps.svc.updateBatch(keys, values, 1); // partial write, then failure
        throw new Error('ENOMEM');
      }
      maps.svc.updateBatch(keys, values, n);
    },
    removeBatch: (k, n) => maps.svc.removeBatch(k, n),
    upsert: (e) => maps.svc.upsert(e),
    remove: (k) => maps.svc.remove(k),
    dump: () => maps.svc.dump(),
    dumpPacked: () => maps.svc.dumpPacked(),
    lookup: (k) => maps.svc.lookup(k),
  };
  const ctx = setup({ ...maps, svc: flaky });
  ctx.store.upsertService(service('web', '10.96.0.10'), 't');
  ctx.store.upsertSlice(slice('web', ['10.244.1.10', '10.244.1.11']), 't');
  failNext = true;
  assert.throws(() => ctx.syncer.sync(), /ENOMEM/);
  return ctx;
}

test('a failed write is retried and converges; nothing half-applied stays behind', () => {
  const maps = memoryMaps();
  const { syncer } = halfWritten(maps);
  syncer.sync();
  assert.match(formatServices(readServices(maps)), /10\.96\.0\.10:80\/TCP .* 2 backends\n {2}#1 backend 1 10\.244\.1\.10:8080\/TCP\n {2}#2 backend 2/);
});

test('a service removed after a half-applied write: the retry removes what landed of it', () => {
  const maps = memoryMaps();
  const { store, syncer } = halfWritten(maps);
  assert.is(maps.svc.entries.size, 1, 'one slot landed');
  store.deleteService('default/web' as never);
  syncer.sync();
  assert.is(maps.svc.entries.size, 0, 'the slot that landed is gone');
  assert.is(maps.be.entries.size, 0);
  assert.is(maps.revnat.entries.size, 0);
});

test('removing a service removes every entry it owned, keeping shared backends', () => {
  const maps = memoryMaps();
  const { store, syncer } = setup(maps);
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertService(service('b', '10.96.0.2'), 't');
  store.upsertSlice(slice('a', ['10.244.1.10']), 't');
  store.upsertSlice(slice('b', ['10.244.1.10']), 't');
  syncer.sync();
  assert.is(maps.be.entries.size, 1, 'one shared backend');
  store.deleteService(store.services.get('default/a' as never)!.key);
  syncer.sync();
  assert.is(maps.be.entries.size, 1);
  assert.is(maps.svc.entries.size, 2, 'b: master + one slot');
  store.deleteService(store.services.get('default/b' as never)!.key);
  syncer.sync();
  assert.is(maps.be.entries.size + maps.svc.entries.size + maps.revnat.entries.size, 0);
});

test('two services claiming one frontend: the first keeps it, the second is reported', () => {
  const maps = memoryMaps();
  const logs: string[] = [];
  const store = new ClusterStore(() => undefined);
  const reconciler = new Reconciler(maps);
  reconciler.adopt();
  const syncer = new Syncer({ store, reconciler, log: createLogger('warn', (l) => logs.push(l)), ctx: { nodeName: 'n1', nodePortAddrs: [] } });
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertService(service('b', '10.96.0.1'), 't');
  store.upsertSlice(slice('a', ['10.244.1.10']), 't');
  store.upsertSlice(slice('b', ['10.244.1.20']), 't');
  syncer.sync();
  assert.match(formatServices(readServices(maps)), /#1 backend \d+ 10\.244\.1\.10/);
  assert.ok(logs.some((l) => l.includes('"object":"Service default/b"') && l.includes('10.96.0.1:80/TCP')));
});

test('a frontend handed from one service to another in one sync stays programmed', () => {
  const maps = memoryMaps();
  const { store, syncer } = setup(maps);
  store.upsertService(service('a', '10.96.0.1'), 't');
  store.upsertSlice(slice('a', ['10.244.1.10']), 't');
  syncer.sync();
  // In one sync: a goes away and b takes its address (a's delete of the
  // master key must not win over b's write of it).
  store.deleteService(store.services.get('default/a' as never)!.key);
  store.upsertService(service('b', '10.96.0.1'), 't');
  store.upsertSlice(slice('b', ['10.244.1.20']), 't');
  syncer.sync();
  assert.match(formatServices(readServices(maps)), /10\.96\.0\.1:80\/TCP .* 1 backend\n {2}#1 backend \d+ 10\.244\.1\.20/);
  assert.is(maps.svc.entries.size, 2);
});

test('a service that lost a frontend takes it over when the owner lets go', () => {
  const maps = memoryMaps();
  const { store, syncer } = setup(maps);
  store.upsertService(service('z-owner', '10.96.0.1'), 't');
  store.upsertSlice(slice('z-owner', ['10.244.1.10']), 't');
  syncer.sync();
  store.upsertService(service('b-loser', '10.96.0.1'), 't');
  store.upsertSlice(slice('b-loser', ['10.244.1.20']), 't');
  syncer.sync();
  assert.match(formatServices(readServices(maps)), /#1 backend \d+ 10\.244\.1\.10/);
  // The owner moves to another address; the loser is not touched and still
  // gets the frontend in the same sync.
  store.upsertService(service('z-owner', '10.96.0.2'), 't');
  syncer.sync();
  const text = formatServices(readServices(maps));
  assert.match(text, /10\.96\.0\.1:80\/TCP .* 1 backend\n {2}#1 backend \d+ 10\.244\.1\.20/);
  assert.match(text, /10\.96\.0\.2:80\/TCP .* 1 backend\n {2}#1 backend \d+ 10\.244\.1\.10/);
  // And when an owner is deleted outright.
  store.upsertService(service('c-loser', '10.96.0.2'), 't');
  store.upsertSlice(slice('c-loser', ['10.244.1.30']), 't');
  syncer.sync();
  store.deleteService(store.services.get('default/z-owner' as never)!.key);
  syncer.sync();
  assert.match(formatServices(readServices(maps)), /10\.96\.0\.2:80\/TCP .* 1 backend\n {2}#1 backend \d+ 10\.244\.1\.30/);
});

test('a slice whose Service does not exist is reported once, and again if the Service goes away later', () => {
  const logs: string[] = [];
  const store = new ClusterStore(() => undefined);
  const reconciler = new Reconciler(memoryMaps());
  reconciler.adopt();
  const syncer = new Syncer({ store, reconciler, log: createLogger('warn', (l) => logs.push(l)), ctx: { nodeName: 'n1', nodePortAddrs: [] } });
  const orphanWarnings = (): number => logs.filter((l) => l.includes('does not exist') && l.includes('EndpointSlice default/web-1')).length;
  store.upsertSlice(slice('web', ['10.244.1.10']), 't');
  syncer.sync();
  assert.is(orphanWarnings(), 1);
  store.upsertService(service('other', '10.96.0.2'), 't');
  syncer.sync();
  assert.is(orphanWarnings(), 1, 'not repeated by unrelated syncs');
  store.upsertService(service('web', '10.96.0.1'), 't');
  syncer.sync();
  store.deleteService(store.services.get('default/web' as never)!.key);
  syncer.sync();
  assert.is(orphanWarnings(), 2, 'reported again once the Service is gone again');
});

test('source ranges and cluster CIDRs reach the cidr map, before the master that uses them', () => {
  const r = recording();
  const { store, reconciler, syncer } = setup(r.wrapped);
  reconciler.setClusterCidrs([{ text: '10.244.0.0/16', base: '10.244.0.0' as never, bits: 16 }]);
  store.upsertService(
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'lb', namespace: 'default' },
      spec: { type: 'LoadBalancer', clusterIP: '10.96.0.5', loadBalancerSourceRanges: ['192.168.1.0/24'], ports: [{ port: 80, nodePort: 30080 }] },
      status: { loadBalancer: { ingress: [{ ip: '203.0.113.1' }] } },
    },
    't',
  );
  syncer.sync();
  const keys = [...r.maps.cidr.entries.keys()].map((k) => C.cidrKey.decode(Buffer.from(k, 'latin1')));
  assert.equal(keys.map((k) => `${k.owner}:${k.addr}/${k.prefixlen - 32}`).sort(), ['0:10.244.0.0/16', `${keys.find((k) => k.owner !== 0)!.owner}:192.168.1.0/24`]);
  const order = r.ops.map((o) => `${o.map}${o.slot !== undefined ? o.slot : ''}`);
  assert.ok(order.indexOf('cidr') < order.indexOf('svc0'), order.join(' '));
});

test('after a commit every map holds exactly what is desired', () => {
  const maps = memoryMaps();
  const { store, reconciler, syncer } = setup(maps);
  reconciler.setClusterCidrs([{ text: '10.244.0.0/16', base: '10.244.0.0' as never, bits: 16 }]);
  store.upsertService(service('web', '10.96.0.10'), 't');
  store.upsertSlice(slice('web', ['10.244.1.10']), 't');
  syncer.sync();
  const sizes = reconciler.sizes();
  for (const [name, m] of Object.entries(maps)) assert.is(m.entries.size, sizes[name as keyof typeof sizes], name);
});

/**
 * The kernel writer thread's twin: batches are held, by reference as the
 * thread holds them, and written only at drain(), which can be made to fail
 * after the first batch. A reconciler that changed a buffer after handing
 * it over would write wrong bytes here.
 */
class HeldWrites implements WriteQueue {
  held: Array<() => void> = [];
  failNextDrain = false;
  update(map: MapIO, keys: Buffer, values: Buffer, count: number): void {
    this.held.push(() => map.updateBatch(keys, values, count));
  }
  remove(map: MapIO, keys: Buffer, count: number): void {
    this.held.push(() => map.removeBatch(keys, count));
  }
  drain(): void {
    const held = this.held;
    this.held = [];
    // A write can fail only where there is one.
    if (this.failNextDrain && held.length > 0) {
      this.failNextDrain = false;
      held[0]?.();
      throw new Error('ENOSPC');
    }
    for (const write of held) write();
  }
}

/** n services with two endpoints each; neighbours share one backend, so shared backends span the flushed parts. */
function fill(store: ClusterStore, n: number, gen = 0): void {
  for (let i = 0; i < n; i++) {
    store.upsertService(service(`s${i}`, `10.96.${i >> 8}.${i & 255}`), 't');
    store.upsertSlice(slice(`s${i}`, [`10.244.${i >> 8}.${i & 255}`, `10.244.${(i + 1) >> 8}.${(i + 1) & 255}`, ...(gen ? [`10.250.${gen}.${i & 255}`] : [])]), 't');
  }
}

/** What the maps hold after the same input went through a reconciler that never flushes. */
function unflushed(n: number, gens: number[]): string {
  const maps = memoryMaps();
  const { store, reconciler, syncer } = setup(maps);
  reconciler.flush = (): void => undefined;
  for (const g of gens) {
    fill(store, n, g);
    syncer.sync();
  }
  return formatServices(readServices(maps));
}

/** Queued batches at the moment commit() starts: what flush() handed over during planning. */
function heldAtCommit(reconciler: Reconciler, q: HeldWrites): number[] {
  const seen: number[] = [];
  const commit = reconciler.commit.bind(reconciler);
  reconciler.commit = () => {
    seen.push(q.held.length);
    return commit();
  };
  return seen;
}

test('a frontend with more endpoints than slots: 65535 serve, all stay members, and the service is named in a warning', () => {
  const maps = memoryMaps();
  const logs: Array<Record<string, unknown>> = [];
  const store = new ClusterStore(() => undefined);
  const reconciler = new Reconciler(maps);
  reconciler.adopt();
  const syncer = new Syncer({ store, reconciler, log: createLogger('warn', (l) => logs.push(JSON.parse(l) as Record<string, unknown>)), ctx: { nodeName: 'n1', nodePortAddrs: [] } });
  const n = 65540;
  store.upsertService(service('huge', '10.96.9.9'), 'test');
  store.upsertSlice(
    slice(
      'huge',
      Array.from({ length: n }, (_, i) => `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`),
    ),
    'test',
  );
  syncer.sync();
  const svc = readServices(maps).frontends.find((f) => f.addr === '10.96.9.9')!;
  assert.is(svc.backends.length, 65535, 'count');
  assert.ok(
    svc.backends.every((b) => b !== null),
    'every counted slot is written',
  );
  assert.is(maps.svc.entries.size, 1 + 65535, 'no slot beyond the count');
  assert.is(maps.member.entries.size, n);
  const warn = logs.find((l) => String(l.msg).startsWith('frontend has more endpoints'));
  assert.ok(warn, 'warned');
  assert.is(warn.object, 'Service default/huge');
  assert.is(warn.endpoints, n);
});

test('a large first sync on empty maps hands batches over while planning; the commit waits for them', () => {
  const maps = memoryMaps();
  const q = new HeldWrites();
  const { store, reconciler, syncer } = setup(maps, q);
  const seen = heldAtCommit(reconciler, q);
  fill(store, 1300);
  const res = syncer.sync();
  // Two flushes: the second waits for the first's batches before it reuses
  // their buffers (the maps would differ below if it did not), and its own
  // batches are still queued when the commit starts.
  assert.ok(seen[0]! >= 5, `batches queued before the commit: ${seen[0]}`);
  assert.is(q.held.length, 0, 'drained');
  assert.is(formatServices(readServices(maps)), unflushed(1300, [0]));
  assert.is(
    res.upserts,
    Object.values(maps).reduce((n, m) => n + m.entries.size, 0),
    'flushed writes are counted',
  );
});

test('no early writes when services replace earlier versions, or when the kernel held state at start', () => {
  const maps = memoryMaps();
  const q = new HeldWrites();
  const { store, reconciler, syncer } = setup(maps, q);
  const seen = heldAtCommit(reconciler, q);
  fill(store, 1300);
  syncer.sync();
  fill(store, 1300, 1); // every service gains an endpoint: all replaced
  syncer.sync();
  assert.is(seen[1], 0, 'a changed service may drop keys another one takes: all in one commit');
  const expected = unflushed(1300, [0, 1]);
  assert.is(formatServices(readServices(maps)), expected);

  // A restart over those maps compares everything with the kernel at its first commit.
  const again = setup(maps, q);
  const seenAgain = heldAtCommit(again.reconciler, q);
  fill(again.store, 1300, 1);
  again.syncer.sync();
  assert.is(seenAgain[0], 0);
  assert.is(formatServices(readServices(maps)), expected);
});

test('a part that fails to land mid-sync: the same sync compares everything with the kernel and converges', () => {
  const maps = memoryMaps();
  const q = new HeldWrites();
  const { store, syncer } = setup(maps, q);
  fill(store, 1300);
  q.failNextDrain = true; // the second flush finds the first one's writes failed
  syncer.sync();
  assert.is(q.failNextDrain, false, 'a write failed');
  assert.is(formatServices(readServices(maps)), unflushed(1300, [0]));
});

test('a last part that fails makes the commit throw; the retry compares with the kernel and converges', () => {
  const maps = memoryMaps();
  const q = new HeldWrites();
  const { store, reconciler, syncer } = setup(maps, q);
  const commit = reconciler.commit.bind(reconciler);
  reconciler.commit = () => {
    q.failNextDrain = true;
    reconciler.commit = commit;
    return commit();
  };
  fill(store, 1300);
  const expected = unflushed(1300, [0]);
  assert.throws(() => syncer.sync(), /ENOSPC/);
  assert.ok(maps.svc.entries.size > 0, 'the flushed parts landed');
  assert.is.not(formatServices(readServices(maps)), expected, 'the last part did not');
  syncer.sync();
  assert.is(formatServices(readServices(maps)), expected);
});

test.run();
