/**
 * Order-independent digests of sets of map entries: the count and two sums
 * of 32-bit hashes of each entry's 32-bit words (key, then value). Two sets with
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

  /** Add one entry: keySize bytes at keyOff of `keys`, and valueSize bytes at valOff of `values` (both multiples of 4). */
  add(keys: Buffer, keyOff: number, keySize: number, values: Buffer, valOff: number, valueSize: number): void {
    let h1 = 0x9747b28c;
    let h2 = 0x2545f491;
    for (let i = 0; i < keySize; i += 4) {
      const w = keys.readInt32LE(keyOff + i);
      h1 = mix(h1, w);
      h2 = mix(h2, ~w);
    }
    for (let i = 0; i < valueSize; i += 4) {
      const w = values.readInt32LE(valOff + i);
      h1 = mix(h1, w);
      h2 = mix(h2, ~w);
    }
    this.count++;
    this.a = (this.a + fmix(h1)) | 0;
    this.b = (this.b + fmix(h2)) | 0;
  }

  /** Add count entries packed back to back: keys from keyOff of `keys`, values from valOff of `values`. */
  addPacked(keys: Buffer, keyOff: number, values: Buffer, valOff: number, count: number, keySize: number, valueSize: number): void {
    for (let i = 0; i < count; i++) this.add(keys, keyOff + i * keySize, keySize, values, valOff + i * valueSize, valueSize);
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
 * A digest that remembers each entry's contribution with two hashes of its
 * key, so that what a walk read of keys written meanwhile can be taken back
 * out (the walk may have read them before or after the write). Typed
 * arrays, no object per entry: a hundred thousand entries are 1.6 MB.
 */
export class KeyedDigest extends Digest {
  private k1: Int32Array = new Int32Array(1024);
  private k2: Int32Array = new Int32Array(1024);
  private ea: Int32Array = new Int32Array(1024);
  private eb: Int32Array = new Int32Array(1024);
  private used = 0;

  override add(keys: Buffer, keyOff: number, keySize: number, values: Buffer, valOff: number, valueSize: number): void {
    const a0 = this.a;
    const b0 = this.b;
    super.add(keys, keyOff, keySize, values, valOff, valueSize);
    if (this.used === this.k1.length) this.grow();
    const s = this.used++;
    keyHashes(keys, keyOff, keySize, this.k1, this.k2, s);
    this.ea[s] = (this.a - a0) | 0;
    this.eb[s] = (this.b - b0) | 0;
  }

  /** Take out every entry read under these keys (latin1 strings of keySize bytes): one pass over what was read. */
  takeBack(keys: Iterable<string>, keySize: number): void {
    const want = new Map<number, number[]>();
    const h1 = new Int32Array(1);
    const h2 = new Int32Array(1);
    for (const k of keys) {
      keyHashes(Buffer.from(k, 'latin1'), 0, keySize, h1, h2, 0);
      const l = want.get(h1[0]!);
      if (l) l.push(h2[0]!);
      else want.set(h1[0]!, [h2[0]!]);
    }
    if (want.size === 0) return;
    for (let s = 0; s < this.used; s++) {
      const l = want.get(this.k1[s]!);
      if (!l || !l.includes(this.k2[s]!)) continue;
      this.count--;
      this.a = (this.a - this.ea[s]!) | 0;
      this.b = (this.b - this.eb[s]!) | 0;
    }
  }

  private grow(): void {
    const more = (a: Int32Array): Int32Array => {
      const b = new Int32Array(a.length * 2);
      b.set(a);
      return b;
    };
    this.k1 = more(this.k1);
    this.k2 = more(this.k2);
    this.ea = more(this.ea);
    this.eb = more(this.eb);
  }
}

function keyHashes(keys: Buffer, keyOff: number, keySize: number, out1: Int32Array, out2: Int32Array, at: number): void {
  let h1 = 0x3c6ef372;
  let h2 = 0x510e527f;
  for (let i = 0; i < keySize; i += 4) {
    const w = keys.readInt32LE(keyOff + i);
    h1 = mix(h1, w);
    h2 = mix(h2, ~w);
  }
  out1[at] = fmix(h1);
  out2[at] = fmix(h2);
}
