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

test('a JSON List with one malformed item: the other items apply, that item keeps its last good version', async () => {
  await withSource(async ({ dir, store, logs }) => {
    const svc = (name: string, ip: string): string =>
      JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name }, spec: { clusterIP: ip, ports: [{ port: 80 }] } });
    const list = (items: string[]): string => `{"apiVersion":"v1","kind":"List","items":[\n${items.join(',\n')}\n]}`;
    const file = path.join(dir, 'list.json');
    fs.writeFileSync(file, list([svc('a', '10.96.1.1'), svc('b', '10.96.1.2'), svc('c', '10.96.1.3')]));
    await until(() => store.services.has('default/c' as never));
    // b's address loses its quotes: a and c change, b stays as it was.
    fs.writeFileSync(file, list([svc('a', '10.96.2.1'), svc('b', '10.96.2.2').replace('"10.96.2.2"', '10.96.2.2'), svc('c', '10.96.2.3')]));
    await until(() => store.services.get('default/c' as never)?.clusterIPs[0] === '10.96.2.3');
    assert.is(store.services.get('default/a' as never)?.clusterIPs[0], '10.96.2.1');
    assert.is(store.services.get('default/b' as never)?.clusterIPs[0], '10.96.1.2', 'the malformed item keeps its last good version');
    const err = logs.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'malformed document; keeping what this file held before');
    assert.ok(err, 'reported');
    assert.is(err.file, file);
    assert.is(err.document, 'document 0 items[1]');
    assert.is(err.line, 3, 'the line the item starts on');
    // A file that is not valid JSON around the items applies nothing.
    fs.writeFileSync(file, list([svc('a', '10.96.3.1')]).replace('"kind":"List"', '"kind":List'));
    await until(() => logs.filter((l) => l.includes('malformed document')).length >= 2);
    assert.is(store.services.get('default/a' as never)?.clusterIPs[0], '10.96.2.1');
    assert.ok(store.services.has('default/c' as never), 'objects of the file kept');
  });
});

test('an object of another apiVersion is reported with where it is and ignored', async () => {
  await withSource(async ({ dir, store, logs }) => {
    const item = (apiVersion: string, name: string): string =>
      JSON.stringify({ apiVersion, kind: 'EndpointSlice', metadata: { name, labels: { 'kubernetes.io/service-name': 'web' } }, addressType: 'IPv4', endpoints: [{ addresses: ['10.244.0.5'] }] });
    fs.writeFileSync(path.join(dir, 'slices.json'), `{"apiVersion":"v1","kind":"List","items":[${item('discovery.k8s.io/v1beta1', 'old')},${item('discovery.k8s.io/v1', 'new')}]}`);
    await until(() => store.slices.has('default/new' as never));
    assert.not.ok(store.slices.has('default/old' as never));
    const err = logs.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'unknown kind; ignored');
    assert.ok(err, 'reported');
    assert.is(err.document, 'document 0 items[0]');
    assert.is(err.object, 'EndpointSlice default/old');
    assert.match(String(err.error), /got discovery\.k8s\.io\/v1beta1 EndpointSlice/);
  });
});

test.run();
