/**
 * Loads the BPF objects, pins (or re-adopts) their maps under the pin root,
 * attaches the tc programs to devices and the socket programs to a cgroup,
 * and removes all of it on cleanup.
 *
 * tc.o and sock.o declare the same maps with LIBBPF_PIN_BY_NAME: whichever
 * loads first creates the pins, the other reuses them, so both programs
 * share one set of maps.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as C from './codecs';
import { Shim } from './ffi';
import { KernelWriteQueue, PinnedMap, ServiceMaps, WriteQueue, keyString } from './maps';
import { listLinks } from './devices';
import { disableLoopbackPath } from './loopback';
import { sockTermValue, staleSockets } from './sockterm';
import { childProcess } from '../util/lazy';

/** Map names as in bpf/shared/weir.h (layout version 1). */
export const MAP_NAMES = {
  svc: 'weir1_svc',
  be: 'weir1_be',
  revnat: 'weir1_revnat',
  ct: 'weir1_ct',
  aff: 'weir1_aff',
  member: 'weir1_member',
  verdicts: 'weir1_verdicts',
  cfg: 'weir1_cfg',
  cidr: 'weir1_cidr',
  skrevnat: 'weir1_skrevnat',
  ids: 'weir1_ids',
  ports: 'weir1_ports',
  frag: 'weir1_frag',
  localDev: 'weir1_localdev',
  svc6: 'weir1_svc6',
  be6: 'weir1_be6',
  revnat6: 'weir1_revnat6',
  ct6: 'weir1_ct6',
  aff6: 'weir1_aff6',
  cidr6: 'weir1_cidr6',
  cfg6: 'weir1_cfg6',
  frag6: 'weir1_frag6',
  skrevnat6: 'weir1_skrevnat6',
} as const;

/** tc programs: which devices get which. */
export const TC_PROGS = { pod: 'weir_tc_pod', ext: 'weir_tc_ext', host: 'weir_tc_host' } as const;
export type DeviceRole = keyof typeof TC_PROGS;
/**
 * The tc egress program: ICMP errors the node generates about NATed flows
 * (bpf/lib/egress.h). On the devices such an error leaves by toward a
 * client or a backend: pod-facing and external ones. Not on lo: an error
 * for a local address (a masqueraded flow's) is looped back and seen by
 * weir_tc_host at lo's ingress.
 */
export const TC_EGRESS_PROG = 'weir_tc_egress';
export const EGRESS_ROLES: ReadonlySet<DeviceRole> = new Set(['pod', 'ext']);
/** Our tc filter's identity on every device: a restart replaces it in place. */
export const TC_HANDLE = 0x7765;
export const TC_PRIORITY = 10;

/** Socket programs and their cgroup attach types (enum bpf_attach_type). */
export const SOCK_PROGS = [
  { name: 'weir_sock_connect4', attachType: 10 /* BPF_CGROUP_INET4_CONNECT */ },
  { name: 'weir_sock_sendmsg4', attachType: 14 /* BPF_CGROUP_UDP4_SENDMSG */ },
  { name: 'weir_sock_recvmsg4', attachType: 19 /* BPF_CGROUP_UDP4_RECVMSG */ },
  { name: 'weir_sock_getpeername4', attachType: 29 /* BPF_CGROUP_INET4_GETPEERNAME */ },
  { name: 'weir_sock_connect6', attachType: 11 /* BPF_CGROUP_INET6_CONNECT */ },
  { name: 'weir_sock_sendmsg6', attachType: 15 /* BPF_CGROUP_UDP6_SENDMSG */ },
  { name: 'weir_sock_recvmsg6', attachType: 20 /* BPF_CGROUP_UDP6_RECVMSG */ },
  { name: 'weir_sock_getpeername6', attachType: 30 /* BPF_CGROUP_INET6_GETPEERNAME */ },
] as const;

/** The iterator that destroys sockets left on a removed backend (bpf/lib/sockterm.h), and how many it takes per run (WEIR_MAX_SOCKTERM). */
const SOCKTERM_PROG = 'weir_sock_udp_stale';
const MAX_SOCKTERM = 4096;

