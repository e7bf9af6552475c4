#!/usr/bin/env node
/**
 * weir command line. `weir run` is the agent; the other commands read or
 * remove what an agent installed in this network namespace.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createLogger, errorText } from '../util/log';
import { BACKENDS, CHECK, CLEANUP, COMMANDS, CT, ReadOptions, SERVICES, TRACE, TraceOptions, VERDICTS, VERSION } from './commands';
import { Command, Given, UsageError, formatHelp, formatUsage, readArgs, resolveFlags } from './flags';
import { ConfigNote } from './kubeproxy-config';
import { RUN, RunArgs, RunOptions, runConfig } from './options';

// Each command loads what it uses when it runs (`await import`): an agent's
// start does not load the inspection commands, and the other way round.

/** Reads a command's flags; prints its help instead of running it when asked. */
async function withArgs<R>(command: Command<R>, argv: readonly string[], runCommand: (given: Given<R>) => Promise<number>): Promise<number> {
  const args = readArgs(command, argv);
  if (args.help) {
    process.stdout.write(formatHelp(command));
    return 0;
  }
  return runCommand(args.given);
}

/** For commands whose options are their flags' values, without a config file. */
function withOptions<R>(command: Command<R>, argv: readonly string[], runCommand: (opts: R) => Promise<number>): Promise<number> {
  return withArgs(command, argv, (given) => runCommand(resolveFlags(command.flags, given)));
}

/**
 * The version in package.json. It sits three levels above this file in the
 * checkout (dist/ts/cli/main.js) and in the image (/opt/weir); node resolves
 * the symlink or wrapper that put `weir` on the PATH to this real path.
 */
function version(): string {
  const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../../package.json'), 'utf8')) as { version?: unknown };
  return String(pkg.version);
}

