/**
 * `weir run` options: defaults, config file merging, and errors that name
 * the flag; and the flag tables every command's parsing and help come from.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { COMMANDS, TRACE } from '../../ts/cli/commands';
import { AnyCommand, Command, Flag, HELP_FLAG, UsageError, flagEntries, formatHelp, formatUsage, readArgs, resolveFlags, text } from '../../ts/cli/flags';
import { RUN, RUN_FLAGS, conntrackEntries, parseDuration, parseRunOptions } from '../../ts/cli/options';

test('defaults follow the CLI contract', () => {
  const o = parseRunOptions(['--source', 'file:/tmp/x', '--node-name', 'n1']);
  assert.equal(o.source, { kind: 'file', dir: '/tmp/x' });
  assert.is(o.mode, 'auto');
  assert.equal(o.podDevices, ['veth*', 'cali*', 'lxc*', 'cni0']);
  assert.is(o.bpffsRoot, '/sys/fs/bpf/weir');
  assert.is(o.healthAddr, '0.0.0.0:10256');
  assert.is(o.metricsAddr, '127.0.0.1:10249');
  assert.is(o.minSyncPeriodMs, 0);
});

test('node name falls back to $NODE_NAME', () => {
  const prev = process.env.NODE_NAME;
  process.env.NODE_NAME = 'from-env';
  try {
    assert.is(parseRunOptions([]).nodeName, 'from-env');
  } finally {
    if (prev === undefined) delete process.env.NODE_NAME;
    else process.env.NODE_NAME = prev;
  }
});

test('--config YAML with the same keys; flags win', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weir-opt-'));
  try {
    const file = path.join(dir, 'c.yaml');
    fs.writeFileSync(file, 'node-name: cfg\npod-devices: [veth*, eth9]\nclusterCidr: 10.244.0.0/16\nmin-sync-period: 250ms\n');
    const o = parseRunOptions(['--config', file, '--node-name=flag']);
    assert.is(o.nodeName, 'flag');
    assert.equal(o.podDevices, ['veth*', 'eth9']);
    assert.equal(
      o.clusterCIDRs.map((c) => c.text),
      ['10.244.0.0/16'],
    );
    assert.is(o.minSyncPeriodMs, 250);
    fs.writeFileSync(file, 'nodename: x\n');
    assert.throws(
      () => parseRunOptions(['--config', file]),
      (e: unknown) => e instanceof UsageError && e.message === `config ${file}: unknown key "nodename"`,
    );
    fs.writeFileSync(file, 'minSyncPeriod: 1h\n');
    assert.throws(
      () => parseRunOptions(['--config', file]),
      (e: unknown) => e instanceof UsageError && e.message === `config ${file}: minSyncPeriod: expected a duration like 0, 500ms, 1s, got "1h"`,
      'a bad value names the file and the key as written',
    );
    assert.throws(() => parseRunOptions(['--config', file, '--min-sync-period', '1s']), /minSyncPeriod: expected a duration/, 'also where a flag overrides it');
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
});

test('conntrack is sized like kube-proxy sizes Linux conntrack, two entries per flow', () => {
  const o = parseRunOptions([]);
  assert.is(conntrackEntries(o, 2), 2 * 131072, 'the minimum on a small node');
  assert.is(conntrackEntries(o, 16), 2 * 16 * 32768, 'per core on a big one');
  assert.is(conntrackEntries(parseRunOptions(['--conntrack-min', '1000', '--conntrack-max-per-core', '0']), 64), 2000);
  assert.throws(() => parseRunOptions(['--conntrack-min', '0']), /--conntrack-min: expected an integer/);
  assert.throws(() => parseRunOptions(['--conntrack-max-per-core', 'lots']), /--conntrack-max-per-core: expected an integer/);
});

test('the service maps hold 262144 entries unless --lb-map-entries says otherwise', () => {
  assert.is(parseRunOptions([]).lbMapEntries, 262144);
  assert.is(parseRunOptions(['--lb-map-entries', '1048576']).lbMapEntries, 1048576);
  assert.throws(() => parseRunOptions(['--lb-map-entries', '100']), /--lb-map-entries: expected an integer from 1024/);
});

test('bad values name the flag', () => {
  assert.throws(() => parseRunOptions(['--mode', 'ipvs']), /--mode: expected bpf, nftables, iptables or auto/);
  assert.throws(() => parseRunOptions(['--source', 'http://x']), /--source: expected file:DIR or kube/);
  assert.throws(() => parseRunOptions(['--node-ips', '10.0.0.300']), /--node-ips: invalid IP address/);
  assert.throws(() => parseRunOptions(['--node-ips', 'fd00::1::2']), /--node-ips: invalid IP address "fd00::1::2"/);
  assert.throws(() => parseRunOptions(['--cluster-cidr', '10.0.0.0/40']), /--cluster-cidr: invalid CIDR/);
  assert.throws(() => parseRunOptions(['--frobnicate']), /unknown flag --frobnicate/);
  assert.throws(() => parseDuration('min-sync-period', '1h'), /--min-sync-period/);
});

/** A temporary --config file with this text; removed after fn. */
function withConfig<T>(yaml: string, fn: (file: string) => T): T {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weir-opt-'));
  try {
    const file = path.join(dir, 'c.yaml');
    fs.writeFileSync(file, yaml);
    return fn(file);
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
}

/** The text a flag's default stands for on a command line. */
function defaultOf(f: Flag<unknown>): string {
  return typeof f.default === 'function' ? f.default() : (f.default ?? '');
}

/** camelCase of a kebab-case key: node-name -> nodeName. */
function camel(key: string): string {
  return key.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

/** The help line of a flag: the one that starts with its name and placeholder. */
function helpLine(help: string, f: Flag<unknown>): string | undefined {
  const label = f.placeholder === undefined ? `--${f.flag}` : `--${f.flag} ${f.placeholder}`;
  return help.split('\n').find((l) => l.trim().startsWith(label) || l.trim().startsWith(`-${f.short}, ${label}`));
}

/** Every flag of the command is on a line of the help with its placeholder, description and default. */
function assertHelpCovers(help: string, command: AnyCommand): void {
  for (const [, f] of [...flagEntries(command.flags), ['help', HELP_FLAG] as const]) {
    const line = helpLine(help, f);
    assert.ok(line, `weir ${command.name} --help has no line for --${f.flag}:\n${help}`);
    assert.ok(line.includes(f.description), `--${f.flag}: its description is missing from ${JSON.stringify(line)}`);
    const def = f.defaultHelp ?? (typeof f.default === 'string' && f.default !== '' ? f.default : undefined);
    if (def !== undefined) assert.ok(line.includes(`default: ${def}`), `--${f.flag}: its default ${def} is missing from ${JSON.stringify(line)}`);
  }
}

test('every RunOptions field has a flag in the run table, and the YAML key of each is its flag name', () => {
  assert.equal(Object.keys(parseRunOptions([])).sort(), Object.keys(RUN_FLAGS).sort());
  for (const [, f] of flagEntries(RUN_FLAGS)) assert.is(f.yaml, f.flag);
  assert.is(RUN.flags.config.yaml, undefined, '--config is read from the command line only');
});

test('no command has two flags of one name, or a flag named like --help', () => {
  for (const c of COMMANDS) {
    const names = flagEntries(c.flags).map(([, f]) => f.flag);
    assert.equal(new Set(names).size, names.length, `weir ${c.name}: ${names.join(' ')}`);
    assert.not.ok(names.includes(HELP_FLAG.flag), `weir ${c.name}`);
  }
});

test('every run flag takes its default as a value, on the command line and as a YAML key in either spelling', () => {
  const defaults = parseRunOptions([]);
  const entries = flagEntries(RUN_FLAGS);
  const argv = entries.flatMap(([, f]) => [`--${f.flag}=${defaultOf(f)}`]);
  assert.equal(parseRunOptions(argv), defaults, 'flags with their default values');
  const kebab = entries.map(([, f]) => `${f.yaml}: ${JSON.stringify(defaultOf(f))}`).join('\n');
  assert.equal(
    withConfig(kebab, (file) => parseRunOptions(['--config', file])),
    defaults,
    'file with kebab-case keys',
  );
  const camelCase = entries.map(([, f]) => `${camel(f.yaml ?? '')}: ${JSON.stringify(defaultOf(f))}`).join('\n');
  assert.equal(
    withConfig(camelCase, (file) => parseRunOptions(['--config', file])),
    defaults,
    'file with camelCase keys',
  );
});

test('a value in a --config file is validated as the same value on the command line', () => {
  const outcome = (argv: string[]): string => {
    try {
      return JSON.stringify(parseRunOptions(argv));
    } catch (e) {
      return e instanceof UsageError ? `UsageError: ${e.message}` : `other error: ${String(e)}`;
    }
  };
  let rejected = 0;
  for (const [, f] of flagEntries(RUN_FLAGS)) {
    const bad = 'not valid: x';
    const fromFlag = outcome([`--${f.flag}=${bad}`]);
    // The same verdict, naming the file and key where the flag named itself.
    const fromFile = withConfig(`${f.yaml}: ${JSON.stringify(bad)}\n`, (file) => outcome(['--config', file]).replace(`config ${file}: ${f.yaml}: `, `--${f.flag}: `));
    assert.is(fromFile, fromFlag, `--${f.flag}`);
    if (fromFlag.startsWith(`UsageError: --${f.flag}: `)) rejected++;
  }
  assert.ok(rejected >= 15, `only ${rejected} flags rejected the value`);
  withConfig('config: other.yaml\n', (file) => assert.throws(() => parseRunOptions(['--config', file]), /unknown key "config"/));
  withConfig('- a\n- b\n', (file) => assert.throws(() => parseRunOptions(['--config', file]), /expected a mapping/));
});

test('true/false flags: alone they mean true; a value may follow as a word or after =', () => {
  const m = (argv: string[]): boolean => parseRunOptions(argv).masqueradeAll;
  assert.is(m([]), false);
  assert.is(m(['--masquerade-all']), true);
  assert.is(m(['--masquerade-all', '--mode', 'bpf']), true);
  assert.is(m(['--masquerade-all', 'true']), true);
  assert.is(m(['--masquerade-all=1']), true);
  assert.is(m(['--masquerade-all', 'false']), false);
  assert.is(m(['--masquerade-all=0']), false);
  assert.is(parseRunOptions(['--localhost-nodeports=false']).localhostNodePorts, false);
  assert.throws(() => m(['--masquerade-all=yes']), /--masquerade-all: expected true or false, got "yes"/);
});

test('the parser: last value wins; missing values, stray arguments and values for switches name the flag', () => {
  assert.is(parseRunOptions(['--mode', 'bpf', '--mode=iptables']).mode, 'iptables');
  assert.is(parseRunOptions(['--node-name=']).nodeName, parseRunOptions([]).nodeName, 'an empty node name falls back too');
  assert.throws(() => parseRunOptions(['--mode']), /^--mode: missing its value$/);
  assert.throws(() => parseRunOptions(['--node-name', '--mode', 'bpf']), /^--node-name: missing its value \(a value starting with "-" is written --node-name=VALUE\)$/);
  assert.throws(() => parseRunOptions(['stray']), /^unexpected argument "stray"$/);
  assert.throws(() => parseRunOptions(['--mode', 'bpf', '-x']), /^unknown flag -x$/);
  assert.throws(() => parseRunOptions(['--toString']), /^unknown flag --toString$/);
  assert.throws(() => parseRunOptions(['--help=yes']), /^--help: takes no value, got "yes"$/);
  assert.throws(() => parseRunOptions(['--health-addr', 'localhost']), /^--health-addr: expected HOST:PORT/);
  assert.throws(
    () => parseRunOptions(['--log-level', 'loud']),
    (e: unknown) => e instanceof UsageError && /^--log-level: expected debug/.test(e.message),
  );
});

test('--help is read before values are validated', () => {
  assert.is(readArgs(RUN, ['--mode', 'ipvs', '--help']).help, true);
  assert.is(readArgs(RUN, ['-h']).help, true);
  assert.is(readArgs(RUN, []).help, false);
  assert.throws(() => readArgs(RUN, ['--frobnicate', '--help']), /unknown flag --frobnicate/);
});

test('trace: endpoints, protocol and origin are checked before anything runs', () => {
  const parse = (argv: string[]) => resolveFlags(TRACE.flags, readArgs(TRACE, argv).given);
  const t = parse(['--src', '10.244.1.5', '--dst', '10.96.0.10:80', '--proto', 'UDP']);
  assert.equal(t.dst, { addr: '10.96.0.10', port: 80 });
  assert.is(t.src.addr, '10.244.1.5');
  assert.ok(t.src.port >= 40000 && t.src.port < 60000, 'a client port when none is given');
  assert.is(t.proto, 'udp');
  assert.is(t.from, 'pod');
  assert.is(t.json, false);
  assert.is(t.bpffsRoot, '/sys/fs/bpf/weir');
  assert.throws(() => parse(['--dst', '10.96.0.10:80']), /^--src is required$/);
  assert.throws(() => parse(['--src', '10.244.1.5', '--dst', '10.96.0.10']), /^--dst: expected IP:PORT, got "10.96.0.10"$/);
  assert.throws(() => parse(['--src', '10.244.1.5:0', '--dst', '10.96.0.10:80']), /^--src: expected IP\[:PORT\]/);
  assert.is(parse(['--src', '10.244.1.5', '--dst', '10.96.0.10:80', '--proto', 'SCTP']).proto, 'sctp');
  assert.throws(() => parse(['--src', '10.244.1.5', '--dst', '10.96.0.10:80', '--proto', 'icmp']), /^--proto: expected tcp, udp or sctp, got "icmp"$/);
  assert.throws(() => parse(['--src', '10.244.1.5', '--dst', '10.96.0.10:80', '--from', 'node']), /^--from: expected pod, external or host, got "node"$/);
});

test("each command's help is generated from its table: every flag with its value, description and default", () => {
  for (const c of COMMANDS) assertHelpCovers(formatHelp(c), c);
  const usage = formatUsage(COMMANDS);
  for (const c of COMMANDS)
    assert.ok(
      usage.split('\n').some((l) => l.trim().startsWith(`${c.name} `) && l.includes(c.summary)),
      `weir --help lists ${c.name}`,
    );
});

test('a flag added to a table is parsed, defaulted, validated and in the help', () => {
  const wide: Command<{ colour: string; size: number; quiet: boolean; target: string }> = {
    name: 'paint',
    summary: 'paint something',
    flags: {
      colour: { flag: 'colour', kind: 'value', placeholder: 'NAME', default: 'red', description: 'the colour', parse: text },
      size: {
        flag: 'size',
        kind: 'value',
        placeholder: 'N',
        default: () => '3',
        defaultHelp: '$SIZE, else 3',
        description: 'how big',
        parse: (flag, v) => {
          if (!/^\d+$/.test(v)) throw new UsageError(`--${flag}: expected a number`);
          return Number(v);
        },
      },
      quiet: { flag: 'quiet', kind: 'switch', description: 'say nothing', parse: (_flag, v) => v === 'true' },
      target: { flag: 'target', kind: 'value', placeholder: 'WHAT', required: true, description: 'what to paint', parse: text },
    },
  };
  const parse = (argv: string[]) => resolveFlags(wide.flags, readArgs(wide, argv).given);
  assert.equal(parse(['--target', 'wall']), { colour: 'red', size: 3, quiet: false, target: 'wall' });
  assert.equal(parse(['--target=door', '--colour', 'blue', '--size=7', '--quiet']), { colour: 'blue', size: 7, quiet: true, target: 'door' });
  assert.throws(() => parse([]), /^--target is required$/);
  assert.throws(() => parse(['--target', 'x', '--size', 'big']), /^--size: expected a number$/);
  assert.throws(() => parse(['--target', 'x', '--brush', 'wide']), /^unknown flag --brush$/);
  const help = formatHelp(wide);
  assert.ok(help.startsWith('usage: weir paint --target WHAT [flags]\n'), help);
  assertHelpCovers(help, wide);
});

// kube-proxy's dual-stack flags: --cluster-cidr one CIDR per family, --nodeport-addresses and node IPs of either family.
test('dual-stack: node IPs, cluster CIDRs and NodePort CIDRs of both families, IPv6 in canonical form', () => {
  const o = parseRunOptions(['--node-ips', '192.168.1.10,FD00:0:0::0A', '--cluster-cidr', '10.244.0.0/16,fd00:10:244::/56', '--nodeport-addresses', 'fd00::/64,192.168.1.0/24']);
  assert.equal(o.nodeIPs, ['192.168.1.10', 'fd00::a']);
  assert.equal(
    o.clusterCIDRs.map((c) => c.text),
    ['10.244.0.0/16', 'fd00:10:244::/56'],
  );
  assert.equal(
    o.nodePortAddresses.map((c) => c.text),
    ['fd00::/64', '192.168.1.0/24'],
  );
  assert.throws(() => parseRunOptions(['--cluster-cidr', 'fd00::/129']), /--cluster-cidr: invalid CIDR "fd00::\/129"/);
});

test.run();