export const progPin = (pinRoot: string, prog: string): string => path.join(pinRoot, `prog_${prog}`);
export const linkPin = (pinRoot: string, prog: string): string => path.join(pinRoot, `link_${prog}`);

export function bpfObjectPath(name: string): string {
  const dir = process.env.WEIR_BPF_DIR;
  if (dir) return path.join(dir, name);
  const candidates = [path.resolve(__dirname, '../../../build/bpf', name), path.resolve(__dirname, '../../build/bpf', name)];
  return candidates.find((p) => fs.existsSync(p)) ?? candidates[0]!;
}

/** Mount bpffs if the pin root's filesystem is not one (fresh nodes, some containers). */
export function ensureBpffs(pinRoot: string): void {
  const mounts = fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '));
  const bpfMounts = mounts.filter((m) => m[2] === 'bpf').map((m) => m[1]!);
  const abs = path.resolve(pinRoot);
  if (bpfMounts.some((m) => abs === m || abs.startsWith(m.endsWith('/') ? m : m + '/'))) {
    fs.mkdirSync(abs, { recursive: true });
    return;
  }
  // Fresh nodes and some container runtimes come without bpffs: mount it at
  // the conventional place, but never guess a mount point elsewhere.
  if (!abs.startsWith('/sys/fs/bpf/')) {
    throw new Error(`${pinRoot} is not on a bpf filesystem: mount one or choose --bpffs-root under it`);
  }
  childProcess().execFileSync('mount', ['-t', 'bpf', 'bpf', '/sys/fs/bpf']);
  fs.mkdirSync(abs, { recursive: true });
}

export interface AllMaps extends ServiceMaps {
  readonly ct: PinnedMap;
  readonly aff: PinnedMap;
  readonly verdicts: PinnedMap;
  readonly cfg: PinnedMap;
  readonly skrevnat: PinnedMap;
  readonly ids: PinnedMap;
  readonly ports: PinnedMap;
  readonly localDev: PinnedMap;
  /** IPv6 twins of the maps whose structs hold an address (docs/ipv6.md, "Map layout"). */
  readonly svc6: PinnedMap;
  readonly be6: PinnedMap;
  readonly revnat6: PinnedMap;
  readonly ct6: PinnedMap;
  readonly aff6: PinnedMap;
  readonly cidr6: PinnedMap;
  readonly cfg6: PinnedMap;
  readonly skrevnat6: PinnedMap;
}

/**
 * max_entries of the maps sized at load (everything else is fixed in
 * bpf/shared/weir.h). Both kinds cost start-up time and kernel memory for
 * their whole size, filled or not: the LRU maps (traffic) preallocate their
 * elements, the service and membership hashes zero a bucket array.
 */
export interface MapSizes {
  /** Conntrack entries (two per flow). */
  ct: number;
  aff: number;
  skrevnat: number;
  /** Frontends plus the endpoints of each frontend. */
  svc: number;
  /** Same count as svc: one entry per endpoint of each frontend. */
  member: number;
}

function publicSizes(s: LoadSizes): MapSizes {
  return { ct: s.ct, aff: s.aff, skrevnat: s.skrevnat, svc: s.svc, member: s.member };
}

/** The sizes weir.h compiles in (kube-proxy's minimum conntrack: 131072 flows). */
export const DEFAULT_SIZES: MapSizes = { ct: 262144, aff: 65536, skrevnat: 65536, svc: 262144, member: 262144 };

/**
 * What the loader passes for each sized map: MapSizes plus the IPv6 twins
 * sized at load (ct6, aff6, svc6, skrevnat6), which take the size of their IPv4 twin:
 * one flag sizes both families, as kube-proxy's conntrack settings do.
 */
type LoadSizes = Record<keyof MapSizes | 'ct6' | 'aff6' | 'svc6' | 'skrevnat6', number>;

/**
 * The sizes to load with: a map already pinned keeps its size, since libbpf
 * reuses a pin only when its definition matches and a restart must keep
 * conntrack (`weir cleanup` and a new start resize it).
 */
