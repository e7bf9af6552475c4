/**
 * What the rule-based dataplanes (iptables, nftables) keep of the plan
 * between commits: each service's plan with the frontends it owns, which
 * services changed since the last commit, and the UDP endpoints that left
 * a frontend, whose conntrack entries go at the commit (kube-proxy's
 * cleanup of stale UDP flows).
 */
import { ObjectKey } from '../model/types';
import { ServicePlan, backendKey, frontendKey } from '../plan/plan';
import { FrontendConflict } from '../reconcile/reconciler';
import { Logger } from '../util/log';
import type { CommandResult } from './command';

export class RuleServices {
  /** Frontends another service already claimed, drained by the Syncer. */
  readonly conflicts: FrontendConflict[] = [];
  readonly plans = new Map<ObjectKey, ServicePlan>();
  /** Services set since the last commit. */
  readonly dirty = new Set<ObjectKey>();
  private readonly owners = new Map<string, ObjectKey>();
  /** The frontends each service holds in `owners` (a change releases them without a scan of every frontend). */
  private readonly claimed = new Map<ObjectKey, string[]>();
  /** UDP endpoints that left a frontend since the last commit: "vip|port|endpoint". */
  private readonly goneUdp = new Set<string>();

  /**
   * Record a service's plan (null: the service is gone). A frontend
   * (address, port, protocol) belongs to the first service that claimed
   * it, as in the BPF maps; later claimants are reported and skipped, so
   * the plan kept holds only the frontends this service owns.
   */
  set(service: ObjectKey, plan: ServicePlan | null): ServicePlan | null {
    for (const fk of this.claimed.get(service) ?? []) if (this.owners.get(fk) === service) this.owners.delete(fk);
    this.claimed.delete(service);
    if (plan) {
      const claims: string[] = [];
      const frontends = plan.frontends.filter((f) => {
        const fk = frontendKey(f);
        const owner = this.owners.get(fk);
        if (owner !== undefined && owner !== service) {
          if (f.scope === 0) this.conflicts.push({ service, frontend: fk, flags: f.flags, owner });
          return false;
        }
        this.owners.set(fk, service);
        claims.push(fk);
        return true;
      });
      this.claimed.set(service, claims);
      plan = { ...plan, frontends };
    }
    const old = this.plans.get(service);
    if (old) {
      const member = (p: ServicePlan, f: ServicePlan['frontends'][number], m: number): string => `${f.addr}|${f.port}|${backendKey(p.backends[m]!)}`;
      const keep = new Set(plan ? plan.frontends.flatMap((f) => f.members.map((m) => member(plan, f, m))) : []);
      for (const f of old.frontends) {
        if (f.proto !== 'UDP') continue;
        for (const m of f.members) if (!keep.has(member(old, f, m))) this.goneUdp.add(member(old, f, m));
      }
    }
    if (plan) this.plans.set(service, plan);
    else this.plans.delete(service);
    this.dirty.add(service);
    return plan;
  }

  /** The services set since the last commit, for the commit starting now; those set from here on are the next one's. */
  takeDirty(): Set<ObjectKey> {
    const taken = new Set(this.dirty);
    this.dirty.clear();
    return taken;
  }

  /** Every service is to be rendered again (a new local-traffic detector). */
  markAllDirty(): void {
    for (const key of this.plans.keys()) this.dirty.add(key);
  }

  frontendOwner(frontend: string): ObjectKey | undefined {
    return this.owners.get(frontend);
  }

  frontendCount(): number {
    let n = 0;
    for (const p of this.plans.values()) n += p.frontends.filter((f) => f.scope === 0).length;
    return n;
  }

  backendCount(): number {
    const all = new Set<string>();
    for (const p of this.plans.values()) for (const b of p.backends) all.add(backendKey(b));
    return all.size;
  }

  /**
   * The conntrack(8) deletions of UDP flows to endpoints that left their
   * frontend since the last call, so their clients move on; run each and
   * pass its result to udpFlushed. Each walks the node's whole conntrack
   * table (about 0.1 s at 60,000 entries on the machine of BENCHMARKS.md).
   */
  takeUdpFlushes(): UdpFlush[] {
    const out: UdpFlush[] = [];
    for (const gone of this.goneUdp) {
      const [addr, port, member] = gone.split('|');
      // The endpoint's address out of its key: "10.0.0.1:80/UDP", "[fd00::1]:80/UDP".
      const endpoint = member!.replace(/:\d+\/\w+$/, '').replace(/^\[(.*)\]$/, '$1');
      // conntrack(8) reads addresses as IPv4 unless told the family.
      const family = addr!.includes(':') ? ['-f', 'ipv6'] : [];
      out.push({ frontend: `${addr}:${port}`, endpoint, argv: ['conntrack', '-D', ...family, '-p', 'udp', '--orig-dst', addr!, '--orig-port-dst', port!, '--dst-nat', endpoint] });
    }
    this.goneUdp.clear();
    return out;
  }
}

/** One conntrack(8) deletion of a departed UDP endpoint's flows (RuleServices.takeUdpFlushes). */
export interface UdpFlush {
  readonly frontend: string;
  readonly endpoint: string;
  readonly argv: readonly string[];
}

/** Exit 1 means "nothing matched": fine. Anything else leaves stale UDP flows: say so. */
export function udpFlushed(flush: UdpFlush, r: CommandResult, log: Logger): void {
  if (r.code > 1) log.warn('could not delete stale UDP conntrack entries', { frontend: flush.frontend, endpoint: flush.endpoint, error: r.stderr.trim() });
}
