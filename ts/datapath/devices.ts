/**
 * Network devices of the agent's namespace, and a watcher that reports
 * devices matching the configured globs as they appear (pods come and go;
 * each new veth must get the program within a second).
 *
 * The watcher lists devices with a netlink dump in process (the caller
 * passes the shim's links(): this namespace, unlike /sys/class/net, which
 * shows the namespace that mounted sysfs) rather than running `ip` each
 * time: forking an agent of ~150 MB stalls it for tens of milliseconds on
 * a VM with slow page faults. `ip monitor link`, one child for the agent's life, wakes
 * the watcher as soon as a device appears, so a new pod's veth gets the
 * program within milliseconds; the periodic poll is the fallback if the
 * monitor dies.
 */
import type { ChildProcess } from 'node:child_process';
import * as os from 'node:os';
import { promisify } from 'node:util';
import { childProcess } from '../util/lazy';
import { Logger, errorText } from '../util/log';

export interface Link {
  readonly name: string;
  readonly ifindex: number;
  readonly addrs: readonly string[];
}

export async function listLinks(): Promise<Link[]> {
  const { stdout } = await promisify(childProcess().execFile)('ip', ['-j', 'addr', 'show'], { timeout: 5000 });
  const raw = JSON.parse(stdout) as Array<{ ifname: string; ifindex: number; addr_info?: Array<{ family: string; local: string; scope?: string }> }>;
  // IPv4 first (the first is the IPv4 masquerade source), then global IPv6 (link-local ones are no node IP).
  const of = (l: (typeof raw)[number], family: string): string[] => (l.addr_info ?? []).filter((a) => a.family === family && (family === 'inet' || a.scope === 'global')).map((a) => a.local);
  return raw.map((l) => ({ name: l.ifname, ifindex: l.ifindex, addrs: [...of(l, 'inet'), ...of(l, 'inet6')] }));
}

/**
 * IPv4 addresses of the named devices, in the kernel's order, without a
 * child process: getifaddrs(3) through os.networkInterfaces(). That lists
 * only devices that are up and running, and files an address with a label
 * ("eth0:1") under the label; null when some named device is not listed, so
 * the caller asks `ip` (listLinks), which sees devices in any state.
 *
 * Why not always `ip`: a process to start (its faults cost milliseconds on
 * some virtual machines), and at start-up one started before the manifests
 * are parsed is reaped only after them: the first sync waited ~20 ms for it
 * at 10k services, where getifaddrs is one netlink dump.
 */
export function upDeviceAddrs(names: readonly string[]): string[] | null {
  const ifs = os.networkInterfaces();
  if (!names.every((dev) => ifs[dev])) return null;
  const v4: string[] = [];
  const v6: string[] = [];
  // In the kernel's order, as `ip` gives them (the first of each family is
  // its masquerade source), IPv4 first; IPv6 global ones only (a link-local
  // address, scope id set, is no node IP). A device name never contains
  // ':', so what precedes it is the device.
  for (const [label, addrs] of Object.entries(ifs)) {
    if (!names.includes(label.split(':')[0]!)) continue;
    for (const a of addrs ?? []) {
      if (a.family === 'IPv4') v4.push(a.address);
      else if (a.family === 'IPv6' && !a.scopeid && !a.internal) v6.push(a.address);
    }
  }
  return [...v4, ...v6];
}

export function globToRegExp(glob: string): RegExp {
  const body = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

export function matchesAny(name: string, globs: readonly RegExp[]): boolean {
  return globs.some((g) => g.test(name));
}

/** A device as the watcher sees it. */
export interface DeviceLink {
  readonly name: string;
  readonly ifindex: number;
  /** The bridge (or bond) it is a port of, 0 for none; a device enslaved after it appeared is reported again. */
  readonly master?: number;
}

export class DeviceWatcher<R extends string> {
  private readonly roles: Array<[R, RegExp[]]>;
  private readonly onDevice: (link: DeviceLink, role: R) => void;
  private readonly list: () => readonly DeviceLink[];
  private readonly log: Logger;
  private readonly intervalMs: number;
  /** Devices with the program attached: name → its ifindex, master (a bridge port's bridge) and role. */
  private readonly known = new Map<string, { ifindex: number; master: number; role: R }>();
  private timer: NodeJS.Timeout | null = null;
  private monitor: ChildProcess | null = null;
  private busy = false;
  private again = false;
  private stopped = false;

  /** roles: checked in order; a device gets the first role whose globs match. */
  constructor(opts: {
    roles: ReadonlyArray<readonly [R, readonly string[]]>;
    onDevice: (link: DeviceLink, role: R) => void;
    /** Every device of this namespace, without a child process (Shim.links). */
    list: () => readonly DeviceLink[];
    log: Logger;
    intervalMs?: number;
  }) {
    this.roles = opts.roles.map(([r, globs]) => [r, globs.map(globToRegExp)]);
    this.onDevice = opts.onDevice;
    this.list = opts.list;
    this.log = opts.log;
    this.intervalMs = opts.intervalMs ?? 500;
  }

  /** Attach to the devices there are now; the monitor starts on the next turn of the event loop. */
  start(): void {
    this.poll();
    this.timer = setInterval(() => this.poll(), this.intervalMs);
    // Its fork stalls the agent for milliseconds: not before what is waiting on this start.
    setImmediate(() => this.startMonitor());
  }

  private startMonitor(): void {
    if (this.stopped) return;
    try {
      this.monitor = childProcess().spawn('ip', ['-o', 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] });
      this.monitor.stdout!.on('data', () => this.poll());
      this.monitor.on('error', (e) => this.log.warn('ip monitor unavailable; polling only', { error: e.message }));
    } catch (e) {
      this.log.warn('ip monitor unavailable; polling only', { error: errorText(e) });
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.monitor?.kill();
  }

  /** Names of matching devices currently known. */
  devices(): string[] {
    return [...this.known.keys()];
  }

  /** Names of the devices with the program attached, by role, sorted. */
  byRole(): Map<R, string[]> {
    const out = new Map<R, string[]>();
    for (const [name, { role }] of this.known) out.set(role, [...(out.get(role) ?? []), name]);
    for (const names of out.values()) names.sort();
    return out;
  }

  private poll(): void {
    if (this.busy) {
      this.again = true; // an event arrived mid-poll (from an attach callback): look once more after it
      return;
    }
    this.busy = true;
    this.again = false;
    try {
      const links = this.list();
      const seen = new Set<string>();
      for (const l of links) {
        const role = this.roles.find(([, globs]) => matchesAny(l.name, globs))?.[0];
        if (role === undefined) continue;
        seen.add(l.name);
        // A re-created device has a new ifindex and no filter: attach again.
        // A new master (a pod's veth joining its bridge) changes whether its senders are pods.
        const known = this.known.get(l.name);
        if (known?.ifindex === l.ifindex && known.master === (l.master ?? 0)) continue;
        try {
          this.onDevice(l, role);
          this.known.set(l.name, { ifindex: l.ifindex, master: l.master ?? 0, role });
        } catch (e) {
          this.log.error('attach failed; will retry', { device: l.name, error: errorText(e) });
        }
      }
      for (const name of [...this.known.keys()]) if (!seen.has(name)) this.known.delete(name);
    } catch (e) {
      this.log.warn('listing devices failed', { error: errorText(e) });
    } finally {
      this.busy = false;
      if (this.again) this.poll();
    }
  }
}