function effectiveSizes(shim: Shim, pinRoot: string, want: MapSizes): LoadSizes {
  const out: LoadSizes = { ...want, ct6: want.ct, aff6: want.aff, svc6: want.svc, skrevnat6: want.skrevnat };
  for (const k of Object.keys(out) as Array<keyof LoadSizes>) {
    const pin = path.join(pinRoot, MAP_NAMES[k]);
    if (!fs.existsSync(pin)) continue;
    const fd = shim.pinOpen(pin);
    try {
      out[k] = shim.mapInfo(fd).maxEntries;
    } finally {
      shim.close(fd);
    }
  }
  return out;
}

/**
 * The config map holds one entry that every start writes afresh, so a pin
 * of it with another value size (from a build whose weir_config was
 * shorter) is removed rather than refused: libbpf reuses a pin only when
 * its definition matches. The programs still attached keep their own map
 * until this start's programs replace them.
 */
function dropStaleConfigPin(shim: Shim, pinRoot: string): void {
  const pin = path.join(pinRoot, MAP_NAMES.cfg);
  if (!fs.existsSync(pin)) return;
  const fd = shim.pinOpen(pin);
  let stale: boolean;
  try {
    stale = shim.mapInfo(fd).valueSize !== C.config.size;
  } finally {
    shim.close(fd);
  }
  if (stale) fs.rmSync(pin);
}

function sizeArgs(s: LoadSizes): Record<string, number> {
  return Object.fromEntries((Object.keys(s) as Array<keyof LoadSizes>).map((k) => [MAP_NAMES[k], s[k]]));
}

/** Conntrack idle lifetimes in seconds (0: the program's default). */
export interface ConntrackLifetimes {
  tcpEstablished: number;
  tcpCloseWait: number;
  udp: number;
  udpStream: number;
}

export interface DatapathConfig {
  hairpinAddr: string;
  /** Node IP used for masquerade ('' = none). */
  snatAddr: string;
  masqueradeAll: boolean;
  /** Pods are told by the source address: the cluster CIDRs, or this node's pod CIDRs, in the cidr map (owner 0). */
  haveClusterCidrs: boolean;
  /** Pods are told by the device they enter on: the localdev map (setLocalDevice). */
  localDevices?: boolean;
  /** Absent: the programs' defaults. */
  conntrack?: ConntrackLifetimes;
  /** The node's network namespace cookie (Shim.netnsCookie); absent: unknown, every socket is the node's. */
  hostNetns?: bigint;
  /** The socket hooks leave pods' sockets alone (their packets take the tc path). */
  socketLbHostnsOnly?: boolean;
}

export class BpfDatapath {
  readonly maps: AllMaps;
  /** Ordered writes on the shim's writer thread, for the reconciler. */
  readonly writes: WriteQueue;
  /** When the objects finished loading, in ms since the process started. */
  readonly loadedAtMs = Math.round(process.uptime() * 1000);
  readonly progFds: Record<DeviceRole, number>;
  /** weir_tc_egress. */
  readonly egressFd: number;
  private readonly shim: Shim;
  private readonly objs: number[];
  private readonly sockFds: Map<string, number>;
  private readonly pinRoot: string;

  /** The sizes the traffic-scaled maps have (a reused pin keeps its own). */
  readonly sizes: MapSizes;

  private constructor(d: { shim: Shim; pinRoot: string; objs: number[]; maps: AllMaps; progFds: Record<DeviceRole, number>; egressFd: number; sockFds: Map<string, number>; sizes: MapSizes }) {
    this.sizes = d.sizes;
    this.shim = d.shim;
    this.pinRoot = d.pinRoot;
    this.objs = d.objs;
    this.maps = d.maps;
    this.writes = new KernelWriteQueue(d.shim);
    this.progFds = d.progFds;
    this.egressFd = d.egressFd;
    this.sockFds = d.sockFds;
  }

  /** Load tc.o and sock.o with their maps pinned under pinRoot (reusing compatible pins). */
  static load(shim: Shim, pinRoot: string, sizes: MapSizes = DEFAULT_SIZES): BpfDatapath {
    ensureBpffs(pinRoot);
    dropStaleConfigPin(shim, pinRoot);
    const actual = effectiveSizes(shim, pinRoot, sizes);
    const tc = shim.objLoad(bpfObjectPath('tc.o'), pinRoot, sizeArgs(actual));
    return BpfDatapath.assemble(shim, pinRoot, publicSizes(actual), tc, shim.objLoad(bpfObjectPath('sock.o'), pinRoot, sizeArgs(actual)));
  }

