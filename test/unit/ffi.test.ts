/**
 * Binding tests, run once per FFI backend (test/run.ts sets WEIR_FFI): the
 * same calls must behave the same through koffi and ffi-napi. They create
 * real (unpinned, or pinned under a unique test directory) kernel maps, so
 * they need root.
 */
import * as fs from 'node:fs';
import * as crypto from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { listLinks } from '../../ts/datapath/devices';
import { BpfError, WALK_STATE_SIZE, loadShim, selectedBackend } from '../../ts/datapath/ffi';
import { KernelWriteQueue, PinnedMap } from '../../ts/datapath/maps';
import { thrown } from './thrown';

const BPF_MAP_TYPE_HASH = 1;
const shim = loadShim();

test(`backend is the one selected (${selectedBackend()})`, () => {
  assert.is(shim.backend, process.env.WEIR_FFI ?? 'koffi');
});

test('single-element update, lookup, delete', () => {
  const fd = shim.mapCreate(BPF_MAP_TYPE_HASH, 4, 8, 16);
  try {
    const k = Buffer.from([1, 2, 3, 4]);
    const v = Buffer.alloc(8);
    v.writeBigUInt64LE(0xdeadbeefn);
    shim.mapUpdate(fd, k, v);
    const out = Buffer.alloc(8);
    assert.ok(shim.mapLookup(fd, k, out));
    assert.is(out.readBigUInt64LE(), 0xdeadbeefn);
    assert.ok(shim.mapDelete(fd, k));
    assert.not.ok(shim.mapLookup(fd, k, out), 'absent after delete');
    assert.not.ok(shim.mapDelete(fd, k), 'second delete reports absence');
  } finally {
    shim.close(fd);
  }
});

test('bulk update, dump and delete of 5000 entries in one call each', () => {
  const n = 5000;
  const fd = shim.mapCreate(BPF_MAP_TYPE_HASH, 4, 4, n);
  try {
    const keys = Buffer.alloc(n * 4);
    const values = Buffer.alloc(n * 4);
    for (let i = 0; i < n; i++) {
      keys.writeUInt32LE(i, i * 4);
      values.writeUInt32LE(i * 3, i * 4);
    }
    shim.mapUpdateMany(fd, keys, values, n, 4, 4);
    const d = shim.mapDump(fd, n, 4, 4);
    assert.is(d.count, n);
    for (let i = 0; i < n; i++) assert.is(d.values.readUInt32LE(i * 4), d.keys.readUInt32LE(i * 4) * 3);
    // delete half, including keys that are already gone: not an error
    shim.mapDeleteMany(fd, keys.subarray(0, (n / 2) * 4), n / 2, 4);
    shim.mapDeleteMany(fd, keys.subarray(0, 4), 1, 4);
    assert.is(shim.mapDump(fd, n, 4, 4).count, n / 2);
  } finally {
    shim.close(fd);
  }
});

/** Keys 0..n-1 (u32) with value key + 7 (u64), in one bulk update. */
function fillKeyPlus7(fd: number, n: number): void {
  const keys = Buffer.alloc(n * 4);
  const values = Buffer.alloc(n * 8);
  for (let i = 0; i < n; i++) {
    keys.writeUInt32LE(i, i * 4);
    values.writeUInt32LE(i + 7, i * 8);
  }
  shim.mapUpdateMany(fd, keys, values, n, 4, 8);
}

test('count and dump read every entry past one batch; a short buffer says so; LPM tries fall back', () => {
  const n = 10_000; // more than the count's 4096-entry chunk
  const fd = shim.mapCreate(BPF_MAP_TYPE_HASH, 4, 8, n);
  const lpm = shim.mapCreate(11 /* BPF_MAP_TYPE_LPM_TRIE, no batch lookups */, 8, 4, 16);
  try {
    fillKeyPlus7(fd, n);
    assert.is(shim.mapCount(fd, 4, 8), n);
    const d = shim.mapDump(fd, n, 4, 8);
    assert.is(d.count, n);
    const seen = new Set<number>();
    for (let i = 0; i < n; i++) {
      assert.is(d.values.readUInt32LE(i * 8), d.keys.readUInt32LE(i * 4) + 7);
      seen.add(d.keys.readUInt32LE(i * 4));
    }
    assert.is(seen.size, n, 'no entry twice, none missing');
    assert.is(shim.mapDump(fd, 100, 4, 8).count, 100, 'a full buffer: the caller must ask again with more room');
    const k = Buffer.alloc(8);
    k.writeUInt32LE(24, 0); // prefix length
    k.writeUInt32BE(0x0a000000, 4);
    shim.mapUpdate(lpm, k, Buffer.from([1, 0, 0, 0]));
    assert.is(shim.mapCount(lpm, 8, 4), 1);
    assert.is(shim.mapDump(lpm, 16, 8, 4).count, 1);
  } finally {
    shim.close(fd);
    shim.close(lpm);
  }
});

