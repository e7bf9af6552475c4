/**
 * `--source file:DIR`: every *.yaml, *.yml and *.json file in DIR, each with
 * one or more documents holding v1 Service, discovery.k8s.io/v1
 * EndpointSlice or v1 Node objects. Changes on disk apply while running:
 * inotify (fs.watch) for speed, plus a rescan every 500 ms because inotify
 * misses events on some filesystems and for editors that replace files.
 *
 * Bad input never loses state: a file that does not parse keeps every object
 * it held before (the good documents of it still apply), and an object that
 * fails validation keeps its last good version in the store.
 */
import * as fs from 'node:fs';
import { isAscii } from 'node:buffer';
import * as path from 'node:path';
import type * as Yaml from 'yaml';
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { ClusterStore } from '../model/store';
import { objectKey } from '../model/types';
import { Logger } from '../util/log';
import { ChangeListener, Source } from './source';

type Kind = 'Service' | 'EndpointSlice' | 'Node';
const KINDS: Record<string, { apiVersion: string; kind: Kind }> = {
  'v1/Service': { apiVersion: 'v1', kind: 'Service' },
  'discovery.k8s.io/v1/EndpointSlice': { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice' },
  'v1/Node': { apiVersion: 'v1', kind: 'Node' },
};
const EXTENSIONS = new Set(['.yaml', '.yml', '.json']);
const RESCAN_MS = 500;

interface K8sObject {
  apiVersion?: unknown;
  kind?: unknown;
  metadata?: { name?: unknown; namespace?: unknown };
}

/**
 * What a file held when last read: which objects, not the objects
 * themselves. Their models are in the store, which also tells an unchanged
 * object from a changed one (keeping raw objects or their text here would
 * double the agent's memory at ten thousand services).
 */
interface FileState {
  stamp: string;
  /** identity ("Kind/ns/name") -> kind */
  objects: Map<string, Kind>;
}

export class FileSource implements Source {
  private readonly dir: string;
  private readonly store: ClusterStore;
  private readonly onChange: ChangeListener;
  private readonly log: Logger;
  private readonly files = new Map<string, FileState>();
  private watcher: fs.FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private debounce: NodeJS.Timeout | null = null;

  constructor(opts: { dir: string; store: ClusterStore; onChange: ChangeListener; log: Logger }) {
    this.dir = path.resolve(opts.dir);
    this.store = opts.store;
    this.onChange = opts.onChange;
    this.log = opts.log;
  }

  async start(): Promise<void> {
    if (!fs.existsSync(this.dir) || !fs.statSync(this.dir).isDirectory()) {
      throw new Error(`--source file:${this.dir}: not a directory`);
    }
    this.scan(true);
    try {
      this.watcher = fs.watch(this.dir, () => this.scheduleScan());
      this.watcher.on('error', (e) => this.log.warn('file watch failed, polling only', { dir: this.dir, error: e.message }));
    } catch (e) {
      this.log.warn('file watch unavailable, polling only', { dir: this.dir, error: String(e) });
    }
    this.timer = setInterval(() => this.scan(false), RESCAN_MS);
    this.timer.unref();
  }

  stop(): void {
    this.watcher?.close();
    if (this.timer) clearInterval(this.timer);
    if (this.debounce) clearTimeout(this.debounce);
  }

  private scheduleScan(): void {
    if (this.debounce) return;
    // Editors write in several steps; 20 ms lets a save settle.
    this.debounce = setTimeout(() => {
      this.debounce = null;
      this.scan(false);
    }, 20);
  }

  /** Compare the directory with what was read before and apply the difference. */
  private scan(initial: boolean): void {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir).filter((n) => EXTENSIONS.has(path.extname(n)) && !n.startsWith('.'));
    } catch (e) {
      this.log.error('cannot read source directory; keeping last state', { dir: this.dir, error: String(e) });
      return;
    }
    let changed = false;
    const present = new Set<string>();
    for (const name of names.sort()) {
      const file = path.join(this.dir, name);
      present.add(file);
      let stamp: string;
      let text: string;
      try {
        const st = fs.statSync(file);
        if (!st.isFile()) continue;
        stamp = `${st.ino}:${st.size}:${st.mtimeMs}`;
        const prev = this.files.get(file);
        if (prev && prev.stamp === stamp) continue;
        // A new stamp with the same content (a touch, an editor's save) is
        // read again; the store tells that nothing changed.
        text = readText(file);
      } catch {
        continue; // vanished between readdir and read: the next scan sees it gone
      }
      changed = this.load(file, stamp, text) || changed;
    }
    for (const file of [...this.files.keys()]) {
      if (present.has(file)) continue;
      const prev = this.files.get(file)!;
      this.files.delete(file);
      for (const [id, kind] of prev.objects) this.remove(id, kind);
      changed = true;
      this.log.info('file removed', { file });
    }
    releaseReadBuffer();
    if (changed && !initial) this.onChange();
  }

  /** Parse one file and apply the objects that changed. Returns true if any did. */
  private load(file: string, stamp: string, text: string): boolean {
    const prev = this.files.get(file);
    const objects = new Map<string, Kind>();
    let changed = false;
    let broken = false;
    // The YAML parser is loaded on first use: JSON-only directories never pay for it.
    const list = path.extname(file) === '.json' ? jsonDocuments(text) : (require('yaml') as typeof Yaml).parseAllDocuments(text);
    list.forEach((doc, i) => {
      if (doc.errors.length > 0) {
        broken = true;
        const e = doc.errors[0]!;
        const line = e.linePos?.[0]?.line;
        this.log.error('malformed document; keeping what this file held before', {
          file,
          document: i,
          line,
          error: e.message.split('\n')[0],
        });
        return;
      }
      const value: unknown = doc.toJS();
      if (value === null || value === undefined) return; // empty document
      const items = isList(value) ? value.items : [value];
      items.forEach((item, j) => {
        const where = isList(value) ? `document ${i} items[${j}]` : `document ${i}`;
        if (typeof item !== 'object' || item === null || Array.isArray(item)) {
          this.log.error('not a Kubernetes object', { file, document: where });
          return;
        }
        const obj = item as K8sObject;
        const type = KINDS[`${String(obj.apiVersion)}/${String(obj.kind)}`];
        const name = typeof obj.metadata?.name === 'string' ? obj.metadata.name : '';
        const ns = typeof obj.metadata?.namespace === 'string' && obj.metadata.namespace ? obj.metadata.namespace : 'default';
        if (!type) {
          this.log.error('unknown kind; ignored', {
            file,
            document: where,
            object: `${String(obj.kind)} ${ns}/${name}`,
            field: 'apiVersion/kind',
            error: `expected v1 Service, discovery.k8s.io/v1 EndpointSlice or v1 Node, got ${String(obj.apiVersion)} ${String(obj.kind)}`,
          });
          return;
        }
        if (!name) {
          this.log.error('invalid object', { file, document: where, object: `${type.kind} ${ns}/(unnamed)`, field: 'metadata.name', error: 'is required' });
          return;
        }
        const id = type.kind === 'Node' ? `Node/${name}` : `${type.kind}/${ns}/${name}`;
        objects.set(id, type.kind);
        changed = this.upsert(file, type.kind, obj) || changed;
      });
    });
    if (broken && prev) {
      // Keep every object of the previous version that the good documents do not replace.
      for (const [id, o] of prev.objects) if (!objects.has(id)) objects.set(id, o);
    }
    for (const [id, kind] of prev?.objects ?? []) {
      if (objects.has(id)) continue;
      changed = this.remove(id, kind) || changed;
    }
    this.files.set(file, { stamp, objects });
    return changed;
  }

  /** Apply one object; returns whether the store changed. */
  private upsert(file: string, kind: Kind, raw: K8sObject): boolean {
    switch (kind) {
      case 'Service':
        return this.store.upsertService(raw as V1Service, file);
      case 'EndpointSlice':
        return this.store.upsertSlice(raw as V1EndpointSlice, file);
      case 'Node':
        return this.store.upsertNode(raw as V1Node, file);
    }
  }

  private remove(id: string, kind: Kind): boolean {
    const parts = id.split('/');
    if (kind === 'Node') return this.store.deleteNode(parts[1]!);
    if (kind === 'Service') return this.store.deleteService(objectKey(parts[1]!, parts[2]!));
    return this.store.deleteSlice(objectKey(parts[1]!, parts[2]!));
  }
}

