/**
 * The two sysctls the loopback path (weir_tc_host, bpf/lib/fib.h) needs, on
 * lo alone. Replies to node processes are handed to loopback ingress with a
 * local source (accept_local) that may be 127/8 (route_localnet); every
 * other device keeps refusing such packets as martians. Cleanup turns them
 * off again: the kernel's defaults, while any net.ipv4.conf.all setting
 * stays in force.
 */
import * as fs from 'node:fs';

const KNOBS = ['route_localnet', 'accept_local'] as const;
const knobPath = (knob: string): string => `/proc/sys/net/ipv4/conf/lo/${knob}`;

/** Set each knob to `value`; the names of those that changed (for the log). */
function setKnobs(value: '0' | '1'): string[] {
  const changed: string[] = [];
  for (const knob of KNOBS) {
    if (fs.readFileSync(knobPath(knob), 'utf8').trim() === value) continue;
    fs.writeFileSync(knobPath(knob), value);
    changed.push(`net.ipv4.conf.lo.${knob}`);
  }
  return changed;
}

export const enableLoopbackPath = (): string[] => setKnobs('1');
export const disableLoopbackPath = (): string[] => setKnobs('0');
