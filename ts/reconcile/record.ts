/**
 * A service's record: its map entries, packed as the kernel takes them,
 * and the backend rows it holds references on, in one Int32Array.
 *
 * Records are carved from shared 8 KiB slabs, as Node carves small Buffers
 * from its pool: a service is a few hundred bytes, and an ArrayBuffer of its
 * own costs a malloc and a tracked external allocation. Ten thousand
 * services are ten thousand records that live as long as their service, so
 * every object a record keeps is one more for each garbage collection to
 * copy and promote: a record is this one typed array and the list of its
 * frontends. (It used to be a Buffer, its Int32Array view, one view object
 * per section, an array of those and an array of backend rows.)
 *
 * Layout, in 32-bit words (every key and value size is a multiple of 4):
 *
 *   [0, S)            entry count of each of the S sections
 *   [S]               n, the number of backend rows
 *   [S + 1, S + 1 + n) backend rows
 *   then per section  its keys, then its values
 */
import { Packed, PackedView, copyWords } from './packed';

export interface ServiceRecord {
  readonly words: Int32Array;
  /** frontendKeys this service owns (one rev_nat id each). */
  readonly frontends: readonly string[];
}

/** Key and value size (bytes) of each section, in record order. */
export type SectionSizes = ReadonlyArray<{ readonly keySize: number; readonly valueSize: number }>;

const SLAB_WORDS = 2048;
let slab = new Int32Array(SLAB_WORDS);
let slabUsed = 0;

/** n zeroed words that nothing else uses; a record larger than a quarter slab gets its own array. */
function carve(n: number): Int32Array {
  if (n > SLAB_WORDS >> 2) return new Int32Array(n);
  if (slabUsed + n > SLAB_WORDS) {
    slab = new Int32Array(SLAB_WORDS);
    slabUsed = 0;
  }
  // The constructor, not subarray(): subarray looks up a species constructor first, ~3x slower before it is optimised.
  const out = new Int32Array(slab.buffer, slabUsed * 4, n);
  slabUsed += n;
  return out;
}

/** A record holding the entries of `sections` (one Packed per section) and `rows`. */
export function freezeRecord(sections: readonly Packed[], rows: readonly number[], frontends: readonly string[]): ServiceRecord {
  const head = sections.length + 1 + rows.length;
  let size = head;
  for (const p of sections) size += (p.count * (p.keySize + p.valueSize)) >> 2;
  const words = carve(size);
  sections.forEach((p, s) => (words[s] = p.count));
  words[sections.length] = rows.length;
  for (let i = 0; i < rows.length; i++) words[sections.length + 1 + i] = rows[i]!;
  let at = head;
  for (const p of sections) {
    const kw = (p.count * p.keySize) >> 2;
    copyWords(p.keyWords, 0, kw, words, at);
    at += kw;
    const vw = (p.count * p.valueSize) >> 2;
    copyWords(p.valueWords, 0, vw, words, at);
    at += vw;
  }
  return { words, frontends };
}

export function entryCount(r: ServiceRecord, s: number): number {
  return r.words[s]!;
}

/** The backend rows of a record, by calling `fn` on each. */
export function forEachBackendRow(r: ServiceRecord, sizes: SectionSizes, fn: (row: number) => void): void {
  const n = r.words[sizes.length]!;
  for (let i = 0; i < n; i++) fn(r.words[sizes.length + 1 + i]!);
}

/** Word offset of section s's keys; its values follow the keys. */
function sectionStart(r: ServiceRecord, sizes: SectionSizes, s: number): number {
  const w = r.words;
  let at = sizes.length + 1 + w[sizes.length]!;
  for (let i = 0; i < s; i++) at += (w[i]! * (sizes[i]!.keySize + sizes[i]!.valueSize)) >> 2;
  return at;
}

/** Append every entry of section s to `into` (same sizes): two copies, no objects. */
export function pushSection(r: ServiceRecord, sizes: SectionSizes, s: number, into: Packed): void {
  const count = r.words[s]!;
  if (count === 0) return;
  const keyAt = sectionStart(r, sizes, s);
  into.pushWords(r.words, keyAt, keyAt + ((count * sizes[s]!.keySize) >> 2), count);
}

/** The record's bytes, for reading keys and values as latin1 strings (diffs of changed services). */
export function recordBytes(r: ServiceRecord): Buffer {
  return Buffer.from(r.words.buffer, r.words.byteOffset, r.words.byteLength);
}

/** Section s as a view into `bytes` (recordBytes of the same record). */
export function sectionView(r: ServiceRecord, sizes: SectionSizes, s: number, bytes: Buffer): PackedView {
  const { keySize, valueSize } = sizes[s]!;
  const count = r.words[s]!;
  const keyOff = sectionStart(r, sizes, s) * 4;
  return { buf: bytes, words: r.words, keyOff, valOff: keyOff + count * keySize, count, keySize, valueSize };
}
