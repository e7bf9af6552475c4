/**
 * Map keys built from parts, as flat strings. A template literal or `+`
 * builds a string of more than a few characters as a tree of concatenation
 * nodes, and a Map keeps that tree as its key: about 130 bytes for an
 * "addr:port/PROTO" key instead of 40, slower to hash, and at ten thousand
 * services there are a hundred thousand such keys. join() writes one flat
 * string.
 */
export function flatKey(...parts: ReadonlyArray<string | number>): string {
  return parts.join('');
}