test('a walk reads every entry once, a step at a time, in batches or by keys', () => {
  const n = 10_000;
  const fd = shim.mapCreate(BPF_MAP_TYPE_HASH, 4, 8, n);
  const lpm = shim.mapCreate(11 /* BPF_MAP_TYPE_LPM_TRIE, no batch lookups */, 8, 4, 16);
  try {
    fillKeyPlus7(fd, n);
    const walk = (map: number, ks: number, vs: number, max: number): Array<[number, number]> => {
      const state = Buffer.alloc(WALK_STATE_SIZE);
      const k = Buffer.alloc(max * ks);
      const v = Buffer.alloc(max * vs);
      const out: Array<[number, number]> = [];
      for (let steps = 0; steps < 1000; steps++) {
        const r = shim.mapWalk(map, state, k, v, max, ks, vs);
        assert.ok(r.count <= max);
        for (let i = 0; i < r.count; i++) out.push([k.readUInt32LE(i * ks + ks - 4), v.readUInt32LE(i * vs)]);
        if (r.done) return out;
      }
      throw new Error('walk did not end');
    };
    const got = walk(fd, 4, 8, 1000);
    assert.is(got.length, n);
    assert.is(new Set(got.map(([key]) => key)).size, n, 'no entry twice, none missing');
    assert.ok(got.every(([key, value]) => value === key + 7));
    for (let i = 0; i < 3; i++) {
      const k = Buffer.alloc(8);
      k.writeUInt32LE(24, 0);
      k.writeUInt32LE(0x0a + i, 4);
      shim.mapUpdate(lpm, k, Buffer.from([i, 0, 0, 0]));
    }
    assert.equal(
      walk(lpm, 8, 4, 2)
        .map(([, v]) => v)
        .sort(),
      [0, 1, 2],
      'key walk over two steps',
    );
  } finally {
    shim.close(fd);
    shim.close(lpm);
  }
});

test('bulk update past max_entries fails with the errno named', () => {
  const fd = shim.mapCreate(BPF_MAP_TYPE_HASH, 4, 4, 4);
  try {
    const keys = Buffer.alloc(8 * 4);
    for (let i = 0; i < 8; i++) keys.writeUInt32LE(i, i * 4);
    const err = (() => {
      try {
        shim.mapUpdateMany(fd, keys, Buffer.alloc(8 * 4), 8, 4, 4);
      } catch (e) {
        return e;
      }
      return null;
    })();
    assert.instance(err, BpfError);
    assert.is((err as BpfError).code, 'E2BIG');
  } finally {
    shim.close(fd);
  }
});

test('bulk update writes every element or fails, also when the kernel rejects the batch before its first element', () => {
  const BPF_NOEXIST = 1;
  const BPF_EXIST = 2;
  const BPF_MAP_TYPE_DEVMAP = 14; // no batch ops: the batch fails with ENOTSUPP, count untouched
  const n = 8;
  const keys = Buffer.alloc(n * 4);
  const values = Buffer.alloc(n * 4);
  for (let i = 0; i < n; i++) {
    keys.writeUInt32LE(i, i * 4);
    values.writeUInt32LE(1, i * 4); // ifindex of lo: a devmap value the kernel accepts
  }
  const everyKey = (fd: number): number[] => {
    const out = Buffer.alloc(4);
    return Array.from({ length: n }, (_, i) => (shim.mapLookup(fd, keys.subarray(i * 4, i * 4 + 4), out) ? out.readUInt32LE(0) : -1));
  };
  const errCode = (fn: () => void): string | null => {
    const e = thrown(fn);
    return e instanceof BpfError ? e.code : e === null ? null : e instanceof Error ? e.message : JSON.stringify(e);
  };
  const hash = shim.mapCreate(BPF_MAP_TYPE_HASH, 4, 4, 64);
  const devmap = shim.mapCreate(BPF_MAP_TYPE_DEVMAP, 4, 4, n);
  const devmapQueued = shim.mapCreate(BPF_MAP_TYPE_DEVMAP, 4, 4, n);
  try {
    // The batch op takes no BPF_NOEXIST / BPF_EXIST (EINVAL before any element): one by one instead.
    assert.is(
      errCode(() => shim.mapUpdateMany(hash, keys, values, n, 4, 4, BPF_EXIST)),
      'ENOENT',
      'BPF_EXIST on absent keys',
    );
    assert.equal(everyKey(hash), Array(n).fill(-1));
    shim.mapUpdateMany(hash, keys, values, n, 4, 4, BPF_NOEXIST);
    assert.equal(everyKey(hash), Array(n).fill(1), 'BPF_NOEXIST on absent keys writes them all');
    assert.is(
      errCode(() => shim.mapUpdateMany(hash, keys, values, n, 4, 4, BPF_NOEXIST)),
      'EEXIST',
      'BPF_NOEXIST on present keys',
    );
    shim.mapUpdateMany(hash, keys, Buffer.alloc(n * 4, 2), n, 4, 4, BPF_EXIST);
    assert.equal(everyKey(hash), Array(n).fill(0x02020202), 'BPF_EXIST on present keys rewrites them all');
    assert.is(
      errCode(() => shim.mapUpdateMany(hash, keys, values, n, 4, 4, 1 << 10)),
      'EINVAL',
      'a flag no update takes',
    );
    // A map type without batch ops, directly and through the writer thread.
    shim.mapUpdateMany(devmap, keys, values, n, 4, 4);
    assert.equal(everyKey(devmap), Array(n).fill(1));
    const q = new KernelWriteQueue(shim);
    q.update(new PinnedMap(shim, 'writer-devmap', devmapQueued), keys, values, n);
    q.drain();
    assert.equal(everyKey(devmapQueued), Array(n).fill(1));
  } finally {
    shim.close(hash);
    shim.close(devmap);
    shim.close(devmapQueued);
  }
});

