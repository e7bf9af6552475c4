#!/usr/bin/env node
/**
 * weir command line. `weir run` is the agent; the other commands read or
 * remove what an agent installed in this network namespace.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createLogger, errorText } from '../util/log';
import { UsageError, parseFlags, parseRunOptions } from './options';

// Each command loads what it uses when it runs (`await import`): an agent's
// start does not load the inspection commands, and the other way round.

const USAGE = `usage: weir <command> [flags]

commands:
  run        run the agent (see README for flags: --source file:DIR|kube, --node-name,
             --mode bpf|iptables|auto, --pod-devices, --external-devices, --node-ips,
             --cluster-cidr, --bpffs-root, --cgroup-root, --health-addr, --metrics-addr,
             --min-sync-period, --sync-period, --log-level, --config FILE)
  services   list programmed frontends and their backends   [--json] [--bpffs-root PATH]
  backends   list programmed backends                        [--json] [--bpffs-root PATH]
  ct         list conntrack entries                          [--json] [--bpffs-root PATH]
  trace      where a packet goes: --src IP[:PORT] --dst IP:PORT [--proto tcp|udp]
             [--from pod|external] [--json] [--bpffs-root PATH]
             (runs the loaded program on a crafted packet; no effect on live state)
  check      verify the invariants of the pinned maps (rev-NAT ids, slots, members,
             owners, id high-water marks); exit 1 and one line per violation
             [--json] [--bpffs-root PATH]
  cleanup    remove everything weir installed in this network namespace [--bpffs-root PATH]
             (refuses while an agent runs on that pin root; --force removes it anyway)
`;

const DEFAULT_ROOT = '/sys/fs/bpf/weir';

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'run':
      return run(rest);
    case 'services':
      return services(rest);
    case 'cleanup':
      return cleanup(rest);
    case 'backends': {
      const { flags } = parseFlags(rest, ['json', 'bpffs-root']);
      const { backendsView, formatBackends } = await import('./inspect');
      const { loadShim } = await import('../datapath/ffi');
      const list = backendsView(loadShim(), flags.get('bpffs-root') ?? DEFAULT_ROOT);
      process.stdout.write(flags.has('json') ? JSON.stringify(list, null, 2) + '\n' : formatBackends(list));
      return 0;
    }
    case 'ct': {
      const { flags } = parseFlags(rest, ['json', 'bpffs-root']);
      const { ctView, formatCt } = await import('./inspect');
      const { loadShim } = await import('../datapath/ffi');
      const list = ctView(loadShim(), flags.get('bpffs-root') ?? DEFAULT_ROOT);
      process.stdout.write(flags.has('json') ? JSON.stringify(list, null, 2) + '\n' : formatCt(list));
      return 0;
    }
    case 'check': {
      const { flags } = parseFlags(rest, ['json', 'bpffs-root']);
      const root = flags.get('bpffs-root') ?? DEFAULT_ROOT;
      const { openPinned } = await import('../datapath/loader');
      const { loadShim } = await import('../datapath/ffi');
      const { checkMaps, formatViolations } = await import('../check/invariants');
      const found = checkMaps(openPinned(loadShim(), root, ['svc', 'be', 'revnat', 'member', 'cidr', 'ids', 'ct', 'aff']));
      process.stdout.write(flags.has('json') ? JSON.stringify(found, null, 2) + '\n' : found.length ? formatViolations(found) : `consistent: every invariant holds under ${root}\n`);
      return found.length ? 1 : 0;
    }
    case 'trace': {
      const { flags } = parseFlags(rest, ['json', 'bpffs-root', 'src', 'dst', 'proto', 'from']);
      const { trace } = await import('./inspect');
      const { loadShim } = await import('../datapath/ffi');
      const r = trace(loadShim(), flags.get('bpffs-root') ?? DEFAULT_ROOT, {
        src: flags.get('src'),
        dst: flags.get('dst'),
        proto: flags.get('proto'),
        from: flags.get('from'),
      });
      process.stdout.write(flags.has('json') ? JSON.stringify(r, null, 2) + '\n' : r.description + '\n');
      return 0;
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return cmd === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
  }
}

async function run(argv: string[]): Promise<number> {
  const opts = parseRunOptions(argv);
  const log = createLogger(opts.logLevel);
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

async function services(argv: string[]): Promise<number> {
  const { flags } = parseFlags(argv, ['json', 'bpffs-root']);
  const root = flags.get('bpffs-root') ?? DEFAULT_ROOT;
  const { MAP_NAMES, openPinned } = await import('../datapath/loader');
  const { loadShim } = await import('../datapath/ffi');
  const { formatServices, readServices } = await import('../datapath/dump');
  const { iptablesServices } = await import('../fallback/view');
  // BPF mode's maps if they are pinned, else iptables mode's chains.
  const view = fs.existsSync(path.join(root, MAP_NAMES.svc)) ? readServices(openPinned(loadShim(), root, ['svc', 'be'])) : iptablesServices();
  if (!view) throw new Error(`no weir state here: no maps under ${root} and no WEIR- iptables chains`);
  process.stdout.write(flags.has('json') ? JSON.stringify(view, null, 2) + '\n' : formatServices(view));
  return 0;
}

async function cleanup(argv: string[]): Promise<number> {
  const { flags } = parseFlags(argv, ['bpffs-root', 'force']);
  const root = flags.get('bpffs-root') ?? DEFAULT_ROOT;
  const { cleanupBpf } = await import('../datapath/loader');
  const { loadShim } = await import('../datapath/ffi');
  const { cleanupIptables } = await import('../fallback/iptables');
  const { lockHolder, tryLockPinRoot } = await import('../datapath/pinlock');
  // A running agent holds its pin root's lock; removing its state under it
  // leaves it writing maps nobody reads. Held while cleaning, so no agent starts meanwhile.
  const lock = fs.existsSync(root) ? tryLockPinRoot(loadShim(), root) : null;
  if (fs.existsSync(root) && !lock && !flags.has('force')) {
    const pid = lockHolder(root);
    process.stderr.write(`weir cleanup: an agent${pid ? ` (pid ${pid})` : ''} is running on ${root}; stop it first, or pass --force to remove its state anyway\n`);
    return 1;
  }
  let res: Awaited<ReturnType<typeof cleanupBpf>>;
  try {
    res = await cleanupBpf(loadShim(), root);
  } finally {
    lock?.release();
  }
  const chains = cleanupIptables();
  process.stdout.write(
    `removed ${res.detached.length} tc filter(s)${res.detached.length ? ` (${res.detached.join(', ')})` : ''}; ` +
      `${res.pinsRemoved ? `removed pins under ${root}` : `no pins under ${root}`}; ` +
      `removed ${chains.length} iptables chain(s)\n`,
  );
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    if (e instanceof UsageError) {
      process.stderr.write(`weir: ${e.message}\n${USAGE}`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`weir: ${errorText(e)}\n`);
      process.exitCode = 1;
    }
  },
);
