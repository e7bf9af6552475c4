/**
 * kube-proxy's local-traffic detector (detectLocalMode) as weir builds it
 * from the options and the Node: what counts as a pod's traffic, the BPF
 * side's inputs (cidr map owner 0, localdev devices) and the iptables
 * matches, which the renderer puts where kube-proxy puts its detector's.
 * Real packets: test/e2e/detect-local.test.ts.
 */
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseRunOptions } from '../../ts/cli/options';
import { renderAll } from '../../ts/fallback/render';
import { ClusterStore } from '../../ts/model/store';
import { Cidr, IPv4, parseCidr } from '../../ts/model/types';
import { planService } from '../../ts/plan/plan';
import { describeDetector, detectorCidrs, detectorDeviceGlobs, iptablesLocalMatches, isLocalDevice, localDetector } from '../../ts/runner/local-detector';
import { DeviceLink, DeviceWatcher } from '../../ts/datapath/devices';
import { FileSource } from '../../ts/source/file';
import { createLogger } from '../../ts/util/log';
import { TEST_SRC } from './pipeline';

const cidr = (s: string): Cidr => parseCidr(s)!;

test('ClusterCIDR: the cluster CIDRs, or no detector without them (as kube-proxy)', () => {
  const d = localDetector(parseRunOptions(['--cluster-cidr', '10.244.0.0/16,10.245.0.0/16']));
  assert.equal(
    detectorCidrs(d).map((c) => c.text),
    ['10.244.0.0/16', '10.245.0.0/16'],
  );
  assert.equal(iptablesLocalMatches(d), ['-s 10.244.0.0/16', '-s 10.245.0.0/16']);
  assert.equal(localDetector(parseRunOptions([])), { kind: 'none' });
  assert.equal(iptablesLocalMatches(localDetector(parseRunOptions([]))), []);
});

test("NodeCIDR: the Node's pod CIDRs, none until it has them; the cluster CIDR is not used", () => {
  const opts = parseRunOptions(['--detect-local-mode', 'NodeCIDR', '--cluster-cidr', '10.244.0.0/16']);
  assert.equal(localDetector(opts), { kind: 'none' });
  const d = localDetector(opts, [cidr('10.244.1.0/24')]);
  assert.equal(iptablesLocalMatches(d), ['-s 10.244.1.0/24']);
  assert.is(describeDetector(d), 'source in 10.244.1.0/24');
});

test('InterfaceNamePrefix and BridgeInterface: by device, kube-proxy\'s "-i PREFIX+" / "-i BRIDGE"', () => {
  const prefix = localDetector(parseRunOptions(['--detect-local-mode', 'InterfaceNamePrefix', '--pod-interface-name-prefix', 'cali', '--cluster-cidr', '10.244.0.0/16']));
  assert.equal(detectorCidrs(prefix), [], 'the cluster CIDRs are not the detector then');
  const names = (i: number): string | null => ({ 4: 'cni0', 5: 'cali-br' })[i] ?? null;
  assert.ok(isLocalDevice(prefix, { name: 'cali12ab' }, names));
  assert.not.ok(isLocalDevice(prefix, { name: 'eth0' }, names));
  assert.not.ok(isLocalDevice(prefix, { name: 'cali77', master: 4 }, names), "a bridge's port is judged by the bridge's name, as kube-proxy's -i sees it");
  assert.ok(isLocalDevice(prefix, { name: 'veth1', master: 5 }, names));
  assert.equal(detectorDeviceGlobs(prefix), ['cali*'], 'its devices get the pod-side program');
  assert.equal(iptablesLocalMatches(prefix), ['-i cali+']);
  const bridge = localDetector(parseRunOptions(['--detect-local-mode', 'BridgeInterface', '--pod-bridge-interface', 'cni0']));
  assert.ok(isLocalDevice(bridge, { name: 'cni0', master: 0 }, names));
  assert.ok(isLocalDevice(bridge, { name: 'veth9f3a', master: 4 }, names), "a port of the bridge: a pod's packets enter there first");
  assert.not.ok(isLocalDevice(bridge, { name: 'veth77b0', master: 0 }, names), 'a pod device outside the bridge');
  assert.not.ok(isLocalDevice(bridge, { name: 'cni01' }, names), 'the bridge by name, not a prefix');
  assert.equal(iptablesLocalMatches(bridge), ['-i cni0']);
  assert.not.ok(isLocalDevice(localDetector(parseRunOptions(['--cluster-cidr', '10.0.0.0/8'])), { name: 'veth1' }, names));
});

