/**
 * Applies the rendered rules (render.ts) with iptables-restore.
 *
 *  - Atomic per table: one `iptables-restore --noflush` call; only chains
 *    named in the input are touched, so other users' rules stay.
 *  - Partial syncs: the shared chains (WEIR-SERVICES, WEIR-NODEPORTS, ...)
 *    are rewritten every time, service chains only when that service
 *    changed; chains no longer produced are flushed and deleted.
 *  - A full sync every `fullSyncMs` and after any failure rewrites
 *    everything, which repairs rules someone else changed, and removes
 *    every weir chain the tables hold that it does not write (left by an
 *    earlier agent: a service deleted while none ran), as kube-proxy's
 *    full syncs remove its stale chains.
 *  - Every --sync-period checkRules reads, without blocking, a marker
 *    chain of each table and the built-in chains' hooks: a table flushed,
 *    replaced or deleted by something else, or a hook removed, makes the
 *    next commit a full sync (kube-proxy watches canary chains for the
 *    same reason).
 *  - UDP has no connection teardown: when a UDP endpoint goes away its
 *    conntrack entries would keep sending clients to it, so they are
 *    deleted with conntrack(8), as kube-proxy does.
 *  - IPv6 is ip6tables with the same chains (kube-proxy runs one proxier
 *    per family): each family keeps its own applied state and is restored
 *    with its own command. ip6tables is only written while a service has an
 *    IPv6 frontend, so an IPv4-only node runs exactly the iptables commands
 *    it always did; when the last one goes, and at the first commit without
 *    one (an earlier agent may have left some), weir's ip6tables chains and
 *    hooks are removed.
 */
import { Family, ObjectKey, ipFamily } from '../model/types';
import { ServicePlan } from '../plan/plan';
import { CommitStats, FrontendConflict } from '../reconcile/reconciler';
import { Dataplane } from '../reconcile/dataplane';
import { AsyncCommandRunner, CommandRunner, runCommand, runCommandAsync } from './command';
import { Logger } from '../util/log';
import { RuleServices, udpFlushed } from './services';
import { HOOKS, PREFIX, RenderContext, ServiceRules, Tables, LEAF_CHAINS, MARKER_CHAINS, renderService, restoreSections } from './render';

type Table = 'nat' | 'filter';

/** Split an iptables rule string into argv, honouring double quotes. */
export function ruleArgs(rule: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|(\S+)/g;
  for (let m = re.exec(rule); m; m = re.exec(rule)) out.push(m[1] ?? m[2]!);
  return out;
}

/** The commands of one family. */
const TOOLS: Record<Family, { iptables: string; restore: string; save: string }> = {
  4: { iptables: 'iptables', restore: 'iptables-restore', save: 'iptables-save' },
  6: { iptables: 'ip6tables', restore: 'ip6tables-restore', save: 'ip6tables-save' },
};

/** What one family's tables hold as weir last wrote them. */
class FamilyState {
  readonly rendered = new Map<ObjectKey, ServiceRules>();
  owned: Record<Table, Set<string>> = { nat: new Set(), filter: new Set() };
  /** The shared chains' rules as last written (one string per chain): a partial sync rewrites only those that changed. */
  sharedText: Record<Table, Map<string, string>> = { nat: new Map(), filter: new Map() };
  /** The rendered services' keys in order (the order of their jumps in the shared chains); recomputed when a service changes. */
  order: ObjectKey[] | null = null;
  needFull = true;
  lastFull = 0;
  /** Commits that wrote this family, counted as each starts and ends: checkRules ignores a reading a commit overlapped. */
  commits = 0;
  /** A commit is writing this family now. */
  writing = false;
}

/** Something of weir's that checkRules found missing: `table` as "iptables nat", `what` as "PREROUTING: the jump to WEIR-SERVICES". */
export interface MissingRule {
  readonly table: string;
  readonly what: string;
}

export class IptablesDataplane implements Dataplane {
  private ctx: RenderContext;
  private readonly log: Logger;
  private readonly run: AsyncCommandRunner;
  private readonly fullSyncMs: number;
  private readonly services = new RuleServices();
  private readonly state: Record<Family, FamilyState> = { 4: new FamilyState(), 6: new FamilyState() };
  /** Whether ip6tables is usable here (false: IPv6 frontends are left out, said once). */
  private readonly ipv6: boolean;
  /** The services with an IPv6 frontend: while there are none, ip6tables holds nothing of weir's. */
  private readonly v6Services = new Set<ObjectKey>();
  private v6Warned = false;
  /** Whether ip6tables may hold weir's chains: ours, or at start an earlier agent's. */
  private v6Written = true;

