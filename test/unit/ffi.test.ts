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
import { BpfError, loadShim, selectedBackend } from '../../ts/datapath/ffi';
import { PinnedMap } from '../../ts/datapath/maps';

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

test('count and dump read every entry past one batch; a short buffer says so; LPM tries fall back', () => {
  const n = 10_000; // more than the count's 4096-entry chunk
  const fd = shim.mapCreate(BPF_MAP_TYPE_HASH, 4, 8, n);
  const lpm = shim.mapCreate(11 /* BPF_MAP_TYPE_LPM_TRIE, no batch lookups */, 8, 4, 16);
  try {
    const keys = Buffer.alloc(n * 4);
    const values = Buffer.alloc(n * 8);
    for (let i = 0; i < n; i++) {
      keys.writeUInt32LE(i, i * 4);
      values.writeUInt32LE(i + 7, i * 8);
    }
    shim.mapUpdateMany(fd, keys, values, n, 4, 8);
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
