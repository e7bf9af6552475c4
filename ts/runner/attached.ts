/**
 * The one line an agent logs once its programs are attached: which devices
 * got which tc program and which cgroup got the socket hooks.
 *
 * The default --pod-devices globs (veth*, cali*, ...) match every device of
 * those names in the namespace the agent runs in. In the machine's root
 * namespace (a DaemonSet's hostNetwork, or weir started by hand on a host)
 * that is every veth there is, a container runtime's and a VM's too: each
 * carries weir's pod-side program from then on. The line says so in words,
 * with the count, so an operator sees it without counting "attached" lines.
 */
import * as fs from 'node:fs';
import type { Fields } from '../util/log';

export interface Attached {
  /** Devices by role, as the device watcher attached them. */
  readonly ext: readonly string[];
  readonly pod: readonly string[];
  readonly host: readonly string[];
  /** Where the socket hooks are attached; null without --cgroup-root. */
  readonly cgroup: string | null;
  /** --pod-devices as given. */
  readonly podGlobs: readonly string[];
  /** Whether those are the default globs. */
  readonly defaultPodGlobs: boolean;
  /** Whether the agent runs in the machine's root network namespace (rootNetns()). */
  readonly rootNetns: boolean;
}

const names = (list: readonly string[]): string => (list.length ? list.join(',') : 'none');

/** The summary as a log message and its fields (always info: it is one line per start). */
export function attachedSummary(a: Attached): { msg: string; fields: Fields } {
  const fields: Fields = {
    externalDevices: names(a.ext),
    podDevices: names(a.pod),
    podDeviceCount: a.pod.length,
    podGlobs: a.podGlobs.join(','),
    hostDevices: names(a.host),
    cgroup: a.cgroup ?? 'none (no socket hooks)',
  };
  if (a.rootNetns && a.defaultPodGlobs) {
    return {
      msg: 'dataplane attached in the root network namespace with the default --pod-devices',
      fields: {
        ...fields,
        note:
          `running in the machine's root network namespace, the default --pod-devices globs ${a.podGlobs.join(',')} matched ${a.pod.length} device${a.pod.length === 1 ? '' : 's'} of this host, ` +
          "each now running the pod-side program: on a Kubernetes node these are the pods' devices; anywhere else, name the devices with --pod-devices",
      },
    };
  }
  return { msg: 'dataplane attached', fields: { ...fields, rootNetns: a.rootNetns } };
}

/**
 * Whether this process shares the network namespace of pid 1 (the machine's
 * init, or a hostNetwork container's): the inodes of the two ns links agree.
 * false when pid 1's link cannot be read (another pid namespace without it).
 */
export function rootNetns(): boolean {
  try {
    return fs.statSync('/proc/self/ns/net').ino === fs.statSync('/proc/1/ns/net').ino;
  } catch {
    return false;
  }
}
