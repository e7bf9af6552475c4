/**
 * nftables mode: applies the rendered table (./nft-render.ts) with one
 * `nft -f -` transaction per sync.
 *
 *  - The first commit, and the one after any failure, writes the whole table
 *    in one transaction that also deletes the old one: atomic, and a repair
 *    of anything someone else changed.
 *  - Every other commit writes only what changed: the elements of the
 *    services that changed (deleted, added, or deleted and re-added with a
 *    new value), their chains (added, or flushed and refilled) and affinity
 *    sets. Chains no longer used are flushed at once and deleted one commit
 *    later, as kube-proxy does: older kernels notice only after a moment
 *    that a chain lost its last reference from a map.
 *  - Elements two services share (the hairpin pairs of an endpoint address)
 *    are counted, so one service letting go keeps the other's.
 *  - UDP has no teardown: conntrack entries of UDP endpoints that left are
 *    deleted with conntrack(8), as kube-proxy does.
 *  - A failed transaction changes nothing (nft applies all or nothing); its
 *    error names the line, and the service that line belongs to.
 */
import { ObjectKey } from '../model/types';
import { ServicePlan } from '../plan/plan';
import { CommitStats, FrontendConflict } from '../reconcile/reconciler';
import { Dataplane } from '../reconcile/dataplane';
import { Logger } from '../util/log';
import { RuleServices, udpFlushed } from './services';
import { AsyncCommandRunner, CommandResult, CommandRunner, runCommand, runCommandAsync } from './command';
import { CommittedTable, compareTable } from './nft-drift';
import { parseNftJson } from './nft-json';
import { NFT_TABLE, NftContext, NftService, T, comparePick, fullScript, pickChainLines, renderNftService, skeleton } from './nft-render';

/** What a drift check found: object name -> entries that differ; null when it could not compare (a commit came between). */
export type DriftResult = Map<string, number> | null;

export class NftablesDataplane implements Dataplane {
  private ctx: NftContext;
  private readonly log: Logger;
  /** Every command this mode runs: transactions, listings, conntrack. */
  private readonly run: AsyncCommandRunner;
  private readonly services = new RuleServices();
  /** What the table holds, per service, as last committed. */
  private readonly rendered = new Map<ObjectKey, NftService>();
  /** Every element in the table: "set\tkey" -> value and how many services hold it. */
  private readonly elements = new Map<string, { value: string; refs: number }>();
  /** Pick chain -> how many services' frontends go to it; one no service uses is flushed and deleted as other chains are. */
  private readonly picks = new Map<string, number>();
  /** Chains flushed by an earlier commit and unreferenced since: deleted by the next one. */
  private stale = new Set<string>();
  private needFull = true;
  /** A transaction is being applied now. */
  private writing = false;
  /** Counts the transactions applied or failed: a table listing taken across one is not compared. */
  private generation = 0;
  /** Stops the drift check's listing, if one runs: a transaction makes it worthless (above). */
  private listing: AbortController | null = null;
  /** What a drift check found, until the full rewrite it asked for has been applied. */
  private drift: Map<string, number> | null = null;
  /** The drift the last commit repaired (taken by takeRepaired). */
  private repaired: Map<string, number> | null = null;
  /** The last script written (for tests and the error). */
  lastScript = '';

  constructor(opts: { ctx: NftContext; log: Logger; run?: AsyncCommandRunner }) {
    this.ctx = opts.ctx;
    this.log = opts.log;
    this.run = opts.run ?? runCommandAsync;
  }

  get conflicts(): FrontendConflict[] {
    return this.services.conflicts;
  }

  setService(service: ObjectKey, plan: ServicePlan | null): void {
    this.services.set(service, plan);
  }

