/**
 * `make test`: runs every uvu suite and ends with the line CI reads,
 * `N passed, N failed`. Unit suites run first; the FFI binding suite runs
 * once per FFI backend; the cluster-in-a-box suites need root and a real
 * kernel. Exits non-zero on any failure, including a suite that crashed
 * before uvu could print its summary.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

interface Run {
  readonly label: string;
  readonly dir: string;
  readonly pattern: string;
  readonly env?: Record<string, string>;
}

const root = path.resolve(__dirname, '..');
const uvu = path.resolve(__dirname, '../../node_modules/uvu/bin.js');
const only = process.argv[2]; // optional: "unit" or "e2e"

const all: Run[] = [
  { label: 'unit', dir: 'test/unit', pattern: '^(?!ffi).*\\.test\\.js$' },
  { label: 'ffi (koffi)', dir: 'test/unit', pattern: '^ffi\\.test\\.js$', env: { WEIR_FFI: 'koffi' } },
  { label: 'ffi (ffi-napi)', dir: 'test/unit', pattern: '^ffi\\.test\\.js$', env: { WEIR_FFI: 'ffi-napi' } },
  { label: 'e2e', dir: 'test/e2e', pattern: '\\.test\\.js$' },
  // The service suites again on each fallback: same tests, other dataplane.
  { label: 'e2e-iptables', dir: 'test/e2e', pattern: '^(clusterip|services|features|fragments|sctp|conntrack|detect-local|ipv6|services6)\\.test\\.js$', env: { WEIR_TEST_MODE: 'iptables' } },
  { label: 'e2e-nftables', dir: 'test/e2e', pattern: '^(clusterip|services|features|fragments|sctp|conntrack|detect-local|ipv6|services6)\\.test\\.js$', env: { WEIR_TEST_MODE: 'nftables' } },
];
const runs = all.filter((r) => !only || r.label.startsWith(only));

function runOne(r: Run): Promise<{ passed: number; failed: number; skipped: number }> {
  return new Promise((resolve) => {
    process.stdout.write(`\n=== ${r.label} ===\n`);
    const child = spawn(process.execPath, [uvu, path.join(root, r.dir), r.pattern], {
      env: { ...process.env, ...r.env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      process.stdout.write(d);
    });
    child.on('close', (code) => {
      // uvu colours its summary: ANSI escapes (ESC [ ... m) are stripped before the counts are read.
      // eslint-disable-next-line no-control-regex
      const plain = out.replace(/\x1b\[[0-9;]*m/g, '');
      const num = (label: string): number | null => {
        const m = new RegExp(`${label}:\\s+(\\d+)`).exec(plain);
        return m ? Number(m[1]) : null;
      };
      const total = num('Total');
      const passed = num('Passed');
      const skipped = num('Skipped') ?? 0;
      if (total === null || passed === null) {
        process.stdout.write(`\n[${r.label}] suite crashed before reporting (exit ${code})\n`);
        resolve({ passed: passed ?? 0, failed: 1, skipped });
        return;
      }
      const failed = total - passed - skipped;
      // uvu exits 1 on failure; a non-zero exit with no failing test is a crash.
      resolve({ passed, failed: failed === 0 && code !== 0 ? 1 : failed, skipped });
    });
  });
}

/**
 * `make bench --quick` as a smoke check: the benchmark suite runs end to end
 * and writes every section. It checks that the suite works, not its bars:
 * nothing here depends on timing.
 */
function benchSmoke(): Promise<{ passed: number; failed: number }> {
  return new Promise((resolve) => {
    process.stdout.write('\n=== bench --quick (smoke) ===\n');
    const child = spawn(process.execPath, [path.resolve(__dirname, '../bench/run.js'), '--quick'], { stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('close', (code) => {
      let ok = code === 0;
      try {
        const r = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../bench/results-quick.json'), 'utf8')) as Record<string, unknown[] | object>;
        ok = ok && ['ffi', 'packet', 'coldStart', 'oneChange', 'path', 'wire'].every((k) => r[k] !== undefined);
        // Every mode's control plane, and every lane of the wire section, the floor included.
        const modes = new Set((r.coldStart as Array<{ mode: string }>).map((c) => c.mode));
        ok = ok && ['bpf', 'nftables', 'iptables'].every((m) => modes.has(m));
        const wire = r.wire as Array<{ samples: Record<string, unknown[]> }>;
        ok = ok && wire.length > 0 && wire.every((w) => ['none', 'tc-floor', 'bpf-tc', 'bpf-sock', 'nftables'].every((v) => (w.samples[v]?.length ?? 0) > 0));
      } catch {
        ok = false;
      }
      process.stdout.write(`bench smoke: ${ok ? 'ok' : 'FAILED'}\n`);
      resolve({ passed: ok ? 1 : 0, failed: ok ? 0 : 1 });
    });
  });
}

/**
 * weir's rules in the machine's own network namespace: every suite works in
 * namespaces it creates, so none may add any (checked after the run as one
 * more test). iptables and ip6tables chains and rules naming WEIR-, and
 * table inet weir.
 */
function rootNetnsRules(): Set<string> {
  const out = new Set<string>();
  for (const save of ['iptables-save', 'ip6tables-save']) {
    const r = spawnSync(save, { encoding: 'utf8' });
    for (const line of (r.stdout ?? '').split('\n')) if (line.includes('WEIR-')) out.add(`${save}: ${line}`);
  }
  if (spawnSync('nft', ['list', 'table', 'inet', 'weir']).status === 0) out.add('nft: table inet weir');
  return out;
}

async function main(): Promise<void> {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  const before = rootNetnsRules();
  for (const r of runs) {
    const res = await runOne(r);
    passed += res.passed;
    failed += res.failed;
    skipped += res.skipped;
  }
  if (!only || only === 'bench') {
    const b = await benchSmoke();
    passed += b.passed;
    failed += b.failed;
  }
  const left = [...rootNetnsRules()].filter((l) => !before.has(l));
  process.stdout.write(`\n=== the machine's network namespace ===\n${left.length ? `FAILED: the suites left weir's rules there:\n${left.join('\n')}` : 'ok: no weir rule added'}\n`);
  if (left.length) failed++;
  else passed++;
  process.stdout.write(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
  process.exitCode = failed > 0 ? 1 : 0;
}

void main();