  /** load() with the kernel's part (map creation, verification) off the main thread, at idle priority until Shim.objLoadBoost(). */
  static async loadAsync(shim: Shim, pinRoot: string, sizes: MapSizes = DEFAULT_SIZES): Promise<BpfDatapath> {
    ensureBpffs(pinRoot);
    dropStaleConfigPin(shim, pinRoot);
    const actual = effectiveSizes(shim, pinRoot, sizes);
    const tc = await shim.objLoadAsync(bpfObjectPath('tc.o'), pinRoot, sizeArgs(actual));
    // sock.o reuses the maps tc.o pinned: quick, and it must not race tc.o's pins.
    return BpfDatapath.assemble(shim, pinRoot, publicSizes(actual), tc, shim.objLoad(bpfObjectPath('sock.o'), pinRoot, sizeArgs(actual)));
  }

  private static assemble(shim: Shim, pinRoot: string, sizes: MapSizes, tc: number, sock: number): BpfDatapath {
    const map = (name: string): PinnedMap => new PinnedMap(shim, path.join(pinRoot, name), shim.objMapFd(tc, name));
    const maps: AllMaps = {
      svc: map(MAP_NAMES.svc),
      be: map(MAP_NAMES.be),
      revnat: map(MAP_NAMES.revnat),
      member: map(MAP_NAMES.member),
      cidr: map(MAP_NAMES.cidr),
      ct: map(MAP_NAMES.ct),
      aff: map(MAP_NAMES.aff),
      verdicts: map(MAP_NAMES.verdicts),
      cfg: map(MAP_NAMES.cfg),
      skrevnat: map(MAP_NAMES.skrevnat),
      ids: map(MAP_NAMES.ids),
      ports: map(MAP_NAMES.ports),
      localDev: map(MAP_NAMES.localDev),
      svc6: map(MAP_NAMES.svc6),
      be6: map(MAP_NAMES.be6),
      revnat6: map(MAP_NAMES.revnat6),
      ct6: map(MAP_NAMES.ct6),
      aff6: map(MAP_NAMES.aff6),
      cidr6: map(MAP_NAMES.cidr6),
      cfg6: map(MAP_NAMES.cfg6),
      skrevnat6: map(MAP_NAMES.skrevnat6),
    };
    const pin = (obj: number, prog: string): number => {
      const fd = shim.objProgFd(obj, prog);
      fs.rmSync(progPin(pinRoot, prog), { force: true });
      shim.pin(fd, progPin(pinRoot, prog));
      return fd;
    };
    const progFds = { pod: pin(tc, TC_PROGS.pod), ext: pin(tc, TC_PROGS.ext), host: pin(tc, TC_PROGS.host) };
    const egressFd = pin(tc, TC_EGRESS_PROG);
    const sockFds = new Map(SOCK_PROGS.map((p) => [p.name, pin(sock, p.name)] as const));
    return new BpfDatapath({ shim, pinRoot, objs: [tc, sock], maps, progFds, egressFd, sockFds, sizes });
  }

  writeConfig(cfg: DatapathConfig): void {
    const flags =
      (cfg.masqueradeAll ? C.CFG_F.MASQUERADE_ALL : 0) |
      (cfg.haveClusterCidrs ? C.CFG_F.CLUSTER_CIDR : 0) |
      (cfg.localDevices ? C.CFG_F.LOCAL_DEVICES : 0) |
      (cfg.socketLbHostnsOnly ? C.CFG_F.SOCK_HOSTNS_ONLY : 0);
    const ct = cfg.conntrack ?? { tcpEstablished: 0, tcpCloseWait: 0, udp: 0, udpStream: 0 };
    const value = C.config.encode({
      hairpin_addr: cfg.hairpinAddr,
      snat_addr: cfg.snatAddr || '0.0.0.0',
      flags,
      ct_tcp_established_s: ct.tcpEstablished,
      ct_tcp_close_wait_s: ct.tcpCloseWait,
      ct_udp_s: ct.udp,
      ct_udp_stream_s: ct.udpStream,
      host_netns: cfg.hostNetns ?? 0n,
    });
    this.maps.cfg.upsert([[keyString(C.u32Key.encode({ value: 0 })), value]]);
  }

