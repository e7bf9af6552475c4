/**
 * Applies the rendered rules (render.ts) with iptables-restore.
 *
 *  - Atomic per table: one `iptables-restore --noflush` call; only chains
 *    named in the input are touched, so other users' rules stay.
 *  - Partial syncs: the shared chains (WEIR-SERVICES, WEIR-NODEPORTS, ...)
 *    are rewritten every time, service chains only when that service
 *    changed; chains no longer produced are flushed and deleted.
 *  - A full sync every `fullSyncMs` and after any failure rewrites
 *    everything, which repairs rules someone else changed.
 *  - UDP has no connection teardown: when a UDP endpoint goes away its
 *    conntrack entries would keep sending clients to it, so they are
 *    deleted with conntrack(8), as kube-proxy does.
 */
import { ObjectKey } from '../model/types';
import { ServicePlan, backendKey, frontendKey } from '../plan/plan';
import { CommitStats, FrontendConflict } from '../reconcile/reconciler';
import { Dataplane } from '../reconcile/dataplane';
import { childProcess } from '../util/lazy';
import { Logger } from '../util/log';
import { HOOKS, PREFIX, RenderContext, ServiceRules, Tables, renderService, restoreText } from './render';

type Table = 'nat' | 'filter';

export interface CommandRunner {
  (argv: readonly string[], input?: string): { code: number; stdout: string; stderr: string };
}

/**
 * Runs a command to completion. iptables-restore of a large rule set (ten
 * thousand services is several hundred thousand rules) takes minutes with
 * the nf_tables backend, hence the generous limit.
 */
export const runCommand: CommandRunner = (argv, input) => {
  const r = childProcess().spawnSync(argv[0]!, argv.slice(1), { input, encoding: 'utf8', timeout: 15 * 60_000, maxBuffer: 256 << 20 });
  const killed = r.signal ? `killed by ${r.signal}${r.error ? ` (${r.error.message})` : ''}` : '';
  return { code: r.status ?? 1, stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + killed };
};

/** Split an iptables rule string into argv, honouring double quotes. */
export function ruleArgs(rule: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|(\S+)/g;
  for (let m = re.exec(rule); m; m = re.exec(rule)) out.push(m[1] ?? m[2]!);
  return out;
}

export class IptablesDataplane implements Dataplane {
  readonly conflicts: FrontendConflict[] = [];
  private ctx: RenderContext;
  private readonly log: Logger;
  private readonly run: CommandRunner;
  private readonly fullSyncMs: number;
  private readonly plans = new Map<ObjectKey, ServicePlan>();
  private readonly rendered = new Map<ObjectKey, ServiceRules>();
  private readonly dirty = new Set<ObjectKey>();
  private readonly owners = new Map<string, ObjectKey>();
  /** UDP endpoints that left a frontend since the last commit: "vip|port|endpoint". */
  private readonly goneUdp = new Set<string>();
  private owned: Record<Table, Set<string>> = { nat: new Set(), filter: new Set() };
  private needFull = true;
  private lastFull = 0;

  constructor(opts: { ctx: RenderContext; log: Logger; run?: CommandRunner; fullSyncMs?: number }) {
    this.ctx = opts.ctx;
    this.log = opts.log;
    this.run = opts.run ?? runCommand;
    this.fullSyncMs = opts.fullSyncMs ?? 3_600_000;
  }

