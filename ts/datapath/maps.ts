/**
 * Byte-level map access behind one small interface, with two implementations:
 * pinned kernel maps (through the FFI shim) and an in-memory twin for tests of
 * everything above the datapath. Keys travel as latin1 strings (one char per
 * byte) so they can key JavaScript Maps without copying.
 */
import * as path from 'node:path';
import { Shim, WALK_STATE_SIZE } from './ffi';

export interface MapIO {
  readonly name: string;
  readonly keySize: number;
  readonly valueSize: number;
  /** How many entries fit (the in-memory twin has no limit). */
  readonly maxEntries?: number;
  /**
   * Insert or replace `count` entries packed back to back (keys at keySize,
   * values at valueSize), in order, in one kernel call where it can. The
   * reconciler writes through this: no per-entry JavaScript objects.
   */
  updateBatch(keys: Buffer, values: Buffer, count: number): void;
  /** Remove `count` packed keys; keys already absent are fine. */
  removeBatch(keys: Buffer, count: number): void;
  /** updateBatch for a few entries given as latin1 key strings (CLI, tests). */
  upsert(entries: ReadonlyArray<readonly [string, Buffer]>): void;
  /** removeBatch for a few latin1 key strings. */
  remove(keys: readonly string[]): void;
  dump(): Array<[string, Buffer]>;
  /** Every entry, packed (keys at keySize, values at valueSize): no object per entry. */
  dumpPacked(): PackedDump;
  lookup(key: string): Buffer | null;
  /**
   * A walk over the map in steps of at most `max` entries (each step one
   * kernel call): what a long read does so the agent can serve changes
   * between steps. An entry written during the walk may appear in either
   * state, or not at all.
   */
  walk?(max: number): MapWalk;
}

/** Steps of a map walk: each next() gives the following entries, done on the last. */
export interface MapWalk {
  next(): PackedDump & { readonly done: boolean };
}

export interface PackedDump {
  readonly keys: Buffer;
  readonly values: Buffer;
  readonly count: number;
}

export function keyString(b: Buffer): string {
  return b.toString('latin1');
}

export function keyBuffer(s: string): Buffer {
  return Buffer.from(s, 'latin1');
}

function packEntries(m: MapIO, entries: ReadonlyArray<readonly [string, Buffer]>): [Buffer, Buffer] {
  const keys = Buffer.alloc(entries.length * m.keySize);
  const values = Buffer.alloc(entries.length * m.valueSize);
  entries.forEach(([k, v], i) => {
    keys.write(k, i * m.keySize, m.keySize, 'latin1');
    v.copy(values, i * m.valueSize, 0, m.valueSize);
  });
  return [keys, values];
}

