/**
 * Network namespaces: create, delete, and run commands inside them.
 *
 * Always `nsenter --net=/run/netns/NAME`, never `ip netns exec`: the latter
 * also enters a private mount namespace and remounts /sys there, so
 * /sys/fs/bpf (the agent's pins) vanishes inside. nsenter without --fork
 * execs the command, so the child's pid is the command's own and signals we
 * send reach it directly.
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { ExecResult, RunOptions, must, run } from './exec';

export const NETNS_DIR = '/run/netns';

export function nsPath(ns: string): string {
  return `${NETNS_DIR}/${ns}`;
}

/** argv that runs `argv` inside namespace `ns`. */
export function nsArgv(ns: string, argv: readonly string[]): string[] {
  return ['nsenter', `--net=${nsPath(ns)}`, '--', ...argv];
}

/** One-shot command inside `ns`: never throws, reports exit code and output. */
export function nsRun(ns: string, argv: readonly string[], opts: RunOptions = {}): Promise<ExecResult> {
  return run(nsArgv(ns, argv), opts);
}

/** One-shot command inside `ns`; throws with its stderr if it fails. */
export function nsMust(ns: string, argv: readonly string[], opts: RunOptions = {}): Promise<string> {
  return must(nsArgv(ns, argv), opts);
}

/** `ip netns add` and bring lo up (a fresh namespace has lo down: even 127.0.0.1 fails). */
export async function addNetns(name: string): Promise<void> {
  await must(['ip', 'netns', 'add', name]);
  await nsMust(name, ['ip', 'link', 'set', 'lo', 'up']);
}

/**
 * `ip netns del`, synchronously (safe from an exit handler). Deleting only
 * unmounts the name: the namespace itself (and its veths, routes, tc
 * programs) lives on while any process is still inside it — kill those first.
 */
export function delNetnsSync(name: string): void {
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore', timeout: 10_000 });
  } catch {
    /* already gone */
  }
}

/** The namespace's inode: what /proc/PID/ns/net of a process inside it points to. */
export function netnsInode(name: string): number | null {
  try {
    return fs.statSync(nsPath(name)).ino;
  } catch {
    return null;
  }
}

/** Pids of every process whose network namespace is one of `inodes`. */
export function pidsInNetns(inodes: ReadonlySet<number>): number[] {
  const pids: number[] = [];
  if (inodes.size === 0) return pids;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let link: string;
    try {
      link = fs.readlinkSync(`/proc/${entry}/ns/net`);
    } catch {
      continue; // exited meanwhile, or a kernel thread
    }
    const m = /^net:\[(\d+)\]$/.exec(link);
    if (m && inodes.has(Number(m[1]))) pids.push(Number(entry));
  }
  return pids.filter((p) => p !== process.pid);
}

export interface NsProcessOptions {
  env?: NodeJS.ProcessEnv;
  /** argv is complete already (it carries its own nsenter prefix). */
  raw?: boolean;
}

const MAX_OUTPUT = 4 << 20;

/**
 * A long-running process inside a namespace. Its output is kept (stdout and
 * stderr interleaved in output(), stdout alone in stdout()) so a failing test
 * can show what the process said.
 */
export class NsProcess {
  readonly child: ChildProcess;
  readonly ns: string;
  readonly argv: readonly string[];
  private out = '';
  private outStdout = '';
  private readonly exited: Promise<number | null>;
  private readonly waiters: Array<{ re: RegExp; resolve: () => void }> = [];

  /** `ns` names the namespace the process runs in, also when `raw` (used by Box.removePod). */
  constructor(ns: string, argv: readonly string[], envOrOpts?: NodeJS.ProcessEnv | NsProcessOptions, raw = false) {
    // Old call shape (ns, argv, env, raw) is still used by other suites.
    const opts: NsProcessOptions = isOpts(envOrOpts) ? envOrOpts : { ...(envOrOpts ? { env: envOrOpts } : {}), raw };
    this.ns = ns;
    this.argv = opts.raw ? [...argv] : nsArgv(ns, argv);
    this.child = spawn(this.argv[0]!, this.argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    // A missing binary is reported through 'error' (and 'exit' never fires).
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code) => resolve(code));
      this.child.once('error', (e) => {
        this.append(`spawn failed: ${e.message}\n`);
        resolve(null);
      });
    });
    this.child.stdout!.on('data', (d: Buffer) => {
      this.outStdout = trim(this.outStdout + d.toString());
      this.append(d.toString());
    });
    this.child.stderr!.on('data', (d: Buffer) => this.append(d.toString()));
    // Writing to a process that exited would otherwise be an uncaught EPIPE.
    this.child.stdin!.on('error', () => undefined);
  }

  private append(s: string): void {
    this.out = trim(this.out + s);
    for (const w of [...this.waiters]) {
      if (w.re.test(this.out)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** stdout and stderr as they came. */
  output(): string {
    return this.out;
  }

  /** stdout only (for processes that print a JSON result). */
  stdout(): string {
    return this.outStdout;
  }

  /** Write a line to the process's stdin. */
  writeLine(line: string): void {
    this.child.stdin!.write(line + '\n');
  }

  get running(): boolean {
    return this.child.pid !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolve when the output matches re (checked against everything so far). */
  waitFor(re: RegExp, timeoutMs = 10_000): Promise<void> {
    if (re.test(this.out)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = { re, resolve: (): void => (clearTimeout(t), resolve()) };
      const t = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${re} in ${this.ns}; output:\n${this.out.slice(-3000)}`));
      }, timeoutMs);
      this.waiters.push(w);
      void this.exited.then(() => {
        if (this.waiters.includes(w)) {
          clearTimeout(t);
          this.waiters.splice(this.waiters.indexOf(w), 1);
          reject(new Error(`process in ${this.ns} exited before ${re}; output:\n${this.out.slice(-3000)}`));
        }
      });
    });
  }

  /** SIGTERM, then SIGKILL after graceMs. Resolves with the exit code (null if killed by a signal). */
  async stop(graceMs = 5000): Promise<number | null> {
    if (!this.running) return this.exited;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    const code = await this.exited;
    clearTimeout(t);
    return code;
  }

  /** SIGKILL: for tests of a crashing agent. */
  kill(): Promise<number | null> {
    if (this.running) this.child.kill('SIGKILL');
    return this.exited;
  }

  wait(): Promise<number | null> {
    return this.exited;
  }
}

function isOpts(v: NodeJS.ProcessEnv | NsProcessOptions | undefined): v is NsProcessOptions {
  if (!v) return false;
  const keys = Object.keys(v);
  return keys.length > 0 && keys.every((k) => k === 'env' || k === 'raw');
}

function trim(s: string): string {
  // Keep the tail: a chatty agent must not grow the test's memory without bound.
  return s.length > MAX_OUTPUT ? s.slice(-(MAX_OUTPUT >> 1)) : s;
}