  constructor(opts: { ctx: RenderContext; log: Logger; run?: AsyncCommandRunner; fullSyncMs?: number; ipv6?: boolean }) {
    this.ctx = opts.ctx;
    this.log = opts.log;
    this.run = opts.run ?? runCommandAsync;
    this.fullSyncMs = opts.fullSyncMs ?? 3_600_000;
    this.ipv6 = opts.ipv6 ?? true;
  }

  get conflicts(): FrontendConflict[] {
    return this.services.conflicts;
  }

  setService(service: ObjectKey, plan: ServicePlan | null): void {
    plan = this.services.set(service, plan);
    if (!plan?.frontends.some((f) => ipFamily(f.addr) === 6)) this.v6Services.delete(service);
    else if (this.ipv6) this.v6Services.add(service);
    else if (!this.v6Warned) {
      this.v6Warned = true;
      this.log.warn('ip6tables is not usable on this node: IPv6 frontends are not served', { object: `Service ${service}` });
    }
  }

  /** A new local-traffic detector (detectLocalMode NodeCIDR follows the Node): every service is rendered again at the next commit. */
  setLocalTraffic(matches: readonly string[]): void {
    this.ctx = { ...this.ctx, localTraffic: matches };
    this.services.markAllDirty();
    this.state[4].needFull = true;
    this.state[6].needFull = true;
  }

  frontendOwner(frontend: string): ObjectKey | undefined {
    return this.services.frontendOwner(frontend);
  }

  frontendCount(): number {
    return this.services.frontendCount();
  }

  backendCount(): number {
    return this.services.backendCount();
  }

  /**
   * The saves and restores run in child processes the event loop does not
   * wait on (at ten thousand services a full sync's take tens of seconds,
   * which /livez, health-check node ports and the watches must not wait
   * for); the Runner starts no other sync until this one settles.
   */
  async commit(): Promise<CommitStats> {
    let upserts = 0;
    let deletes = 0;
    // What this commit writes: services marked while it runs are the next one's.
    const dirty = this.services.takeDirty();
    try {
      const v6 = this.v6Services.size > 0;
      for (const family of v6 ? ([4, 6] as const) : ([4] as const)) {
        const r = await this.commitFamily(family, dirty);
        upserts += r.upserts;
        deletes += r.deletes;
      }
      if (v6) this.v6Written = true;
      else if (this.v6Written && this.ipv6) {
        // The last IPv6 frontend went (or, at start, an earlier agent's may be there): hooks and chains
        // go, and the next IPv6 frontend starts ip6tables afresh with a full sync.
        this.state[6] = new FamilyState();
        deletes += (await cleanupFamily(this.run, 6)).length;
        this.v6Written = false;
      }
    } catch (e) {
      for (const key of dirty) this.services.dirty.add(key);
      throw e;
    }
    for (const f of this.services.takeUdpFlushes()) udpFlushed(f, await this.run(f.argv), this.log);
    return { upserts, deletes };
  }

  /** One family's tables, in one iptables-restore call (several transactions when the change is large: restoreSections). */
  private async commitFamily(family: Family, dirty: ReadonlySet<ObjectKey>): Promise<CommitStats> {
    const st = this.state[family];
    const ctx: RenderContext = { ...this.ctx, family };
    const full = st.needFull || Date.now() - st.lastFull > this.fullSyncMs;
    // A rewrite asked for while this one runs is the next commit's.
    st.needFull = false;
    st.commits++;
    st.writing = true;
    try {
      return await this.writeFamily(family, st, ctx, full, dirty);
    } finally {
      st.writing = false;
      st.commits++;
    }
  }

