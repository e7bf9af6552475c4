/**
 * How the fallbacks run iptables, nft and conntrack: to completion, or
 * without blocking the event loop. A restore or listing of ten thousand
 * services takes seconds (iptables-restore of several hundred thousand
 * rules, tens of megabytes of `nft -j list`), during which the agent must
 * still answer /livez, health-check node ports and its watches. The agent
 * runs every command without blocking; the CLI's reads and the start-up
 * probes (can nft or iptables change this node's rules?) run to completion.
 */
import { childProcess } from '../util/lazy';

export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to completion, `input` on its stdin. */
export type CommandRunner = (argv: readonly string[], input?: string) => CommandResult;

/** Runs a command without blocking the event loop, `input` on its stdin; an aborted `signal` kills it. */
export type AsyncCommandRunner = (argv: readonly string[], opts?: { readonly input?: string; readonly signal?: AbortSignal }) => Promise<CommandResult>;

/**
 * Time limit of one command. iptables-restore of a large rule set (ten
 * thousand services is several hundred thousand rules) takes minutes with
 * the nf_tables backend, hence the generous limit.
 */
const TIMEOUT_MS = 15 * 60_000;
/** Largest output read: a save or listing of a large rule set is tens of megabytes. */
const MAX_OUTPUT = 1 << 30;

export const runCommand: CommandRunner = (argv, input) => {
  const r = childProcess().spawnSync(argv[0]!, argv.slice(1), { input, encoding: 'utf8', timeout: TIMEOUT_MS, maxBuffer: MAX_OUTPUT });
  const killed = r.signal ? `killed by ${r.signal}${r.error ? ` (${r.error.message})` : ''}` : '';
  return { code: r.status ?? 1, stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + killed };
};

export const runCommandAsync: AsyncCommandRunner = (argv, opts = {}) =>
  new Promise((resolve) => {
    const child = childProcess().execFile(argv[0]!, argv.slice(1), { encoding: 'utf8', maxBuffer: MAX_OUTPUT, timeout: TIMEOUT_MS, signal: opts.signal }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr: stderr + (error && code === 1 && !stderr ? error.message : '') });
    });
    // A child that exits before reading all of its input closes the pipe: its exit status says what went wrong.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(opts.input ?? '');
  });
