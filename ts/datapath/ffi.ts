/**
 * The only module that talks to native code. It binds native/weir_bpf.h (the
 * libbpf shim) through one of two FFI backends and turns the shim's -errno
 * returns into BpfError values:
 *
 *  - koffi (default): maintained, ships prebuilt binaries.
 *  - ffi-napi + ref-napi (WEIR_FFI=ffi-napi): an order of magnitude slower
 *    per call (BENCHMARKS.md, FFI section), unmaintained since 2021, and needs CXXFLAGS=-fpermissive to build on
 *    Node >= 20.12. Selectable and tested, so either backend can serve.
 *
 * Only ints, strings and Buffers cross the boundary; the shim does bulk work
 * in C so hot paths make one call per map, not one per entry.
 */
import * as path from 'node:path';
import * as fs from 'node:fs';
import { constants as osConstants } from 'node:os';

export type FfiBackend = 'koffi' | 'ffi-napi';

/** A failed libbpf/kernel call: which operation, and the errno it returned. */
export class BpfError extends Error {
  readonly op: string;
  readonly errno: number;
  readonly code: string;
  constructor(op: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    super(`${op}: ${code} (${errno})${detail ? `: ${detail}` : ''}`);
    this.name = 'BpfError';
    this.op = op;
    this.errno = errno;
    this.code = code;
  }
}

const errnoNames = new Map<number, string>(Object.entries(osConstants.errno).map(([name, n]) => [n, name]));
function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

export const ENOENT = osConstants.errno.ENOENT;
export const EEXIST = osConstants.errno.EEXIST;
export const EWOULDBLOCK = osConstants.errno.EWOULDBLOCK;
/** WEIR_WALK_SIZE in weir_bpf.h. */
export const WALK_STATE_SIZE = 1024;

/** The raw C signatures, one per exported shim function. */
const SIGNATURES = {
  weir_set_log_level: ['int', ['int']],
  weir_last_log: ['int', ['pointer', 'uint32']],
  weir_obj_load: ['int', ['string', 'string', 'string']],
  weir_obj_load_private: ['int', ['string', 'string', 'string', 'uint32']],
  weir_obj_close: ['int', ['int']],
  weir_obj_map_fd: ['int', ['int', 'string']],
  weir_obj_prog_fd: ['int', ['int', 'string']],
  weir_iter_run: ['int', ['int', 'string', 'pointer', 'uint32']],
  weir_pin_open: ['int', ['string']],
  weir_pin: ['int', ['int', 'string']],
  weir_close: ['int', ['int']],
  weir_dir_lock: ['int', ['string']],
  weir_map_create: ['int', ['uint32', 'uint32', 'uint32', 'uint32']],
  weir_map_info: ['int', ['int', 'pointer']],
  weir_num_possible_cpus: ['int', []],
  weir_map_lookup: ['int', ['int', 'pointer', 'pointer']],
  weir_map_update: ['int', ['int', 'pointer', 'pointer', 'uint64']],
  weir_map_delete: ['int', ['int', 'pointer']],
  weir_map_update_many: ['int', ['int', 'pointer', 'pointer', 'uint32', 'uint32', 'uint32', 'uint64']],
  weir_map_delete_many: ['int', ['int', 'pointer', 'uint32', 'uint32']],
  weir_writer_submit: ['int', ['int', 'pointer', 'pointer', 'uint32', 'uint32', 'uint32', 'int']],
  weir_writer_drain: ['int', []],
  weir_map_dump: ['int', ['int', 'pointer', 'pointer', 'uint32', 'uint32', 'uint32']],
  weir_map_count: ['int', ['int', 'uint32', 'uint32']],
  weir_map_walk: ['int', ['int', 'pointer', 'pointer', 'pointer', 'uint32', 'uint32', 'uint32', 'pointer']],
  weir_tc_attach: ['int', ['int', 'int', 'int', 'uint32', 'uint32']],
  weir_tc_detach: ['int', ['int', 'int', 'uint32', 'uint32']],
  weir_tc_query: ['int', ['int', 'int', 'uint32', 'uint32']],
  weir_cgroup_link: ['int', ['string', 'int', 'int', 'string']],
  weir_ifindex: ['int', ['string']],
  weir_netns_cookie: ['int', ['pointer']],
  weir_links: ['int', ['pointer', 'uint32']],
  weir_prog_test_run: ['int', ['int', 'pointer', 'uint32', 'pointer', 'uint32', 'uint32', 'pointer']],
} as const;

type CType = 'int' | 'uint32' | 'uint64' | 'string' | 'pointer';
type FnName = keyof typeof SIGNATURES;
type ArgValue = number | string | Buffer | null;
/** Both backends give every bound function an `async` twin that runs it on libuv's thread pool. */
type RawFn = ((...args: ArgValue[]) => number) & { async(...args: [...ArgValue[], (err: unknown, rc: number) => void]): void };
type RawShim = Record<FnName, RawFn>;

