/**
 * The file source on a real directory: live changes within a second, and
 * bad input that never loses the last good state.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ClusterStore } from '../../ts/model/store';
import { FileSource } from '../../ts/source/file';
import { createLogger } from '../../ts/util/log';
import { rng } from './rng';

const SVC = (ip: string, port = 80) => `apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: ${ip}
  ports: [{port: ${port}}]
`;

async function withSource(fn: (ctx: { dir: string; store: ClusterStore; changes: () => number; logs: string[] }) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weir-src-'));
  const logs: string[] = [];
  const store = new ClusterStore((origin, errors) => errors.forEach((e) => logs.push(`${origin} ${e.kind} ${e.object} ${e.field}`)));
  let n = 0;
  fs.writeFileSync(path.join(dir, 'web.yaml'), SVC('10.96.0.10'));
  const src = new FileSource({ dir, store, onChange: () => n++, log: createLogger('debug', (l) => logs.push(l)) });
  await src.start();
  try {
    await fn({ dir, store, changes: () => n, logs });
  } finally {
    src.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function until(cond: () => boolean, ms = 1000): Promise<number> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return Date.now() - t0;
}

const webIP = (store: ClusterStore): string | undefined => store.services.get('default/web' as never)?.clusterIPs[0];

test('an edited file applies within 1 s', async () => {
  await withSource(async ({ dir, store }) => {
    assert.is(webIP(store), '10.96.0.10');
    fs.writeFileSync(path.join(dir, 'web.yaml'), SVC('10.96.0.11'));
    await until(() => webIP(store) === '10.96.0.11');
  });
});

test('a new file and a removed file apply within 1 s', async () => {
  await withSource(async ({ dir, store }) => {
    fs.writeFileSync(path.join(dir, 'more.yml'), SVC('10.96.0.20').replace('name: web', 'name: more'));
    await until(() => store.services.has('default/more' as never));
    fs.rmSync(path.join(dir, 'more.yml'));
    await until(() => !store.services.has('default/more' as never));
    assert.ok(store.services.has('default/web' as never));
  });
});

test('malformed YAML keeps what the file held; a later fix applies', async () => {
  await withSource(async ({ dir, store, logs }) => {
    fs.writeFileSync(path.join(dir, 'web.yaml'), 'apiVersion: v1\nkind: Service\nmetadata: {name: web\n');
    await until(() => logs.some((l) => l.includes('malformed')));
    assert.is(webIP(store), '10.96.0.10', 'last good state kept');
    fs.writeFileSync(path.join(dir, 'web.yaml'), SVC('10.96.0.12'));
    await until(() => webIP(store) === '10.96.0.12');
  });
});

test('an invalid object keeps its last good version and is reported with file and field', async () => {
  await withSource(async ({ dir, store, logs }) => {
    fs.writeFileSync(path.join(dir, 'web.yaml'), SVC('10.96.0.999'));
    await until(() => logs.some((l) => l.includes('Service default/web spec.clusterIP')));
    assert.ok(logs.some((l) => l.startsWith(path.join(dir, 'web.yaml'))));
    assert.is(webIP(store), '10.96.0.10');
  });
});

test('a file saved with a change to one object dirties only that service', async () => {
  await withSource(async ({ dir, store, changes }) => {
    const two = SVC('10.96.0.10') + '---\n' + SVC('10.96.0.40').replace('name: web', 'name: api');
    fs.writeFileSync(path.join(dir, 'web.yaml'), two);
    await until(() => store.services.has('default/api' as never));
    store.takeDirty();
    const before = changes();
    // Same objects, different text (a comment): nothing changed for the store.
    fs.writeFileSync(path.join(dir, 'web.yaml'), '# reformatted\n' + two);
    await new Promise((r) => setTimeout(r, 700));
    assert.equal(store.takeDirty(), []);
    assert.is(changes(), before, 'no sync requested');
    fs.writeFileSync(path.join(dir, 'web.yaml'), SVC('10.96.0.10') + '---\n' + SVC('10.96.0.41').replace('name: web', 'name: api'));
    await until(() => store.services.get('default/api' as never)?.clusterIPs[0] === '10.96.0.41');
    assert.equal(store.takeDirty(), ['default/api']);
  });
});

test('JSON files and List objects are read too', async () => {
  await withSource(async ({ dir, store }) => {
    const list = { apiVersion: 'v1', kind: 'List', items: [{ apiVersion: 'v1', kind: 'Service', metadata: { name: 'j' }, spec: { clusterIP: '10.96.0.30', ports: [{ port: 80 }] } }] };
    fs.writeFileSync(path.join(dir, 'list.json'), JSON.stringify(list));
    await until(() => store.services.has('default/j' as never));
  });
});

test('a JSON file that does not parse applies nothing: its objects keep their last good version, and the error names the file', async () => {
  await withSource(async ({ dir, store, logs }) => {
    const svc = (name: string, ip: string): string => JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name }, spec: { clusterIP: ip, ports: [{ port: 80 }] } });
    const list = (items: string[]): string => `{"apiVersion":"v1","kind":"List","items":[\n${items.join(',\n')}\n]}`;
    const file = path.join(dir, 'list.json');
    fs.writeFileSync(file, list([svc('a', '10.96.1.1'), svc('b', '10.96.1.2')]));
    await until(() => store.services.has('default/b' as never));
    // b's address loses its quotes: the file is not JSON, so neither a nor b changes.
    fs.writeFileSync(file, list([svc('a', '10.96.2.1'), svc('b', '10.96.2.2').replace('"10.96.2.2"', '10.96.2.2')]));
    await until(() => logs.some((l) => l.includes('malformed document')));
    const err = logs
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === 'malformed document; keeping what this file held before');
    assert.ok(err, 'reported');
    assert.is(err.file, file);
    assert.match(String(err.error), /JSON/);
    assert.is(store.services.get('default/a' as never)?.clusterIPs[0], '10.96.1.1', 'a keeps its last good version');
    assert.is(store.services.get('default/b' as never)?.clusterIPs[0], '10.96.1.2', 'b keeps its last good version');
    // Fixed, the file applies again.
    fs.writeFileSync(file, list([svc('a', '10.96.3.1'), svc('b', '10.96.3.2')]));
    await until(() => store.services.get('default/b' as never)?.clusterIPs[0] === '10.96.3.2');
    assert.is(store.services.get('default/a' as never)?.clusterIPs[0], '10.96.3.1');
  });
});

test('an object of another apiVersion is reported with where it is and ignored', async () => {
  await withSource(async ({ dir, store, logs }) => {
    const item = (apiVersion: string, name: string): string =>
      JSON.stringify({ apiVersion, kind: 'EndpointSlice', metadata: { name, labels: { 'kubernetes.io/service-name': 'web' } }, addressType: 'IPv4', endpoints: [{ addresses: ['10.244.0.5'] }] });
    fs.writeFileSync(path.join(dir, 'slices.json'), `{"apiVersion":"v1","kind":"List","items":[${item('discovery.k8s.io/v1beta1', 'old')},${item('discovery.k8s.io/v1', 'new')}]}`);
    await until(() => store.slices.has('default/new' as never));
    assert.not.ok(store.slices.has('default/old' as never));
    const err = logs
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === 'unknown kind; ignored');
    assert.ok(err, 'reported');
    assert.is(err.document, 'document 0 items[0]');
    assert.is(err.object, 'EndpointSlice default/old');
    assert.match(String(err.error), /got discovery\.k8s\.io\/v1beta1 EndpointSlice/);
  });
});

// --- the store holds the union of what the files hold ---------------------------

/** Objects the tests move between files: three Services, and slices of two of them. */
const OBJECTS = [
  { kind: 'Service', name: 'a' },
  { kind: 'Service', name: 'b' },
  { kind: 'Service', name: 'c' },
  { kind: 'EndpointSlice', name: 'a-1', service: 'a' },
  { kind: 'EndpointSlice', name: 'b-1', service: 'b' },
] as const;