  private async writeFamily(family: Family, st: FamilyState, ctx: RenderContext, full: boolean, dirty: ReadonlySet<ObjectKey>): Promise<CommitStats> {
    // Chains of the services rendered before this sync that the new rendering no longer has.
    const dropped: Record<Table, Set<string>> = { nat: new Set(), filter: new Set() };
    // The dirty services' lines in the shared chains, before and after (edited in place in a partial sync: jumpEdits).
    const changed: Array<{ old: ServiceRules | undefined; now: ServiceRules | undefined }> = [];
    for (const key of dirty) {
      const old = st.rendered.get(key);
      const plan = this.services.plans.get(key);
      const r = plan ? renderService(plan, ctx) : undefined;
      if (r) st.rendered.set(key, r);
      else st.rendered.delete(key);
      changed.push({ old, now: r });
      if (old) {
        for (const c of old.natChains.keys()) if (!r?.natChains.has(c)) dropped.nat.add(c);
        for (const c of old.filterChains.keys()) if (!r?.filterChains.has(c)) dropped.filter.add(c);
      }
    }
    if (dirty.size > 0 || !st.order) st.order = [...st.rendered.keys()].sort();
    const t = new Tables(ctx);
    // What weir's chains will be after this sync: in a partial sync, what
    // they were with the dirty services' changes (nothing else is read).
    const current: Record<Table, Set<string>> = full ? { nat: new Set(t.nat.keys()), filter: new Set(t.filter.keys()) } : st.owned;
    // Each written service's chains as one group (they jump only among themselves and to leaf shared chains).
    const groups: Record<Table, Array<Map<string, string[]>>> = { nat: [], filter: [] };
    for (const key of st.order) {
      const r = st.rendered.get(key)!;
      t.addJumps(r);
      if (!full && !dirty.has(key)) continue;
      for (const [table, chains] of [
        ['nat', r.natChains],
        ['filter', r.filterChains],
      ] as const) {
        const g = new Map<string, string[]>();
        for (const [c, rules] of chains) g.set(c, rules);
        if (g.size > 0) groups[table].push(g);
      }
    }
    t.finish();
    // The shared chains: in a partial sync only those whose rules changed
    // (an endpoint change leaves WEIR-SERVICES, ten thousand jumps, as it was).
    const sharedText: Record<Table, Map<string, string>> = { nat: new Map(), filter: new Map() };
    const edits = full ? null : jumpEdits(changed, st.owned);
    const shared = (table: Table, m: Map<string, string[]>): { leaf: Map<string, string[]>; rest: Map<string, string[]> } => {
      const leaf = new Map<string, string[]>();
      const rest = new Map<string, string[]>();
      for (const [c, rules] of m) {
        const text = rules.join('\n');
        sharedText[table].set(c, text);
        if (edits?.edited[table].has(c)) continue;
        if (!full && st.owned[table].has(c) && st.sharedText[table].get(c) === text) continue;
        (LEAF_CHAINS.has(c) ? leaf : rest).set(c, rules);
      }
      return { leaf, rest };
    };
    const nat = shared('nat', t.nat);
    const filter = shared('filter', t.filter);
    // Chains to remove: a full sync removes every weir chain the tables hold that is not current; a partial one, the dirty services' dropped ones.
    const stale: Record<Table, string[]> = { nat: [], filter: [] };
    const found = full ? await weirChains(this.run, family) : null;
    for (const table of ['nat', 'filter'] as const) {
      if (found) {
        for (const g of groups[table]) for (const c of g.keys()) current[table].add(c);
        stale[table] = [...new Set([...st.owned[table], ...found[table]])].filter((c) => !current[table].has(c));
      } else stale[table] = [...dropped[table]].filter((c) => st.owned[table].has(c));
    }
    const text =
      restoreSections('filter', [filter.leaf, ...groups.filter, filter.rest], stale.filter, edits?.lines.filter) +
      restoreSections('nat', [nat.leaf, ...groups.nat, nat.rest], stale.nat, edits?.lines.nat);
    const tools = TOOLS[family];
    const r = await this.run([tools.restore, '-w', '5', '--noflush'], { input: text });
    if (r.code !== 0) {
      st.needFull = true; // the retry rewrites everything
      // A large change is several transactions: some may have been applied, so every chain it named counts as weir's until the retry.
      for (const table of ['nat', 'filter'] as const) for (const g of groups[table]) for (const c of g.keys()) st.owned[table].add(c);
      throw new Error(`${tools.restore} failed: ${r.stderr.trim().split('\n').slice(0, 3).join(' | ')}`);
    }
    // Hooks are checked on full syncs (the first, after a failure, and every fullSyncMs), as kube-proxy checks its jumps only on full syncs: eleven iptables calls each time otherwise.
    if (full) {
      try {
        await this.ensureHooks(family);
      } catch (e) {
        st.needFull = true;
        throw e;
      }
    }
    if (full) st.owned = current;
    else
      for (const table of ['nat', 'filter'] as const) {
        for (const c of stale[table]) st.owned[table].delete(c);
        for (const g of groups[table]) for (const c of g.keys()) st.owned[table].add(c);
      }
    st.sharedText = sharedText;
    if (full) st.lastFull = Date.now();
    let rules = (edits?.lines.nat.length ?? 0) + (edits?.lines.filter.length ?? 0);
    for (const gs of [groups.nat, groups.filter, [nat.leaf, nat.rest, filter.leaf, filter.rest]]) for (const g of gs) for (const rs of g.values()) rules += rs.length;
    return { upserts: rules, deletes: stale.nat.length + stale.filter.length };
  }

