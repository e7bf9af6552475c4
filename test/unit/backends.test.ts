/**
 * The backend table against a plain Map keyed by strings, over a seeded
 * random mix of inserts and removals (rows are reused, ids never are): many
 * backends on few addresses and ports.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { BackendId } from '../../ts/reconcile/ids';
import { BackendTable } from '../../ts/reconcile/backends';
import { rng } from './rng';

test('rows and ids follow a reference Map through inserts and removals', () => {
  const t = new BackendTable();
  const ref = new Map<string, { row: number; id: number }>();
  const ids = new Set<number>();
  const rand = rng(7);
  for (let step = 0; step < 60_000; step++) {
    const addr = (0x0af40000 + Math.floor(rand() * 3000)) >>> 0; // 10.244.x.y
    const port = 8080 + Math.floor(rand() * 3);
    const proto = rand() < 0.8 ? 6 : 17;
    const k = `${addr}:${port}/${proto}`;
    const have = ref.get(k);
    if (have && rand() < 0.45) {
      t.remove(have.row);
      ref.delete(k);
      continue;
    }
    const row = t.rowFor(addr, port, proto);
    if (have) {
      assert.is(row, have.row, `${k}: found again at its row`);
      assert.is(t.id[row], have.id, `${k}: keeps its id`);
    } else {
      assert.ok(!ids.has(t.id[row]!), `${k}: a new backend gets an id never used before`);
      ids.add(t.id[row]!);
      ref.set(k, { row, id: t.id[row]! });
    }
  }
  // Every backend still present is found, and nothing else is in use.
  for (const [k, v] of ref) {
    const [addr, rest] = k.split(':');
    const [port, proto] = rest!.split('/');
    assert.is(t.rowFor(Number(addr), Number(port), Number(proto)), v.row, k);
  }
  assert.is(t.rows().length, ref.size);
  assert.ok(ref.size > 1000, `the mix kept many backends (${ref.size})`);
});

test('adopted backends keep their ids, and new ones are numbered after them', () => {
  const t = new BackendTable();
  t.adopt(0x0af40101, 8080, 6, 41 as BackendId, 1, 2);
  const r = t.rowFor(0x0af40101, 8080, 6);
  assert.is(t.id[r], 41);
  assert.is(t.applied[r], 1);
  assert.equal([t.a0[r], t.a1[r]], [1, 2]);
  assert.is(t.id[t.rowFor(0x0af40102, 8080, 6)], 42);
  assert.is(t.id[t.rowFor(0x0af40101, 8080, 17)], 43, 'the protocol is part of the identity');
  assert.is(t.id[t.rowFor(0x0af40101, 8080, 132)], 44, 'SCTP too');
});

test('a pinned backend of a protocol weir does not program is left unclaimed (the full comparison removes it)', () => {
  const t = new BackendTable();
  assert.not.ok(t.adopt(0x0af40101, 8080, 136, 7 as BackendId, 1, 2), 'UDP-Lite (136) is not adopted');
  assert.is(t.rows().length, 0);
  assert.is(t.rowFor(0x0af40101, 8080, 6), 0);
  assert.is(t.id[0], 8, 'its id is not handed out again');
});

test('reserving room keeps every backend at its row with its id and value', () => {
  const t = new BackendTable();
  const rows: number[] = [];
  for (let i = 0; i < 3000; i++) {
    const r = t.rowFor((0x0af40000 + i) >>> 0, 8080, 6);
    t.refs[r] = 1;
    t.v0[r] = i;
    rows.push(r);
  }
  t.reserve(100_000);
  assert.ok(t.id.length >= 100_000, 'columns sized at once');
  for (let i = 0; i < 3000; i++) {
    const r = t.rowFor((0x0af40000 + i) >>> 0, 8080, 6);
    assert.is(r, rows[i]);
    assert.is(t.id[r], i + 1);
    assert.is(t.v0[r], i);
    assert.is(t.refs[r], 1);
  }
  assert.is(t.id[t.rowFor(0x0af50000, 8080, 6)], 3001, 'new ids follow');
  assert.is(t.rows().length, 3001);
  t.reserve(10); // never shrinks
  assert.ok(t.id.length >= 100_000);
});

test.run();
