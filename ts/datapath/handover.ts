/**
 * Handing a node back to another proxy (kube-proxy) without breaking the
 * connections weir carries: `weir cleanup --drain`.
 *
 * The other proxy's rules are installed while weir's programs still run;
 * they see no service traffic, because weir translates at tc ingress, before
 * netfilter. Draining sets one flag in the pinned configuration: from then
 * on the programs NAT only flows in weir's conntrack, and pass every new one
 * on unchanged, to the other proxy's rules (and the socket hooks leave new
 * connects to its OUTPUT rules). Once no flow weir carries is open, or at the
 * deadline, the programs can go. The other direction needs no flag: weir
 * leaves a TCP segment of a connection it never saw open to the stack
 * (WEIR_V_PASS_MIDFLOW), whose conntrack keeps it on the other proxy's backend.
 */
import * as C from './codecs';
import { Shim } from './ffi';
import { keyBuffer, keyString } from './maps';
import { openPinned } from './loader';
import { CONNTRACK_DEFAULTS } from '../cli/options';

const NS = 1_000_000_000n;
const CFG_KEY = keyString(C.u32Key.encode({ value: 0 }));

type Config = ReturnType<typeof C.config.decode>;

/**
 * Idle lifetimes of weir's conntrack entries (bpf/lib/ct.h): an entry older
 * than this is a miss to the programs, so no flow is open on it. The
 * configured ones (kube-proxy's conntrack timeouts), 0 meaning the default.
 */
function lifetimeNs(cfg: Config | null, proto: number, flags: number): bigint {
  const pick = (configured: number | undefined, dflt: number): bigint => BigInt(configured || dflt) * NS;
  if (proto === C.IPPROTO.SCTP) return 210n * NS;
  if (proto === C.IPPROTO.UDP) return flags & C.CT_F.REPLIED ? pick(cfg?.ct_udp_stream_s, CONNTRACK_DEFAULTS.udpStream) : pick(cfg?.ct_udp_s, CONNTRACK_DEFAULTS.udp);
  return flags & C.CT_F.CLOSING ? pick(cfg?.ct_tcp_close_wait_s, CONNTRACK_DEFAULTS.tcpCloseWait) : pick(cfg?.ct_tcp_established_s, CONNTRACK_DEFAULTS.tcpEstablished);
}

/** Set the drain flag in the pinned configuration under root. */
export function startDrain(shim: Shim, root: string): void {
  const { cfg } = openPinned(shim, root, ['cfg']);
  try {
    const old = cfg.lookup(CFG_KEY);
    if (!old) throw new Error(`no configuration under ${root}: no agent ever ran there`);
    const value = C.config.decode(old);
    cfg.upsert([[CFG_KEY, C.config.encode({ ...value, flags: value.flags | C.CFG_F.DRAIN })]]);
  } finally {
    cfg.close();
  }
}

/**
 * Flows weir still carries: forward conntrack entries within their
 * lifetime, TCP ones not yet closing (a FIN or RST was seen: what is left
 * is the close handshake, which the other proxy's conntrack cannot take
 * over anyway).
 */
export function openFlows(shim: Shim, root: string): number {
  const { ct, ct6, cfg } = openPinned(shim, root, ['ct', 'ct6', 'cfg']);
  try {
    const raw = cfg.lookup(CFG_KEY);
    const config = raw ? C.config.decode(raw) : null;
    const now = process.hrtime.bigint(); // CLOCK_MONOTONIC, like the programs' clock
    const open = (e: { dir: number; proto: number }, v: { flags: number; last_seen: bigint | number }): boolean =>
      e.dir === C.CT_DIR.FWD && !(e.proto === C.IPPROTO.TCP && v.flags & C.CT_F.CLOSING) && now - BigInt(v.last_seen) < lifetimeNs(config, e.proto, v.flags);
    let count = 0;
    for (const [k, v] of ct.dump()) if (open(C.ctKey.decode(keyBuffer(k)), C.ctVal.decode(v))) count++;
    for (const [k, v] of ct6.dump()) if (open(C.ct6Key.decode(keyBuffer(k)), C.ct6Val.decode(v))) count++;
    return count;
  } finally {
    ct.close();
    ct6.close();
    cfg.close();
  }
}
