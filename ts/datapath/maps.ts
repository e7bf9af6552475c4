/**
 * Byte-level map access behind one small interface, with two implementations:
 * pinned kernel maps (through the FFI shim) and an in-memory twin for tests of
 * everything above the datapath. Keys travel as latin1 strings (one char per
 * byte) so they can key JavaScript Maps without copying.
 */
import * as path from 'node:path';
import { Shim } from './ffi';

export interface MapIO {
  readonly name: string;
  readonly keySize: number;
  readonly valueSize: number;
  /** Insert or replace, in the given order, in as few kernel calls as possible. */
  upsert(entries: ReadonlyArray<readonly [string, Buffer]>): void;
  /** Remove; keys already absent are fine. */
  remove(keys: readonly string[]): void;
  dump(): Array<[string, Buffer]>;
  lookup(key: string): Buffer | null;
}

export function keyString(b: Buffer): string {
  return b.toString('latin1');
}

export function keyBuffer(s: string): Buffer {
  return Buffer.from(s, 'latin1');
}

/** In-memory twin: same interface, same byte layouts, no kernel. */
export class MemoryMap implements MapIO {
  readonly entries = new Map<string, Buffer>();
  /** Number of upsert/remove calls, for tests that check write minimality. */
  writes = 0;
  constructor(
    readonly name: string,
    readonly keySize: number,
    readonly valueSize: number,
  ) {}

  upsert(entries: ReadonlyArray<readonly [string, Buffer]>): void {
    for (const [k, v] of entries) {
      this.entries.set(k, Buffer.from(v));
      this.writes++;
    }
  }

  remove(keys: readonly string[]): void {
    for (const k of keys) {
      this.entries.delete(k);
      this.writes++;
    }
  }

  dump(): Array<[string, Buffer]> {
    return [...this.entries].map(([k, v]) => [k, Buffer.from(v)]);
  }

  lookup(key: string): Buffer | null {
    const v = this.entries.get(key);
    return v ? Buffer.from(v) : null;
  }
}

/**
 * Per-CPU map types: a user-space lookup returns one value per possible CPU,
 * each rounded up to 8 bytes, so buffers must be sized for all of them.
 */
const PERCPU_TYPES = new Set([5 /* PERCPU_HASH */, 6 /* PERCPU_ARRAY */, 10 /* LRU_PERCPU_HASH */, 21 /* PERCPU_CGROUP_STORAGE */]);

/** A pinned kernel map, opened by path. */
export class PinnedMap implements MapIO {
  readonly name: string;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly fd: number;
  /** Values per key in user space: the CPU count for per-CPU maps, else 1. */
  readonly cpus: number;
  private readonly shim: Shim;

  constructor(shim: Shim, pinPath: string, fd?: number) {
    this.shim = shim;
    this.name = path.basename(pinPath);
    this.fd = fd ?? shim.pinOpen(pinPath);
    const info = shim.mapInfo(this.fd);
    this.keySize = info.keySize;
    this.cpus = PERCPU_TYPES.has(info.type) ? shim.numPossibleCpus() : 1;
    this.valueSize = this.cpus > 1 || PERCPU_TYPES.has(info.type) ? Math.ceil(info.valueSize / 8) * 8 * this.cpus : info.valueSize;
    this.maxEntries = info.maxEntries;
  }

  upsert(entries: ReadonlyArray<readonly [string, Buffer]>): void {
    if (entries.length === 0) return;
    const keys = Buffer.alloc(entries.length * this.keySize);
    const values = Buffer.alloc(entries.length * this.valueSize);
    entries.forEach(([k, v], i) => {
      keys.write(k, i * this.keySize, this.keySize, 'latin1');
      v.copy(values, i * this.valueSize, 0, this.valueSize);
    });
    this.shim.mapUpdateMany(this.fd, keys, values, entries.length, this.keySize, this.valueSize);
  }

  remove(keys: readonly string[]): void {
    if (keys.length === 0) return;
    const buf = Buffer.alloc(keys.length * this.keySize);
    keys.forEach((k, i) => buf.write(k, i * this.keySize, this.keySize, 'latin1'));
    this.shim.mapDeleteMany(this.fd, buf, keys.length, this.keySize);
  }

  dump(): Array<[string, Buffer]> {
    const { keys, values, count } = this.shim.mapDump(this.fd, this.maxEntries, this.keySize, this.valueSize);
    const out: Array<[string, Buffer]> = [];
    for (let i = 0; i < count; i++) {
      out.push([
        keys.toString('latin1', i * this.keySize, (i + 1) * this.keySize),
        Buffer.from(values.subarray(i * this.valueSize, (i + 1) * this.valueSize)),
      ]);
    }
    return out;
  }

  lookup(key: string): Buffer | null {
    const v = Buffer.alloc(this.valueSize);
    return this.shim.mapLookup(this.fd, keyBuffer(key), v) ? v : null;
  }

  count(): number {
    return this.shim.mapCount(this.fd, this.keySize);
  }

  close(): void {
    this.shim.close(this.fd);
  }
}

/** The maps the agent writes. ct and affinity belong to the BPF programs. */
export interface ServiceMaps {
  readonly svc: MapIO;
  readonly be: MapIO;
  readonly revnat: MapIO;
  readonly member: MapIO;
  readonly cidr: MapIO;
}