  /**
   * Destroy node processes' connected UDP sockets the socket hooks pointed
   * at a backend their frontend no longer has (ts/datapath/sockterm.ts).
   * How many were named and destroyed; null where the kernel cannot
   * destroy a socket (bpf_sock_destroy is 6.5+).
   */
  terminateStaleSockets(): { named: number; destroyed: number } | null {
    const stale = staleSockets(this.maps).slice(0, MAX_SOCKTERM);
    if (!stale.length) return { named: 0, destroyed: 0 };
    const sock = this.objs[1]!;
    const term = new PinnedMap(this.shim, 'weir1_sockterm', this.shim.objMapFd(sock, 'weir1_sockterm'));
    const keys = stale.map((st) => keyString(C.u64Value.encode({ value: st.cookie })));
    term.upsert(stale.map((st, i) => [keys[i]!, sockTermValue(st)] as const));
    let out: Buffer | null;
    try {
      out = this.shim.iterRun(sock, SOCKTERM_PROG, 8 * MAX_SOCKTERM);
    } finally {
      term.remove(keys);
    }
    if (!out) return null;
    // The iterator wrote each destroyed socket's cookie: their records go too.
    const gone = new Set<bigint>();
    for (let off = 0; off + 8 <= out.length; off += 8) gone.add(out.readBigUInt64LE(off));
    const k4: string[] = [];
    const k6: string[] = [];
    for (const st of stale) {
      if (!gone.has(st.cookie)) continue;
      if (st.family === 4) k4.push(keyString(C.skKey.encode({ cookie: st.cookie, addr: st.addr, port: st.port, pad: 0 })));
      else k6.push(keyString(C.sk6Key.encode({ cookie: st.cookie, addr: st.addr, port: st.port, pad: 0, pad2: 0 })));
    }
    if (k4.length) this.maps.skrevnat.remove(k4);
    if (k6.length) this.maps.skrevnat6.remove(k6);
    return { named: stale.length, destroyed: gone.size };
  }

  /** Whether packets entering on ifindex come from this node's pods (detectLocalMode by device). */
  setLocalDevice(ifindex: number, local: boolean): void {
    const key = keyString(C.u32Key.encode({ value: ifindex }));
    if (local) this.maps.localDev.upsert([[key, C.u32Key.encode({ value: 1 })]]);
    else this.maps.localDev.remove([key]);
  }

  /**
   * The IPv6 settings (weir1_cfg6): the node's IPv6 address to masquerade
   * to ('' = none), the hairpin source, whether IPv6 cluster CIDRs are known.
   */
  writeConfig6(cfg: { hairpinAddr: string; snatAddr: string; haveClusterCidrs: boolean }): void {
    const value = C.config6.encode({ hairpin_addr: cfg.hairpinAddr || '::', snat_addr: cfg.snatAddr || '::', flags: cfg.haveClusterCidrs ? C.CFG6_F.CLUSTER_CIDR : 0 });
    this.maps.cfg6.upsert([[keyString(C.u32Key.encode({ value: 0 })), value]]);
  }

  /**
   * Attach (or atomically replace) our filter at ingress of ifindex, and on
   * pod-facing and external devices at egress too (the same handle and
   * priority there: a restart replaces it in place, cleanup finds it).
   */
  attach(role: DeviceRole, ifindex: number): void {
    this.shim.tcAttach(ifindex, this.progFds[role], true, TC_HANDLE, TC_PRIORITY);
    if (EGRESS_ROLES.has(role)) this.shim.tcAttach(ifindex, this.egressFd, false, TC_HANDLE, TC_PRIORITY);
  }

  /**
   * Attach the socket programs to a cgroup (v2) through pinned links. A
   * restarted agent updates its links in place: never two copies attached.
   */
  attachCgroup(cgroupPath: string): void {
    for (const p of SOCK_PROGS) {
      const fd = this.sockFds.get(p.name);
      if (fd === undefined) throw new Error(`socket program ${p.name} is not loaded`);
      this.shim.cgroupLink(cgroupPath, fd, p.attachType, linkPin(this.pinRoot, p.name));
    }
  }