test('writer thread: queued batches land in order at drain; a failure skips the rest and is reported once', () => {
  const fdA = shim.mapCreate(BPF_MAP_TYPE_HASH, 4, 4, 4096);
  const fdB = shim.mapCreate(BPF_MAP_TYPE_HASH, 4, 4, 4);
  try {
    const a = new PinnedMap(shim, 'writer-a', fdA);
    const b = new PinnedMap(shim, 'writer-b', fdB);
    const q = new KernelWriteQueue(shim);
    const packed = (from: number, n: number, value: number): [Buffer, Buffer] => {
      const k = Buffer.alloc(n * 4);
      const v = Buffer.alloc(n * 4);
      for (let i = 0; i < n; i++) {
        k.writeUInt32LE(from + i, i * 4);
        v.writeUInt32LE(value, i * 4);
      }
      return [k, v];
    };
    // Many batches, so the thread is still busy when later ones are queued:
    // the same keys written twice end with the later value, and a delete
    // queued after the writes removes what they wrote.
    for (let round = 1; round <= 2; round++) {
      for (let part = 0; part < 40; part++) q.update(a, ...packed(part * 100, 100, round), 100);
    }
    q.remove(a, packed(0, 1000, 0)[0], 1000);
    q.drain();
    const d = shim.mapDump(fdA, 4096, 4, 4);
    assert.is(d.count, 3000);
    for (let i = 0; i < d.count; i++) {
      assert.ok(d.keys.readUInt32LE(i * 4) >= 1000, 'deleted keys stay deleted');
      assert.is(d.values.readUInt32LE(i * 4), 2, 'the later write wins');
    }

    // b holds 4 entries: 8 fail with E2BIG; the write to a queued after it is skipped.
    q.update(b, ...packed(0, 8, 1), 8);
    q.update(a, ...packed(5000, 1, 7), 1);
    const err = thrown(() => q.drain());
    assert.instance(err, BpfError);
    assert.is((err as BpfError).code, 'E2BIG');
    assert.is(a.lookup(packed(5000, 1, 0)[0].toString('latin1')), null, 'skipped after the failure');
    q.drain(); // reported once
    q.update(a, ...packed(5000, 1, 7), 1);
    q.drain();
    assert.is(a.lookup(packed(5000, 1, 0)[0].toString('latin1'))?.readUInt32LE(0), 7, 'the queue works again');
  } finally {
    shim.close(fdA);
    shim.close(fdB);
  }
});

test('pin, reopen by path, and map metadata', () => {
  const dir = `/sys/fs/bpf/weir-ffitest-${crypto.randomBytes(3).toString('hex')}`;
  fs.mkdirSync(dir);
  const fd = shim.mapCreate(BPF_MAP_TYPE_HASH, 12, 16, 100);
  try {
    shim.pin(fd, `${dir}/m`);
    const m = new PinnedMap(shim, `${dir}/m`);
    assert.equal([m.keySize, m.valueSize, m.maxEntries], [12, 16, 100]);
    m.upsert([['k'.repeat(12), Buffer.alloc(16, 7)]]);
    assert.equal(m.lookup('k'.repeat(12)), Buffer.alloc(16, 7));
    m.close();
  } finally {
    shim.close(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('links: every interface of this namespace, as ip lists them, without a child process', async () => {
  const mine = shim.links();
  const ip = await listLinks();
  assert.equal(mine.map((l) => `${l.ifindex} ${l.name}`).sort(), ip.map((l) => `${l.ifindex} ${l.name}`).sort());
  assert.ok(mine.some((l) => l.name === 'lo' && l.ifindex === 1));
});

test('errors carry the operation and errno name', () => {
  try {
    shim.pinOpen('/sys/fs/bpf/weir-does-not-exist');
    assert.unreachable();
  } catch (e) {
    assert.instance(e, BpfError);
    assert.is((e as BpfError).code, 'ENOENT');
    assert.match((e as Error).message, /^pin_open: ENOENT/);
  }
  assert.is(shim.ifindex('lo'), 1);
  assert.is(shim.ifindex('weir-nonexistent0'), null);
});

test.run();
