/**
 * Drives test/apiserver/server.ts from a test: a throwaway CA and server
 * certificate (openssl), a kubeconfig for the agent, the server process in
 * a node's namespace, and typed commands over its stdin.
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Box, REPO } from '../box/box';
import { NsProcess } from '../box/exec';

const SERVER = path.join(REPO, 'dist/test/apiserver/server.js');

export interface K8sObject {
  apiVersion: string;
  kind: 'Service' | 'EndpointSlice' | 'Node';
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [k: string]: unknown;
}

/** CA + server certificate for 127.0.0.1, valid one day. */
function makeCerts(dir: string): { ca: string; cert: string; key: string } {
  const f = (n: string): string => path.join(dir, n);
  const ssl = (...args: string[]): void => void execFileSync('openssl', args, { stdio: 'ignore' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=weir-test-ca', '-keyout', f('ca.key'), '-out', f('ca.crt'));
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', f('server.key'), '-out', f('server.csr'));
  fs.writeFileSync(f('ext.cnf'), 'subjectAltName=IP:127.0.0.1\n');
  ssl('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', f('ext.cnf'), '-out', f('server.crt'));
  return { ca: f('ca.crt'), cert: f('server.crt'), key: f('server.key') };
}

export class ApiServer {
  readonly kubeconfig: string;
  private proc: NsProcess;
  private port = 0;
  private lastRv = 1000;
  private readonly objects = new Map<string, K8sObject>();

  private constructor(
    private readonly box: Box,
    private readonly node: string,
    private readonly certs: { ca: string; cert: string; key: string },
    private readonly token: string,
    dir: string,
  ) {
    this.kubeconfig = path.join(dir, 'kubeconfig');
    this.proc = null as unknown as NsProcess;
  }

  /** Start the server in `node`'s namespace and write a kubeconfig for it. */
  static async start(box: Box, node: string): Promise<ApiServer> {
    const dir = fs.mkdtempSync(path.join(box.manifestDir, '..', `${box.prefix}api-`));
    box.onDestroy(() => fs.rmSync(dir, { recursive: true, force: true }));
    const s = new ApiServer(box, node, makeCerts(dir), crypto.randomBytes(16).toString('hex'), dir);
    await s.spawn();
    return s;
  }

  private async spawn(rvBase?: number): Promise<void> {
    const argv = ['node', SERVER, '--port', String(this.port), '--cert', this.certs.cert, '--key', this.certs.key, '--token', this.token];
    if (rvBase !== undefined) argv.push('--rv-base', String(rvBase));
    this.proc = this.box.spawn(this.box.node(this.node).ns, argv);
    await this.proc.waitFor(/"listening":\d+/, 10_000);
    this.port = Number(/"listening":(\d+)/.exec(this.proc.output())![1]);
    this.writeKubeconfig(this.token);
  }

  /** A kubeconfig for this server; `token` lets a test hand out a wrong one. */
  writeKubeconfig(token: string, file = this.kubeconfig): string {
    const ca = fs.readFileSync(this.certs.ca).toString('base64');
    fs.writeFileSync(
      file,
      `apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {server: "https://127.0.0.1:${this.port}", certificate-authority-data: ${ca}}\nusers:\n- name: weir\n  user: {token: ${token}}\ncontexts:\n- name: test\n  context: {cluster: test, user: weir}\ncurrent-context: test\n`,
    );
    return file;
  }

  private async command<T>(cmd: Record<string, unknown>): Promise<T> {
    const before = this.proc.output().length;
    this.proc.writeLine(JSON.stringify(cmd));
    const skip = before;
    await this.proc.waitFor(new RegExp(`^[\\s\\S]{${skip}}[\\s\\S]*\\{"ok":`), 5000);
    const line = this.proc
      .output()
      .slice(skip)
      .split('\n')
      .find((l) => l.startsWith('{"ok":'))!;
    const r = JSON.parse(line) as { ok: boolean; result?: T; error?: string };
    if (!r.ok) throw new Error(`api server: ${r.error}`);
    return r.result as T;
  }

  async apply(o: K8sObject): Promise<void> {
    this.objects.set(`${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`, o);
    const r = await this.command<{ rv: number }>({ op: 'apply', object: o });
    this.lastRv = r.rv;
  }

  async delete(kind: K8sObject['kind'], namespace: string | undefined, name: string): Promise<void> {
    this.objects.delete(`${kind}/${namespace ?? ''}/${name}`);
    await this.command({ op: 'delete', kind, namespace, name });
  }

  compact(): Promise<unknown> {
    return this.command({ op: 'compact' });
  }

  bookmark(): Promise<{ rv: number }> {
    return this.command({ op: 'bookmark' });
  }

  closeWatches(): Promise<unknown> {
    return this.command({ op: 'close-watches' });
  }

  forbid(on: boolean): Promise<unknown> {
    return this.command({ op: 'auth', mode: on ? 'forbid' : 'ok' });
  }

  stats(): Promise<{ lists: string[]; watches: string[]; rv: number; watchers: number }> {
    return this.command({ op: 'stats' });
  }

  /**
   * Restart: a new process on the same port with the same objects and a
   * later resourceVersion, and no history — watchers must relist.
   */
  async restart(): Promise<void> {
    await this.box.stopProc(this.proc);
    await this.spawn(this.lastRv + 1000);
    for (const o of this.objects.values()) await this.command({ op: 'apply', object: o });
  }
}
