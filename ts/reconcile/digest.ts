/**
 * Order-independent digests of sets of map entries: the count and two sums
 * of 32-bit hashes of each entry's words (key, then value). Two sets with
 * the same digest are equal but for a 2^-64 chance; the digest of a union
 * is the sum of the digests. The periodic drift check compares the digest
 * of what a map holds with the digest of what the agent wants there, which
 * needs no index of either side: a full comparison at ten thousand services
 * builds a string map of a hundred thousand entries per map and stalls the
 * agent for ~0.4 s, so it runs only once a digest says something differs.
 */
export class Digest {
  count = 0;
  a = 0;
  b = 0;

  /** Add one entry: kw key words at keyAt of `keys`, and vw value words at valAt of `values`. */
  add(keys: Int32Array, keyAt: number, kw: number, values: Int32Array, valAt: number, vw: number): void {
    let h1 = 0x9747b28c;
    let h2 = 0x2545f491;
    for (let i = 0; i < kw; i++) {
      h1 = mix(h1, keys[keyAt + i]!);
      h2 = mix(h2, ~keys[keyAt + i]!);
    }
    for (let i = 0; i < vw; i++) {
      h1 = mix(h1, values[valAt + i]!);
      h2 = mix(h2, ~values[valAt + i]!);
    }
    this.count++;
    this.a = (this.a + fmix(h1)) | 0;
    this.b = (this.b + fmix(h2)) | 0;
  }

  /** Add count entries packed back to back: keys from keyAt of `keys`, values from valAt of `values`. */
  addPacked(keys: Int32Array, keyAt: number, values: Int32Array, valAt: number, count: number, keySize: number, valueSize: number): void {
    const kw = keySize >> 2;
    const vw = valueSize >> 2;
    for (let i = 0; i < count; i++) this.add(keys, keyAt + i * kw, kw, values, valAt + i * vw, vw);
  }

  addAll(d: Digest): void {
    this.count += d.count;
    this.a = (this.a + d.a) | 0;
    this.b = (this.b + d.b) | 0;
  }

  equals(d: Digest): boolean {
    return this.count === d.count && this.a === d.a && this.b === d.b;
  }
}

function mix(h: number, w: number): number {
  let k = Math.imul(w, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/**
 * A digest that remembers each entry's contribution by key, so that what a
 * walk read of a key that was written meanwhile can be taken back out (the
 * walk may have read it before or after the write). Keys are identified by
 * two 32-bit hashes of their words: numbers, not strings, so remembering a
 * hundred thousand entries costs a few milliseconds spread over a walk.
 */
export class KeyedDigest extends Digest {
  /** First key hash -> slot + 1 of the newest entry with it; slots with the same first hash are chained. */
  private readonly slots = new Map<number, number>();
  private k2: Int32Array = new Int32Array(1024);
  private ea: Int32Array = new Int32Array(1024);
  private eb: Int32Array = new Int32Array(1024);
  private chain: Int32Array = new Int32Array(1024);
  private used = 0;

  override add(keys: Int32Array, keyAt: number, kw: number, values: Int32Array, valAt: number, vw: number): void {
    const a0 = this.a;
    const b0 = this.b;
    super.add(keys, keyAt, kw, values, valAt, vw);
    const [h1, h2] = keyHashes(keys, keyAt, kw);
    if (this.used === this.k2.length) this.grow();
    const s = this.used++;
    this.k2[s] = h2;
    this.ea[s] = (this.a - a0) | 0;
    this.eb[s] = (this.b - b0) | 0;
    this.chain[s] = this.slots.get(h1) ?? 0;
    this.slots.set(h1, s + 1);
  }

  /** Take out every entry read under this key (none, or one per time the walk met it). */
  takeBack(keys: Int32Array, keyAt: number, kw: number): void {
    const [h1, h2] = keyHashes(keys, keyAt, kw);
    let keep = 0;
    for (let s1 = this.slots.get(h1) ?? 0; s1 !== 0; s1 = this.chain[s1 - 1]!) {
      const s = s1 - 1;
      if (this.k2[s] !== h2) {
        keep = keep || s1;
        continue;
      }
      this.count--;
      this.a = (this.a - this.ea[s]!) | 0;
      this.b = (this.b - this.eb[s]!) | 0;
    }
    // Entries of other keys that share the first hash stay reachable; those of this key are gone.
    if (keep) this.relink(h1, h2);
    else this.slots.delete(h1);
  }

  private relink(h1: number, h2: number): void {
    let head = 0;
    let tail = -1;
    for (let s1 = this.slots.get(h1) ?? 0; s1 !== 0; ) {
      const next = this.chain[s1 - 1]!;
      if (this.k2[s1 - 1] !== h2) {
        if (tail < 0) head = s1;
        else this.chain[tail] = s1;
        tail = s1 - 1;
        this.chain[tail] = 0;
      }
      s1 = next;
    }
    this.slots.set(h1, head);
  }

  private grow(): void {
    const more = (a: Int32Array): Int32Array => {
      const b = new Int32Array(a.length * 2);
      b.set(a);
      return b;
    };
    this.k2 = more(this.k2);
    this.ea = more(this.ea);
    this.eb = more(this.eb);
    this.chain = more(this.chain);
  }
}

function keyHashes(keys: Int32Array, keyAt: number, kw: number): [number, number] {
  let h1 = 0x3c6ef372;
  let h2 = 0x510e527f;
  for (let i = 0; i < kw; i++) {
    h1 = mix(h1, keys[keyAt + i]!);
    h2 = mix(h2, ~keys[keyAt + i]!);
  }
  return [fmix(h1), fmix(h2)];
}
