/**
 * `--source file:DIR`: every *.yaml, *.yml and *.json file in DIR, each with
 * one or more documents holding v1 Service, discovery.k8s.io/v1
 * EndpointSlice or v1 Node objects. Changes on disk apply while running:
 * inotify (fs.watch) for speed, plus a rescan every 500 ms because inotify
 * misses events on some filesystems and for editors that replace files.
 *
 * Bad input never loses state: a file that does not parse keeps every object
 * it held before (its good documents still apply, and so do the good items
 * of a JSON List whose brackets balance), and an object that fails
 * validation keeps its last good version in the store.
 *
 * The store holds the union of what the files hold, whatever order files
 * change and are read in: an object moved from one file to another stays,
 * and goes only when no file holds it. An object in several files takes the
 * version of the first file by name; the duplicate is reported.
 */
import * as fs from 'node:fs';
import { isAscii } from 'node:buffer';
import * as path from 'node:path';
import type * as Yaml from 'yaml';
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { ClusterStore } from '../model/store';
import { objectKey } from '../model/types';
import { flatKey } from '../util/keys';
import { Logger } from '../util/log';
import { ChangeListener, Source } from './source';

type Kind = 'Service' | 'EndpointSlice' | 'Node';

/**
 * The kind of an object this source reads, or null. Compared field by
 * field: a "apiVersion/kind" string per object was a string to build and
 * then to look up in V8's string table, twenty thousand times a cold start.
 */
function supportedKind(apiVersion: unknown, kind: unknown): Kind | null {
  switch (kind) {
    case 'Service':
      return apiVersion === 'v1' ? 'Service' : null;
    case 'EndpointSlice':
      return apiVersion === 'discovery.k8s.io/v1' ? 'EndpointSlice' : null;
    case 'Node':
      return apiVersion === 'v1' ? 'Node' : null;
    default:
      return null;
  }
}
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
  /**
   * Identities ("Kind/ns/name", "Node/name"). A list, not a Map: a cold
   * start reads every file once, and a Map of a thousand entries per file
   * was megabytes of tables grown and thrown away; a set is built only
   * when a file is read again and there is something to compare.
   */
  objects: readonly string[];
}

function kindOf(id: string): Kind {
  return id.startsWith('Service/') ? 'Service' : id.startsWith('Node/') ? 'Node' : 'EndpointSlice';
}

/** "Service default/web" for "Service/default/web", "Node n1" for "Node/n1". */
function describe(id: string): string {
  const slash = id.indexOf('/');
  return `${id.slice(0, slash)} ${id.slice(slash + 1)}`;
}

/** Insert into a sorted list of file names. */
function insertSorted(list: string[], file: string): void {
  let i = 0;
  while (i < list.length && list[i]! < file) i++;
  list.splice(i, 0, file);
}

