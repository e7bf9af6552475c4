/**
 * Inspection commands over the pinned maps: backends, conntrack, and trace
 * ("where does this packet go"), which runs the real loaded program on a
 * crafted packet with BPF_PROG_TEST_RUN.
 *
 * trace has no side effects: the program is loaded a second time with the
 * service maps shared (pins) and conntrack, affinity, socket and counter
 * maps private. The private conntrack/affinity are seeded with the live
 * entries for the traced flow and client, so an established flow is traced
 * as established.
 */
import * as C from '../datapath/codecs';
import { MAP_NAMES, TC_PROGS, bpfObjectPath, openPinned } from '../datapath/loader';
import { Shim } from '../datapath/ffi';
import { PinnedMap, keyBuffer, keyString } from '../datapath/maps';
import { buildPacket, buildPacket6, readHeaders, readHeaders6 } from '../datapath/packet';
import { ipFamily } from '../model/types';
import { VERDICT_SLOTS } from '../datapath/verdicts';
import { BackendView, FrontendView, hostPort, readServices } from '../datapath/dump';
import { protoName } from '../reconcile/reconciler';
import type { TraceOptions, TraceOrigin } from './commands';

export function backendsView(shim: Shim, root: string): BackendView[] {
  return readServices(openPinned(shim, root, ['svc', 'be', 'svc6', 'be6'])).backends;
}

export function formatBackends(list: BackendView[]): string {
  return list.map((b) => `backend ${b.id} ${b.addr}:${b.port}/${b.proto}${b.flags.length ? ` (${b.flags.join(',')})` : ''}`).join('\n') + '\n';
}

export interface CtEntry {
  dir: 'fwd' | 'rev';
  proto: string;
  src: string;
  dst: string;
  backendId: number;
  revNatId: number;
  nat: string | null;
  ageSeconds: number;
  flags: string[];
}

/** Both families' conntrack entries, youngest first. */
export function ctView(shim: Shim, root: string): CtEntry[] {
  const { ct, ct6 } = openPinned(shim, root, ['ct', 'ct6']);
  const now = process.hrtime.bigint(); // CLOCK_MONOTONIC, like bpf_ktime_get_ns
  const entry = (
    key: { saddr: string; daddr: string; sport: number; dport: number; proto: number; dir: number },
    val: { last_seen: bigint; backend_id: number; rev_nat_id: number; nat_addr: string; nat_port: number; flags: number },
  ): CtEntry => ({
    dir: key.dir === C.CT_DIR.REV ? 'rev' : 'fwd',
    proto: protoName(key.proto),
    src: hostPort(key.saddr, key.sport),
    dst: hostPort(key.daddr, key.dport),
    backendId: val.backend_id,
    revNatId: val.rev_nat_id,
    nat: val.nat_addr === '0.0.0.0' || val.nat_addr === '::' ? null : hostPort(val.nat_addr, val.nat_port),
    ageSeconds: Math.max(0, Number(now - val.last_seen) / 1e9),
    flags: [...(val.flags & C.CT_F.SNAT ? ['snat'] : []), ...(val.flags & C.CT_F.CLOSING ? ['closing'] : []), ...(val.flags & C.CT_F.REPLIED ? ['replied'] : [])],
  });
  try {
    const out = [...ct.dump().map(([k, v]) => entry(C.ctKey.decode(keyBuffer(k)), C.ctVal.decode(v))), ...ct6.dump().map(([k, v]) => entry(C.ct6Key.decode(keyBuffer(k)), C.ct6Val.decode(v)))];
    return out.sort((a, b) => a.ageSeconds - b.ageSeconds);
  } finally {
    ct.close();
    ct6.close();
  }
}

export function formatCt(list: CtEntry[]): string {
  return (
    list
      .map((e) => {
        const what = e.dir === 'fwd' ? `-> backend ${e.backendId}${e.nat ? ` (source NATed to ${e.nat})` : ''}` : `reply of frontend ${e.revNatId}${e.nat ? ` to client ${e.nat}` : ''}`;
        return `${e.dir} ${e.proto} ${e.src} -> ${e.dst} ${what} age ${e.ageSeconds.toFixed(1)}s${e.flags.length ? ` [${e.flags.join(',')}]` : ''}`;
      })
      .join('\n') + '\n'
  );
}

