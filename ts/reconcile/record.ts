/**
 * A service's record: its map entries, packed as the kernel takes them,
 * and the backend rows it holds references on, in one Buffer of its own.
 *
 * Ten thousand services are ten thousand records that live as long as
 * their service, so a record is two objects (the Buffer and the frontend
 * list) rather than an object per section: every object kept is one more
 * for each garbage collection to copy. Small records come out of Node's
 * Buffer pool (Buffer.allocUnsafe), so they cost no ArrayBuffer each.
 *
 * Layout, in 32-bit little-endian words (every key and value size is a
 * multiple of 4):
 *
 *   [0, S)             entry count of each of the S sections
 *   [S]                n, the number of backend rows
 *   [S + 1, S + 1 + n) backend rows
 *   then per section   its keys, then its values (raw bytes, as the kernel takes them)
 */
import { Packed, PackedView } from './packed';

export interface ServiceRecord {
  readonly bytes: Buffer;
  /** frontendKeys this service owns (one rev_nat id each). */
  readonly frontends: readonly string[];
}

/** Key and value size (bytes) of each section, in record order. */
export type SectionSizes = ReadonlyArray<{ readonly keySize: number; readonly valueSize: number }>;

/** A record holding the entries of `sections` (one Packed per section) and `rows`. */
export function freezeRecord(sections: readonly Packed[], rows: readonly number[], frontends: readonly string[]): ServiceRecord {
  const head = 4 * (sections.length + 1 + rows.length);
  let size = head;
  for (const p of sections) size += p.count * (p.keySize + p.valueSize);
  // Every byte is written below.
  const bytes = Buffer.allocUnsafe(size);
  sections.forEach((p, s) => bytes.writeInt32LE(p.count, 4 * s));
  bytes.writeInt32LE(rows.length, 4 * sections.length);
  rows.forEach((row, i) => bytes.writeInt32LE(row, 4 * (sections.length + 1 + i)));
  let at = head;
  for (const p of sections) {
    at += p.keys.copy(bytes, at, 0, p.count * p.keySize);
    at += p.values.copy(bytes, at, 0, p.count * p.valueSize);
  }
  return { bytes, frontends };
}

export function entryCount(r: ServiceRecord, s: number): number {
  return r.bytes.readInt32LE(4 * s);
}

/** The backend rows of a record, by calling `fn` on each. */
export function forEachBackendRow(r: ServiceRecord, sizes: SectionSizes, fn: (row: number) => void): void {
  const n = r.bytes.readInt32LE(4 * sizes.length);
  for (let i = 0; i < n; i++) fn(r.bytes.readInt32LE(4 * (sizes.length + 1 + i)));
}

/** Section s of a record: a view of its entries in the record's bytes. */
export function sectionView(r: ServiceRecord, sizes: SectionSizes, s: number): PackedView {
  let keyOff = 4 * (sizes.length + 1 + r.bytes.readInt32LE(4 * sizes.length));
  for (let i = 0; i < s; i++) keyOff += entryCount(r, i) * (sizes[i]!.keySize + sizes[i]!.valueSize);
  const { keySize, valueSize } = sizes[s]!;
  const count = entryCount(r, s);
  return { buf: r.bytes, keyOff, valOff: keyOff + count * keySize, count, keySize, valueSize };
}
