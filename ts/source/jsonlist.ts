/**
 * Where the items of a JSON List are in the file's bytes, so that each item
 * can be parsed on its own.
 *
 * Why: JSON.parse of a whole 600 kB List builds every item before the first
 * one is used. All of them then survive the young-generation collections
 * that run while they are turned into models, so V8 copies them and
 * promotes them to the old generation, only for them to die there. The file
 * is also one string above V8's large-object threshold (128 kB), which lands
 * on freshly mapped pages every time. Parsed item by item, each raw object
 * dies young and each string is small.
 *
 * The layout is used only when parsing its pieces is exactly parsing the
 * file: the envelope (the file with the items array emptied) must parse, every
 * item must parse, and the bytes between items must be whitespace and single
 * commas, which this scanner checks. Anything it does not recognise (no
 * top-level object, an "items" key twice, a scalar item, unbalanced brackets)
 * gives null, and the caller parses the whole file as before, which also
 * gives JSON.parse's own error for a broken file.
 */

/** Byte offsets of a top-level "items" array and of each element in it. */
export interface JsonListLayout {
  /** Offset of the array's "[" and of its "]". */
  readonly open: number;
  readonly close: number;
  /** [start, end) of each item, flattened: item k spans items[2k] to items[2k + 1]. */
  readonly items: readonly number[];
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
/** "items" between quotes. */
const ITEMS = [0x69, 0x74, 0x65, 0x6d, 0x73];

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/** Where the top-level object's "items" array and its object or array elements are; null if the file is not plainly that shape. */
export function jsonListLayout(b: Uint8Array): JsonListLayout | null {
  const n = b.length;
  let i = 0;
  while (i < n && isSpace(b[i]!)) i++;
  if (b[i] !== OPEN_BRACE) return null;
  let depth = 0;
  /** Depth 1: the last string ended where "items" would, and a colon followed it. */
  let lastWasItemsKey = false;
  let itemsKey = false;
  let open = -1;
  let close = -1;
  /** Inside the items array (depth 2): an element ended and no comma followed yet. */
  let afterItem = false;
  const items: number[] = [];
  for (; i < n; i++) {
    const c = b[i]!;
    if (c === QUOTE) {
      const s = i;
      i = closingQuote(b, i);
      if (i >= n) return null; // unterminated string
      if (depth === 1) lastWasItemsKey = i - s === 6 && ITEMS.every((ch, k) => b[s + 1 + k] === ch);
      else if (depth === 2 && open >= 0 && close < 0) return null; // a string item
      continue;
    }
    if (isSpace(c)) continue;
    if (depth === 1) {
      if (c === COLON) {
        itemsKey = lastWasItemsKey;
        lastWasItemsKey = false;
        continue;
      }
      if (c === OPEN_BRACKET && itemsKey) {
        if (open >= 0) return null; // "items" twice: JSON.parse keeps the last one
        open = i;
        depth = 2;
        itemsKey = false;
        continue;
      }
      itemsKey = false;
      lastWasItemsKey = false;
    } else if (depth === 2 && open >= 0 && close < 0) {
      // Between the items of the array.
      if (c === COMMA) {
        if (!afterItem) return null;
        afterItem = false;
        continue;
      }
      if (c === CLOSE_BRACKET) {
        if (!afterItem && items.length > 0) return null; // trailing comma
        close = i;
        depth = 1;
        continue;
      }
      if ((c !== OPEN_BRACE && c !== OPEN_BRACKET) || afterItem) return null; // a scalar item, or a missing comma
      const end = skipNested(b, i);
      if (end < 0) return null;
      items.push(i, end);
      afterItem = true;
      i = end - 1;
      continue;
    }
    if (c === OPEN_BRACE || c === OPEN_BRACKET) depth++;
    else if ((c === CLOSE_BRACE || c === CLOSE_BRACKET) && --depth === 0) break;
  }
  if (depth !== 0 || open < 0 || close < 0) return null;
  for (i++; i < n; i++) if (!isSpace(b[i]!)) return null; // text after the top-level object
  return { open, close, items };
}

/** Index of the quote that ends the string opening at b[i], or b.length if none does. */
function closingQuote(b: Uint8Array, i: number): number {
  const n = b.length;
  for (i++; i < n; i++) {
    const d = b[i]!;
    if (d === QUOTE) return i;
    if (d === BACKSLASH) i++;
  }
  return n;
}

/**
 * The end (exclusive) of the object or array opening at b[i], or -1 if the
 * file ends first. Only brackets and strings matter here; whether the item
 * is valid JSON is JSON.parse's to say. Nearly every byte of a List is in
 * its items, so this loop is the scanner's cost.
 */
function skipNested(b: Uint8Array, i: number): number {
  const n = b.length;
  let depth = 0;
  for (; i < n; i++) {
    const c = b[i]!;
    if (c === QUOTE) i = closingQuote(b, i);
    else if (c === OPEN_BRACE || c === OPEN_BRACKET) depth++;
    else if ((c === CLOSE_BRACE || c === CLOSE_BRACKET) && --depth === 0) return i + 1;
  }
  return -1;
}