export interface VerdictCount {
  verdict: string;
  packets: number;
}

/** Every verdict's counter, summed over CPUs, in enum order, IPv4 then IPv6 (`forward/ipv6`) (zeros included: a missing name reads as "never"). */
export function verdictsView(shim: Shim, root: string): VerdictCount[] {
  const { verdicts } = openPinned(shim, root, ['verdicts']);
  const totals = new Map<number, bigint>();
  for (const [k, v] of verdicts.dump()) {
    let n = 0n;
    for (let c = 0; c < verdicts.cpus; c++) n += v.readBigUInt64LE(c * 8);
    totals.set(keyBuffer(k).readUInt32LE(0), n);
  }
  verdicts.close();
  return VERDICT_SLOTS.map((slot) => ({ verdict: slot.name, packets: Number(totals.get(slot.index) ?? 0n) }));
}

export function formatVerdicts(list: VerdictCount[]): string {
  const width = Math.max(...list.map((v) => v.verdict.length));
  return list.map((v) => `${v.verdict.padEnd(width)} ${v.packets}`).join('\n') + '\n';
}

export interface TraceResult {
  packet: { proto: string; src: string; dst: string; from: TraceOrigin };
  verdict: string;
  frontend: FrontendView | null;
  /** Backends a new flow may reach (the frontend's slots); empty when rejected/dropped. */
  possibleBackends: string[];
  established: boolean;
  /** The packet as it leaves the program (after NAT), when it was forwarded. */
  out: { src: string; dst: string } | null;
  description: string;
}

const FROM_WORDS: Record<TraceOrigin, string> = { pod: 'a pod', external: 'outside', host: 'a node socket on lo' };

