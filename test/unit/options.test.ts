/**
 * `weir run` options: defaults, config file merging, and errors that name
 * the flag.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { conntrackEntries, parseDuration, parseRunOptions } from '../../ts/cli/options';

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
    assert.equal(o.clusterCIDRs.map((c) => c.text), ['10.244.0.0/16']);
    assert.is(o.minSyncPeriodMs, 250);
    fs.writeFileSync(file, 'nodename: x\n');
    assert.throws(() => parseRunOptions(['--config', file]), /unknown key "nodename"/);
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
  assert.throws(() => parseRunOptions(['--mode', 'ipvs']), /--mode: expected bpf, iptables or auto/);
  assert.throws(() => parseRunOptions(['--source', 'http://x']), /--source: expected file:DIR or kube/);
  assert.throws(() => parseRunOptions(['--node-ips', '10.0.0.300']), /--node-ips: invalid IPv4/);
  assert.throws(() => parseRunOptions(['--cluster-cidr', '10.0.0.0/40']), /--cluster-cidr: invalid CIDR/);
  assert.throws(() => parseRunOptions(['--frobnicate']), /unknown flag --frobnicate/);
  assert.throws(() => parseDuration('min-sync-period', '1h'), /--min-sync-period/);
});

test.run();