  /**
   * What of weir's rules is missing from the tables, read without blocking
   * the event loop: in each family weir has written, each table's marker
   * chain (MARKER_CHAINS) must hold its rule and each built-in chain its
   * hooks. A partial sync writes only what changed, so after something
   * else flushed a table (`iptables -F`), replaced it (`iptables-restore`
   * without --noflush, a firewall's reload) or removed a hook, the rest
   * would stay missing until the hourly full sync: a family with anything
   * missing is rewritten whole by the next commit. A family whose rewrite
   * is due anyway, or that a commit wrote while it was read, is not judged.
   * Eight `iptables -S` of one chain each per family, a few ms each
   * whatever the number of services.
   */
  async checkRules(): Promise<MissingRule[]> {
    const missing: MissingRule[] = [];
    for (const family of [4, 6] as const) {
      const st = this.state[family];
      if (st.needFull || st.lastFull === 0 || st.writing) continue;
      const commits = st.commits;
      const iptables = TOOLS[family].iptables;
      const found: MissingRule[] = [];
      for (const table of ['nat', 'filter'] as const) {
        const chains = [MARKER_CHAINS[table], ...new Set(HOOKS.filter((h) => h.table === table).map((h) => h.chain))];
        for (const chain of chains) {
          const r = await this.run([iptables, '-w', '5', '-t', table, '-S', chain]);
          const rules = r.code === 0 ? r.stdout.split('\n').filter((l) => l.startsWith(`-A ${chain} `)) : [];
          const where = `${iptables} ${table}`;
          if (chain === MARKER_CHAINS[table]) {
            if (rules.length === 0) found.push({ table: where, what: r.code === 0 ? `${chain}: empty` : `${chain}: gone` });
            continue;
          }
          // A rule's words, sorted: the same rule whatever order or quoting the listing prints.
          const words = (rule: string): string => ruleArgs(rule).sort().join('\0');
          const listed = new Set(rules.map((l) => words(l.slice(`-A ${chain} `.length))));
          for (const h of HOOKS) if (h.table === table && h.chain === chain && !listed.has(words(h.rule))) found.push({ table: where, what: `${chain}: the jump to ${ruleArgs(h.rule).at(-1)}` });
        }
      }
      // Removed meanwhile (the last IPv6 frontend went) or written meanwhile: this reading says nothing of it.
      if (found.length === 0 || this.state[family] !== st || st.commits !== commits) continue;
      st.needFull = true;
      missing.push(...found);
    }
    return missing;
  }

  /** Jumps from the built-in chains: added once, first in their chain. */
  private async ensureHooks(family: Family): Promise<void> {
    const iptables = TOOLS[family].iptables;
    for (const h of HOOKS) {
      const args = ruleArgs(h.rule);
      if ((await this.run([iptables, '-w', '5', '-t', h.table, '-C', h.chain, ...args])).code === 0) continue;
      const r = await this.run([iptables, '-w', '5', '-t', h.table, '-I', h.chain, '1', ...args]);
      if (r.code !== 0) throw new Error(`iptables -I ${h.chain}: ${r.stderr.trim()}`);
    }
  }
}

/** Edits of one sync to the order-free shared chains (jumpEdits). */
interface JumpEdits {
  /** Per table, `-D`/`-I` lines (restore syntax). */
  readonly lines: Record<Table, string[]>;
  /** The chains these edit: not rewritten in this sync. */
  readonly edited: Record<Table, Set<string>>;
}

