/**
 * Running commands inside network namespaces.
 *
 * Always `nsenter --net=/run/netns/NAME`, never `ip netns exec`: the latter
 * remounts /sys in a private mount namespace, and /sys/fs/bpf (our pins)
 * vanishes inside it. nsenter without --fork execs the command, so the
 * child's pid is the command's and signals reach it directly.
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(argv: readonly string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = execFile(argv[0]!, argv.slice(1), { timeout: opts.timeoutMs ?? 10_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException & { code?: unknown }).code === 'number' ? Number((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Run and throw with the command's stderr if it fails. */
export async function must(argv: readonly string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  const r = await run(argv, opts);
  if (r.code !== 0) throw new Error(`${argv.join(' ')} -> exit ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

export function nsArgv(ns: string, argv: readonly string[]): string[] {
  return ['nsenter', `--net=/run/netns/${ns}`, '--', ...argv];
}

export function nsRun(ns: string, argv: readonly string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
  return run(nsArgv(ns, argv), opts);
}

export function nsMust(ns: string, argv: readonly string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  return must(nsArgv(ns, argv), opts);
}

/** A long-running process inside a namespace, with its output kept for failure reports. */
export class NsProcess {
  readonly child: ChildProcess;
  readonly ns: string;
  private out = '';
  private readonly exited: Promise<number | null>;
  private readonly waiters: Array<{ re: RegExp; resolve: () => void }> = [];

  /** raw: argv is complete already (no nsenter prefix added). */
  constructor(ns: string, argv: readonly string[], env?: NodeJS.ProcessEnv, raw = false) {
    this.ns = ns;
    const full = raw ? [...argv] : nsArgv(ns, argv);
    this.child = spawn(full[0]!, full.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: env ?? process.env });
    const onData = (d: Buffer): void => {
      this.out += d.toString();
      if (this.out.length > 4 << 20) this.out = this.out.slice(-(2 << 20));
      for (const w of [...this.waiters]) {
        if (w.re.test(this.out)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve();
        }
      }
    };
    this.child.stdout!.on('data', onData);
    this.child.stderr!.on('data', onData);
    this.exited = new Promise((r) => this.child.once('exit', (code) => r(code)));
  }

  output(): string {
    return this.out;
  }

  /** Write a line to the process's stdin. */
  writeLine(line: string): void {
    this.child.stdin!.write(line + '\n');
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolve when the output matches re (checked against everything so far). */
  waitFor(re: RegExp, timeoutMs = 10_000): Promise<void> {
    if (re.test(this.out)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = { re, resolve: () => (clearTimeout(t), resolve()) };
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

  /** SIGTERM, then SIGKILL after graceMs. Resolves with the exit code. */
  async stop(graceMs = 5000): Promise<number | null> {
    if (!this.running) return this.child.exitCode;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    const code = await this.exited;
    clearTimeout(t);
    return code;
  }

  kill(): Promise<number | null> {
    if (this.running) this.child.kill('SIGKILL');
    return this.exited;
  }

  wait(): Promise<number | null> {
    return this.exited;
  }
}
