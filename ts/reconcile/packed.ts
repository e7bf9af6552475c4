/**
 * Map entries packed back to back, the way the kernel's batch calls take
 * them: keys at keySize, values at valueSize. The reconciler keeps each
 * service's entries and every pending write in this form, so a sync of ten
 * thousand services makes a few large buffers instead of hundreds of
 * thousands of small JavaScript objects.
 */
import { MapIO, WriteQueue } from '../datapath/maps';

/**
 * dst[at..] = src[start..start + n], in 32-bit words: every key and value
 * size is a multiple of 4 (the BTF check pins the struct sizes). A record's
 * sections are a few dozen bytes, so a plain loop: TypedArray.set needs a
 * subarray, an object to allocate per copy, and Buffer.copy costs ~0.5 µs a
 * call; a full sync makes a hundred thousand of these copies.
 */
export function copyWords(src: Int32Array, start: number, n: number, dst: Int32Array, at: number): void {
  if (n > 256) {
    dst.set(src.subarray(start, start + n), at);
    return;
  }
  for (let i = 0; i < n; i++) dst[at + i] = src[start + i]!;
}

/** The 32-bit words of a buffer (which must start 4-byte aligned, as Node's allocations do). */
export function wordsOf(buf: Buffer): Int32Array {
  if (buf.byteOffset & 3 || buf.length & 3) throw new Error(`packed buffer not word-aligned (offset ${buf.byteOffset}, length ${buf.length})`);
  return new Int32Array(buf.buffer, buf.byteOffset, buf.length >> 2);
}

export class Packed {
  keys: Buffer;
  values: Buffer;
  keyWords: Int32Array;
  valueWords: Int32Array;
  count = 0;

  constructor(
    readonly keySize: number,
    readonly valueSize: number,
    capacity = 16,
  ) {
    this.keys = Buffer.alloc(capacity * keySize);
    this.values = Buffer.alloc(capacity * valueSize);
    this.keyWords = wordsOf(this.keys);
    this.valueWords = wordsOf(this.values);
  }

  /** Make room for `n` more entries. */
  reserve(n: number): void {
    const need = this.count + n;
    if (need * this.keySize <= this.keys.length) return;
    const cap = Math.max(need, this.keys.length / this.keySize * 2);
    const keys = Buffer.alloc(cap * this.keySize);
    const values = Buffer.alloc(cap * this.valueSize);
    const keyWords = wordsOf(keys);
    const valueWords = wordsOf(values);
    copyWords(this.keyWords, 0, (this.count * this.keySize) >> 2, keyWords, 0);
    copyWords(this.valueWords, 0, (this.count * this.valueSize) >> 2, valueWords, 0);
    this.keys = keys;
    this.values = values;
    this.keyWords = keyWords;
    this.valueWords = valueWords;
  }

  /** Append one entry; returns its index (write the bytes at index * size). */
  push(): number {
    this.reserve(1);
    return this.count++;
  }

  /** Append entry `i` of `from` (same sizes). */
  pushFrom(from: PackedView, i: number): void {
    const at = this.push();
    const kw = this.keySize >> 2;
    const vw = this.valueSize >> 2;
    copyWords(from.words, (from.keyOff >> 2) + i * kw, kw, this.keyWords, at * kw);
    if (vw > 0) copyWords(from.words, (from.valOff >> 2) + i * vw, vw, this.valueWords, at * vw);
  }

  /** Append every entry of `from`, two copies whatever its size. */
  pushAll(from: PackedView): void {
    this.pushWords(from.words, from.keyOff >> 2, from.valOff >> 2, from.count);
  }

  /** Append `count` entries whose keys start at word `keyAt` of `words` and values at `valAt`. */
  pushWords(words: Int32Array, keyAt: number, valAt: number, count: number): void {
    if (count === 0) return;
    this.reserve(count);
    const kw = this.keySize >> 2;
    const vw = this.valueSize >> 2;
    copyWords(words, keyAt, count * kw, this.keyWords, this.count * kw);
    if (vw > 0) copyWords(words, valAt, count * vw, this.valueWords, this.count * vw);
    this.count += count;
  }

  /** Append a key given as a latin1 string (deletes: no value). */
  pushKey(k: string): void {
    const at = this.push();
    this.keys.write(k, at * this.keySize, this.keySize, 'latin1');
  }

  key(i: number): string {
    return this.keys.toString('latin1', i * this.keySize, (i + 1) * this.keySize);
  }

  clear(): void {
    this.count = 0;
  }

  /** Queue these entries for writing; the buffers must not change until the queue is drained. */
  writeTo(map: MapIO, q: WriteQueue): void {
    if (this.count > 0) q.update(map, this.keys, this.values, this.count);
  }

  removeFrom(map: MapIO, q: WriteQueue): void {
    if (this.count > 0) q.remove(map, this.keys, this.count);
  }
}

/** A read-only run of packed entries inside a larger buffer (a section of a service record). */
export interface PackedView {
  readonly buf: Buffer;
  /** buf as 32-bit words (keyOff and valOff are multiples of 4). */
  readonly words: Int32Array;
  readonly keyOff: number;
  readonly valOff: number;
  readonly count: number;
  readonly keySize: number;
  readonly valueSize: number;
}

export function viewKey(v: PackedView, i: number): string {
  return v.buf.toString('latin1', v.keyOff + i * v.keySize, v.keyOff + (i + 1) * v.keySize);
}

export function viewValue(v: PackedView, i: number): string {
  return v.buf.toString('latin1', v.valOff + i * v.valueSize, v.valOff + (i + 1) * v.valueSize);
}