test('the Node model carries spec.podCIDRs (both families: NodeCIDR detects per family), else spec.podCIDR', () => {
  const store = new ClusterStore(() => undefined);
  store.upsertNode({ metadata: { name: 'n1' }, spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24', 'fd00:1::/64'] } }, 'test');
  store.upsertNode({ metadata: { name: 'n2' }, spec: { podCIDR: '10.244.2.0/24' } }, 'test');
  store.upsertNode({ metadata: { name: 'n3' } }, 'test');
  assert.equal(
    ['n1', 'n2', 'n3'].map((n) => store.nodes.get(n)!.podCIDRs.map((c) => c.text)),
    [['10.244.1.0/24', 'fd00:1::/64'], ['10.244.2.0/24'], []],
  );
});

test("iptables: the detector's match is where kube-proxy puts it (off-cluster masquerade, eTP=Local pod traffic)", async () => {
  const store = new ClusterStore(() => undefined);
  const src = new FileSource({ dir: path.join(TEST_SRC, 'golden-iptables/kube-proxy-shapes'), store, onChange: () => undefined, log: createLogger('error', () => undefined) });
  await src.start();
  src.stop();
  const ctx = { nodeName: 'n1', nodePortAddrs: ['192.168.77.10' as IPv4], zone: '' };
  const plans = [...store.services.values()].map((s) => planService(s, store.slicesOf(s.key), ctx));
  const base = renderAll(plans, { clusterCIDRs: [cidr('10.244.0.0/16')], masqueradeAll: false }).nat;
  const byDevice = renderAll(plans, { clusterCIDRs: [cidr('10.244.0.0/16')], masqueradeAll: false, localTraffic: ['-i veth+'] }).nat;
  assert.match(base, /^-A WEIR-MASQ-OFFCLUSTER -s 10\.244\.0\.0\/16 -j RETURN$/m);
  assert.match(byDevice, /^-A WEIR-MASQ-OFFCLUSTER -i veth\+ -j RETURN$/m);
  assert.not.match(byDevice, /-s 10\.244\.0\.0\/16/, 'the cluster CIDR is not the detector');
  assert.match(byDevice, /"pod traffic for [^"]+ external destinations" -i veth\+ -j WEIR-SVC-/);
  assert.is(byDevice.replace(/-i veth\+/g, '-s 10.244.0.0/16'), base, 'only the match differs');
  const none = renderAll(plans, { clusterCIDRs: [], masqueradeAll: false }).nat;
  assert.not.match(none, /WEIR-MASQ-OFFCLUSTER$/m, 'no detector: no off-cluster masquerade jump');
});

test('the device watcher reports a device again when it joins a bridge (a CNI enslaves the veth after creating it)', async () => {
  let links: DeviceLink[] = [{ name: 'veth1', ifindex: 5, master: 0 }];
  const seen: string[] = [];
  const w = new DeviceWatcher<'pod'>({
    roles: [['pod', ['veth*']]],
    list: () => links,
    log: createLogger('error', () => undefined),
    intervalMs: 5,
    onDevice: (l) => seen.push(`${l.name}@${l.master}`),
  });
  try {
    w.start();
    await new Promise((r) => setTimeout(r, 30));
    links = [{ name: 'veth1', ifindex: 5, master: 9 }];
    await new Promise((r) => setTimeout(r, 30));
  } finally {
    w.stop();
  }
  assert.equal(seen, ['veth1@0', 'veth1@9']);
});

test.run();