function libraryPath(): string {
  const override = process.env.WEIR_NATIVE_LIB;
  if (override) return override;
  // dist/ts/datapath/ffi.js -> repository root, or /opt/weir in the image.
  const candidates = [path.resolve(__dirname, '../../../build/native/libweirbpf.so'), path.resolve(__dirname, '../../build/native/libweirbpf.so')];
  return candidates.find((p) => fs.existsSync(p)) ?? candidates[0]!;
}

interface KoffiApi {
  load(p: string): { func(name: string, ret: string, args: string[]): RawFn };
}

function bindKoffi(lib: string): RawShim {
  // Required here, not at the top: the ffi-napi backend does not load koffi.
  const handle = (require('koffi') as KoffiApi).load(lib);
  const kType = (t: CType): string => ({ int: 'int', uint32: 'uint32_t', uint64: 'uint64_t', string: 'const char *', pointer: 'void *' })[t];
  const out = {} as RawShim;
  for (const [name, [ret, args]] of Object.entries(SIGNATURES) as [FnName, (typeof SIGNATURES)[FnName]][]) {
    out[name] = handle.func(name, kType(ret), (args as readonly CType[]).map(kType));
  }
  return out;
}

function bindFfiNapi(lib: string): RawShim {
  // ffi-napi has no type declarations; this is the one untyped edge.
  const ffi = require('ffi-napi') as {
    Library(p: string, fns: Record<string, [string, string[]]>): Record<string, RawFn>;
  };
  const fType = (t: CType): string => ({ int: 'int', uint32: 'uint32', uint64: 'uint64', string: 'string', pointer: 'pointer' })[t];
  const decl: Record<string, [string, string[]]> = {};
  for (const [name, [ret, args]] of Object.entries(SIGNATURES)) {
    decl[name] = [fType(ret), (args as readonly CType[]).map(fType)];
  }
  return ffi.Library(lib, decl) as RawShim;
}

export interface MapInfo {
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  id: number;
}

export interface TestRunResult {
  retval: number;
  data: Buffer;
  durationNs: number;
}

/** Typed, error-checked view of the shim. */
export class Shim {
  readonly backend: FfiBackend;
  private readonly raw: RawShim;

  constructor(backend: FfiBackend, raw: RawShim) {
    this.backend = backend;
    this.raw = raw;
  }

  private call(op: FnName, ...args: ArgValue[]): number {
    const rc = this.raw[op](...args);
    if (rc < 0) throw new BpfError(op.replace(/^weir_/, ''), -rc);
    return rc;
  }

  setLogLevel(level: number): void {
    this.call('weir_set_log_level', level);
  }

  lastLog(): string {
    const buf = Buffer.alloc(4096);
    const n = this.call('weir_last_log', buf, buf.length);
    return buf.subarray(0, n).toString('utf8').trim();
  }

  /** sizes: max_entries by map name, for maps this load creates. */
  objLoad(objPath: string, pinRoot: string, sizes: Readonly<Record<string, number>> = {}): number {
    const rc = this.raw.weir_obj_load(objPath, pinRoot, sizeSpec(sizes));
    if (rc < 0) throw new BpfError('obj_load', -rc, `${objPath}: ${this.lastLog()}`);
    return rc;
  }

  /**
   * objLoad on a libuv worker thread. Loading is the kernel creating maps
   * (preallocating the LRU maps takes a few hundred milliseconds of CPU) and
   * verifying programs; the agent reads its sources meanwhile. No other shim
   * call may run until it settles: libbpf's log buffer is shared.
   */
  objLoadAsync(objPath: string, pinRoot: string, sizes: Readonly<Record<string, number>> = {}): Promise<number> {
    return new Promise((resolve, reject) => {
      this.raw.weir_obj_load.async(objPath, pinRoot, sizeSpec(sizes), (err: unknown, rc: number) => {
        if (err) reject(err instanceof Error ? err : new Error(`obj_load: ${JSON.stringify(err)}`));
        else if (rc < 0) reject(new BpfError('obj_load', -rc, `${objPath}: ${this.lastLog()}`));
        else resolve(rc);
      });
    });
  }

  /** Load with some maps private (fresh, unpinned; LRU ones capped at lruMax). */
  objLoadPrivate(objPath: string, pinRoot: string, privateMaps: readonly string[], lruMax: number): number {
    const rc = this.raw.weir_obj_load_private(objPath, pinRoot, privateMaps.join(','), lruMax);
    if (rc < 0) throw new BpfError('obj_load_private', -rc, `${objPath}: ${this.lastLog()}`);
    return rc;
  }

  objClose(obj: number): void {
    this.call('weir_obj_close', obj);
  }