export class FileSource implements Source {
  private readonly dir: string;
  private readonly store: ClusterStore;
  private readonly onChange: ChangeListener;
  private readonly log: Logger;
  private readonly files = new Map<string, FileState>();
  /**
   * The file whose version of each object the store holds: the first file
   * by name holding it. One entry per object, whose key is the identity
   * string of a file's list and whose value the files map's key (about
   * 0.8 MB for ten thousand services and their slices).
   */
  private readonly owners = new Map<string, string>();
  /** For an object in more than one file (rare): the other files holding it, sorted. */
  private readonly alsoIn = new Map<string, string[]>();
  /** Objects whose last file let go of them in this scan: deleted when it ends, unless a file read later holds them. */
  private readonly orphans = new Set<string>();
  /** Files that took over an object from the file before them: read again before the scan ends, for their version of it. */
  private readonly reread = new Set<string>();
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
    const present = new Set(names.map((n) => path.join(this.dir, n)));
    // Files gone first: a file renamed is then new under its name, not a duplicate of itself.
    for (const [file, prev] of this.files) {
      if (present.has(file)) continue;
      this.files.delete(file);
      this.reread.delete(file);
      for (const id of prev.objects) this.release(file, id);
      this.log.info('file removed', { file });
    }
    for (const name of names.sort()) {
      const file = path.join(this.dir, name);
      const got = this.read(file, true);
      if (got) changed = this.load(file, got.stamp, got.bytes) || changed;
    }
    // An object the first file holding it let go of takes the next file's version.
    while (this.reread.size > 0) {
      const file = this.reread.values().next().value as string;
      const got = this.read(file, false);
      if (got) changed = this.load(file, got.stamp, got.bytes) || changed;
      else this.reread.delete(file); // gone since: the next scan sees it gone
    }
    for (const id of this.orphans) if (!this.owners.has(id)) changed = this.remove(id) || changed;
    this.orphans.clear();
    releaseReadBuffer();
    if (changed && !initial) this.onChange();
  }

  /** A file's stamp and bytes; null if it is not a regular file, is gone, or (ifChanged) has the stamp it had when last read. */
  private read(file: string, ifChanged: boolean): { stamp: string; bytes: Buffer } | null {
    try {
      const st = fs.statSync(file);
      if (!st.isFile()) return null;
      const stamp = `${st.ino}:${st.size}:${st.mtimeMs}`;
      if (ifChanged && this.files.get(file)?.stamp === stamp) return null;
      // A new stamp with the same content (a touch, an editor's save) is
      // read again; the store tells that nothing changed.
      return { stamp, bytes: readBytes(file) };
    } catch {
      return null; // vanished between readdir and read: the next scan sees it gone
    }
  }

  /** The file holds the object (again): whether its version is the one to apply. */
  private hold(file: string, id: string): boolean {
    const owner = this.owners.get(id);
    if (owner === undefined) {
      this.owners.set(id, file);
      return true;
    }
    if (owner === file) return true;
    const others = this.alsoIn.get(id) ?? [];
    if (others.includes(file)) return false;
    if (file < owner) {
      this.owners.set(id, file);
      insertSorted(others, owner);
    } else insertSorted(others, file);
    this.alsoIn.set(id, others);
    const first = file < owner ? file : owner;
    this.log.warn('object in more than one file; the first file by name applies', {
      object: describe(id),
      file: first,
      duplicate: first === file ? owner : file,
    });
    return first === file;
  }

  /** The file no longer holds the object: the next file holding it takes over, or it goes when the scan ends. */
  private release(file: string, id: string): void {
    const others = this.alsoIn.get(id);
    if (this.owners.get(id) !== file) {
      const at = others?.indexOf(file) ?? -1;
      if (others && at >= 0) others.splice(at, 1);
      if (others?.length === 0) this.alsoIn.delete(id);
      return;
    }
    const next = others?.shift();
    if (!others || next === undefined) {
      this.owners.delete(id);
      this.orphans.add(id);
      return;
    }
    if (others.length === 0) this.alsoIn.delete(id);
    this.owners.set(id, next);
    this.reread.add(next);
  }

  /** Parse one file and apply the objects that changed. Returns true if any did. */
  private load(file: string, stamp: string, bytes: Buffer): boolean {
    this.reread.delete(file); // this read has its version of everything it holds
    const prev = this.files.get(file);
    const objects: string[] = [];
    let changed = false;
    let broken = false;
    const malformed = (doc: number, index: number, line: number | undefined, error: string): void => {
      broken = true;
      this.log.error('malformed document; keeping what this file held before', { file, document: whereText(doc, index), line, error });
    };
    forEachObject(file, bytes, malformed, (item, doc, index) => {
      if (typeof item !== 'object' || item === null || Array.isArray(item)) {
        this.log.error('not a Kubernetes object', { file, document: whereText(doc, index) });
        return;
      }
      const obj = item as K8sObject;
      const kind = supportedKind(obj.apiVersion, obj.kind);
      const name = typeof obj.metadata?.name === 'string' ? obj.metadata.name : '';
      const ns = typeof obj.metadata?.namespace === 'string' && obj.metadata.namespace ? obj.metadata.namespace : 'default';
      if (!kind) {
        this.log.error('unknown kind; ignored', {
          file,
          document: whereText(doc, index),
          object: `${String(obj.kind)} ${ns}/${name}`,
          field: 'apiVersion/kind',
          error: `expected v1 Service, discovery.k8s.io/v1 EndpointSlice or v1 Node, got ${String(obj.apiVersion)} ${String(obj.kind)}`,
        });
        return;
      }
      if (!name) {
        this.log.error('invalid object', { file, document: whereText(doc, index), object: `${kind} ${ns}/(unnamed)`, field: 'metadata.name', error: 'is required' });
        return;
      }
      const id = kind === 'Node' ? flatKey('Node/', name) : flatKey(kind, '/', ns, '/', name);
      objects.push(id);
      if (this.hold(file, id)) changed = this.upsert(file, kind, obj) || changed;
    });
    if (prev) {
      const now = new Set(objects);
      for (const id of prev.objects) {
        if (now.has(id)) continue;
        // A broken file keeps every object of its previous version that the good documents do not replace.
        if (broken) objects.push(id);
        else this.release(file, id);
      }
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

  private remove(id: string): boolean {
    const kind = kindOf(id);
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
 * A file's bytes, in the read buffer shared by the scan (valid until the
 * next read). A fresh buffer per file is fresh memory, and first-touch page
 * faults are a large part of a cold start on some virtual machines (15 µs
 * per 4 KiB page measured here).
 */
function readBytes(file: string): Buffer {
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
  return readBuf.subarray(0, n);
}

/**
 * Where an object is in its file: document `doc` and, in a List, item
 * `index` (-1: the document itself). Made into text only for a message.
 */
function whereText(doc: number, index: number): string {
  return index < 0 ? `document ${doc}` : `document ${doc} items[${index}]`;
}

type OnObject = (value: unknown, doc: number, index: number) => void;
type OnMalformed = (doc: number, index: number, line: number | undefined, error: string) => void;

/**
 * Every object of a file in order: each document, or each item of a
 * document that is a List; `malformed` gets each part that does not parse.
 * Generated manifests are plain ASCII, where decoding as latin1 gives the
 * same string as UTF-8 without validating every byte, and a one-byte string
 * that JSON.parse reads faster.
 *
 * Callbacks rather than a generator of entries: a cold start reads twenty
 * thousand objects, and an entry object each, whose `item` field held a
 * Service's shape and then an EndpointSlice's, cost V8 a recompilation.
 */
function forEachObject(file: string, bytes: Buffer, malformed: OnMalformed, onObject: OnObject): void {
  const encoding = isAscii(bytes) ? 'latin1' : 'utf8';
  if (path.extname(file) === '.json') {
    jsonObjects(bytes, encoding, malformed, onObject);
    return;
  }
  // The YAML parser is loaded on first use: JSON-only directories never pay for it.
  const docs = (require('yaml') as typeof Yaml).parseAllDocuments(bytes.toString(encoding));
  for (let i = 0; i < docs.length; i++) {
    const doc = docs[i]!;
    if (doc.errors.length > 0) {
      const e = doc.errors[0]!;
      malformed(i, -1, e.linePos?.[0]?.line, e.message.split('\n')[0]!);
      continue;
    }
    documentObjects(doc.toJS(), i, onObject);
  }
}

function documentObjects(value: unknown, doc: number, onObject: OnObject): void {
  if (value === null || value === undefined) return; // empty document
  if (!isList(value)) {
    onObject(value, doc, -1);
    return;
  }
  for (let j = 0; j < value.items.length; j++) onObject(value.items[j], doc, j);
}

/** A .json file: one document (JSON.parse is an order of magnitude faster than a YAML parser on large generated manifests). */
function jsonObjects(bytes: Buffer, encoding: 'latin1' | 'utf8', malformed: OnMalformed, onObject: OnObject): void {
  const whole = parseJson(bytes.toString(encoding));
  if ('error' in whole) malformed(0, -1, undefined, whole.error);
  else documentObjects(whole.value, 0, onObject);
}

function parseJson(text: string): { value: unknown } | { error: string } {
  try {
    return { value: JSON.parse(text) as unknown };
  } catch (e) {
    return { error: errorMessage(e) };
  }
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function isList(v: unknown): v is { items: unknown[] } {
  if (typeof v !== 'object' || v === null) return false;
  const { items, kind } = v as { items?: unknown; kind?: unknown };
  return Array.isArray(items) && typeof kind === 'string' && kind.endsWith('List');
}
