/**
 * A service's record: its map entries, packed as the kernel takes them,
 * and the backend rows it holds references on, as a run of 32-bit words in
 * a shared slab.
 *
 * Ten thousand services are ten thousand records that live as long as
 * their service, so every object a record keeps is one more for each
 * garbage collection to copy and promote: a record is one small object
 * (slab, offset, frontends). It used to be a Buffer, an Int32Array view,
 * one view object per section, an array of those and an array of backend
 * rows. Not even a typed-array view per record: V8 takes ~2 µs to make one
 * (10k × 10 cold start: ~40 ms). Slabs are 8 KiB, the size of Node's
 * Buffer pool, so a slab that outlives most of its records holds little.
 *
 * Layout from the record's offset (every key and value size is a multiple
 * of 4, so everything is whole words):
 *
 *   [0, S)             entry count of each of the S sections
 *   [S]                n, the number of backend rows
 *   [S + 1, S + 1 + n) backend rows
 *   then per section   its keys, then its values
 */
import { Packed, PackedView, copyWords } from './packed';

export interface ServiceRecord {
  readonly slab: Int32Array;
  /** Word offset of the record in its slab. */
  readonly at: number;
  /** frontendKeys this service owns (one rev_nat id each). */
  readonly frontends: readonly string[];
}

/** Key and value size (bytes) of each section, in record order. */
export type SectionSizes = ReadonlyArray<{ readonly keySize: number; readonly valueSize: number }>;

const SLAB_WORDS = 2048;
let slab = new Int32Array(SLAB_WORDS);
let slabUsed = 0;

/** A record holding the entries of `sections` (one Packed per section) and `rows`. */
export function freezeRecord(sections: readonly Packed[], rows: readonly number[], frontends: readonly string[]): ServiceRecord {
  const head = sections.length + 1 + rows.length;
  let size = head;
  for (const p of sections) size += (p.count * (p.keySize + p.valueSize)) >> 2;
  // Zeroed words nothing else uses; a record over a quarter slab gets an array of its own.
  let words: Int32Array;
  let at = 0;
  if (size > SLAB_WORDS >> 2) words = new Int32Array(size);
  else {
    if (slabUsed + size > SLAB_WORDS) {
      slab = new Int32Array(SLAB_WORDS);
      slabUsed = 0;
    }
    words = slab;
    at = slabUsed;
    slabUsed += size;
  }
  sections.forEach((p, s) => (words[at + s] = p.count));
  words[at + sections.length] = rows.length;
  for (let i = 0; i < rows.length; i++) words[at + sections.length + 1 + i] = rows[i]!;
  let w = at + head;
  for (const p of sections) {
    const kw = (p.count * p.keySize) >> 2;
    copyWords(p.keyWords, 0, kw, words, w);
    w += kw;
    const vw = (p.count * p.valueSize) >> 2;
    copyWords(p.valueWords, 0, vw, words, w);
    w += vw;
  }
  return { slab: words, at, frontends };
}

export function entryCount(r: ServiceRecord, s: number): number {
  return r.slab[r.at + s]!;
}

/** The backend rows of a record, by calling `fn` on each. */
export function forEachBackendRow(r: ServiceRecord, sizes: SectionSizes, fn: (row: number) => void): void {
  const first = r.at + sizes.length + 1;
  const n = r.slab[first - 1]!;
  for (let i = 0; i < n; i++) fn(r.slab[first + i]!);
}

/** Slab word offset of section s's keys; its values follow the keys. */
export function sectionStart(r: ServiceRecord, sizes: SectionSizes, s: number): number {
  const w = r.slab;
  let at = r.at + sizes.length + 1 + w[r.at + sizes.length]!;
  for (let i = 0; i < s; i++) at += (w[r.at + i]! * (sizes[i]!.keySize + sizes[i]!.valueSize)) >> 2;
  return at;
}

/** Append every entry of section s to `into` (same sizes): two copies, no objects. */
export function pushSection(r: ServiceRecord, sizes: SectionSizes, s: number, into: Packed): void {
  const count = entryCount(r, s);
  if (count === 0) return;
  const keyAt = sectionStart(r, sizes, s);
  into.pushWords(r.slab, keyAt, keyAt + ((count * sizes[s]!.keySize) >> 2), count);
}

/** The bytes of the record's slab, for reading keys and values as latin1 strings (diffs of changed services). */
export function recordBytes(r: ServiceRecord): Buffer {
  return Buffer.from(r.slab.buffer, r.slab.byteOffset, r.slab.byteLength);
}

/** Section s as a view into `bytes` (recordBytes of the same record). */
export function sectionView(r: ServiceRecord, sizes: SectionSizes, s: number, bytes: Buffer): PackedView {
  const { keySize, valueSize } = sizes[s]!;
  const count = entryCount(r, s);
  const keyOff = sectionStart(r, sizes, s) * 4;
  return { buf: bytes, words: r.slab, keyOff, valOff: keyOff + count * keySize, count, keySize, valueSize };
}