function packKeys(m: MapIO, keys: readonly string[]): Buffer {
  const buf = Buffer.alloc(keys.length * m.keySize);
  keys.forEach((k, i) => buf.write(k, i * m.keySize, m.keySize, 'latin1'));
  return buf;
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

  updateBatch(keys: Buffer, values: Buffer, count: number): void {
    for (let i = 0; i < count; i++) {
      const k = keys.toString('latin1', i * this.keySize, (i + 1) * this.keySize);
      this.entries.set(k, Buffer.from(values.subarray(i * this.valueSize, (i + 1) * this.valueSize)));
      this.writes++;
    }
  }

  removeBatch(keys: Buffer, count: number): void {
    for (let i = 0; i < count; i++) {
      this.entries.delete(keys.toString('latin1', i * this.keySize, (i + 1) * this.keySize));
      this.writes++;
    }
  }

  upsert(entries: ReadonlyArray<readonly [string, Buffer]>): void {
    const [k, v] = packEntries(this, entries);
    this.updateBatch(k, v, entries.length);
  }

  remove(keys: readonly string[]): void {
    this.removeBatch(packKeys(this, keys), keys.length);
  }

  dump(): Array<[string, Buffer]> {
    return [...this.entries].map(([k, v]) => [k, Buffer.from(v)]);
  }

  dumpPacked(): PackedDump {
    const [keys, values] = packEntries(this, [...this.entries]);
    return { keys, values, count: this.entries.size };
  }

  walk(max: number): MapWalk {
    // A Map's iterator goes on over entries added later and skips deleted ones, like the kernel's walk.
    const it = this.entries.entries();
    return {
      next: () => {
        const batch: Array<[string, Buffer]> = [];
        let r = it.next();
        while (!r.done) {
          batch.push(r.value);
          if (batch.length === max) break;
          r = it.next();
        }
        const [keys, values] = packEntries(this, batch);
        return { keys, values, count: batch.length, done: r.done === true || batch.length < max };
      },
    };
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

  updateBatch(keys: Buffer, values: Buffer, count: number): void {
    this.shim.mapUpdateMany(this.fd, keys, values, count, this.keySize, this.valueSize);
  }

  removeBatch(keys: Buffer, count: number): void {
    this.shim.mapDeleteMany(this.fd, keys, count, this.keySize);
  }

  upsert(entries: ReadonlyArray<readonly [string, Buffer]>): void {
    const [k, v] = packEntries(this, entries);
    this.updateBatch(k, v, entries.length);
  }

  remove(keys: readonly string[]): void {
    this.removeBatch(packKeys(this, keys), keys.length);
  }

  dumpPacked(): PackedDump {
    // Buffers sized by what the map holds, not by max_entries (a million-entry
    // map would otherwise cost tens of megabytes to dump when empty). Entries
    // added meanwhile by the programs may overflow the count: then retry larger.
    let cap = Math.min(this.maxEntries, this.count() + 64);
    let d = this.shim.mapDump(this.fd, cap, this.keySize, this.valueSize);
    while (d.count >= cap && cap < this.maxEntries) {
      cap = Math.min(this.maxEntries, cap * 2);
      d = this.shim.mapDump(this.fd, cap, this.keySize, this.valueSize);
    }
    return d;
  }

  walk(max: number): MapWalk {
    const state = Buffer.alloc(WALK_STATE_SIZE);
    const keys = Buffer.alloc(max * this.keySize);
    const values = Buffer.alloc(max * this.valueSize);
    let done = false;
    return {
      next: () => {
        if (done) return { keys, values, count: 0, done };
        const r = this.shim.mapWalk(this.fd, state, keys, values, max, this.keySize, this.valueSize);
        done = r.done;
        return { keys, values, count: r.count, done };
      },
    };
  }

  dump(): Array<[string, Buffer]> {
    const { keys, values, count } = this.dumpPacked();
    const out: Array<[string, Buffer]> = [];
    for (let i = 0; i < count; i++) {
      out.push([keys.toString('latin1', i * this.keySize, (i + 1) * this.keySize), Buffer.from(values.subarray(i * this.valueSize, (i + 1) * this.valueSize))]);
    }
    return out;
  }

  lookup(key: string): Buffer | null {
    const v = Buffer.alloc(this.valueSize);
    return this.shim.mapLookup(this.fd, keyBuffer(key), v) ? v : null;
  }

  count(): number {
    return this.shim.mapCount(this.fd, this.keySize, this.valueSize);
  }

  close(): void {
    this.shim.close(this.fd);
  }
}

/**
 * Where the reconciler's batches go. A queue may write them later, on another
 * thread, but always in the order given; drain() waits for all of them and
 * throws the first failure (the writes after a failure are skipped, since
 * they may rely on it). Until drain() returns, the buffers stay unchanged.
 */
export interface WriteQueue {
  update(map: MapIO, keys: Buffer, values: Buffer, count: number): void;
  remove(map: MapIO, keys: Buffer, count: number): void;
  drain(): void;
}

/** Every write on the spot: the in-memory twin, tests, one-off CLI writes. */
export const IMMEDIATE_WRITES: WriteQueue = {
  update: (map, keys, values, count) => map.updateBatch(keys, values, count),
  remove: (map, keys, count) => map.removeBatch(keys, count),
  drain: () => undefined,
};

/**
 * Writes to pinned maps on the shim's writer thread: the kernel inserts one
 * batch while JavaScript builds the next (a cold start at ten thousand
 * services spends about a third of its sync in the kernel). A map that is
 * not a kernel map is written on the spot after a drain, which keeps the order.
 */
export class KernelWriteQueue implements WriteQueue {
  /** What the writer thread may still read: referenced until drained. */
  private held: Buffer[] = [];
  constructor(private readonly shim: Shim) {}

  update(map: MapIO, keys: Buffer, values: Buffer, count: number): void {
    if (count === 0) return;
    if (!(map instanceof PinnedMap)) {
      this.drain();
      map.updateBatch(keys, values, count);
      return;
    }
    this.held.push(keys, values);
    this.shim.writerSubmit(map.fd, keys, values, count, map.keySize, map.valueSize, false);
  }

  remove(map: MapIO, keys: Buffer, count: number): void {
    if (count === 0) return;
    if (!(map instanceof PinnedMap)) {
      this.drain();
      map.removeBatch(keys, count);
      return;
    }
    this.held.push(keys);
    this.shim.writerSubmit(map.fd, keys, null, count, map.keySize, 0, true);
  }

  drain(): void {
    try {
      this.shim.writerDrain();
    } finally {
      this.held = [];
    }
  }
}

/** The maps the agent writes. ct and affinity belong to the BPF programs. */
export interface ServiceMaps {
  readonly svc: MapIO;
  readonly be: MapIO;
  readonly revnat: MapIO;
  readonly member: MapIO;
  readonly cidr: MapIO;
  /** The id high-water marks (weir1_ids, one entry); the in-memory twin may leave it out. */
  readonly ids?: MapIO;
  /** Maps the programs write whose entries name ids; read when adopting, so no id they hold is handed out again. */
  readonly ct?: MapIO;
  readonly aff?: MapIO;
  readonly skrevnat?: MapIO;
  /** The port filter (weir1_ports, reconcile/ports.ts); the in-memory twin may leave it out. */
  readonly ports?: MapIO;
}
