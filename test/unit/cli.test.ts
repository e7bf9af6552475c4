/**
 * The weir command as an operator runs it (`node dist/ts/cli/main.js`):
 * every command's --help lists every flag of its table and exits 0; usage
 * mistakes exit 2, name the flag and point at --help. Nothing here gets as
 * far as touching the machine: every invocation ends in help or a usage error.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { COMMANDS } from '../../ts/cli/commands';
import { HELP_FLAG, flagEntries } from '../../ts/cli/flags';
import { RUN_FLAGS, RunOptions, parseRunOptions } from '../../ts/cli/options';
import { SERVICE_ACCOUNT_TOKEN, kubeConfigOrigin } from '../../ts/source/kubeconfig';

const MAIN = path.resolve(__dirname, '../../ts/cli/main.js');
const CHECKOUT = path.resolve(__dirname, '../../..');
const PACKAGE = JSON.parse(fs.readFileSync(path.join(CHECKOUT, 'package.json'), 'utf8')) as { version: string };

function weir(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 20_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('weir --help, weir help and weir -h list every command, on stdout, exit 0', () => {
  for (const args of [['--help'], ['help'], ['-h']]) {
    const r = weir(...args);
    assert.is(r.code, 0, args.join(' '));
    assert.is(r.stderr, '');
    for (const c of COMMANDS) assert.ok(r.stdout.includes(`\n  ${c.name} `), `weir ${args.join(' ')} lists ${c.name}`);
  }
});

test('weir alone prints the commands on stderr and exits 2', () => {
  const r = weir();
  assert.is(r.code, 2);
  assert.is(r.stdout, '');
  assert.ok(r.stderr.includes('usage: weir <command>'));
});

for (const command of COMMANDS) {
  test(`weir ${command.name} --help lists every flag of its table, exit 0`, () => {
    for (const args of [
      [command.name, '--help'],
      [command.name, '-h'],
      ['help', command.name],
    ]) {
      const r = weir(...args);
      assert.is(r.code, 0, args.join(' '));
      assert.is(r.stderr, '', args.join(' '));
      assert.ok(r.stdout.startsWith(`usage: weir ${command.name} `), r.stdout);
      for (const [, f] of [...flagEntries(command.flags), ['help', HELP_FLAG] as const]) {
        const label = f.placeholder === undefined ? `--${f.flag}` : `--${f.flag} ${f.placeholder}`;
        assert.ok(r.stdout.includes(label), `weir ${args.join(' ')} is missing ${label}`);
      }
      // Every flag but --help says its default, or that it is required; a fixed default verbatim.
      for (const [, f] of flagEntries(command.flags)) {
        const line = r.stdout.split('\n').find((l) => l.startsWith(`  --${f.flag} `)) ?? '';
        const expected = f.required ? '(required)' : typeof f.default === 'string' && f.default !== '' && f.defaultHelp === undefined ? `(default: ${f.default})` : '(default: ';
        assert.ok(line.includes(expected), `--${f.flag}: ${JSON.stringify(line)} lacks ${expected}`);
      }
    }
  });

  test(`weir ${command.name} with an unknown flag exits 2, names it and points at --help`, () => {
    const r = weir(command.name, '--frobnicate');
    assert.is(r.code, 2);
    assert.is(r.stdout, '');
    assert.is(r.stderr, `weir: unknown flag --frobnicate\nsee 'weir ${command.name} --help'\n`);
  });
}

test('weir run --help lists the flag of every run option', () => {
  const help = weir('run', '--help').stdout;
  const fields = Object.keys(parseRunOptions([])) as Array<keyof RunOptions>;
  assert.ok(fields.length >= 20);
  for (const field of fields) assert.ok(help.includes(`  --${RUN_FLAGS[field].flag} `), `${field}: --${RUN_FLAGS[field].flag}`);
});

test("README's list of weir run's flags is what weir run --help prints", () => {
  const help = weir('run', '--help')
    .stdout.split('\n')
    .filter((l) => l.startsWith('  --'))
    .map((l) => l.slice(2));
  const readme = fs.readFileSync(path.join(CHECKOUT, 'README.md'), 'utf8');
  const block = /```\n(--source [^]*?)```/.exec(readme);
  assert.ok(block, 'README has the flag block');
  assert.equal(block[1]!.trimEnd().split('\n'), help);
});

test('bad values exit 2 naming the flag, before anything runs', () => {
  const cases: Array<[string[], string]> = [
    [['run', '--mode', 'ipvs'], 'weir: --mode: expected bpf, nftables, iptables or auto, got "ipvs"'],
    [['run', '--lb-map-entries=100'], 'weir: --lb-map-entries: expected an integer from 1024'],
    [['run', '--log-level', 'loud'], 'weir: --log-level: expected debug, info, warn or error'],
    [['run', '--mode'], 'weir: --mode: missing its value'],
    [['services', '--json=yes'], 'weir: --json: takes no value'],
    [['cleanup', 'now'], 'weir: unexpected argument "now"'],
    [['trace', '--dst', '10.96.7.1'], 'weir: --src is required'],
    [['trace', '--src', '10.244.1.5', '--dst', '10.96.7.1'], 'weir: --dst: expected IP:PORT, got "10.96.7.1"'],
  ];
  for (const [args, message] of cases) {
    const r = weir(...args);
    assert.is(r.code, 2, args.join(' '));
    assert.ok(r.stderr.startsWith(message), `${args.join(' ')}: ${r.stderr}`);
    assert.ok(r.stderr.endsWith(`see 'weir ${args[0]} --help'\n`), r.stderr);
  }
});

test("weir --version and weir version print package.json's version, exit 0", () => {
  assert.match(PACKAGE.version, /^\d+\.\d+\.\d+/);
  for (const args of [['--version'], ['version']]) {
    const r = weir(...args);
    assert.is(r.code, 0, args.join(' '));
    assert.is(r.stdout, `weir ${PACKAGE.version}\n`);
    assert.is(r.stderr, '');
  }
  assert.ok(weir('--help').stdout.includes('\n  version '), 'weir --help lists version');
});

test('make install PREFIX=DIR puts a weir on DIR/bin that runs this checkout', () => {
  const prefix = fs.mkdtempSync(path.join(os.tmpdir(), 'weir-install-'));
  try {
    const make = spawnSync('make', ['--no-print-directory', '-C', CHECKOUT, 'install', `PREFIX=${prefix}`], { encoding: 'utf8', timeout: 20_000 });
    assert.is(make.status, 0, make.stderr);
    const bin = path.join(prefix, 'bin', 'weir');
    assert.ok(fs.statSync(bin).mode & 0o111, 'executable');
    // Run from elsewhere with only DIR/bin and the system dirs on the PATH, as an operator would.
    const r = spawnSync('weir', ['--version'], { encoding: 'utf8', timeout: 20_000, cwd: prefix, env: { PATH: `${path.join(prefix, 'bin')}:/usr/bin:/bin` } });
    assert.is(r.status, 0, r.stderr);
    assert.is(r.stdout, `weir ${PACKAGE.version}\n`);
  } finally {
    fs.rmSync(prefix, { recursive: true, force: true });
  }
});

test('the image puts weir on the PATH, with the package.json --version reads three levels above main.js', () => {
  const dockerfile = fs.readFileSync(path.join(CHECKOUT, 'deploy/Dockerfile'), 'utf8');
  const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
  const workdir = /^WORKDIR (\S+)$/m.exec(runtime)?.[1];
  assert.ok(workdir, 'the runtime stage has a WORKDIR');
  assert.match(runtime, new RegExp(`ln -s ${workdir}/dist/ts/cli/main\\.js /usr/local/bin/weir`));
  assert.match(runtime, /^COPY --from=build \S+\/package\.json \.\/$/m);
  assert.match(runtime, /^COPY --from=build \S+\/dist\/ts dist\/ts$/m);
  assert.match(runtime, /^ENTRYPOINT \["weir"\]$/m);
});

test('commands that read the pins say no agent runs there, in one line, exit 1, and leave the pin root as it was', () => {
  const trace = ['trace', '--src', '10.244.1.5', '--dst', '10.96.7.1:80'];
  const commands = [['backends'], ['ct'], ['verdicts'], ['check'], trace];
  const roots = [path.join(os.tmpdir(), `weir-no-such-root-${process.pid}`)];
  // An empty pin root on bpffs too, where loading an object would pin new maps (needs root to make).
  const bpffs = `/sys/fs/bpf/weir-cli-${process.pid}-${Date.now().toString(36)}`;
  let made = false;
  // Where no maps are pinned, check reads the rules of its network namespace (nftables and iptables
  // mode): as root the commands run in a namespace of the test's own, which has none, whatever the machine runs.
  const ns = process.getuid?.() === 0 ? `weir-cli-${process.pid}` : null;
  if (ns) execFileSync('ip', ['netns', 'add', ns]);
  const run = (args: string[]): { code: number | null; stdout: string; stderr: string } => {
    if (!ns) return weir(...args);
    const r = spawnSync('nsenter', [`--net=/run/netns/${ns}`, process.execPath, MAIN, ...args], { encoding: 'utf8', timeout: 20_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  try {
    fs.mkdirSync(bpffs);
    made = true;
    roots.push(bpffs);
  } catch {
    // Not root or no bpffs: the missing root alone.
  }
  try {
    for (const root of roots) {
      for (const args of commands) {
        const r = run([...args, '--bpffs-root', root]);
        assert.is(r.code, 1, args.join(' '));
        assert.is(r.stdout, '');
        assert.is(r.stderr, `weir: no weir maps under ${root}: is an agent running with --bpffs-root ${root}?\n`, `${args.join(' ')}: ${r.stderr}`);
      }
    }
    if (made) assert.equal(fs.readdirSync(bpffs), [], 'nothing pinned under the empty root');
  } finally {
    if (made) fs.rmSync(bpffs, { recursive: true, force: true });
    if (ns) execFileSync('ip', ['netns', 'del', ns]);
  }
});

test('weir run --source kube with no kubeconfig and no in-cluster config says so in one line and exits 1 at once', () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'weir-home-'));
  try {
    // iptables mode, a pin root that is not there and no cgroup: should the check be missing, nothing is attached while the source retries.
    const args = ['run', '--source', 'kube', '--mode', 'iptables', '--node-name', 'n1', '--bpffs-root', path.join(home, 'pins'), '--cgroup-root=', '--external-devices='];
    const started = Date.now();
    const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 10_000, env: { PATH: process.env.PATH, HOME: home } });
    assert.ok(Date.now() - started < 5_000, `took ${Date.now() - started} ms`);
    assert.is(r.status, 1, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.is(lines.length, 1, r.stderr);
    const line = JSON.parse(lines[0]!) as { level: string; error: string };
    assert.is(line.level, 'error');
    for (const word of ['--kubeconfig', 'KUBECONFIG', 'KUBERNETES_SERVICE_HOST', path.join(home, '.kube/config')]) assert.ok(line.error.includes(word), `names ${word}: ${line.error}`);
    assert.not.ok(r.stderr.includes('localhost:8080'));
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
});

test("--source kube finds its cluster where client-node's loaders look, never its localhost:8080 fallback", () => {
  const files =
    (...present: string[]) =>
    (p: string) =>
      present.includes(p);
  assert.is(kubeConfigOrigin('/etc/weir/kubeconfig', {}, files()), '/etc/weir/kubeconfig');
  assert.is(kubeConfigOrigin('', { KUBERNETES_SERVICE_HOST: '10.96.0.1' }, files()), 'in-cluster');
  assert.is(kubeConfigOrigin('', { KUBECONFIG: '/k/a:/k/b', HOME: '/h' }, files('/h/.kube/config')), '/k/a:/k/b');
  assert.is(kubeConfigOrigin('', { HOME: '/h' }, files('/h/.kube/config')), '/h/.kube/config');
  assert.is(kubeConfigOrigin('', { HOME: '/h' }, files(SERVICE_ACCOUNT_TOKEN)), 'in-cluster');
  assert.is(kubeConfigOrigin('', { HOME: '/h', KUBECONFIG: '' }, files()), null);
  assert.is(kubeConfigOrigin('', {}, files()), null);
});

test('an unknown command exits 2 and points at weir --help', () => {
  for (const args of [['frobnicate'], ['help', 'frobnicate']]) {
    const r = weir(...args);
    assert.is(r.code, 2);
    assert.is(r.stderr, `weir: unknown command "frobnicate"\nsee 'weir --help'\n`);
  }
});

test.run();