/** One crafted packet through the loaded program under opts.bpffsRoot; opts are checked by trace's flag table (commands.ts). */
export function trace(shim: Shim, opts: TraceOptions): TraceResult {
  const { src, dst, proto, from } = opts;
  const root = opts.bpffsRoot;
  const protoNum = proto === 'tcp' ? C.IPPROTO.TCP : proto === 'udp' ? C.IPPROTO.UDP : C.IPPROTO.SCTP;
  const v6 = ipFamily(dst.addr) === 6;
  if (ipFamily(src.addr) !== ipFamily(dst.addr)) throw new Error(`--src ${src.addr} and --dst ${dst.addr} are of different IP families`);
  // The live maps first: loading the object over a pin root without them would create and pin them there.
  const live = openPinned(shim, root, ['svc', 'be', 'ct', 'aff', 'svc6', 'be6', 'ct6', 'aff6']);
  let obj: number | undefined;
  try {
    const own = [MAP_NAMES.ct, MAP_NAMES.aff, MAP_NAMES.verdicts, MAP_NAMES.skrevnat, MAP_NAMES.frag, MAP_NAMES.ct6, MAP_NAMES.aff6, MAP_NAMES.skrevnat6, MAP_NAMES.frag6];
    obj = shim.objLoadPrivate(bpfObjectPath('tc.o'), root, own, 1024);
    const loaded = obj;
    const priv = (name: string): PinnedMap => new PinnedMap(shim, name, shim.objMapFd(loaded, name));
    // The family's conntrack and affinity: the live ones, and the program's private copies.
    const fam = v6
      ? { ct: live.ct6, aff: live.aff6, ctName: MAP_NAMES.ct6, affName: MAP_NAMES.aff6, ctKey: C.ct6Key, affClient: (k: string) => C.aff6Key.decode(keyBuffer(k)).client }
      : { ct: live.ct, aff: live.aff, ctName: MAP_NAMES.ct, affName: MAP_NAMES.aff, ctKey: C.ctKey, affClient: (k: string) => C.affKey.decode(keyBuffer(k)).client };
    const ct = priv(fam.ctName);
    // Seed the flow's own conntrack entries (both directions of this tuple).
    let established = false;
    for (const dir of [C.CT_DIR.FWD, C.CT_DIR.REV]) {
      const k = keyString(fam.ctKey.encode({ saddr: src.addr, daddr: dst.addr, sport: src.port, dport: dst.port, proto: protoNum, dir }));
      const v = fam.ct.lookup(k);
      if (v) {
        ct.upsert([[k, v]]);
        established = true;
      }
    }
    // Seed this client's affinity entries.
    const aff = priv(fam.affName);
    const mine = fam.aff.dump().filter(([k]) => fam.affClient(k) === src.addr);
    if (mine.length) aff.upsert(mine);

    const spec = { proto, src: src.addr, dst: dst.addr, sport: src.port, dport: dst.port, payload: 'weir trace' };
    const pkt = v6 ? buildPacket6(spec) : buildPacket(spec);
    const progFd = shim.objProgFd(loaded, TC_PROGS[from === 'external' ? 'ext' : from]);
    const run = shim.progTestRun(progFd, pkt, pkt.length + 256);
    const verdicts = priv(MAP_NAMES.verdicts);
    let verdict = 'pass';
    for (const [k, v] of verdicts.dump()) {
      let n = 0n;
      for (let c = 0; c < verdicts.cpus; c++) n += v.readBigUInt64LE(c * 8);
      const index = Buffer.from(k, 'latin1').readUInt32LE(0);
      if (n > 0n) verdict = VERDICT_SLOTS.find((slot) => slot.index === index)?.reason ?? `verdict${index}`;
    }
    // Whether the packet leaves by FIB redirect is a detail of the same outcome.
    verdict = verdict.replace(/_redirect$/, '');

    const view = readServices(live);
    const frontend = view.frontends.find((f) => f.addr === dst.addr && f.port === dst.port && f.proto === proto.toUpperCase() && f.scope === 'all') ?? null;
    const local = view.frontends.find((f) => f.addr === dst.addr && f.port === dst.port && f.proto === proto.toUpperCase() && f.scope === 'local') ?? null;
    const eligible = from === 'external' && local ? local : frontend;
    const possibleBackends = verdict === 'forward' && eligible ? eligible.backends.filter((b): b is BackendView => b !== null).map((b) => hostPort(b.addr, b.port)) : [];
    const outHdr = verdict === 'forward' || verdict === 'revnat' ? (v6 ? readHeaders6(run.data) : readHeaders(run.data)) : null;
    const out = outHdr ? { src: hostPort(outHdr.src, outHdr.sport), dst: hostPort(outHdr.dst, outHdr.dport) } : null;
    const flow = `${proto} ${hostPort(src.addr, src.port)} -> ${hostPort(dst.addr, dst.port)} from ${FROM_WORDS[from]}`;
    let description: string;
    switch (verdict) {
      case 'forward': {
        const snat = out && out.src !== hostPort(src.addr, src.port) ? `, source NATed to ${out.src}` : '';
        description = established ? `${flow}: established flow, stays on ${out!.dst}${snat}` : `${flow}: new flow to one of ${possibleBackends.join(', ')} (this run: ${out!.dst})${snat}`;
        break;
      }
      case 'revnat':
        description = `${flow}: reply of a NATed flow, rewritten to ${out!.src} -> ${out!.dst}`;
        break;
      case 'reject_no_endpoints':
        description = `${flow}: REJECT, the service has no endpoints (${proto === 'tcp' ? 'TCP RST' : v6 ? 'ICMPv6 port unreachable' : 'ICMP port unreachable'} sent back)`;
        break;
      case 'pass':
        description = `${flow}: not a service packet, passed on untouched`;
        break;
      default:
        description = `${flow}: DROP (${verdict})`;
    }
    return { packet: { proto, src: hostPort(src.addr, src.port), dst: hostPort(dst.addr, dst.port), from }, verdict, frontend, possibleBackends, established, out, description };
  } finally {
    if (obj !== undefined) shim.objClose(obj);
    for (const m of Object.values<PinnedMap>(live)) m.close();
  }
}
