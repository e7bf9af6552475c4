/**
 * Map entries packed back to back, the way the kernel's batch calls take
 * them: keys at keySize, values at valueSize. The reconciler keeps each
 * service's entries and every pending write in this form, so a sync of ten
 * thousand services makes a few large buffers instead of hundreds of
 * thousands of small JavaScript objects.
 */
import { MapIO, WriteQueue } from '../datapath/maps';

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
    const cap = Math.max(need, (this.keys.length / this.keySize) * 2);
    const keys = Buffer.alloc(cap * this.keySize);
    const values = Buffer.alloc(cap * this.valueSize);
    this.keys.copy(keys, 0, 0, this.count * this.keySize);
    this.values.copy(values, 0, 0, this.count * this.valueSize);
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
    from.buf.copy(this.keys, at * this.keySize, from.keyOff + i * this.keySize, from.keyOff + (i + 1) * this.keySize);
    from.buf.copy(this.values, at * this.valueSize, from.valOff + i * this.valueSize, from.valOff + (i + 1) * this.valueSize);
  }

  /** Append every entry of `from` (same sizes): two copies whatever its size. */
  pushAll(from: PackedView): void {
    if (from.count === 0) return;
    this.reserve(from.count);
    from.buf.copy(this.keys, this.count * this.keySize, from.keyOff, from.keyOff + from.count * this.keySize);
    from.buf.copy(this.values, this.count * this.valueSize, from.valOff, from.valOff + from.count * this.valueSize);
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