/**
 * A partial sync's changes to the chains of per-service jumps as edits in
 * place instead of a rewrite: WEIR-SERVICES holds a line (or two) per
 * frontend, ten thousand on a large node, and rewriting it makes
 * iptables-nft look up every chain it jumps to (over a second). Each
 * changed service's old lines are deleted (`-D` by their exact text) and
 * its new ones inserted at the top, in their order, so one service's lines
 * keep theirs (WEIR-MASQ-OFFCLUSTER before the service jump); between
 * services order does not matter (each line matches its own frontend), and
 * WEIR-SERVICES' last rule, the NodePort jump, stays last. A chain with
 * more than EDIT_LIMIT edits is rewritten whole, as are all of them in a
 * full sync (which also puts them back in service order).
 */
function jumpEdits(changed: ReadonlyArray<{ old: ServiceRules | undefined; now: ServiceRules | undefined }>, owned: Record<Table, Set<string>>): JumpEdits {
  const chains: ReadonlyArray<{ table: Table; chain: string; field: 'natServices' | 'natNodePorts' | 'filterServices' | 'filterFirewall' }> = [
    { table: 'nat', chain: 'WEIR-SERVICES', field: 'natServices' },
    { table: 'nat', chain: 'WEIR-NODEPORTS', field: 'natNodePorts' },
    { table: 'filter', chain: 'WEIR-SERVICES', field: 'filterServices' },
    { table: 'filter', chain: 'WEIR-PROXY-FIREWALL', field: 'filterFirewall' },
  ];
  const out: JumpEdits = { lines: { nat: [], filter: [] }, edited: { nat: new Set(), filter: new Set() } };
  for (const { table, chain, field } of chains) {
    if (!owned[table].has(chain)) continue;
    const deletes: string[] = [];
    const inserts: string[] = [];
    for (const { old, now } of changed) {
      const before = old?.[field] ?? [];
      const after = now?.[field] ?? [];
      if (before.length === after.length && before.every((l, i) => l === after[i])) continue;
      for (const l of before) deletes.push(`-D ${chain} ${l}`);
      // Inserted at the top one by one: last line first.
      for (const l of [...after].reverse()) inserts.push(`-I ${chain} 1 ${l}`);
    }
    if (deletes.length + inserts.length > EDIT_LIMIT) continue;
    out.lines[table].push(...deletes, ...inserts);
    out.edited[table].add(chain);
  }
  return out;
}

/** Above this many edits to one chain a rewrite is cheaper (each `-D` searches the chain). */
const EDIT_LIMIT = 500;

/** One table's part of a save: weir's chains, and the hooks into them from the built-in chains (as their rule text). */
function savedWeir(save: string, table: Table): { chains: string[]; hooks: string[] } {
  const saved = new RegExp(`^\\*${table}\\n([\\s\\S]*?)^COMMIT`, 'm').exec(save)?.[1] ?? '';
  return {
    chains: [...saved.matchAll(new RegExp(`^:(${PREFIX}\\S+)`, 'gm'))].map((m) => m[1]!),
    hooks: [...saved.matchAll(new RegExp(`^-A (?!${PREFIX})(\\S+ .* -j ${PREFIX}\\S+)$`, 'gm'))].map((m) => m[1]!),
  };
}

/** weir's chains in one family's tables, from one save (each save of a large rule set takes seconds). */
async function weirChains(run: AsyncCommandRunner, family: Family): Promise<Record<Table, Set<string>>> {
  const all = await run([TOOLS[family].save]);
  const chains = (table: Table): Set<string> => new Set(all.code === 0 ? savedWeir(all.stdout, table).chains : []);
  return { nat: chains('nat'), filter: chains('filter') };
}

/** Remove every hook and WEIR- chain (both tables, iptables and ip6tables). Returns the chains removed ("ip6tables nat/..." for IPv6). */
export async function cleanupIptables(run: AsyncCommandRunner = runCommandAsync): Promise<string[]> {
  return [...(await cleanupFamily(run, 4)), ...(await cleanupFamily(run, 6)).map((c) => `ip6tables ${c}`)];
}

