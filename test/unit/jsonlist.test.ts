/**
 * The JSON List scanner: where it gives a layout, parsing the envelope and
 * each item must be exactly JSON.parse of the file; where the file is not
 * plainly a List, it must give null (the caller then parses the whole file).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { jsonListLayout } from '../../ts/source/jsonlist';
import { rng } from './rng';

/** Strings made of what confuses a naive scanner: quotes, backslashes, brackets, commas, "items", non-ASCII. */
const NASTY = ['"', '\\', '\\"', '{', '}', '[', ']', ',', ':', 'items', '"items":[', 'é', '→', ' ', '\n', 'x'];

function randomValue(rand: () => number, depth: number): unknown {
  const r = rand();
  if (depth > 3 || r < 0.3) {
    const k = Math.floor(rand() * 4);
    if (k === 0) return Math.floor(rand() * 1e6) / 100;
    if (k === 1) return rand() < 0.5;
    if (k === 2) return null;
    return Array.from({ length: Math.floor(rand() * 4) }, () => NASTY[Math.floor(rand() * NASTY.length)]).join('');
  }
  if (r < 0.6) return Array.from({ length: Math.floor(rand() * 4) }, () => randomValue(rand, depth + 1));
  const o: Record<string, unknown> = {};
  for (let i = Math.floor(rand() * 4); i > 0; i--) o[String(randomValue(rand, 9))] = randomValue(rand, depth + 1);
  return o;
}

/** What the caller does with a layout: the envelope and every item parsed on their own. */
function parseByLayout(text: string): unknown {
  const bytes = Buffer.from(text, 'utf8');
  const layout = jsonListLayout(bytes);
  if (!layout) return undefined;
  const envelope = JSON.parse(bytes.toString('utf8', 0, layout.open + 1) + bytes.toString('utf8', layout.close)) as { items: unknown[] };
  for (let k = 0; k < layout.items.length; k += 2) envelope.items.push(JSON.parse(bytes.toString('utf8', layout.items[k], layout.items[k + 1])));
  return envelope;
}

test('parsing by the layout equals JSON.parse of the file, over random Lists', () => {
  const rand = rng(11);
  for (let n = 0; n < 500; n++) {
    const items = Array.from({ length: Math.floor(rand() * 6) }, () => (rand() < 0.85 ? (randomValue(rand, 0) as object) : [randomValue(rand, 1)]));
    const list: Record<string, unknown> = { apiVersion: 'v1', kind: 'List' };
    // "items" anywhere among the keys, and nested objects around it.
    if (rand() < 0.5) list.metadata = { resourceVersion: '1', items: 'not this one' };
    list.items = items.map((it) => (typeof it === 'object' && it !== null ? it : { v: it }));
    if (rand() < 0.5) list.trailer = { items: [1, 2] };
    const text = rand() < 0.5 ? JSON.stringify(list) : JSON.stringify(list, null, 2);
    const got = parseByLayout(text);
    assert.ok(got !== undefined, `layout found for ${text.slice(0, 80)}`);
    assert.equal(got, JSON.parse(text));
  }
});

test('item ranges are the items, in order', () => {
  // "owner" has as many letters as "items": only the key itself counts.
  const text = '{"owner":[{"z":1}],"kind":"List","items":[ {"a":"}"} ,\n[1,{"b":"\\""}],{}],"apiVersion":"v1"}';
  const layout = jsonListLayout(Buffer.from(text));
  assert.ok(layout);
  const pieces = [];
  for (let k = 0; k < layout.items.length; k += 2) pieces.push(text.slice(layout.items[k], layout.items[k + 1]));
  assert.equal(pieces, ['{"a":"}"}', '[1,{"b":"\\""}]', '{}']);
  assert.is(text[layout.open], '[');
  assert.is(text[layout.close], ']');
});

test('anything but a plain List gives null', () => {
  const cases: Array<[string, string]> = [
    ['top level is an array', '[{"kind":"List","items":[]}]'],
    ['no items key', '{"kind":"List"}'],
    ['items is not an array', '{"kind":"List","items":{"a":[1]}}'],
    ['items twice', '{"kind":"List","items":[{}],"items":[{"a":1}]}'],
    ['a scalar item', '{"kind":"List","items":[{},3]}'],
    ['a string item', '{"kind":"List","items":["{}"]}'],
    ['trailing comma', '{"kind":"List","items":[{},]}'],
    ['leading comma', '{"kind":"List","items":[,{}]}'],
    ['missing comma', '{"kind":"List","items":[{}{}]}'],
    ['text after the object', '{"kind":"List","items":[{}]} {}'],
    ['truncated', '{"kind":"List","items":[{"a":"b"},{"c":'],
    ['unterminated string', '{"kind":"List","items":[{"a":"b}]}'],
    ['"items" as a value, not a key', '{"kind":"items",[{}]}'],
  ];
  for (const [what, text] of cases) assert.is(jsonListLayout(Buffer.from(text)), null, what);
});

test('a List whose only problem is inside one item keeps its layout (that item alone fails to parse)', () => {
  const text = '{"kind":"List","items":[{"a":1},{"b":tru},{"c":3}]}';
  const layout = jsonListLayout(Buffer.from(text));
  assert.ok(layout);
  assert.is(layout.items.length, 6);
  assert.throws(() => JSON.parse(text.slice(layout.items[2], layout.items[3])));
});

test.run();
