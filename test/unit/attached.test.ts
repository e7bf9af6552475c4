/**
 * The start-up line that says what the agent attached to, and the plain
 * warning when the default pod-device globs meet the machine's root
 * network namespace (where they match every veth of the host).
 */
import * as childProcess from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { attachedSummary, rootNetns } from '../../ts/runner/attached';
import { RUN_FLAGS } from '../../ts/cli/options';
import { DeviceWatcher } from '../../ts/datapath/devices';
import { createLogger } from '../../ts/util/log';

const DEFAULT_GLOBS = ['veth*', 'cali*', 'lxc*', 'cni0'];

test('the default globs are those options.ts declares', () => {
  assert.is(DEFAULT_GLOBS.join(','), RUN_FLAGS.podDevices.default);
});

test('names each role’s devices and the cgroup', () => {
  const { msg, fields } = attachedSummary({
    ext: ['eth0'],
    pod: ['veth1', 'veth2'],
    host: ['lo'],
    cgroup: '/sys/fs/cgroup',
    podGlobs: DEFAULT_GLOBS,
    defaultPodGlobs: true,
    rootNetns: false,
  });
  assert.is(msg, 'dataplane attached');
  assert.equal(fields, {
    externalDevices: 'eth0',
    podDevices: 'veth1,veth2',
    podDeviceCount: 2,
    podGlobs: 'veth*,cali*,lxc*,cni0',
    hostDevices: 'lo',
    cgroup: '/sys/fs/cgroup',
    rootNetns: false,
  });
});

test('empty roles and no cgroup say none', () => {
  const { fields } = attachedSummary({ ext: [], pod: [], host: [], cgroup: null, podGlobs: ['eno*'], defaultPodGlobs: false, rootNetns: true });
  assert.is(fields['externalDevices'], 'none');
  assert.is(fields['podDevices'], 'none');
  assert.is(fields['hostDevices'], 'none');
  assert.is(fields['cgroup'], 'none (no socket hooks)');
});

test('root namespace with the default globs: the message says so, with the count', () => {
  const pod = Array.from({ length: 40 }, (_, i) => `veth${i}`);
  const { msg, fields } = attachedSummary({ ext: ['eth0'], pod, host: [], cgroup: null, podGlobs: DEFAULT_GLOBS, defaultPodGlobs: true, rootNetns: true });
  assert.is(msg, 'dataplane attached in the root network namespace with the default --pod-devices');
  assert.match(String(fields['note']), /root network namespace, the default --pod-devices globs veth\*,cali\*,lxc\*,cni0 matched 40 devices of this host/);
  assert.match(String(fields['note']), /--pod-devices/);
  assert.is(fields['podDeviceCount'], 40);
});

test('root namespace with globs the operator chose: no warning', () => {
  const { msg, fields } = attachedSummary({ ext: [], pod: ['cni0'], host: [], cgroup: null, podGlobs: ['cni0'], defaultPodGlobs: false, rootNetns: true });
  assert.is(msg, 'dataplane attached');
  assert.is(fields['note'], undefined);
  assert.is(fields['rootNetns'], true);
});

test('rootNetns: true where pid 1’s namespace is ours, false in a namespace of its own', () => {
  let same = false; // pid 1's link is readable by root only: without it, not known to be the root namespace
  try {
    same = fs.readlinkSync('/proc/self/ns/net') === fs.readlinkSync('/proc/1/ns/net');
  } catch {
    // as rootNetns() answers
  }
  assert.is(rootNetns(), same);
  // A child in a new network namespace (unshare needs root, as the e2e suites do).
  if (process.getuid?.() !== 0) return;
  const main = path.join(__dirname, '../../ts/runner/attached.js');
  const r = childProcess.spawnSync('unshare', ['--net', process.execPath, '-e', `process.stdout.write(String(require(${JSON.stringify(main)}).rootNetns()))`], { encoding: 'utf8', timeout: 10_000 });
  assert.is(r.stdout, 'false', r.stderr);
});

test('the device watcher reports what it attached, by role', () => {
  const links = [
    { name: 'lo', ifindex: 1 },
    { name: 'eth0', ifindex: 2 },
    { name: 'veth2', ifindex: 4 },
    { name: 'veth1', ifindex: 3 },
    { name: 'docker0', ifindex: 5 },
  ];
  const w = new DeviceWatcher<'host' | 'ext' | 'pod'>({
    roles: [
      ['host', ['lo']],
      ['ext', ['eth0']],
      ['pod', DEFAULT_GLOBS],
    ],
    list: () => links,
    log: createLogger('error', () => undefined),
    onDevice: () => undefined,
    intervalMs: 60_000,
  });
  w.start();
  w.stop();
  assert.equal([...w.byRole()].sort(), [
    ['ext', ['eth0']],
    ['host', ['lo']],
    ['pod', ['veth1', 'veth2']],
  ]);
});

test.run();
