/**
 * iptables mode's conntrack timeouts: the sysctls of the timeouts given,
 * and only those that differ, written into a stand-in directory here (the
 * agent's network namespace in test/e2e/conntrack.test.ts).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseRunOptions } from '../../ts/cli/options';
import { setConntrackTimeouts } from '../../ts/fallback/conntrack';

const NAMES = ['nf_conntrack_tcp_timeout_established', 'nf_conntrack_tcp_timeout_close_wait', 'nf_conntrack_udp_timeout', 'nf_conntrack_udp_timeout_stream'];

function withDir(fn: (dir: string) => void): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weir-ctsys-'));
  try {
    for (const n of NAMES) fs.writeFileSync(path.join(dir, n), '30\n');
    fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
}

const values = (dir: string): string[] => NAMES.map((n) => fs.readFileSync(path.join(dir, n), 'utf8').trim());

test('only the timeouts given are written, and only where they differ', () =>
  withDir((dir) => {
    assert.equal(setConntrackTimeouts(parseRunOptions([]), dir), [], 'none given: the kernel keeps its own');
    assert.equal(values(dir), ['30', '30', '30', '30']);
    const opts = parseRunOptions(['--conntrack-tcp-timeout-established', '24h0m0s', '--conntrack-udp-timeout', '30s', '--conntrack-udp-timeout-stream', '2m0s']);
    assert.equal(setConntrackTimeouts(opts, dir), ['nf_conntrack_tcp_timeout_established=86400', 'nf_conntrack_udp_timeout_stream=120']);
    assert.equal(values(dir), ['86400', '30', '30', '120']);
    assert.equal(setConntrackTimeouts(opts, dir), [], 'already so');
  }));

test('a sysctl that cannot be written is named', () =>
  withDir((dir) => {
    fs.rmSync(path.join(dir, 'nf_conntrack_udp_timeout'));
    assert.throws(() => setConntrackTimeouts(parseRunOptions(['--conntrack-udp-timeout', '5s']), dir), /^cannot set nf_conntrack_udp_timeout to 5: ENOENT/);
  }));

test.run();