  setService(service: ObjectKey, plan: ServicePlan | null): void {
    // A frontend (address, port, protocol) belongs to the first service that
    // claimed it, as in the BPF maps; later claimants are reported and skipped.
    for (const [fk, owner] of this.owners) if (owner === service) this.owners.delete(fk);
    if (plan) {
      const frontends = plan.frontends.filter((f) => {
        const fk = frontendKey(f);
        const owner = this.owners.get(fk);
        if (owner !== undefined && owner !== service) {
          if (f.scope === 0) this.conflicts.push({ service, frontend: fk, flags: f.flags, owner });
          return false;
        }
        this.owners.set(fk, service);
        return true;
      });
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
  }

  /** A new local-traffic detector (detectLocalMode NodeCIDR follows the Node): every service is rendered again at the next commit. */
  setLocalTraffic(matches: readonly string[]): void {
    this.ctx = { ...this.ctx, localTraffic: matches };
    for (const key of this.plans.keys()) this.dirty.add(key);
    this.needFull = true;
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

  commit(): CommitStats {
    for (const key of this.dirty) {
      const plan = this.plans.get(key);
      if (plan) this.rendered.set(key, renderService(plan, this.ctx));
      else this.rendered.delete(key);
    }
    const full = this.needFull || Date.now() - this.lastFull > this.fullSyncMs;
    const t = new Tables(this.ctx);
    const { nat, filter } = t;
    const current: Record<Table, Set<string>> = { nat: new Set(nat.keys()), filter: new Set(filter.keys()) };
    for (const [key, r] of [...this.rendered].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      t.addJumps(r);
      const write = full || this.dirty.has(key);
      for (const [c, rules] of r.natChains) {
        current.nat.add(c);
        if (write || !this.owned.nat.has(c)) nat.set(c, rules);
      }
      for (const [c, rules] of r.filterChains) {
        current.filter.add(c);
        if (write || !this.owned.filter.has(c)) filter.set(c, rules);
      }
    }
    t.finish();
    const stale: Record<Table, string[]> = {
      nat: [...this.owned.nat].filter((c) => !current.nat.has(c)),
      filter: [...this.owned.filter].filter((c) => !current.filter.has(c)),
    };
    const text = restoreText('filter', filter, stale.filter) + restoreText('nat', nat, stale.nat);
    const r = this.run(['iptables-restore', '-w', '5', '--noflush'], text);
    if (r.code !== 0) {
      this.needFull = true; // the retry rewrites everything
      throw new Error(`iptables-restore failed: ${r.stderr.trim().split('\n').slice(0, 3).join(' | ')}`);
    }
    this.ensureHooks();
    this.flushUdpConntrack();
    this.owned = current;
    this.dirty.clear();
    if (full) {
      this.needFull = false;
      this.lastFull = Date.now();
    }
    let rules = 0;
    for (const m of [nat, filter]) for (const rs of m.values()) rules += rs.length;
    return { upserts: rules, deletes: stale.nat.length + stale.filter.length };
  }

  /** Jumps from the built-in chains: added once, first in their chain. */
  private ensureHooks(): void {
    for (const h of HOOKS) {
      const args = ruleArgs(h.rule);
      if (this.run(['iptables', '-w', '5', '-t', h.table, '-C', h.chain, ...args]).code === 0) continue;
      const r = this.run(['iptables', '-w', '5', '-t', h.table, '-I', h.chain, '1', ...args]);
      if (r.code !== 0) throw new Error(`iptables -I ${h.chain}: ${r.stderr.trim()}`);
    }
  }

  private flushUdpConntrack(): void {
    for (const gone of this.goneUdp) {
      const [addr, port, member] = gone.split('|');
      const ep = member!.split(':')[0]!;
      // Exit 1 means "nothing matched": fine. Anything else leaves stale UDP flows: say so.
      const r = this.run(['conntrack', '-D', '-p', 'udp', '--orig-dst', addr!, '--orig-port-dst', port!, '--dst-nat', ep]);
      if (r.code > 1) this.log.warn('could not delete stale UDP conntrack entries', { frontend: `${addr}:${port}`, endpoint: ep, error: r.stderr.trim() });
    }
    this.goneUdp.clear();
  }
}

/** Remove every hook and WEIR- chain (both tables). Returns the chains removed. */
export function cleanupIptables(run: CommandRunner = runCommand): string[] {
  // One read first: BPF mode calls this on every start, and a node that never
  // ran iptables mode has nothing to remove (no iptables at all: nothing either).
  const all = run(['iptables-save']);
  if (all.code !== 0 || !all.stdout.includes(PREFIX)) return [];
  for (const h of HOOKS) {
    const args = ruleArgs(h.rule);
    for (let i = 0; i < 10 && run(['iptables', '-w', '5', '-t', h.table, '-D', h.chain, ...args]).code === 0; i++);
  }
  const removed: string[] = [];
  let text = '';
  for (const table of ['filter', 'nat'] as const) {
    const saved = run(['iptables-save', '-t', table]).stdout;
    const chains = [...saved.matchAll(new RegExp(`^:(${PREFIX}[^ ]+)`, 'gm'))].map((m) => m[1]!);
    if (chains.length === 0) continue;
    removed.push(...chains.map((c) => `${table}/${c}`));
    text += restoreText(table, new Map(), chains);
  }
  if (text) {
    const r = run(['iptables-restore', '-w', '5', '--noflush'], text);
    if (r.code !== 0) throw new Error(`iptables cleanup failed: ${r.stderr.trim()}`);
  }
  return removed;
}

/** Can this node run the iptables fallback? (binary present and usable) */
export function iptablesAvailable(run: CommandRunner = runCommand): string | null {
  const r = run(['iptables', '-w', '5', '-t', 'nat', '-S', 'PREROUTING']);
  return r.code === 0 ? null : r.stderr.trim() || 'iptables not usable';
}
