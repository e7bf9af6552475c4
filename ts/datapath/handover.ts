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

const NS = 1_000_000_000n;

/**
 * Idle lifetimes of weir's conntrack entries (bpf/lib/ct.h): an entry older
 * than this is a miss to the programs, so no flow is open on it.
 */
function lifetimeNs(proto: number, closing: boolean): bigint {
  if (proto === C.IPPROTO.UDP) return 60n * NS;
  if (proto === C.IPPROTO.SCTP) return 210n * NS;
  return closing ? 10n * NS : 6n * 3600n * NS;
}

/** Set the drain flag in the pinned configuration under root. */
export function startDrain(shim: Shim, root: string): void {
  const { cfg } = openPinned(shim, root, ['cfg']);
  try {
    const key = keyString(C.u32Key.encode({ value: 0 }));
    const old = cfg.lookup(key);
    const value = old ? C.config.decode(old) : { hairpin_addr: '0.0.0.0', snat_addr: '0.0.0.0', flags: 0 };
    cfg.upsert([[key, C.config.encode({ ...value, flags: value.flags | C.CFG_F.DRAIN })]]);
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
  const { ct } = openPinned(shim, root, ['ct']);
  try {
    const now = process.hrtime.bigint(); // CLOCK_MONOTONIC, like the programs' clock
    let open = 0;
    for (const [k, v] of ct.dump()) {
      const key = C.ctKey.decode(keyBuffer(k));
      const val = C.ctVal.decode(v);
      if (key.dir !== C.CT_DIR.FWD) continue;
      const closing = (val.flags & C.CT_F.CLOSING) !== 0;
      if (key.proto === C.IPPROTO.TCP && closing) continue;
      if (now - BigInt(val.last_seen) < lifetimeNs(key.proto, closing)) open++;
    }
    return open;
  } finally {
    ct.close();
  }
}