async function cleanupFamily(run: AsyncCommandRunner, family: Family): Promise<string[]> {
  const tools = TOOLS[family];
  // One read first: BPF mode calls this on every start, and a node that never
  // ran iptables mode has nothing to remove (no iptables at all: nothing either).
  const all = await run([tools.save]);
  if (all.code !== 0 || !all.stdout.includes(PREFIX)) return [];
  // Everything from that one read (each save of a large rule set takes seconds):
  // per table, weir's chains and the hooks into them from the built-in chains,
  // all removed in one restore (the hooks first, in a transaction of their own).
  const removed: string[] = [];
  let text = '';
  for (const table of ['filter', 'nat'] as const) {
    const { chains, hooks } = savedWeir(all.stdout, table);
    if (hooks.length > 0) text += `*${table}\n${hooks.map((h) => `-D ${h}`).join('\n')}\nCOMMIT\n`;
    if (chains.length === 0) continue;
    removed.push(...chains.map((c) => `${table}/${c}`));
    text += restoreSections(table, [], chains);
  }
  if (text) {
    const r = await run([tools.restore, '-w', '5', '--noflush'], { input: text });
    if (r.code !== 0) throw new Error(`${tools.iptables} cleanup failed: ${r.stderr.trim()}`);
  }
  for (const table of ['filter', 'nat'] as const) if (await removeIdleTable(run, family, table)) removed.push(`${table} (table)`);
  return removed;
}

/**
 * Remove a table weir's rules were the last users of. With iptables-nft
 * the `nat` and `filter` tables and their base chains stay after their
 * last rule goes (kube-proxy's cleanup leaves them too), and a base chain
 * is a netfilter hook every packet runs through; a `nat` one also keeps
 * connection tracking and NAT active for every flow of the node. So when a
 * table holds nothing at all (no rule, no chain but the built-in ones,
 * each with policy ACCEPT: exactly what no table does), its base chains
 * are deleted (iptables-nft deletes an empty built-in chain; legacy
 * iptables refuses, and its tables stay as the kernel keeps them), then
 * the empty table itself when nft(8) is there (no hook is left either way).
 * Anything else in the table, anyone's, and it is left as it is.
 */
async function removeIdleTable(run: AsyncCommandRunner, family: Family, table: 'nat' | 'filter'): Promise<boolean> {
  const tools = TOOLS[family];
  const saved = await run([tools.save, '-t', table]);
  if (saved.code !== 0 || !saved.stdout.includes(`*${table}`) || /incompatible/i.test(saved.stdout)) return false;
  const lines = saved.stdout.split('\n').filter((l) => l && !l.startsWith('#') && l !== `*${table}` && l !== 'COMMIT');
  const builtins: string[] = [];
  for (const l of lines) {
    const m = /^:(\S+) (\S+) /.exec(l);
    // A rule, a user chain (policy "-"), or a policy other than ACCEPT: someone uses this table.
    if (!m || m[2] !== 'ACCEPT') return false;
    builtins.push(m[1]!);
  }
  let deleted = false;
  for (const chain of builtins) deleted = (await run([tools.iptables, '-w', '5', '-t', table, '-X', chain])).code === 0 || deleted;
  const nftFamily = family === 4 ? 'ip' : 'ip6';
  const listed = await run(['nft', 'list', 'table', nftFamily, table]);
  if (listed.code === 0 && listed.stdout.replace(/\s+/g, ' ').trim() === `table ${nftFamily} ${table} { }`) {
    deleted = (await run(['nft', 'delete', 'table', nftFamily, table])).code === 0 || deleted;
  }
  return deleted;
}

/** Can this node run the iptables fallback? (binary present and usable; IPv4 is required, see ip6tablesAvailable) */
export function iptablesAvailable(run: CommandRunner = runCommand): string | null {
  const r = run(['iptables', '-w', '5', '-t', 'nat', '-S', 'PREROUTING']);
  return r.code === 0 ? null : r.stderr.trim() || 'iptables not usable';
}

/**
 * Can the fallback serve IPv6 here? A node without it (IPv6 disabled, no
 * ip6tables nat table) still serves IPv4, as kube-proxy falls back to
 * single-stack when the second family's tools are missing.
 */
export function ip6tablesAvailable(run: CommandRunner = runCommand): string | null {
  const r = run(['ip6tables', '-w', '5', '-t', 'nat', '-S', 'PREROUTING']);
  return r.code === 0 ? null : r.stderr.trim() || 'ip6tables not usable';
}