/** `weir help [COMMAND]`. */
function help(argv: readonly string[]): number {
  const [name, ...extra] = argv;
  if (extra.length) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`);
  if (name === undefined) {
    process.stdout.write(formatUsage(COMMANDS));
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) throw new UsageError(`unknown command ${JSON.stringify(name)}`);
  process.stdout.write(formatHelp(command));
  return 0;
}

async function main(argv: readonly string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'run':
      return withArgs(RUN, rest, runOrPrint);
    case 'services':
      return withOptions(SERVICES, rest, services);
    case 'backends':
      return withOptions(BACKENDS, rest, backends);
    case 'ct':
      return withOptions(CT, rest, ct);
    case 'verdicts':
      return withOptions(VERDICTS, rest, verdicts);
    case 'check':
      return withOptions(CHECK, rest, check);
    case 'trace':
      return withOptions(TRACE, rest, trace);
    case 'cleanup':
      return withOptions(CLEANUP, rest, cleanup);
    case 'help':
    case '--help':
    case '-h':
      return help(rest);
    case 'version':
    case '--version':
      return withArgs(VERSION, rest, () => {
        process.stdout.write(`weir ${version()}\n`);
        return Promise.resolve(0);
      });
    case undefined:
      process.stderr.write(formatUsage(COMMANDS));
      return 2;
    default:
      throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
  }
}

/** `weir run`: the agent, or with --print-config the options it would run with. */
async function runOrPrint(given: Given<RunArgs>): Promise<number> {
  const { options, notes } = runConfig(given);
  if (given.printConfig !== 'true') return run(options, notes);
  logNotes(createLogger(options.logLevel), notes);
  // CIDRs as written, not as parsed structures.
  const printable = (_key: string, v: unknown): unknown => (typeof v === 'object' && v !== null && 'text' in v && 'bits' in v ? v.text : v);
  process.stdout.write(JSON.stringify(options, printable, 2) + '\n');
  return 0;
}

function logNotes(log: ReturnType<typeof createLogger>, notes: readonly ConfigNote[]): void {
  for (const n of notes) log[n.level](n.msg, n.fields);
}

async function run(opts: RunOptions, notes: readonly ConfigNote[]): Promise<number> {
  const log = createLogger(opts.logLevel);
  logNotes(log, notes);
  process.on('uncaughtException', (e) => {
    // Bad cluster data never gets here (it is validated); this is a bug.
    log.error('uncaught exception', { error: errorText(e), stack: e.stack ?? '' });
    process.exit(1);
  });
  const { startAgent } = await import('../runner/agent');
  let agent: Awaited<ReturnType<typeof startAgent>>;
  try {
    agent = await startAgent(opts, log);
  } catch (e) {
    // startAgent stopped what it had started; exit rather than wait for
    // whatever handle a library may still hold open.
    log.error('start failed', { error: errorText(e) });
    process.exit(1);
  }
  const onSignal = (sig: string): void => {
    log.info('signal received', { signal: sig });
    void agent.stop();
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));
  await agent.done;
  return 0;
}

function print(opts: { json: boolean }, value: unknown, text: string): void {
  process.stdout.write(opts.json ? JSON.stringify(value, null, 2) + '\n' : text);
}

async function services(opts: ReadOptions): Promise<number> {
  const root = opts.bpffsRoot;
  const { MAP_NAMES, openPinned } = await import('../datapath/loader');
  const { loadShim } = await import('../datapath/ffi');
  const { formatServices, readServices } = await import('../datapath/dump');
  const { iptablesServices } = await import('../fallback/view');
  const { nftServices } = await import('../fallback/nft-view');
  // BPF mode's maps if they are pinned, else nftables mode's table, else iptables mode's chains.
  const view = fs.existsSync(path.join(root, MAP_NAMES.svc)) ? readServices(openPinned(loadShim(), root, ['svc', 'be', 'svc6', 'be6'])) : (nftServices() ?? iptablesServices());
  if (!view) throw new Error(`no weir maps under ${root}, no nftables table inet weir and no WEIR- iptables chains: is an agent running with --bpffs-root ${root}?`);
  print(opts, view, formatServices(view));
  return 0;
}

async function backends(opts: ReadOptions): Promise<number> {
  const { backendsView, formatBackends } = await import('./inspect');
  const { loadShim } = await import('../datapath/ffi');
  const list = backendsView(loadShim(), opts.bpffsRoot);
  print(opts, list, formatBackends(list));
  return 0;
}

async function ct(opts: ReadOptions): Promise<number> {
  const { ctView, formatCt } = await import('./inspect');
  const { loadShim } = await import('../datapath/ffi');
  const list = ctView(loadShim(), opts.bpffsRoot);
  print(opts, list, formatCt(list));
  return 0;
}

async function verdicts(opts: ReadOptions): Promise<number> {
  const { verdictsView, formatVerdicts } = await import('./inspect');
  const { loadShim } = await import('../datapath/ffi');
  const list = verdictsView(loadShim(), opts.bpffsRoot);
  print(opts, list, formatVerdicts(list));
  return 0;
}

async function check(opts: ReadOptions): Promise<number> {
  const root = opts.bpffsRoot;
  // nftables mode's table, when there is one (a BPF-mode agent deletes it once it serves), else the pinned maps.
  const { runCommand } = await import('../fallback/command');
  const listing = runCommand(['nft', '-j', 'list', 'table', 'inet', 'weir']);
  if (listing.code === 0) {
    const { parseNftJson } = await import('../fallback/nft-json');
    const { checkNftTable } = await import('../check/nft-invariants');
    const { formatViolations } = await import('../check/invariants');
    const found = checkNftTable(parseNftJson(listing.stdout));
    print(opts, found, found.length ? formatViolations(found) : 'consistent: every invariant holds in table inet weir\n');
    return found.length ? 1 : 0;
  }
  const { MAP_NAMES, openPinned } = await import('../datapath/loader');
  if (!fs.existsSync(path.join(root, MAP_NAMES.svc))) {
    // No maps pinned: iptables mode's chains, when there are any (it pins nothing).
    const save = runCommand(['iptables-save']);
    if (save.code === 0 && save.stdout.includes(':WEIR-SERVICES')) {
      const { checkIptablesSaves } = await import('../check/ipt-invariants');
      const { formatViolations } = await import('../check/invariants');
      const save6 = runCommand(['ip6tables-save']);
      const found = checkIptablesSaves(save.stdout, save6.code === 0 ? save6.stdout : '');
      print(opts, found, found.length ? formatViolations(found) : "consistent: every invariant holds in weir's iptables chains\n");
      return found.length ? 1 : 0;
    }
  }
  const { loadShim } = await import('../datapath/ffi');
  const { checkMaps, formatViolations } = await import('../check/invariants');
  const shim = loadShim();
  const maps = openPinned(shim, root, ['svc', 'be', 'revnat', 'member', 'cidr', 'ids', 'ct', 'aff', ...(fs.existsSync(path.join(root, MAP_NAMES.ports)) ? (['ports'] as const) : [])]);
  // The IPv6 twins, where the datapath has them (pins made before IPv6 have none).
  const v6 = fs.existsSync(path.join(root, MAP_NAMES.svc6)) ? openPinned(shim, root, ['svc6', 'be6', 'revnat6', 'cidr6', 'ct6', 'aff6']) : {};
  const found = checkMaps({ ...maps, ...v6 });
  print(opts, found, found.length ? formatViolations(found) : `consistent: every invariant holds under ${root}\n`);
  return found.length ? 1 : 0;
}

async function trace(opts: TraceOptions & { json: boolean }): Promise<number> {
  const inspect = await import('./inspect');
  const { loadShim } = await import('../datapath/ffi');
  const r = inspect.trace(loadShim(), opts);
  print(opts, r, r.description + '\n');
  return 0;
}

async function cleanup(opts: { bpffsRoot: string; force: boolean; drainMs: number }): Promise<number> {
  const root = opts.bpffsRoot;
  const { cleanupBpf } = await import('../datapath/loader');
  const { loadShim } = await import('../datapath/ffi');
  const { cleanupIptables } = await import('../fallback/iptables');
  const { lockHolder, tryLockPinRoot } = await import('../datapath/pinlock');
  // A running agent holds its pin root's lock; removing its state under it
  // leaves it writing maps nobody reads. Held while cleaning, so no agent starts meanwhile.
  const lock = fs.existsSync(root) ? tryLockPinRoot(loadShim(), root) : null;
  if (fs.existsSync(root) && !lock && !opts.force) {
    const pid = lockHolder(root);
    process.stderr.write(`weir cleanup: an agent${pid ? ` (pid ${pid})` : ''} is running on ${root}; stop it first, or pass --force to remove its state anyway\n`);
    return 1;
  }
  let res: Awaited<ReturnType<typeof cleanupBpf>>;
  try {
    if (opts.drainMs > 0 && fs.existsSync(root)) await drain(root, opts.drainMs);
    res = await cleanupBpf(loadShim(), root);
  } finally {
    lock?.release();
  }
  const removed = await cleanupIptables();
  const tables = removed.filter((c) => c.endsWith(' (table)')).map((c) => c.slice(0, -' (table)'.length));
  const chains = removed.filter((c) => !c.endsWith(' (table)'));
  const { cleanupNftables } = await import('../fallback/nftables');
  const table = await cleanupNftables();
  process.stdout.write(
    `removed ${res.detached.length} tc filter(s)${res.detached.length ? ` (${res.detached.join(', ')})` : ''}; ` +
      (res.qdiscs.length ? `removed the clsact qdisc of ${res.qdiscs.join(', ')}; ` : '') +
      `${res.pinsRemoved ? `removed pins under ${root}` : `no pins under ${root}`}; ` +
      `removed ${chains.length} iptables chain(s)` +
      (tables.length ? `; removed the idle table(s) ${tables.join(', ')}` : '') +
      (table ? '; removed nftables table inet weir' : '') +
      (res.sysctls.length ? `; reset ${res.sysctls.join(', ')} to 0` : '') +
      '\n',
  );
  return 0;
}

/**
 * Hand the node to another proxy before removing weir (../datapath/handover.ts):
 * new flows go to its rules at once; weir's own stay until they end or
 * the time is up. Progress is one line per change of the count.
 */
async function drain(root: string, maxMs: number): Promise<void> {
  const { startDrain, openFlows } = await import('../datapath/handover');
  const { loadShim } = await import('../datapath/ffi');
  const shim = loadShim();
  startDrain(shim, root);
  const deadline = Date.now() + maxMs;
  let last = -1;
  for (;;) {
    const open = openFlows(shim, root);
    if (open !== last) process.stdout.write(`draining: ${open} open flow(s) weir carries; new connections go to the other proxy's rules\n`);
    last = open;
    if (open === 0) return;
    if (Date.now() >= deadline) {
      process.stdout.write(`drain time is up: ${open} open flow(s) lose weir's translation now\n`);
      return;
    }
    await new Promise((r) => setTimeout(r, Math.min(1000, Math.max(0, deadline - Date.now()))));
  }
}

/** Where a usage mistake points: the command's help, or the list of commands. */
function helpHint(argv: readonly string[]): string {
  const command = COMMANDS.find((c) => c.name === argv[0]);
  return command ? `weir ${command.name} --help` : 'weir --help';
}

const argv = process.argv.slice(2);
main(argv).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    if (e instanceof UsageError) {
      process.stderr.write(`weir: ${e.message}\nsee '${helpHint(argv)}'\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`weir: ${errorText(e)}\n`);
      process.exitCode = 1;
    }
  },
);