/** Object `o` at version `v` (its address says which). */
function objectText(o: number, v: number): string {
  const obj = OBJECTS[o]!;
  if (obj.kind === 'Service') return `apiVersion: v1\nkind: Service\nmetadata: {name: ${obj.name}, namespace: default}\nspec:\n  clusterIP: 10.96.${v}.${o + 1}\n  ports: [{port: 80}]\n`;
  return (
    `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n` +
    `metadata: {name: ${obj.name}, namespace: default, labels: {kubernetes.io/service-name: ${obj.service}}}\n` +
    `addressType: IPv4\nports: [{port: 8080}]\nendpoints: [{addresses: [10.244.${v}.${o + 1}]}]\n`
  );
}

/** What a file holds: object index -> version. */
type Content = Map<number, number>;
const fileText = (c: Content): string => [...c].map(([o, v]) => objectText(o, v)).join('---\n');

/** The store's Services and EndpointSlices, one sorted line each. */
function storeView(store: ClusterStore): string {
  const dotted = (n: number): string => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
  const lines = [...store.services.values()].map((s) => `Service ${s.key} ${s.clusterIPs.join(',')}`);
  for (const sl of store.slices.values()) lines.push(`EndpointSlice ${sl.key} ${sl.ips.map(dotted).join(',')}`);
  return lines.sort().join('\n');
}

