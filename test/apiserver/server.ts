/**
 * A small Kubernetes API server for tests: the list/watch protocol for v1
 * Services, discovery.k8s.io/v1 EndpointSlices and v1 Nodes, over HTTPS with
 * bearer-token auth, as the real @kubernetes/client-node talks it.
 *
 *  - list: items + metadata.resourceVersion (label and field selectors);
 *  - watch (?watch=true&resourceVersion=N): chunked JSON lines of ADDED /
 *    MODIFIED / DELETED events after N, then live ones; BOOKMARK events on
 *    request; a resourceVersion older than the compaction point gets an
 *    ERROR event with a 410 Status and the stream ends, as etcd compaction
 *    makes the real server do;
 *  - 401 for a wrong token, 403 when told to forbid.
 *
 * It runs as its own process (inside a node's network namespace, where the
 * agent can reach it on 127.0.0.1) and is driven by JSON commands on stdin,
 * one per line, each answered by one JSON line on stdout:
 *   {"op":"apply","object":{...}}      create or update (bumps resourceVersion)
 *   {"op":"delete","kind":"Service","namespace":"ns","name":"x"}
 *   {"op":"compact"}                   forget history: older watches get 410
 *   {"op":"bookmark"}                  send a BOOKMARK on every open watch
 *   {"op":"close-watches"}             end every open watch stream
 *   {"op":"auth","mode":"ok"|"forbid"} 403 on every request while "forbid"
 *   {"op":"stats"}                     requests seen (lists, watches with their resourceVersion)
 * Started with: node server.js --port P --cert C --key K --token T [--rv-base N]
 */
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as readline from 'node:readline';
import { AddressInfo } from 'node:net';

type Kind = 'Service' | 'EndpointSlice' | 'Node';
interface Obj {
  apiVersion: string;
  kind: Kind;
  metadata: { name: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string>; uid?: string };
  [k: string]: unknown;
}
interface Event {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Obj;
}
interface Watcher {
  kind: Kind;
  res: import('node:http').ServerResponse;
  match: (o: Obj) => boolean;
  bookmarks: boolean;
}

const ROUTES: Array<{ re: RegExp; kind: Kind; apiVersion: string; list: string }> = [
  { re: /^\/api\/v1\/(?:namespaces\/([^/]+)\/)?services$/, kind: 'Service', apiVersion: 'v1', list: 'ServiceList' },
  { re: /^\/apis\/discovery\.k8s\.io\/v1\/(?:namespaces\/([^/]+)\/)?endpointslices$/, kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', list: 'EndpointSliceList' },
  { re: /^\/api\/v1\/nodes$/, kind: 'Node', apiVersion: 'v1', list: 'NodeList' },
];

function arg(name: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? '') : '';
}

let rv = Number(arg('rv-base') || '1000');
// A server that starts at a resourceVersion has no history before it: a
// client still watching from an older one must relist (410), as after an
// etcd restore or compaction.
let compactedBelow = arg('rv-base') ? rv : 0;
let forbid = false;
const token = arg('token');
const objects = new Map<string, Obj>();
const history: Event[] = [];
const watchers = new Set<Watcher>();
const stats = { lists: [] as string[], watches: [] as string[] };

const keyOf = (o: { kind: string; metadata: { namespace?: string; name: string } }): string => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;

/** Label selectors as kube-proxy uses them: `k`, `!k`, `k=v`, `k!=v`, comma-separated (AND). */
function labelMatcher(sel: string | null): (o: Obj) => boolean {
  if (!sel) return () => true;
  const terms = sel
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  return (o) => {
    const l = o.metadata.labels ?? {};
    return terms.every((t) => {
      if (t.startsWith('!')) return !(t.slice(1) in l);
      const ne = t.indexOf('!=');
      if (ne >= 0) return l[t.slice(0, ne)] !== t.slice(ne + 2);
      const eq = t.indexOf('=');
      if (eq >= 0) return l[t.slice(0, eq)] === t.slice(eq + 1).replace(/^=/, '');
      return t in l;
    });
  };
}

function fieldMatcher(sel: string | null): (o: Obj) => boolean {
  if (!sel) return () => true;
  const m = /^metadata\.name=(.*)$/.exec(sel);
  if (!m) return () => true;
  return (o) => o.metadata.name === m[1];
}

function status(res: import('node:http').ServerResponse, code: number, reason: string, message: string): void {
  const body = JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
}

