/**
 * iptables mode's conntrack timeouts: as kube-proxy does, the netfilter
 * sysctls of the agent's network namespace (they are per namespace), set
 * only for the timeouts given, so a node keeps its own otherwise.
 */
import * as fs from 'node:fs';
import type { RunOptions } from '../cli/options';

const SYSCTL_DIR = '/proc/sys/net/netfilter';

/** Each timeout option and the sysctl kube-proxy sets for it. */
const SYSCTLS = [
  ['conntrackTcpEstablishedSec', 'nf_conntrack_tcp_timeout_established'],
  ['conntrackTcpCloseWaitSec', 'nf_conntrack_tcp_timeout_close_wait'],
  ['conntrackUdpSec', 'nf_conntrack_udp_timeout'],
  ['conntrackUdpStreamSec', 'nf_conntrack_udp_timeout_stream'],
] as const;

export type ConntrackTimeouts = Pick<RunOptions, (typeof SYSCTLS)[number][0]>;

/**
 * Write the sysctls of the given timeouts that differ; returns what it set
 * ("name=seconds"). Throws naming the sysctl when one cannot be written
 * (no nf_conntrack, or /proc/sys read-only in a container).
 */
export function setConntrackTimeouts(opts: ConntrackTimeouts, dir = SYSCTL_DIR): string[] {
  const set: string[] = [];
  for (const [field, name] of SYSCTLS) {
    const seconds = opts[field];
    if (seconds === null) continue;
    const file = `${dir}/${name}`;
    try {
      if (Number(fs.readFileSync(file, 'utf8').trim()) === seconds) continue;
      fs.writeFileSync(file, String(seconds));
    } catch (e) {
      throw new Error(`cannot set ${name} to ${seconds}: ${e instanceof Error ? e.message : String(e)}`);
    }
    set.push(`${name}=${seconds}`);
  }
  return set;
}
