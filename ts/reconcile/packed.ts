/**
 * Map entries packed back to back, the way the kernel's batch calls take
 * them: keys at keySize, values at valueSize. The reconciler keeps each
 * service's entries and every pending write in this form, so a sync of ten
 * thousand services makes a few large buffers instead of hundreds of
 * thousands of small JavaScript objects.
 */
import { MapIO } from '../datapath/maps';

/**
 * dst[at..] = src[start..end]. TypedArray.set on a subarray: Buffer.copy
 * costs ~0.5 µs per call in Node 20 (argument checks), five times as much,
 * and a full sync makes a hundred thousand of these small copies.
 */
export function copyBytes(src: Buffer, start: number, end: number, dst: Buffer, at: number): number {
  if (end > start) dst.set(src.subarray(start, end), at);
  return end - start;
}

export class Packed {
  keys: Buffer;
  values: Buffer;
  count = 0;

  constructor(
    readonly keySize: number,
    readonly valueSize: number,
    capacity = 16,
  ) {
    this.keys = Buffer.alloc(capacity * keySize);
    this.values = Buffer.alloc(capacity * valueSize);
  }

  /** Make room for `n` more entries. */
  reserve(n: number): void {
    const need = this.count + n;
    if (need * this.keySize <= this.keys.length) return;
    const cap = Math.max(need, this.keys.length / this.keySize * 2);
    const keys = Buffer.alloc(cap * this.keySize);
    const values = Buffer.alloc(cap * this.valueSize);
    copyBytes(this.keys, 0, this.count * this.keySize, keys, 0);
    copyBytes(this.values, 0, this.count * this.valueSize, values, 0);
    this.keys = keys;
    this.values = values;
  }

  /** Append one entry; returns its index (write the bytes at index * size). */
  push(): number {
    this.reserve(1);
    return this.count++;
  }

  /** Append entry `i` of `from` (same sizes). */
  pushFrom(from: PackedView, i: number): void {
    const at = this.push();
    copyBytes(from.buf, from.keyOff + i * this.keySize, from.keyOff + (i + 1) * this.keySize, this.keys, at * this.keySize);
    if (this.valueSize > 0) copyBytes(from.buf, from.valOff + i * this.valueSize, from.valOff + (i + 1) * this.valueSize, this.values, at * this.valueSize);
  }

  /** Append every entry of `from`, two copies whatever its size. */
  pushAll(from: PackedView): void {
    if (from.count === 0) return;
    this.reserve(from.count);
    copyBytes(from.buf, from.keyOff, from.keyOff + from.count * this.keySize, this.keys, this.count * this.keySize);
    if (this.valueSize > 0) copyBytes(from.buf, from.valOff, from.valOff + from.count * this.valueSize, this.values, this.count * this.valueSize);
    this.count += from.count;
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

  writeTo(map: MapIO): void {
    if (this.count > 0) map.updateBatch(this.keys, this.values, this.count);
  }

  removeFrom(map: MapIO): void {
    if (this.count > 0) map.removeBatch(this.keys, this.count);
  }
}

/** A read-only run of packed entries inside a larger buffer (a section of a service record). */
export interface PackedView {
  readonly buf: Buffer;
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