  objMapFd(obj: number, name: string): number {
    return this.call('weir_obj_map_fd', obj, name);
  }

  /** Run an iterator program once; what it wrote (up to maxBytes), or null when the kernel could not load it. */
  iterRun(obj: number, name: string, maxBytes: number): Buffer | null {
    const out = Buffer.alloc(maxBytes);
    const rc = this.raw.weir_iter_run(obj, name, out, maxBytes);
    if (rc === -osConstants.errno.EOPNOTSUPP) return null;
    if (rc < 0) throw new BpfError('iter_run', -rc);
    return out.subarray(0, Math.min(rc, maxBytes));
  }

  objProgFd(obj: number, name: string): number {
    return this.call('weir_obj_prog_fd', obj, name);
  }

  pinOpen(p: string): number {
    return this.call('weir_pin_open', p);
  }

  pin(fd: number, p: string): void {
    this.call('weir_pin', fd, p);
  }

  close(fd: number): void {
    this.call('weir_close', fd);
  }

  /** An exclusive flock on a directory: the fd that holds it, or null while another process holds it. */
  dirLock(dir: string): number | null {
    const rc = this.raw.weir_dir_lock(dir);
    if (rc === -EWOULDBLOCK) return null;
    if (rc < 0) throw new BpfError('dir_lock', -rc, dir);
    return rc;
  }

  /** A new unpinned map; the caller closes the fd. */
  mapCreate(type: number, keySize: number, valueSize: number, maxEntries: number): number {
    return this.call('weir_map_create', type, keySize, valueSize, maxEntries);
  }

  mapInfo(fd: number): MapInfo {
    const out = Buffer.alloc(20);
    this.call('weir_map_info', fd, out);
    return {
      type: out.readUInt32LE(0),
      keySize: out.readUInt32LE(4),
      valueSize: out.readUInt32LE(8),
      maxEntries: out.readUInt32LE(12),
      id: out.readUInt32LE(16),
    };
  }

  numPossibleCpus(): number {
    return this.call('weir_num_possible_cpus');
  }

  /** Fills `value`; false when the key is absent. */
  mapLookup(fd: number, key: Buffer, value: Buffer): boolean {
    const rc = this.raw.weir_map_lookup(fd, key, value);
    if (rc === -ENOENT) return false;
    if (rc < 0) throw new BpfError('map_lookup', -rc);
    return true;
  }

  mapUpdate(fd: number, key: Buffer, value: Buffer, flags = 0): void {
    this.call('weir_map_update', fd, key, value, flags);
  }

  /** False when the key was already absent. */
  mapDelete(fd: number, key: Buffer): boolean {
    const rc = this.raw.weir_map_delete(fd, key);
    if (rc === -ENOENT) return false;
    if (rc < 0) throw new BpfError('map_delete', -rc);
    return true;
  }

  /** Writes every element, or throws the errno of the first one that could not be written. flags: BPF_ANY, BPF_NOEXIST, BPF_EXIST. */
  mapUpdateMany(fd: number, keys: Buffer, values: Buffer, count: number, keySize: number, valueSize: number, flags = 0): void {
    if (count === 0) return;
    this.call('weir_map_update_many', fd, keys, values, count, keySize, valueSize, flags);
  }

  mapDeleteMany(fd: number, keys: Buffer, count: number, keySize: number): void {
    if (count === 0) return;
    this.call('weir_map_delete_many', fd, keys, count, keySize);
  }

  /**
   * Queue a mapUpdateMany (or, with del, a mapDeleteMany) for the library's
   * writer thread and return at once. The buffers are read later: the caller
   * keeps them alive and unchanged until writerDrain() returns.
   */
  writerSubmit(fd: number, keys: Buffer, values: Buffer | null, count: number, keySize: number, valueSize: number, del: boolean): void {
    if (count === 0) return;
    this.call('weir_writer_submit', fd, keys, values, count, keySize, valueSize, del ? 1 : 0);
  }

  /** Wait for every queued write; throws the first failure since the last drain (later writes were skipped). */
  writerDrain(): void {
    this.call('weir_writer_drain');
  }

  /**
   * Keep freed memory for reuse instead of returning it to the system
   * (true), or return what is free now (false). Where touching fresh memory
   * is slow (page faults through a hypervisor), a start-up that frees and
   * reallocates large buffers pays for the same pages again otherwise.
   */
  mapCount(fd: number, keySize: number, valueSize: number): number {
    return this.call('weir_map_count', fd, keySize, valueSize);
  }

  mapDump(fd: number, max: number, keySize: number, valueSize: number): { keys: Buffer; values: Buffer; count: number } {
    const keys = Buffer.alloc(Math.max(1, max * keySize));
    const values = Buffer.alloc(Math.max(1, max * valueSize));
    const count = this.call('weir_map_dump', fd, keys, values, max, keySize, valueSize);
    return { keys, values, count };
  }

