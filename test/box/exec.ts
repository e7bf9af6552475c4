/**
 * Running commands, in the root namespace or inside a test namespace:
 * one-shot (run to completion, bounded by a timeout) and long-running
 * (NsProcess: handle kept, output kept for failure reports).
 *
 * Inside a namespace always `nsenter --net=/run/netns/NAME`, never
 * `ip netns exec`: the latter also enters a private mount namespace and
 * remounts /sys there, so /sys/fs/bpf (the agent's pins) vanishes inside.
 * nsenter without --fork execs the command, so the child's pid is the
 * command's own and the signals we send reach it directly.
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';

export interface ExecResult {
  /** Exit code; 124 when the harness killed the command at its timeout (like timeout(1)), 127 when it could not start. */
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface RunOptions {
  /** Default 10 s. The command is SIGKILLed at the deadline. */
  timeoutMs?: number;
  input?: string;
  /** Called with the child while it runs (Box uses it to kill in-flight commands on destroy). */
  onChild?: (child: ChildProcess) => void;
}

export const TIMEOUT_EXIT = 124;

/** Run argv; resolves with its exit code and output (never rejects). */
export function run(argv: readonly string[], opts: RunOptions = {}): Promise<ExecResult> {
  return new Promise((resolve) => {
    // SIGKILL at the deadline: a command that ignores SIGTERM must not stall the suite.
    const child = execFile(argv[0]!, argv.slice(1), { timeout: opts.timeoutMs ?? 10_000, killSignal: 'SIGKILL', maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (!err) return resolve({ code: 0, stdout, stderr, timedOut: false });
      const e = err as NodeJS.ErrnoException & { code?: string | number; killed?: boolean; signal?: string | null };
      const timedOut = e.killed === true && e.signal === 'SIGKILL';
      // err.code is the exit status for a non-zero exit, an errno string (ENOENT) when it never ran.
      const code = timedOut ? TIMEOUT_EXIT : typeof e.code === 'number' ? e.code : 127;
      resolve({ code, stdout, stderr: typeof e.code === 'string' ? `${stderr}${e.message}` : stderr, timedOut });
    });
    opts.onChild?.(child);
    child.stdin?.on('error', () => undefined);
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Run and throw with the command's stderr if it fails. */
export async function must(argv: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(argv, opts);
  if (r.code !== 0) throw new Error(`${argv.join(' ')} -> ${r.timedOut ? 'timed out' : `exit ${r.code}`}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

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
  /** The namespace the process runs in (also for `raw` argv: Box.removePod stops a pod's processes by it). */
  readonly ns: string;
  readonly argv: readonly string[];
  private out = '';
  private outStdout = '';
  /** Characters dropped from the front of `out` (keeps mark() offsets absolute). */
  private dropped = 0;
  private readonly exited: Promise<number | null>;
  private readonly waiters: Array<{ test: () => boolean; resolve: () => void }> = [];

  constructor(ns: string, argv: readonly string[], opts: NsProcessOptions = {}) {
    this.ns = ns;
    this.argv = opts.raw ? [...argv] : nsArgv(ns, argv);
    this.child = spawn(this.argv[0]!, this.argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    // Resolve on 'close' (stdio drained: a final JSON line is in), or soon
    // after 'exit' if a grandchild still holds the pipes open. A binary that
    // cannot start is reported through 'error' (and 'exit' never fires).
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code) => void setTimeout(() => resolve(code), 500).unref());
      this.child.once('close', (code: number | null) => resolve(code));
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
    // A running process alone does not keep the test process alive: a suite
    // that forgets to destroy its box then still exits (and the exit hook
    // removes the box) instead of hanging on the box's servers. Whoever
    // waits for the process holds the event loop open meanwhile (awaitExit).
    this.child.unref();
    for (const st of [this.child.stdin, this.child.stdout, this.child.stderr]) (st as unknown as { unref?: () => void } | null)?.unref?.();
  }

  /** The exit, holding the event loop open until it comes (see the unref above). */
  private awaitExit(): Promise<number | null> {
    const keep = setInterval(() => undefined, 1 << 30);
    return this.exited.finally(() => clearInterval(keep));
  }

  private append(s: string): void {
    const all = this.out + s;
    this.out = trim(all);
    this.dropped += all.length - this.out.length;
    for (const w of [...this.waiters]) {
      if (w.test()) {
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

  /** The output after a mark() (as much of it as is kept). */
  outputSince(mark: number): string {
    return this.out.slice(Math.max(0, mark - this.dropped));
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

  /** A position in the output, for waitFor(re, timeoutMs, since): match only what comes after it. */
  mark(): number {
    return this.dropped + this.out.length;
  }

  /**
   * Resolve when the output (from `since`, a mark(), on; default: all of it)
   * matches re. Rejects at the timeout or when the process exits first.
   */
  waitFor(re: RegExp, timeoutMs = 10_000, since = 0): Promise<void> {
    const test = (): boolean => re.test(this.outputSince(since));
    if (test()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = { test, resolve: (): void => (clearTimeout(t), resolve()) };
      const t = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${re} in ${this.ns}; output:\n${this.out.slice(-3000)}`));
      }, timeoutMs);
      this.waiters.push(w);
      void this.exited.then(() => {
        if (this.waiters.includes(w)) {
          clearTimeout(t);
          this.waiters.splice(this.waiters.indexOf(w), 1);
          reject(new Error(`process in ${this.ns} exited (${this.child.exitCode ?? this.child.signalCode}) before ${re}; output:\n${this.out.slice(-3000)}`));
        }
      });
    });
  }

  /** SIGTERM, then SIGKILL after graceMs. Resolves with the exit code (null if ended by a signal). */
  async stop(graceMs = 5000): Promise<number | null> {
    if (!this.running) return this.awaitExit();
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    const code = await this.awaitExit();
    clearTimeout(t);
    return code;
  }

  /** SIGKILL (a crashing agent). */
  kill(): Promise<number | null> {
    if (this.running) this.child.kill('SIGKILL');
    return this.awaitExit();
  }

  wait(): Promise<number | null> {
    return this.awaitExit();
  }
}

function trim(s: string): string {
  // Keep the tail: a chatty agent must not grow the test's memory without bound.
  return s.length > MAX_OUTPUT ? s.slice(-(MAX_OUTPUT >> 1)) : s;
}
