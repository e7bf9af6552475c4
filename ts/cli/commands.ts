/**
 * The commands and their flag tables. Loading this loads no command's code:
 * main.ts imports what a command runs only when that command is run.
 */
import { IP, parseIP } from '../model/types';
import { AnyCommand, Command, Flag, UsageError, present, text } from './flags';
import { DEFAULT_BPFFS_ROOT, RUN, parseDuration } from './options';

const json: Flag<boolean> = {
  flag: 'json',
  kind: 'switch',
  description: 'print JSON instead of text',
  parse: present,
};

const bpffsRoot: Flag<string> = {
  flag: 'bpffs-root',
  kind: 'value',
  placeholder: 'PATH',
  default: DEFAULT_BPFFS_ROOT,
  description: 'the pin root, as given to weir run',
  parse: text,
};

/** Options of the commands that print what an agent programmed. */
export interface ReadOptions {
  json: boolean;
  bpffsRoot: string;
}

export const SERVICES: Command<ReadOptions> = {
  name: 'services',
  summary: 'list programmed frontends and their backends',
  notes: ["Reads the BPF maps when they are pinned under --bpffs-root, else weir's iptables chains."],
  flags: { json, bpffsRoot },
};

export const BACKENDS: Command<ReadOptions> = {
  name: 'backends',
  summary: 'list programmed backends',
  flags: { json, bpffsRoot },
};

export const CT: Command<ReadOptions> = {
  name: 'ct',
  summary: 'list conntrack entries: both directions of each flow, NAT, age',
  flags: { json, bpffsRoot },
};

export const VERDICTS: Command<ReadOptions> = {
  name: 'verdicts',
  summary: 'packets the BPF programs counted, by verdict (forward, revnat, reject, each drop reason, frag_unmatched)',
  notes: ['The counters weir_packets_total{verdict} exports, summed over CPUs since the maps were created.'],
  flags: { json, bpffsRoot },
};

export const CHECK: Command<ReadOptions> = {
  name: 'check',
  summary: 'verify the invariants of the pinned maps (nftables mode: of table inet weir; iptables mode: of its chains); exit 1 and one line per violation',
  notes: [
    'Checks rev-NAT ids, slots, members, owners and id high-water marks. Exit 0 when every invariant holds.',
    "Where table inet weir exists (nftables mode; a BPF-mode agent removes it), checks it instead: the fixed chains' rules, verdict targets, pick chains' endpoint slots, owners.",
    "Where no maps are pinned and weir's iptables chains exist (iptables mode), checks those, both families: the fixed chains and the jumps into them, jump targets, each service chain's uniform choice among its endpoints, one DNAT per endpoint chain, owners.",
  ],
  flags: { json, bpffsRoot },
};

export interface Endpoint {
  addr: IP;
  port: number;
}

export interface TraceOptions {
  src: Endpoint;
  dst: Endpoint;
  proto: 'tcp' | 'udp' | 'sctp';
  from: TraceOrigin;
  bpffsRoot: string;
}

/** IP:PORT or [IPv6]:PORT, or the address alone when the port may be any (a random client port). */
function endpoint(needPort: boolean): (flag: string, v: string) => Endpoint {
  return (flag, v) => {
    // An address alone (IPv6 unbracketed too), [IPv6] with an optional :PORT, or IPv4[:PORT].
    const m = parseIP(v) ? [v, v, undefined] : (/^\[([^\]]+)\](?::(.*))?$/.exec(v) ?? /^([^:]+)(?::(.*))?$/.exec(v) ?? [v, v, undefined]);
    const addr = parseIP(m[1]);
    const p = m[2];
    const port = p === undefined ? (needPort ? NaN : 40000 + Math.floor(Math.random() * 20000)) : Number(p);
    if (!addr || !Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`--${flag}: expected IP${needPort ? ':PORT' : '[:PORT]'}, got ${JSON.stringify(v)}`);
    return { addr, port };
  };
}

function proto(flag: string, v: string): 'tcp' | 'udp' | 'sctp' {
  const p = v.toLowerCase();
  if (p === 'tcp' || p === 'udp' || p === 'sctp') return p;
  throw new UsageError(`--${flag}: expected tcp, udp or sctp, got ${JSON.stringify(v)}`);
}

/** Where a traced packet arrives, as the tc program attached there sees it (host: lo, a node socket bound to 127/8 or to the service address). */
export type TraceOrigin = 'pod' | 'external' | 'host';

function from(flag: string, v: string): TraceOrigin {
  if (v === 'pod' || v === 'external' || v === 'host') return v;
  throw new UsageError(`--${flag}: expected pod, external or host, got ${JSON.stringify(v)}`);
}

export const TRACE: Command<TraceOptions & { json: boolean }> = {
  name: 'trace',
  summary: 'where a packet goes: runs the loaded program on a crafted packet, with no effect on live state',
  notes: ["The flow's live conntrack entries and the client's affinity are copied in, so an established flow is traced as established."],
  flags: {
    src: {
      flag: 'src',
      kind: 'value',
      placeholder: 'IP[:PORT]',
      required: true,
      description: "the packet's source ([IPv6]:PORT for IPv6); without a port, a random client port",
      parse: endpoint(false),
    },
    dst: {
      flag: 'dst',
      kind: 'value',
      placeholder: 'IP:PORT',
      required: true,
      description: "the packet's destination, e.g. a ClusterIP and port ([IPv6]:PORT for IPv6)",
      parse: endpoint(true),
    },
    proto: {
      flag: 'proto',
      kind: 'value',
      placeholder: 'tcp|udp|sctp',
      default: 'tcp',
      description: "the packet's protocol",
      parse: proto,
    },
    from: {
      flag: 'from',
      kind: 'value',
      placeholder: 'pod|external|host',
      default: 'pod',
      description: 'where the packet arrives: on a pod device, on an external device, or on lo from a node socket bound to 127.0.0.1 or to the service address',
      parse: from,
    },
    json,
    bpffsRoot,
  },
};

export const CLEANUP: Command<{ bpffsRoot: string; force: boolean; drainMs: number }> = {
  name: 'cleanup',
  summary: 'remove everything weir installed in this network namespace',
  notes: [
    'Removes tc filters, socket hook links, pins and iptables chains. Refuses while an agent runs on that pin root.',
    "With --drain, hands the node to another proxy first: weir keeps the flows it carries on their backends and passes every new one to the other proxy's rules, until none of its flows is open or the time is up.",
  ],
  flags: {
    bpffsRoot,
    drainMs: {
      flag: 'drain',
      kind: 'value',
      placeholder: 'DURATION',
      default: '0',
      description: "before removing, leave new connections to another proxy (kube-proxy) and wait up to this long for weir's open flows to end, e.g. 10m; 0: remove at once",
      parse: parseDuration,
    },
    force: {
      flag: 'force',
      kind: 'switch',
      description: "remove a running agent's state anyway",
      parse: present,
    },
  },
};

export const VERSION: Command<Record<string, never>> = {
  name: 'version',
  summary: "print weir's version (also weir --version)",
  flags: {},
};

/** Every command, in the order `weir --help` lists them. */
export const COMMANDS: readonly AnyCommand[] = [RUN, SERVICES, BACKENDS, CT, VERDICTS, TRACE, CHECK, CLEANUP, VERSION];
