/**
 * Loads the BPF object, pins (or re-adopts) its maps under the pin root,
 * attaches the tc program to devices, and removes all of it on cleanup.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as C from './codecs';
import { Shim } from './ffi';
import { PinnedMap, ServiceMaps } from './maps';
import { listLinks } from './devices';

/** Map names as in bpf/shared/weir.h (layout version 1). */
export const MAP_NAMES = {
  svc: 'weir1_svc',
  be: 'weir1_be',
  revnat: 'weir1_revnat',
  ct: 'weir1_ct',
  aff: 'weir1_aff',
  member: 'weir1_member',
  verdicts: 'weir1_verdicts',
  cfg: 'weir1_cfg',
} as const;

export const TC_PROG = 'weir_tc_ingress';
/** Pin of the loaded tc program, so `weir trace` and bpftool can find it. */
export const TC_PROG_PIN = 'weir1_prog_tc';
/** Our tc filter's identity on every device: a restart replaces it in place. */
export const TC_HANDLE = 0x7765;
export const TC_PRIORITY = 10;

export function bpfObjectPath(name: string): string {
  const dir = process.env.WEIR_BPF_DIR;
  if (dir) return path.join(dir, name);
  const candidates = [path.resolve(__dirname, '../../../build/bpf', name), path.resolve(__dirname, '../../build/bpf', name)];
  return candidates.find((p) => fs.existsSync(p)) ?? candidates[0]!;
}

/** Mount bpffs if the pin root's filesystem is not one (fresh nodes, some containers). */
export function ensureBpffs(pinRoot: string): void {
  const mounts = fs.readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' '));
  const bpfMounts = mounts.filter((m) => m[2] === 'bpf').map((m) => m[1]!);
  const abs = path.resolve(pinRoot);
  if (bpfMounts.some((m) => abs === m || abs.startsWith(m.endsWith('/') ? m : m + '/'))) {
    fs.mkdirSync(abs, { recursive: true });
    return;
  }
  // Fresh nodes and some container runtimes come without bpffs: mount it at
  // the conventional place, but never guess a mount point elsewhere.
  if (!abs.startsWith('/sys/fs/bpf/')) {
    throw new Error(`${pinRoot} is not on a bpf filesystem: mount one or choose --bpffs-root under it`);
  }
  execFileSync('mount', ['-t', 'bpf', 'bpf', '/sys/fs/bpf']);
  fs.mkdirSync(abs, { recursive: true });
}

export interface AllMaps extends ServiceMaps {
  readonly ct: PinnedMap;
  readonly aff: PinnedMap;
  readonly verdicts: PinnedMap;
  readonly cfg: PinnedMap;
}

export class BpfDatapath {
  readonly maps: AllMaps;
  readonly progFd: number;
  private readonly shim: Shim;
  private readonly obj: number;

  private constructor(shim: Shim, obj: number, maps: AllMaps, progFd: number) {
    this.shim = shim;
    this.obj = obj;
    this.maps = maps;
    this.progFd = progFd;
  }

  /** Load tc.o with its maps pinned under pinRoot (reusing compatible pins). */
  static load(shim: Shim, pinRoot: string): BpfDatapath {
    ensureBpffs(pinRoot);
    const obj = shim.objLoad(bpfObjectPath('tc.o'), pinRoot);
    const map = (name: string): PinnedMap => new PinnedMap(shim, path.join(pinRoot, name), shim.objMapFd(obj, name));
    const maps: AllMaps = {
      svc: map(MAP_NAMES.svc),
      be: map(MAP_NAMES.be),
      revnat: map(MAP_NAMES.revnat),
      member: map(MAP_NAMES.member),
      ct: map(MAP_NAMES.ct),
      aff: map(MAP_NAMES.aff),
      verdicts: map(MAP_NAMES.verdicts),
      cfg: map(MAP_NAMES.cfg),
    };
    const progFd = shim.objProgFd(obj, TC_PROG);
    const progPin = path.join(pinRoot, TC_PROG_PIN);
    fs.rmSync(progPin, { force: true });
    shim.pin(progFd, progPin);
    return new BpfDatapath(shim, obj, maps, progFd);
  }

  writeConfig(cfg: { hairpinAddr: string }): void {
    this.maps.cfg.upsert([[C.u32Key.encode({ value: 0 }).toString('latin1'), C.config.encode({ hairpin_addr: cfg.hairpinAddr, flags: 0 })]]);
  }

  /** Attach (or atomically replace) our filter at ingress of ifindex. */
  attachIngress(ifindex: number): void {
    this.shim.tcAttach(ifindex, this.progFd, true, TC_HANDLE, TC_PRIORITY);
  }

  close(): void {
    this.shim.objClose(this.obj);
  }
}

/** Remove every filter weir attached in this namespace and every pin under pinRoot. */
export async function cleanupBpf(shim: Shim, pinRoot: string): Promise<{ detached: string[]; pinsRemoved: boolean }> {
  const detached: string[] = [];
  for (const link of await listLinks()) {
    for (const ingress of [true, false]) {
      if (shim.tcQuery(link.ifindex, ingress, TC_HANDLE, TC_PRIORITY) !== null) {
        shim.tcDetach(link.ifindex, ingress, TC_HANDLE, TC_PRIORITY);
        detached.push(`${link.name}/${ingress ? 'ingress' : 'egress'}`);
      }
    }
  }
  const pinsRemoved = fs.existsSync(pinRoot);
  if (pinsRemoved) fs.rmSync(pinRoot, { recursive: true, force: true });
  return { detached, pinsRemoved };
}