/** What the store must hold for these files: every object some file holds, in the version of the first file by name. */
function unionView(files: ReadonlyMap<string, Content>): string {
  const version = new Map<number, number>();
  for (const name of [...files.keys()].sort()) for (const [o, v] of files.get(name)!) if (!version.has(o)) version.set(o, v);
  return [...version]
    .map(([o, v]) => {
      const obj = OBJECTS[o]!;
      return obj.kind === 'Service' ? `Service default/${obj.name} 10.96.${v}.${o + 1}` : `EndpointSlice default/${obj.name} 10.244.${v}.${o + 1}`;
    })
    .sort()
    .join('\n');
}

interface Disk {
  dir: string;
  store: ClusterStore;
  logs: string[];
  /** What each file holds, as the test wrote it. */
  files: Map<string, Content>;
  write(name: string, c: Content): void;
  rm(name: string): void;
  rename(from: string, to: string): void;
  /** Truncate in place, as a shell's `>` does before the command writes. */
  truncate(name: string): void;
  /** Until the store is the union of the files, and still is a scan later. */
  settled(why: string): Promise<void>;
}

async function withFiles(initial: Record<string, Content>, fn: (d: Disk) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weir-src-'));
  const logs: string[] = [];
  const store = new ClusterStore((origin, errors) => errors.forEach((e) => logs.push(`${origin} ${e.kind} ${e.object} ${e.field}`)));
  const files = new Map<string, Content>();
  const d: Disk = {
    dir,
    store,
    logs,
    files,
    write(name, c) {
      fs.writeFileSync(path.join(dir, name), fileText(c));
      files.set(name, new Map(c));
    },
    rm(name) {
      fs.rmSync(path.join(dir, name));
      files.delete(name);
    },
    rename(from, to) {
      fs.renameSync(path.join(dir, from), path.join(dir, to));
      files.set(to, files.get(from)!);
      files.delete(from);
    },
    truncate(name) {
      fs.truncateSync(path.join(dir, name), 0);
      files.set(name, new Map());
    },
    async settled(why) {
      const want = unionView(files);
      try {
        await until(() => storeView(store) === want, 2000);
        await new Promise((r) => setTimeout(r, 40));
      } catch {
        // fall through to the comparison, which shows the difference
      }
      assert.fixture(storeView(store), want, why);
    },
  };
  for (const [name, c] of Object.entries(initial)) d.write(name, c);
  const src = new FileSource({ dir, store, onChange: () => undefined, log: createLogger('debug', (l) => logs.push(l)) });
  await src.start();
  try {
    assert.fixture(storeView(store), unionView(files), 'first read');
    await fn(d);
  } finally {
    src.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const holding = (...pairs: Array<[number, number]>): Content => new Map(pairs);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

for (const [from, to] of [
  ['b.yaml', 'a.yaml'],
  ['a.yaml', 'b.yaml'],
] as const) {
  // Service a and its slice move; Service b stays where it is.
  const before = { [from]: holding([0, 1], [3, 1], [1, 1]), [to]: holding([2, 1]) };
  const after = { [from]: holding([1, 1]), [to]: holding([2, 1], [0, 1], [3, 1]) };

  test(`a Service and its EndpointSlice moved from ${from} to ${to}, both files written at once, stay`, async () => {
    for (const first of [from, to]) {
      await withFiles(before, async (d) => {
        const second = first === from ? to : from;
        d.write(first, after[first]!);
        d.write(second, after[second]!);
        await d.settled(`${first} written first`);
      });
    }
  });

  test(`a Service and its EndpointSlice moved from ${from} to ${to}: ${to} gains them, then ${from} loses them`, async () => {
    await withFiles(before, async (d) => {
      d.write(to, after[to]!);
      await d.settled('held twice');
      d.write(from, after[from]!);
      await d.settled('moved');
    });
  });

  test(`a Service and its EndpointSlice moved from ${from} to ${to}: ${from} loses them, then ${to} gains them`, async () => {
    await withFiles(before, async (d) => {
      d.write(from, after[from]!);
      await d.settled('gone for a while');
      d.write(to, after[to]!);
      await d.settled('moved');
    });
  });
}

test('an object in two files takes the version of the first by name, reported with both files; it stays when either lets go', async () => {
  await withFiles({ 'b.yaml': holding([0, 2]) }, async (d) => {
    d.write('a.yaml', holding([0, 1]));
    await d.settled('a.yaml applies');
    const warn = d.logs
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === 'object in more than one file; the first file by name applies');
    assert.ok(warn, 'reported');
    assert.is(warn.object, 'Service default/a');
    assert.is(warn.file, path.join(d.dir, 'a.yaml'));
    assert.is(warn.duplicate, path.join(d.dir, 'b.yaml'));
    d.write('a.yaml', holding([1, 1]));
    await d.settled("b.yaml's version once a.yaml lets go");
    d.write('a.yaml', holding([1, 1], [0, 3]));
    await d.settled('a.yaml again');
    d.rm('a.yaml');
    await d.settled('a.yaml removed');
    d.write('c.yaml', holding([0, 4]));
    d.rm('b.yaml');
    await d.settled('c.yaml');
  });
});

test('a renamed file keeps its objects, whichever name sorts first, also over an existing file', async () => {
  await withFiles({ 'b.yaml': holding([0, 1], [3, 1]), 'x.yaml': holding([1, 1]) }, async (d) => {
    d.rename('b.yaml', 'a.yaml');
    await d.settled('b.yaml -> a.yaml');
    d.rename('a.yaml', 'c.yaml');
    await d.settled('a.yaml -> c.yaml');
    d.rename('c.yaml', 'x.yaml');
    await d.settled('c.yaml -> x.yaml, replacing it');
    const dup = d.logs.some((l) => l.includes('object in more than one file'));
    assert.not.ok(dup, 'a rename is no duplicate');
  });
});

test('a file truncated, then written (a shell redirect), holds its objects again', async () => {
  await withFiles({ 'a.yaml': holding([0, 1], [3, 1]), 'b.yaml': holding([1, 1]) }, async (d) => {
    d.truncate('a.yaml');
    await d.settled('empty for a while');
    d.write('a.yaml', holding([0, 2], [3, 2]));
    await d.settled('written');
    // Moved in the rewrite: b.yaml's objects come to a.yaml by a redirect while b.yaml is rewritten without them.
    d.truncate('a.yaml');
    d.write('b.yaml', holding());
    await sleep(40);
    d.write('a.yaml', holding([0, 2], [3, 2], [1, 1]));
    await d.settled('moved by a redirect');
  });
});

test('random writes, moves, renames, truncations and deletions: after each, the store holds what the files hold', async () => {
  const names = ['a.yaml', 'b.yaml', 'c.yaml'];
  for (const seed of [1, 2]) {
    const rand = rng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const randomContent = (): Content => {
      const c: Content = new Map();
      for (let o = 0; o < OBJECTS.length; o++) if (rand() < 0.4) c.set(o, 1 + Math.floor(rand() * 3));
      return c;
    };
    await withFiles({ 'a.yaml': randomContent(), 'b.yaml': randomContent() }, async (d) => {
      for (let step = 0; step < 30; step++) {
        const existing = names.filter((n) => d.files.has(n));
        const op = existing.length === 0 ? 'write' : pick(['write', 'move', 'move', 'rename', 'truncate', 'delete']);
        const pause = async (): Promise<void> => void (rand() < 0.5 ? await sleep(40) : undefined);
        let what: string = op;
        if (op === 'write') {
          const name = pick(names);
          d.write(name, randomContent());
          what = `write ${name}`;
        } else if (op === 'move') {
          const from = pick(existing);
          const to = pick(names.filter((n) => n !== from));
          const objs = [...d.files.get(from)!.keys()];
          const moved = objs.filter(() => rand() < 0.6);
          const left = new Map([...d.files.get(from)!].filter(([o]) => !moved.includes(o)));
          const gained = new Map(d.files.get(to) ?? []);
          for (const o of moved) gained.set(o, d.files.get(from)!.get(o)!);
          const [first, second] = rand() < 0.5 ? [from, to] : [to, from];
          d.write(first, first === from ? left : gained);
          await pause();
          d.write(second, second === from ? left : gained);
          what = `move ${moved.join(',')} ${from} -> ${to}, ${first} first`;
        } else if (op === 'rename') {
          const from = pick(existing);
          const to = pick(names.filter((n) => n !== from));
          d.rename(from, to);
          what = `rename ${from} -> ${to}`;
        } else if (op === 'truncate') {
          const name = pick(existing);
          d.truncate(name);
          await pause();
          d.write(name, randomContent());
          what = `truncate and write ${name}`;
        } else {
          const name = pick(existing);
          d.rm(name);
          what = `delete ${name}`;
        }
        await d.settled(`seed ${seed} step ${step}: ${what}`);
      }
    });
  }
});

test.run();