function send(w: Watcher, type: string, object: unknown): void {
  w.res.write(JSON.stringify({ type, object }) + '\n');
}

function publish(e: Event): void {
  history.push(e);
  for (const w of watchers) if (w.kind === e.object.kind && w.match(e.object)) send(w, e.type, e.object);
}

const server = https.createServer({ cert: fs.readFileSync(arg('cert')), key: fs.readFileSync(arg('key')) }, (req, res) => {
  const url = new URL(req.url ?? '/', 'https://x');
  if (req.headers.authorization !== `Bearer ${token}`) return status(res, 401, 'Unauthorized', 'Unauthorized');
  if (forbid) return status(res, 403, 'Forbidden', `forbidden: User "system:serviceaccount:kube-system:weir" cannot list resource at ${url.pathname}`);
  const route = ROUTES.find((r) => r.re.test(url.pathname));
  if (!route || req.method !== 'GET') return status(res, 404, 'NotFound', `no route ${url.pathname}`);
  const ns = route.re.exec(url.pathname)![1];
  const labels = labelMatcher(url.searchParams.get('labelSelector'));
  const fields = fieldMatcher(url.searchParams.get('fieldSelector'));
  const match = (o: Obj): boolean => o.kind === route.kind && (!ns || o.metadata.namespace === ns) && labels(o) && fields(o);

  if (url.searchParams.get('watch') !== 'true') {
    stats.lists.push(route.kind);
    const items = [...objects.values()].filter(match);
    const body = JSON.stringify({ kind: route.list, apiVersion: route.apiVersion, metadata: { resourceVersion: String(rv) }, items });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
    return;
  }
  const from = Number(url.searchParams.get('resourceVersion') || '0');
  stats.watches.push(`${route.kind}@${from}`);
  res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
  const w: Watcher = { kind: route.kind, res, match, bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true' };
  if (from < compactedBelow) {
    send(w, 'ERROR', { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${from} (${compactedBelow})`, reason: 'Expired', code: 410 });
    res.end();
    return;
  }
  for (const e of history) if (e.rv > from && match(e.object)) send(w, e.type, e.object);
  watchers.add(w);
  req.on('close', () => watchers.delete(w));
});

function handle(cmd: { op: string; object?: Obj; kind?: Kind; namespace?: string; name?: string; mode?: string }): unknown {
  switch (cmd.op) {
    case 'apply': {
      const o = structuredClone(cmd.object!);
      const k = keyOf(o);
      const existed = objects.has(k);
      o.metadata.resourceVersion = String(++rv);
      o.metadata.uid = o.metadata.uid ?? k;
      objects.set(k, o);
      publish({ rv, type: existed ? 'MODIFIED' : 'ADDED', object: o });
      return { rv };
    }
    case 'delete': {
      const k = keyOf({ kind: cmd.kind!, metadata: { namespace: cmd.namespace, name: cmd.name! } });
      const o = objects.get(k);
      if (!o) return { missing: k };
      objects.delete(k);
      const gone = { ...o, metadata: { ...o.metadata, resourceVersion: String(++rv) } };
      publish({ rv, type: 'DELETED', object: gone });
      return { rv };
    }
    case 'compact':
      // Like etcd compaction followed by a write: every resourceVersion a
      // client may hold is now too old; a fresh list returns a valid one.
      compactedBelow = ++rv;
      history.length = 0;
      return { compactedBelow };
    case 'bookmark':
      for (const w of watchers) send(w, 'BOOKMARK', { kind: w.kind, apiVersion: 'v1', metadata: { resourceVersion: String(rv) } });
      return { rv };
    case 'close-watches':
      for (const w of watchers) w.res.end();
      watchers.clear();
      return { closed: true };
    case 'auth':
      forbid = cmd.mode === 'forbid';
      return { forbid };
    case 'stats':
      return { ...stats, rv, watchers: watchers.size };
    default:
      throw new Error(`unknown op ${cmd.op}`);
  }
}

server.listen(Number(arg('port') || '0'), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ listening: (server.address() as AddressInfo).port }) + '\n');
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    try {
      process.stdout.write(JSON.stringify({ ok: true, result: handle(JSON.parse(line) as Parameters<typeof handle>[0]) }) + '\n');
    } catch (e) {
      process.stdout.write(JSON.stringify({ ok: false, error: String(e) }) + '\n');
    }
  });
});
process.stdin.on('end', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
