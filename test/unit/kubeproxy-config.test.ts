/**
 * `weir run --config` with kube-proxy's own configuration: the ConfigMap
 * kubeadm writes, and bare KubeProxyConfiguration files. Each field weir
 * honours changes its option; zero values leave weir's defaults; fields
 * without a meaning are named in one warning; bad values name file and key;
 * flags win. The last tests run the real CLI with --print-config.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { UsageError, readArgs } from '../../ts/cli/flags';
import { ConfigNote, parseGoDuration } from '../../ts/cli/kubeproxy-config';
import { RUN, RunConfig, RunOptions, parseRunOptions, runConfig } from '../../ts/cli/options';

const FIXTURE = path.resolve(__dirname, '../../../test/fixtures/kubeadm-kube-proxy-configmap.yaml');
const MAIN = path.resolve(__dirname, '../../ts/cli/main.js');

/** A temporary config file with this text; removed after fn. */
function withFile<T>(text: string, fn: (file: string) => T): T {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weir-kpcfg-'));
  try {
    const file = path.join(dir, 'config.conf');
    fs.writeFileSync(file, text);
    return fn(file);
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
}

const HEAD = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';

/** The run config from a bare KubeProxyConfiguration with these lines, plus flags. */
function kp(body: string, ...flags: string[]): RunConfig {
  return withFile(HEAD + body, (file) => configOf(['--config', file, ...flags]));
}

function configOf(argv: string[]): RunConfig {
  return runConfig(readArgs(RUN, argv).given);
}

const DEFAULTS = parseRunOptions([]);
const cidrs = (o: RunOptions, k: 'clusterCIDRs' | 'nodePortAddresses'): string[] => o[k].map((c) => c.text);
const warnings = (notes: readonly ConfigNote[]): ConfigNote[] => notes.filter((n) => n.level === 'warn');

test("kubeadm's kube-proxy ConfigMap: its pod CIDR and kubeconfig; every zero field leaves weir's default; nothing to warn about", () => {
  const { options, notes } = configOf(['--config', FIXTURE]);
  assert.equal(cidrs(options, 'clusterCIDRs'), ['10.244.0.0/16']);
  assert.is(options.kubeconfig, '/var/lib/kube-proxy/kubeconfig.conf');
  assert.equal({ ...options, clusterCIDRs: DEFAULTS.clusterCIDRs, kubeconfig: DEFAULTS.kubeconfig }, DEFAULTS);
  assert.equal(warnings(notes), [], 'kubeadm leaves every field weir ignores at its zero value');
  assert.equal(
    notes.map((n) => n.msg),
    ['kube-proxy mode unset: weir runs its BPF dataplane, or nftables (else iptables) if the BPF programs do not load'],
  );
  assert.is(notes[0]?.fields?.file, FIXTURE);
});

test('each honoured KubeProxyConfiguration field changes the option it maps to', () => {
  const cases: Array<[string, keyof RunOptions, unknown]> = [
    ['hostnameOverride: Node-7\n', 'nodeName', 'node-7'],
    ['bindAddress: 192.168.5.4\n', 'nodeIPs', ['192.168.5.4']],
    ['healthzBindAddress: 0.0.0.0:10999\n', 'healthAddr', '0.0.0.0:10999'],
    ['healthzBindAddress: 127.0.0.1\n', 'healthAddr', '127.0.0.1:10256'],
    ['metricsBindAddress: 0.0.0.0:9100\n', 'metricsAddr', '0.0.0.0:9100'],
    ['metricsBindAddress: 10.1.2.3\n', 'metricsAddr', '10.1.2.3:10249'],
    ['clientConnection:\n  kubeconfig: /etc/kp.conf\n', 'kubeconfig', '/etc/kp.conf'],
    ['iptables:\n  masqueradeAll: true\n', 'masqueradeAll', true],
    ['iptables:\n  localhostNodePorts: false\n', 'localhostNodePorts', false],
    ['iptables:\n  syncPeriod: 1m0s\n', 'syncPeriodMs', 60_000],
    ['iptables:\n  minSyncPeriod: 1.5s\n', 'minSyncPeriodMs', 1500],
    ['mode: iptables\n', 'mode', 'iptables'],
    ['conntrack:\n  maxPerCore: 0\n', 'conntrackMaxPerCore', 0],
    ['conntrack:\n  min: 250000\n', 'conntrackMin', 250_000],
    ['conntrack:\n  tcpEstablishedTimeout: 24h0m0s\n', 'conntrackTcpEstablishedSec', 86_400],
    ['conntrack:\n  tcpCloseWaitTimeout: 1h0m0s\n', 'conntrackTcpCloseWaitSec', 3600],
    ['conntrack:\n  udpTimeout: 30s\n', 'conntrackUdpSec', 30],
    ['conntrack:\n  udpStreamTimeout: 2m0s\n', 'conntrackUdpStreamSec', 120],
    ['conntrack:\n  udpTimeout: 2.9s\n', 'conntrackUdpSec', 2],
    ['detectLocalMode: NodeCIDR\n', 'detectLocalMode', 'NodeCIDR'],
    ['detectLocalMode: InterfaceNamePrefix\ndetectLocal:\n  interfaceNamePrefix: veth\n', 'podInterfaceNamePrefix', 'veth'],
    ['detectLocalMode: BridgeInterface\ndetectLocal:\n  bridgeInterface: cni0\n', 'podBridgeInterface', 'cni0'],
    ['nftables:\n  masqueradeAll: true\nmode: nftables\n', 'masqueradeAll', true],
    ['nftables:\n  syncPeriod: 45s\nmode: nftables\n', 'syncPeriodMs', 45_000],
    ['ipvs:\n  minSyncPeriod: 250ms\nmode: ipvs\n', 'minSyncPeriodMs', 250],
  ];
  for (const [body, field, want] of cases) {
    assert.not.equal(DEFAULTS[field], want, `${field}: the case must change the default`);
    assert.equal(kp(body).options[field], want, body);
  }
  assert.equal(cidrs(kp('clusterCIDR: 10.244.0.0/16,10.96.128.0/20\n').options, 'clusterCIDRs'), ['10.244.0.0/16', '10.96.128.0/20']);
  assert.equal(cidrs(kp('nodePortAddresses: [192.168.0.0/16, 10.0.0.0/8]\n').options, 'nodePortAddresses'), ['192.168.0.0/16', '10.0.0.0/8']);
  // A dual-stack cluster's kube-proxy configuration: one pod CIDR per family, IPv6 NodePort CIDRs and bind address.
  assert.equal(cidrs(kp('clusterCIDR: 10.244.0.0/16,fd00:10:244::/56\n').options, 'clusterCIDRs'), ['10.244.0.0/16', 'fd00:10:244::/56']);
  assert.equal(cidrs(kp('nodePortAddresses: ["fd00:77::/64", 192.168.0.0/16]\n').options, 'nodePortAddresses'), ['fd00:77::/64', '192.168.0.0/16']);
  assert.equal(kp('bindAddress: "fd00:77::10"\n').options.nodeIPs, ['fd00:77::10']);
});

test('zero values are kube-proxy defaults: weir keeps its own', () => {
  const { options } = kp(
    'bindAddress: 0.0.0.0\nhealthzBindAddress: ""\nmetricsBindAddress: ""\niptables:\n  syncPeriod: 0s\n  minSyncPeriod: 0s\n  localhostNodePorts: null\nconntrack:\n  maxPerCore: null\n  min: null\n',
  );
  assert.equal(options, DEFAULTS);
  assert.equal(kp('bindAddress: "::"\n').options.nodeIPs, [], 'the IPv6 unspecified address: detect the node IP too');
});

test('nodePortAddresses keywords: "primary" and "all" leave weir\'s node IPs unnarrowed; "localhost" is loopback', () => {
  assert.equal(kp('nodePortAddresses: [primary]\n').options.nodePortAddresses, []);
  assert.equal(kp('nodePortAddresses: [10.0.0.0/8, primary]\n').options.nodePortAddresses, [], 'with primary, every node IP answers');
  assert.equal(kp('nodePortAddresses: [all]\n').options.nodePortAddresses, []);
  assert.equal(cidrs(kp('nodePortAddresses: [localhost, 10.0.0.0/8]\n').options, 'nodePortAddresses'), ['127.0.0.0/8', '10.0.0.0/8']);
});

test('mode: iptables and nftables are weir modes of those names; ipvs and unset run BPF (auto), and a line says so', () => {
  assert.is(kp('mode: nftables\n').options.mode, 'nftables');
  assert.equal(kp('mode: nftables\n').notes, []);
  for (const mode of ['ipvs']) {
    const { options, notes } = kp(`mode: ${mode}\n`);
    assert.is(options.mode, 'auto');
    assert.ok(
      notes.some((n) => n.level === 'info' && n.msg.startsWith(`kube-proxy mode "${mode}": weir runs its BPF dataplane`)),
      JSON.stringify(notes),
    );
  }
  assert.equal(kp('mode: iptables\n').notes, []);
  assert.throws(() => kp('mode: kernelspace\n'), /: mode: expected iptables, ipvs, nftables or empty, got "kernelspace"$/);
  // Each kube-proxy backend reads its own section: iptables mode does not take ipvs's period.
  assert.is(kp('mode: iptables\nipvs:\n  syncPeriod: 5s\n').options.syncPeriodMs, DEFAULTS.syncPeriodMs);
});

test('fields without a meaning for weir are named in one warning, never fatal', () => {
  const { options, notes } = kp(
    'clusterCIDR: 10.244.0.0/16\noomScoreAdj: -999\nipvs:\n  scheduler: lc\n  strictARP: true\nconntrack:\n  tcpBeLiberal: true\n  maxPerCore: 1000\nfrobnicate: yes\nfeatureGates:\n  SomeGate: true\n',
  );
  assert.equal(cidrs(options, 'clusterCIDRs'), ['10.244.0.0/16']);
  assert.is(options.conntrackMaxPerCore, 1000);
  const warned = warnings(notes);
  assert.is(warned.length, 1, JSON.stringify(notes));
  assert.is(warned[0]?.msg, 'kube-proxy configuration fields without a meaning for weir are ignored');
  assert.equal(warned[0]?.fields?.ignored, ['oomScoreAdj', 'ipvs.scheduler', 'ipvs.strictARP', 'conntrack.tcpBeLiberal', 'frobnicate', 'featureGates.SomeGate']);
});

test('detectLocalMode: every kube-proxy mode maps to its options, with nothing to warn about', () => {
  assert.equal(kp('detectLocalMode: ClusterCIDR\nclusterCIDR: 10.244.0.0/16\nmode: iptables\n').notes, []);
  const node = kp('detectLocalMode: NodeCIDR\nmode: iptables\n');
  assert.equal(node.notes, []);
  assert.is(node.options.detectLocalMode, 'NodeCIDR');
  const prefix = kp('detectLocalMode: InterfaceNamePrefix\ndetectLocal:\n  interfaceNamePrefix: cali\n  bridgeInterface: ""\nmode: iptables\n');
  assert.equal(prefix.notes, []);
  assert.equal([prefix.options.detectLocalMode, prefix.options.podInterfaceNamePrefix, prefix.options.podBridgeInterface], ['InterfaceNamePrefix', 'cali', '']);
  const bridge = kp('detectLocalMode: BridgeInterface\ndetectLocal:\n  bridgeInterface: cbr0\nmode: iptables\n');
  assert.equal([bridge.options.detectLocalMode, bridge.options.podBridgeInterface], ['BridgeInterface', 'cbr0']);
  assert.is(kp('detectLocalMode: ""\n').options.detectLocalMode, 'ClusterCIDR', "empty is kube-proxy's default");
});

test("conntrack timeouts: zero leaves them unset; flags take Go durations; the defaults are weir's", () => {
  assert.equal(
    [DEFAULTS.conntrackTcpEstablishedSec, DEFAULTS.conntrackTcpCloseWaitSec, DEFAULTS.conntrackUdpSec, DEFAULTS.conntrackUdpStreamSec],
    [null, null, null, null],
    "not given: BPF mode keeps weir's lifetimes and iptables mode the kernel's",
  );
  const zero = kp('conntrack:\n  tcpEstablishedTimeout: 0s\n  udpTimeout: "0"\n  udpStreamTimeout: null\n').options;
  assert.equal([zero.conntrackTcpEstablishedSec, zero.conntrackUdpSec, zero.conntrackUdpStreamSec], [null, null, null]);
  const o = parseRunOptions(['--conntrack-tcp-timeout-established', '24h0m0s', '--conntrack-tcp-timeout-close-wait=1h', '--conntrack-udp-timeout', '30s', '--conntrack-udp-timeout-stream', '2m']);
  assert.equal([o.conntrackTcpEstablishedSec, o.conntrackTcpCloseWaitSec, o.conntrackUdpSec, o.conntrackUdpStreamSec], [86_400, 3600, 30, 120]);
  assert.throws(() => parseRunOptions(['--conntrack-udp-timeout', '30']), /^--conntrack-udp-timeout: expected a duration like 30s or 1h0m0s, got "30"$/);
  assert.throws(() => parseRunOptions(['--conntrack-udp-timeout-stream', '500ms']), /^--conntrack-udp-timeout-stream: expected at least 1s/);
});

test('detect-local-mode flags: a device mode needs its device', () => {
  assert.is(parseRunOptions(['--detect-local-mode', 'InterfaceNamePrefix', '--pod-interface-name-prefix', 'veth']).podInterfaceNamePrefix, 'veth');
  assert.throws(() => parseRunOptions(['--detect-local-mode', 'InterfaceNamePrefix']), /^--detect-local-mode InterfaceNamePrefix needs --pod-interface-name-prefix$/);
  assert.throws(() => parseRunOptions(['--detect-local-mode', 'BridgeInterface']), /^--detect-local-mode BridgeInterface needs --pod-bridge-interface$/);
  assert.throws(() => parseRunOptions(['--detect-local-mode', 'Magic']), /^--detect-local-mode: expected ClusterCIDR, NodeCIDR, InterfaceNamePrefix or BridgeInterface, got "Magic"$/);
  assert.throws(() => parseRunOptions(['--pod-bridge-interface', 'a/b']), /^--pod-bridge-interface: not a device name: "a\/b"$/);
});

test("a kubeadm configuration file's KubeProxyConfiguration is read among its other documents", () => {
  const kubeadm = 'apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nnetworking:\n  podSubnet: 10.244.0.0/16\n---\n';
  withFile(kubeadm + HEAD + 'clusterCIDR: 10.32.0.0/12\nmode: iptables\n', (file) => {
    const { options } = configOf(['--config', file]);
    assert.equal(cidrs(options, 'clusterCIDRs'), ['10.32.0.0/12']);
    assert.is(options.mode, 'iptables');
  });
  withFile(kubeadm, (file) =>
    assert.throws(
      () => configOf(['--config', file]),
      (e: unknown) => e instanceof UsageError && e.message === `config ${file}: 2 YAML documents, and none is a KubeProxyConfiguration`,
    ),
  );
  withFile('node-name: n1\n---\n', (file) => assert.is(configOf(['--config', file]).options.nodeName, 'n1', "an empty document after weir's own is no second document"));
  withFile('a: [\n', (file) =>
    assert.throws(
      () => configOf(['--config', file]),
      (e: unknown) => e instanceof UsageError && e.message.startsWith(`config ${file}: Flow sequence`),
    ),
  );
});

test('flags win over the file', () => {
  const o = kp(
    'hostnameOverride: from-file\nclusterCIDR: 10.244.0.0/16\nmode: iptables\niptables:\n  syncPeriod: 10s\n',
    '--node-name',
    'from-flag',
    '--cluster-cidr=10.0.0.0/8',
    '--mode',
    'bpf',
  ).options;
  assert.is(o.nodeName, 'from-flag');
  assert.equal(cidrs(o, 'clusterCIDRs'), ['10.0.0.0/8']);
  assert.is(o.mode, 'bpf');
  assert.is(o.syncPeriodMs, 10_000, 'what no flag overrides still comes from the file');
});

test('bad values name the file and the key', () => {
  const expect = (body: string, message: (file: string) => string): void =>
    withFile(body, (file) =>
      assert.throws(
        () => configOf(['--config', file]),
        (e: unknown) => e instanceof UsageError && e.message === message(file),
        `${body} -> ${message(file)}`,
      ),
    );
  expect(HEAD + 'iptables:\n  syncPeriod: abc\n', (f) => `config ${f}: iptables.syncPeriod: invalid duration "abc"`);
  expect(HEAD + 'clusterCIDR: 10.244.0.0/33\n', (f) => `config ${f}: clusterCIDR: invalid CIDR "10.244.0.0/33"`);
  expect(HEAD + 'healthzBindAddress: localhost\n', (f) => `config ${f}: healthzBindAddress: expected HOST:PORT, got "localhost"`);
  expect(HEAD + 'bindAddress: 10.0.0.300\n', (f) => `config ${f}: bindAddress: invalid IP address "10.0.0.300"`);
  expect(HEAD + 'conntrack:\n  min: lots\n', (f) => `config ${f}: conntrack.min: expected an integer, got "lots"`);
  expect(HEAD + 'conntrack:\n  min: 0\n', (f) => `config ${f}: conntrack.min: expected an integer from 1 to 8388608, got "0"`);
  expect(HEAD + 'conntrack:\n  udpTimeout: soon\n', (f) => `config ${f}: conntrack.udpTimeout: invalid duration "soon"`);
  expect(HEAD + 'conntrack:\n  tcpCloseWaitTimeout: 500ms\n', (f) => `config ${f}: conntrack.tcpCloseWaitTimeout: expected at least 1s (and at most 4294967295s), got "500ms"`);
  expect(HEAD + 'detectLocalMode: PodLabel\n', (f) => `config ${f}: detectLocalMode: expected ClusterCIDR, NodeCIDR, InterfaceNamePrefix or BridgeInterface, got "PodLabel"`);
  expect(HEAD + 'detectLocalMode: InterfaceNamePrefix\n', (f) => `config ${f}: detectLocal.interfaceNamePrefix: required with detectLocalMode InterfaceNamePrefix`);
  expect(HEAD + 'detectLocalMode: BridgeInterface\ndetectLocal:\n  bridgeInterface: ""\n', (f) => `config ${f}: detectLocal.bridgeInterface: required with detectLocalMode BridgeInterface`);
  expect(HEAD + 'iptables:\n  masqueradeAll: "yes"\n', (f) => `config ${f}: iptables.masqueradeAll: expected true or false, got "yes"`);
  expect(
    'apiVersion: kubeproxy.config.k8s.io/v1beta9\nkind: KubeProxyConfiguration\n',
    (f) => `config ${f}: apiVersion: expected kubeproxy.config.k8s.io/v1alpha1, got "kubeproxy.config.k8s.io/v1beta9"`,
  );
  const configMap = (conf: string): string => `apiVersion: v1\nkind: ConfigMap\ndata:\n  config.conf: |-\n${conf.replace(/^/gm, '    ')}\n`;
  expect(configMap(HEAD + 'iptables:\n  minSyncPeriod: 5x\n'), (f) => `config ${f}: data.config.conf: iptables.minSyncPeriod: invalid duration "5x"`);
  expect(configMap(HEAD + 'nodePortAddresses: [10.0.0.0/8, nope]\n'), (f) => `config ${f}: data.config.conf: nodePortAddresses: invalid CIDR "nope"`);
  expect(
    'apiVersion: v1\nkind: ConfigMap\ndata:\n  kubeconfig.conf: x\n',
    (f) => `config ${f}: data.config.conf: missing: a ConfigMap is read for the KubeProxyConfiguration kubeadm writes under this key`,
  );
});

test('Go durations as kube-proxy writes them', () => {
  const cases: Array<[string, number | null]> = [
    ['0', 0],
    ['0s', 0],
    ['30s', 30_000],
    ['1m0s', 60_000],
    ['1h0m0s', 3_600_000],
    ['1m30s', 90_000],
    ['250ms', 250],
    ['1.5s', 1500],
    ['500us', 0.5],
    ['', null],
    ['30', null],
    ['1d', null],
    ['-1s', null],
    ['1s ', null],
  ];
  for (const [text, ms] of cases) assert.is(parseGoDuration(text), ms, JSON.stringify(text));
});

function weir(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 20_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('weir run --config KUBEADM-CONFIGMAP --print-config prints the options it would run with, flags winning, and exits 0', () => {
  const r = weir('run', '--config', FIXTURE, '--print-config', '--metrics-addr', '0.0.0.0:9999');
  assert.is(r.code, 0, r.stderr);
  const printed = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.equal(printed.clusterCIDRs, ['10.244.0.0/16']);
  assert.is(printed.kubeconfig, '/var/lib/kube-proxy/kubeconfig.conf');
  assert.is(printed.metricsAddr, '0.0.0.0:9999');
  assert.is(printed.healthAddr, '0.0.0.0:10256');
  assert.is(printed.mode, 'auto');
  const lines = r.stderr
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(
    lines.map((l) => [l.level, l.msg, l.file]),
    [['info', 'kube-proxy mode unset: weir runs its BPF dataplane, or nftables (else iptables) if the BPF programs do not load', FIXTURE]],
  );
});

test('weir run --config with a bad kube-proxy value exits 2 naming the file and key; ignored fields are one warning line', () => {
  withFile(HEAD + 'iptables:\n  syncPeriod: abc\n', (file) => {
    const r = weir('run', '--config', file, '--print-config');
    assert.is(r.code, 2);
    assert.is(r.stdout, '');
    assert.is(r.stderr, `weir: config ${file}: iptables.syncPeriod: invalid duration "abc"\nsee 'weir run --help'\n`);
  });
  withFile(HEAD + 'mode: iptables\noomScoreAdj: -999\nwinkernel:\n  enableDSR: true\n', (file) => {
    const r = weir('run', '--config', file, '--print-config');
    assert.is(r.code, 0, r.stderr);
    assert.is((JSON.parse(r.stdout) as RunOptions).mode, 'iptables');
    const lines = r.stderr.trim().split('\n');
    assert.is(lines.length, 1, r.stderr);
    const line = JSON.parse(lines[0] ?? '') as Record<string, unknown>;
    assert.is(line.level, 'warn');
    assert.equal(line.ignored, ['oomScoreAdj', 'winkernel.enableDSR']);
  });
});

test.run();