  close(): void {
    for (const o of this.objs) this.shim.objClose(o);
  }
}

/**
 * The maps a CLI command reads, opened from their pins (the agent need not
 * run). A missing pin is the usual case of no agent, or another pin root:
 * said in those words, before anything is opened, rather than as ENOENT.
 */
export function openPinned<N extends keyof typeof MAP_NAMES>(shim: Shim, pinRoot: string, names: readonly N[]): Record<N, PinnedMap> {
  const missing = names.filter((n) => !fs.existsSync(path.join(pinRoot, MAP_NAMES[n])));
  if (missing.length) {
    const what = missing.length === names.length ? 'no weir maps' : `no ${missing.map((n) => MAP_NAMES[n]).join(', ')}`;
    throw new Error(`${what} under ${pinRoot}: is an agent running with --bpffs-root ${pinRoot}?`);
  }
  const out = {} as Record<N, PinnedMap>;
  try {
    for (const n of names) out[n] = new PinnedMap(shim, path.join(pinRoot, MAP_NAMES[n]));
  } catch (e) {
    throw new Error(`cannot open weir maps under ${pinRoot} (is an agent running with --bpffs-root ${pinRoot}?): ${e instanceof Error ? e.message : String(e)}`);
  }
  return out;
}

/**
 * Remove a device's clsact qdisc once no filter is left on it in either
 * direction: attaching created it (libbpf's hook create), and an idle
 * clsact still sends every packet of the device through the tc hook.
 * A qdisc that holds anyone else's filter stays. Without tc(8) it stays too.
 */
function releaseClsact(dev: string): boolean {
  const cp = childProcess();
  const empty = (dir: string): boolean => {
    const r = cp.spawnSync('tc', ['-j', 'filter', 'show', 'dev', dev, dir], { encoding: 'utf8', timeout: 5000 });
    return r.status === 0 && (r.stdout.trim() === '' || r.stdout.trim() === '[]');
  };
  if (!empty('ingress') || !empty('egress')) return false;
  return cp.spawnSync('tc', ['qdisc', 'del', 'dev', dev, 'clsact'], { timeout: 5000 }).status === 0;
}

/**
 * Remove every filter weir attached in this namespace, the clsact qdiscs
 * left empty by it, and every pin under pinRoot (removing a link's pin
 * detaches its cgroup programs).
 */
export async function cleanupBpf(shim: Shim, pinRoot: string, opts: { keepRoot?: boolean } = {}): Promise<{ detached: string[]; qdiscs: string[]; pinsRemoved: boolean; sysctls: string[] }> {
  const detached: string[] = [];
  const qdiscs: string[] = [];
  let loopbackPath = false;
  // Querying a device without clsact makes libbpf print a kernel error; expected here.
  shim.setLogLevel(0);
  for (const link of await listLinks()) {
    let had = false;
    for (const ingress of [true, false]) {
      if (shim.tcQuery(link.ifindex, ingress, TC_HANDLE, TC_PRIORITY) !== null) {
        shim.tcDetach(link.ifindex, ingress, TC_HANDLE, TC_PRIORITY);
        detached.push(`${link.name}/${ingress ? 'ingress' : 'egress'}`);
        loopbackPath ||= link.name === 'lo';
        had = true;
      }
    }
    if (had && releaseClsact(link.name)) qdiscs.push(link.name);
  }
  shim.setLogLevel(1);
  const pinsRemoved = fs.existsSync(pinRoot) && (!opts.keepRoot || fs.readdirSync(pinRoot).length > 0);
  if (pinsRemoved && opts.keepRoot) for (const name of fs.readdirSync(pinRoot)) fs.rmSync(path.join(pinRoot, name), { recursive: true, force: true });
  else if (pinsRemoved) fs.rmSync(pinRoot, { recursive: true, force: true });
  // The loopback path's sysctls go with its filter (never touched where weir had none on lo).
  const sysctls = loopbackPath ? disableLoopbackPath() : [];
  return { detached, qdiscs, pinsRemoved, sysctls };
}