  /**
   * One step of a walk over a map (weir_map_walk): up to `max` entries into
   * the given buffers, continuing `walk` (WALK_STATE_SIZE bytes, zeroed to start).
   */
  mapWalk(fd: number, walk: Buffer, keys: Buffer, values: Buffer, max: number, keySize: number, valueSize: number): { count: number; done: boolean } {
    const done = Buffer.alloc(4);
    const count = this.call('weir_map_walk', fd, walk, keys, values, max, keySize, valueSize, done);
    return { count, done: done.readUInt32LE(0) === 1 };
  }

  tcAttach(ifindex: number, progFd: number, ingress: boolean, handle: number, priority: number): void {
    this.call('weir_tc_attach', ifindex, progFd, ingress ? 1 : 0, handle, priority);
  }

  /** False when nothing was attached there. */
  tcDetach(ifindex: number, ingress: boolean, handle: number, priority: number): boolean {
    const rc = this.raw.weir_tc_detach(ifindex, ingress ? 1 : 0, handle, priority);
    if (rc === -ENOENT) return false;
    if (rc < 0) throw new BpfError('tc_detach', -rc);
    return true;
  }

  /** Program id attached at that filter, or null. */
  tcQuery(ifindex: number, ingress: boolean, handle: number, priority: number): number | null {
    const rc = this.raw.weir_tc_query(ifindex, ingress ? 1 : 0, handle, priority);
    if (rc === -ENOENT || rc === -osConstants.errno.EINVAL) return null;
    if (rc < 0) throw new BpfError('tc_query', -rc);
    return rc;
  }

  /** Attach through a pinned link (created, or updated in place). True if created. */
  cgroupLink(cgroupPath: string, progFd: number, attachType: number, pinPath: string): boolean {
    return this.call('weir_cgroup_link', cgroupPath, progFd, attachType, pinPath) === 1;
  }

  /** Interface index in this process's network namespace, or null. */
  ifindex(name: string): number | null {
    const rc = this.raw.weir_ifindex(name);
    return rc < 0 ? null : rc;
  }

  /** The cookie of this process's network namespace (what bpf_get_netns_cookie gives its sockets); null before 5.14. */
  netnsCookie(): bigint | null {
    const out = Buffer.alloc(8);
    return this.raw.weir_netns_cookie(out) < 0 ? null : out.readBigUInt64LE(0);
  }

  /** Every interface of this network namespace (any state, with or without addresses); master: the bridge it is a port of (0: none). */
  links(): Array<{ name: string; ifindex: number; master: number }> {
    // 64 KiB holds ~3,000 interfaces; a node with more gets a bigger buffer.
    for (let size = 64 << 10; ; size *= 4) {
      const buf = Buffer.alloc(size);
      const rc = this.raw.weir_links(buf, size);
      if (rc === -osConstants.errno.ENOSPC && size < 64 << 20) continue;
      if (rc < 0) throw new BpfError('links', -rc);
      return buf
        .toString('utf8', 0, rc)
        .split('\n')
        .filter(Boolean)
        .map((line) => {
          // "ifindex master name": a device name has no blanks.
          const [ifindex, master, name] = line.split(' ');
          return { ifindex: Number(ifindex), master: Number(master), name: name ?? '' };
        });
    }
  }

  progTestRun(progFd: number, data: Buffer, outSize: number, repeat = 1): TestRunResult {
    const out = Buffer.alloc(Math.max(outSize, data.length + 256));
    const res = Buffer.alloc(12);
    this.call('weir_prog_test_run', progFd, data, data.length, out, out.length, repeat, res);
    return {
      retval: res.readUInt32LE(0),
      data: out.subarray(0, res.readUInt32LE(4)),
      durationNs: res.readUInt32LE(8),
    };
  }
}

function sizeSpec(sizes: Readonly<Record<string, number>>): string {
  return Object.entries(sizes)
    .map(([name, n]) => `${name}=${n}`)
    .join(',');
}

const cache = new Map<FfiBackend, Shim>();

/** The shim through the backend named by WEIR_FFI (default koffi). */
export function loadShim(backend: FfiBackend = selectedBackend()): Shim {
  let shim = cache.get(backend);
  if (!shim) {
    const lib = libraryPath();
    if (!fs.existsSync(lib)) throw new Error(`native shim not found at ${lib}: run \`make native\``);
    shim = new Shim(backend, backend === 'koffi' ? bindKoffi(lib) : bindFfiNapi(lib));
    cache.set(backend, shim);
  }
  return shim;
}

export function selectedBackend(): FfiBackend {
  const v = process.env.WEIR_FFI ?? 'koffi';
  if (v !== 'koffi' && v !== 'ffi-napi') throw new Error(`WEIR_FFI=${v}: expected koffi or ffi-napi`);
  return v;
}
