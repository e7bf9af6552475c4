/**
 * The port filter (bpf/lib/ports.h): one bit per frontend port and one per
 * backend port, which lets the programs skip the frontend and reply
 * lookups of packets that can match neither.
 *
 * The rule the programs rely on: every port a frontend or backend entry
 * uses, and every backend port a conntrack entry may still name, is marked
 * before the entry is written. So ports are marked before each commit's
 * writes and never cleared while the pins live (a flow outlives its
 * backend's entry). At adoption (a restart, a fresh node, an upgrade from a
 * version without the filter) the marks are first taken from everything
 * the maps already hold, conntrack included, and only then is the filter
 * switched on (bit 0 of word 0, port 0, which no service uses).
 */
import * as C from '../datapath/codecs';
import type { MapIO } from '../datapath/maps';
import type { Adopted } from './adopt';
import { SK } from './entries';
import { ReconcileMaps, SECTIONS, S_MASTERS, S_MASTERS6 } from './layout';
import type { Writes } from './writes';

/** Words per half (weir.h WEIR_PORT_WORDS); the backend half starts at word WORDS. */
export const PORT_WORDS = 1024;
const BACKEND = PORT_WORDS * 8; // byte offset of the backend half
const ON = 1; // bit 0 of byte 0: the filter is written

export class PortFilter {
  /** Both halves as one little-endian bitmap: byte i holds bits 8i..8i+7, so word k is bytes 8k..8k+7. */
  private readonly bits = Buffer.alloc(2 * BACKEND);
  /** Words marked since they were last written. */
  private readonly dirty = new Set<number>();

  constructor(private readonly map: MapIO | undefined) {}

  markFrontend(port: number): void {
    this.mark(0, port);
  }

  markBackend(port: number): void {
    this.mark(BACKEND, port);
  }

  private mark(half: number, port: number): void {
    const byte = half + (port >> 3);
    const bit = 1 << (port & 7);
    if (this.bits[byte]! & bit) return;
    this.bits[byte]! |= bit;
    this.dirty.add(byte >> 3);
  }

  /**
   * Take over the pinned filter: what earlier agents marked stays (ports of
   * backends that have left, which conntrack may still name), and every
   * port the maps hold is marked, conntrack's reply entries included, so a
   * word cleared by hand while no agent ran is repaired here too. The
   * filter is switched on once that is written. `found`: the service maps
   * and conntrack as adoption read them (./adopt.ts).
   */
  adopt(maps: ReconcileMaps, found: Pick<Adopted, 'kernelSvc' | 'kernelSvc6' | 'conntrack'>): void {
    if (!this.map) return;
    const kernel = this.readKernel();
    kernel.copy(this.bits);
    for (const [svc, at] of [
      [found.kernelSvc, SK.port],
      [found.kernelSvc6, C.svc6Key.at.port],
    ] as const) {
      for (const k of svc?.keys() ?? []) this.markFrontend((k.charCodeAt(at) << 8) | k.charCodeAt(at + 1));
    }
    for (const [be, at] of [
      [maps.be, C.backend.at.port],
      [maps.be6, C.backend6.at.port],
    ] as const) {
      if (!be) continue;
      const { values, count } = be.dumpPacked();
      for (let i = 0; i < count; i++) this.markBackend(values.readUInt16BE(i * be.valueSize + at));
    }
    // A reply-direction entry is keyed as the backend sends: its source port is the backend's.
    for (const [d, size, sport, dir] of [
      [found.conntrack.ct, C.ctKey.size, C.ctKey.at.sport, C.ctKey.at.dir],
      [found.conntrack.ct6, C.ct6Key.size, C.ct6Key.at.sport, C.ct6Key.at.dir],
    ] as const) {
      if (!d) continue;
      for (let i = 0; i < d.count; i++) if (d.keys[i * size + dir] === C.CT_DIR.REV) this.markBackend(d.keys.readUInt16BE(i * size + sport));
    }
    this.bits[0]! |= ON;
    this.dirty.clear();
    for (let w = 0; w < 2 * PORT_WORDS; w++) if (this.bits.readBigUInt64LE(w * 8) !== kernel.readBigUInt64LE(w * 8)) this.dirty.add(w);
    this.write();
  }

  /**
   * Mark the ports of a commit's frontend and backend writes and write the
   * words that changed: before the commit's own writes. With `full` (a
   * commit that compares everything with the kernel), every word that
   * differs from the kernel's is written too, which repairs a hand edit;
   * returns how many those were.
   */
  cover(w: Writes, full: boolean): number {
    if (!this.map) return 0;
    // Masters only: a slot carries its master's port, and is written in the
    // commit that writes its master or after it (a cold start at 10k × 10
    // writes ten times more slots than masters).
    for (const [s, at] of [
      [S_MASTERS, SK.port],
      [S_MASTERS6, C.svc6Key.at.port],
    ] as const) {
      const ups = w.ups[s]!;
      for (let i = 0; i < ups.count; i++) this.markFrontend(ups.keys.readUInt16BE(i * SECTIONS[s]!.keySize + at));
    }
    for (let i = 0; i < w.beUps.count; i++) this.markBackend(w.beUps.values.readUInt16BE(i * C.backend.size + C.backend.at.port));
    for (let i = 0; i < w.be6Ups.count; i++) this.markBackend(w.be6Ups.values.readUInt16BE(i * C.backend6.size + C.backend6.at.port));
    const repaired = full ? this.differing() : [];
    for (const k of repaired) this.dirty.add(k);
    this.write();
    return repaired.length;
  }

  /** Words the kernel holds otherwise than this agent wrote them (a hand edit): what a drift scan looks for. */
  differing(): number[] {
    if (!this.map) return [];
    const kernel = this.readKernel();
    const out: number[] = [];
    for (let k = 0; k < 2 * PORT_WORDS; k++) if (kernel.readBigUInt64LE(k * 8) !== this.bits.readBigUInt64LE(k * 8)) out.push(k);
    return out;
  }

  /** The kernel's words, in word order. */
  private readKernel(): Buffer {
    const out = Buffer.alloc(this.bits.length);
    const { keys, values, count } = this.map!.dumpPacked();
    for (let i = 0; i < count; i++) {
      const k = keys.readUInt32LE(i * 4);
      if (k < 2 * PORT_WORDS) values.copy(out, k * 8, i * 8, i * 8 + 8);
    }
    return out;
  }

  private write(): void {
    if (this.dirty.size === 0 || !this.map) return;
    // The switch-on word goes last: every mark it turns on is in the kernel before it.
    const words = [...this.dirty].sort((a, b) => b - a);
    const keys = Buffer.alloc(words.length * 4);
    const values = Buffer.alloc(words.length * 8);
    words.forEach((k, i) => {
      keys.writeUInt32LE(k, i * 4);
      this.bits.copy(values, i * 8, k * 8, k * 8 + 8);
    });
    this.map.updateBatch(keys, values, words.length);
    this.dirty.clear();
  }

  /** Is the filter on, and does it mark this frontend / backend port? (for tests and `weir check`) */
  static marked(words: Buffer, half: 'frontend' | 'backend', port: number): boolean {
    if (!(words[0]! & ON)) return true;
    const byte = (half === 'backend' ? BACKEND : 0) + (port >> 3);
    return ((words[byte] ?? 0) & (1 << (port & 7))) !== 0;
  }
}