  /** A new local-traffic detector (detectLocalMode NodeCIDR follows the Node): every service is rendered again and the next commit rewrites the table. */
  setLocalTraffic(localTraffic: NftContext['localTraffic']): void {
    this.ctx = { ...this.ctx, ...(localTraffic ? { localTraffic } : {}) };
    this.services.markAllDirty();
    this.needFull = true;
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
   * `nft -f` runs in a child process the event loop does not wait on: a
   * full rewrite of ten thousand services takes seconds, which /livez,
   * health-check node ports and the watches must not wait for. The Runner
   * starts no other sync until this one settles.
   */
  async commit(): Promise<CommitStats> {
    // What this commit writes: services marked while it runs are the next one's.
    const dirty = this.services.takeDirty();
    const next = new Map<ObjectKey, NftService | null>();
    for (const key of dirty) {
      const plan = this.services.plans.get(key);
      next.set(key, plan ? renderNftService(plan, this.ctx) : null);
    }
    let r: CommitStats;
    try {
      r = this.needFull ? await this.commitFull(next) : await this.commitPartial(next);
    } catch (e) {
      for (const key of dirty) this.services.dirty.add(key);
      throw e;
    }
    for (const f of this.services.takeUdpFlushes()) udpFlushed(f, await this.run(f.argv), this.log);
    return r;
  }

  private async commitFull(next: Map<ObjectKey, NftService | null>): Promise<CommitStats> {
    const all = new Map(this.rendered);
    for (const [key, s] of next) {
      if (s) all.set(key, s);
      else all.delete(key);
    }
    const services = [...all.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const script = fullScript(
      services.map(([, s]) => s),
      this.ctx,
    );
    // A rewrite asked for while this one runs (a drift check's) is the next commit's.
    this.needFull = false;
    await this.apply(script, services);
    this.rendered.clear();
    this.elements.clear();
    this.picks.clear();
    this.stale.clear();
    for (const [key, s] of services) {
      this.rendered.set(key, s);
      for (const p of s.picks) this.picks.set(p, (this.picks.get(p) ?? 0) + 1);
      for (const [set, els] of s.elements) for (const [k, v] of els) this.ref(`${set}\t${k}`, v);
    }
    if (this.drift) [this.repaired, this.drift] = [this.drift, null];
    let n = 0;
    for (const [, s] of services) n += s.chains.size + [...s.elements.values()].reduce((a, m) => a + m.size, 0);
    return { upserts: n, deletes: 0 };
  }

  private ref(k: string, value: string): void {
    const e = this.elements.get(k);
    if (e) e.refs++;
    else this.elements.set(k, { value, refs: 1 });
  }

  private async commitPartial(next: Map<ObjectKey, NftService | null>): Promise<CommitStats> {
    const flush: string[] = [];
    const delSets: string[] = [];
    const addSets: string[] = [];
    const addChains: string[] = [];
    const rules: string[] = [];
    const newStale = new Set<string>();
    /** Element value before and after this commit, by "set\tkey". */
    const touched = new Map<string, string | undefined>();
    // Counted in place: a failed commit rewrites everything next time, and the full commit recounts.
    const elements = this.elements;
    const picks: string[] = [];
    for (const [key, s] of next) {
      const old = this.rendered.get(key);
      // A set declared anew (its timeout changed) is deleted and added: every chain naming it is refilled.
      const redeclared = [...(s?.sets ?? [])].some(([set, decl]) => old?.sets.has(set) === true && old.sets.get(set) !== decl);
      for (const [c, rs] of s?.chains ?? []) {
        const was = old?.chains.get(c);
        if (was && !redeclared && was.join('\n') === rs.join('\n')) continue;
        if (was) flush.push(`flush chain ${T} ${c}`);
        else if (!this.stale.has(c)) addChains.push(`add chain ${T} ${c}`);
        else flush.push(`flush chain ${T} ${c}`);
        this.stale.delete(c);
        for (const r of rs) rules.push(`add rule ${T} ${c} ${r}`);
      }
      for (const c of old?.chains.keys() ?? []) {
        if (s?.chains.has(c)) continue;
        flush.push(`flush chain ${T} ${c}`);
        newStale.add(c);
      }
      for (const [set, decl] of s?.sets ?? []) {
        const was = old?.sets.get(set);
        if (was === decl) continue;
        if (was !== undefined) delSets.push(`delete set ${T} ${set}`);
        addSets.push(`add set ${T} ${set} { ${decl} }`);
      }
      for (const set of old?.sets.keys() ?? []) if (!s?.sets.has(set)) delSets.push(`delete set ${T} ${set}`);
      // Counted in place as the elements are; an entry stays at 0 until the loop ends, so a pick
      // one service leaves and another takes in this commit is neither created nor flushed.
      for (const p of old?.picks ?? []) this.picks.set(p, this.picks.get(p)! - 1);
      for (const p of s?.picks ?? []) {
        if (!this.picks.has(p)) {
          picks.push(p);
          this.stale.delete(p);
        }
        this.picks.set(p, (this.picks.get(p) ?? 0) + 1);
      }
      // Elements: release the old service's, take the new one's.
      for (const [set, els] of old?.elements ?? []) {
        for (const k of els.keys()) {
          const id = `${set}\t${k}`;
          const e = elements.get(id)!;
          if (!touched.has(id)) touched.set(id, e.value);
          if (--e.refs === 0) elements.delete(id);
        }
      }
      for (const [set, els] of s?.elements ?? []) {
        for (const [k, v] of els) {
          const id = `${set}\t${k}`;
          if (!touched.has(id)) touched.set(id, elements.get(id)?.value);
          const e = elements.get(id);
          if (e) {
            e.refs++;
            e.value = v;
          } else elements.set(id, { value: v, refs: 1 });
        }
      }
    }
    for (const [p, n] of this.picks) {
      if (n > 0) continue;
      this.picks.delete(p);
      flush.push(`flush chain ${T} ${p}`);
      newStale.add(p);
    }
    const delElements: string[] = [];
    const addElements: string[] = [];
    for (const [id, before] of touched) {
      const after = elements.get(id)?.value;
      if (before === after) continue;
      const [set, k] = id.split('\t') as [string, string];
      if (before !== undefined) delElements.push(`delete element ${T} ${set} { ${k} }`);
      if (after !== undefined) addElements.push(`add element ${T} ${set} { ${k}${after} }`);
    }
    const stale = [...this.stale].map((c) => `delete chain ${T} ${c}`);
    const pickLines = picks.sort(comparePick).flatMap(pickChainLines);
    // Order: chains that lose their rules first, then sets no rule uses any
    // more, then what is new, then the elements (after the chains they name).
    const lines = [...flush, ...delSets, ...addSets, ...addChains, ...pickLines, ...rules, ...delElements, ...addElements, ...stale];
    if (lines.length === 0) return { upserts: 0, deletes: 0 };
    const script = lines.join('\n') + '\n';
    const involved: Array<[ObjectKey, NftService]> = [];
    for (const [key, s] of next) {
      const old = this.rendered.get(key);
      if (s) involved.push([key, s]);
      if (old) involved.push([key, old]);
    }
    await this.apply(script, involved);
    for (const [key, s] of next) {
      if (s) this.rendered.set(key, s);
      else this.rendered.delete(key);
    }
    this.stale = newStale;
    return { upserts: rules.length + addElements.length, deletes: delElements.length + stale.length };
  }

  /** Run one transaction; on failure, name the line (and its service) and rewrite everything next time. */
  private async apply(script: string, services: ReadonlyArray<readonly [ObjectKey, NftService]>): Promise<void> {
    this.lastScript = script;
    // Counted at the start and the end: a listing taken across either is not compared.
    this.generation++;
    this.writing = true;
    // A listing in flight could not be compared after this transaction; at
    // ten thousand services it is seconds of nft's CPU and netlink dumps,
    // beside which this transaction took 100 ms where it takes 35 alone.
    this.listing?.abort();
    let r: CommandResult;
    try {
      r = await this.run(['nft', '-f', '-'], { input: script });
    } finally {
      this.writing = false;
      this.generation++;
    }
    if (r.code === 0) return;
    this.needFull = true;
    const lines = script.split('\n');
    const at = Number(/:(\d+):\d+(?:-\d+)?: Error/.exec(r.stderr)?.[1] ?? 0);
    const line = at > 0 ? lines[at - 1] : undefined;
    let service: ObjectKey | undefined;
    if (line !== undefined) {
      for (const [key, s] of services) if (service === undefined && lineOfService(line, s)) service = key;
    }
    const error = r.stderr.trim().split('\n')[0] ?? 'nft failed';
    throw new Error(`nft -f failed${service ? ` for Service ${service}` : ''}${line ? ` at \`${line}\`` : ''}: ${error}`);
  }

  /**
   * What the table should hold now: the fixed part, the pick chains, each
   * service's chains, sets and elements, and the chains flushed by the last
   * commit (empty until the next deletes them).
   */
  committed(): CommittedTable {
    const chains = new Map<string, string[]>();
    const sets = new Map<string, boolean>();
    for (const line of skeleton(this.ctx)) {
      const m = /^add (chain|map|set|rule) inet weir (\S+)(?: (.*))?$/.exec(line);
      if (!m) continue;
      if (m[1] === 'chain') chains.set(m[2]!, chains.get(m[2]!) ?? []);
      else if (m[1] === 'rule') chains.set(m[2]!, [...(chains.get(m[2]!) ?? []), m[3]!]);
      else sets.set(m[2]!, false);
    }
    for (const p of this.picks.keys())
      chains.set(
        p,
        pickChainLines(p)
          .slice(1)
          .map((l) => l.slice(`add rule ${T} ${p} `.length)),
      );
    for (const s of this.rendered.values()) {
      for (const [c, rules] of s.chains) chains.set(c, rules);
      for (const set of s.sets.keys()) sets.set(set, true);
    }
    for (const c of this.stale) if (!chains.has(c)) chains.set(c, []);
    return { chains, sets, elements: this.elements };
  }

  /**
   * Compare table inet weir with what was last committed. The listing runs
   * in a child process, so syncs go on meanwhile; one that commits before
   * the listing is in stops it and makes the result null (compared next
   * time), as does a transaction being applied when the check starts. A
   * difference makes the next commit a full rewrite (see takeRepaired).
   * `stop`, when it aborts, stops the listing too (null).
   */
  async checkDrift(stop?: AbortSignal): Promise<DriftResult> {
    if (this.needFull || this.writing) return null;
    const generation = this.generation;
    const listing = (this.listing = new AbortController());
    let r: Awaited<ReturnType<AsyncCommandRunner>>;
    try {
      r = await this.run(['nft', '-j', 'list', 'table', 'inet', NFT_TABLE], { signal: stop ? AbortSignal.any([listing.signal, stop]) : listing.signal });
    } finally {
      if (this.listing === listing) this.listing = null;
    }
    if (generation !== this.generation || this.needFull || stop?.aborted) return null;
    let found: Map<string, number>;
    if (r.code !== 0) {
      // No table at all (deleted by hand): everything is missing.
      if (!/No such file or directory/.test(r.stderr)) throw new Error(`nft -j list table inet weir failed: ${r.stderr.trim()}`);
      found = new Map([[T, 1]]);
    } else found = compareTable(this.committed(), parseNftJson(r.stdout));
    if (found.size > 0) {
      this.drift = found;
      this.needFull = true;
    }
    return found;
  }

  /** The differences the last commit repaired with a full rewrite, once. */
  takeRepaired(): Map<string, number> | null {
    const r = this.repaired;
    this.repaired = null;
    return r;
  }
}

function lineOfService(line: string, s: NftService): boolean {
  for (const c of [...s.chains.keys(), ...s.sets.keys()]) if (line.includes(` ${c} `) || line.endsWith(` ${c}`)) return true;
  for (const els of s.elements.values()) for (const k of els.keys()) if (line.includes(`{ ${k}`)) return true;
  return false;
}

/**
 * Remove weir's table. Returns whether there was one. Deleted by name, with
 * no listing first: `nft list tables` reads every rule of every table, and
 * beside the iptables-nft rules of ten thousand services (kube-proxy's, or
 * weir's iptables mode) it took 34 s on the machine of BENCHMARKS.md, where
 * this takes 0.4 s.
 */
export async function cleanupNftables(run: AsyncCommandRunner = runCommandAsync): Promise<boolean> {
  const deleted = await run(['nft', 'delete', 'table', 'inet', NFT_TABLE]);
  if (deleted.code === 0) return true;
  // Not there (or no nft, no nf_tables here): nothing to remove.
  if ((await run(['nft', 'list', 'table', 'inet', NFT_TABLE])).code !== 0) return false;
  throw new Error(`nft delete table inet ${NFT_TABLE} failed: ${deleted.stderr.trim()}`);
}

/** Can this node run nftables mode? (nft present and able to change this network namespace's rules) */
export function nftablesAvailable(run: CommandRunner = runCommand): string | null {
  // A check-only transaction (-c) exercises the netlink path without changing anything.
  const r = run(['nft', '-c', '-f', '-'], `add table inet weir-probe\nadd chain inet weir-probe p { type nat hook prerouting priority -100; }\n`);
  return r.code === 0 ? null : r.stderr.trim() || 'nft not usable';
}