/** Read buffer shared by the file reads of one scan, grown to the largest file. */
const READ_BUF_SIZE = 64 * 1024;
let readBuf = Buffer.alloc(READ_BUF_SIZE);

/** A scan that read a large file leaves no large buffer behind. */
function releaseReadBuffer(): void {
  if (readBuf.length > READ_BUF_SIZE) readBuf = Buffer.alloc(READ_BUF_SIZE);
}

/**
 * A file's text. The bytes go into one reused buffer: a fresh buffer per
 * file is fresh memory, and first-touch page faults are a large part of a
 * cold start on some virtual machines (15 µs per 4 KiB page measured here).
 * Generated manifests are plain ASCII, where decoding as latin1 gives the
 * same string as UTF-8 without validating every byte, and a one-byte string
 * that JSON.parse reads faster.
 */
function readText(file: string): string {
  const fd = fs.openSync(file, 'r');
  let n = 0;
  try {
    for (;;) {
      if (n === readBuf.length) {
        const bigger = Buffer.alloc(readBuf.length * 2);
        readBuf.copy(bigger, 0, 0, n);
        readBuf = bigger;
      }
      const got = fs.readSync(fd, readBuf, n, readBuf.length - n, null);
      if (got === 0) break;
      n += got;
    }
  } finally {
    fs.closeSync(fd);
  }
  const bytes = readBuf.subarray(0, n);
  return bytes.toString(isAscii(bytes) ? 'latin1' : 'utf8');
}

/**
 * A .json file as one document, in the shape the YAML path yields. JSON.parse
 * is an order of magnitude faster than a YAML parser on large generated
 * manifests (ten thousand services).
 */
function jsonDocuments(text: string): Array<{ errors: Array<{ message: string; linePos?: Array<{ line: number }> }>; toJS(): unknown }> {
  try {
    const value: unknown = JSON.parse(text);
    return [{ errors: [], toJS: () => value }];
  } catch (e) {
    return [{ errors: [{ message: e instanceof Error ? e.message : String(e) }], toJS: () => null }];
  }
}

function isList(v: unknown): v is { items: unknown[] } {
  return typeof v === 'object' && v !== null && Array.isArray((v as { items?: unknown }).items) && String((v as { kind?: unknown }).kind ?? '').endsWith('List');
}
