/**
 * The agent's drift checks, one per mode, run every --sync-period.
 *
 * BPF mode: every --sync-period the reconciler's
 * digest scan runs in steps, one per event-loop turn, so changes keep
 * syncing meanwhile; a map it finds different is repaired by the next sync
 * (a full comparison that writes what differs), with a warning naming the
 * maps and weir_drift_repaired_entries_total counting the entries.
 */
import type { DriftRepairs } from '../metrics/agent-metrics';
import type { Reconciler } from '../reconcile/reconciler';
import { Logger, errorText } from '../util/log';

export interface DriftCheckOptions {
  readonly reconciler: Reconciler;
  readonly log: Logger;
  /** Absent when the agent serves no metrics. */
  readonly repaired?: DriftRepairs;
  /** Ask for a sync (the repair runs at its end, see afterSync). */
  readonly requestSync: () => void;
}

export class DriftCheck {
  private scanning = false;
  private repairDue = false;

  constructor(private readonly opts: DriftCheckOptions) {}

  /** Start a scan unless one is running. */
  scan(): void {
    if (this.scanning) return;
    this.scanning = true;
    const { reconciler, log } = this.opts;
    const scan = reconciler.driftScan();
    const t0 = Date.now();
    let steps = 0;
    let longest = 0;
    const step = (): void => {
      let r: IteratorResult<void, string[] | null>;
      const s0 = process.hrtime.bigint();
      try {
        r = scan.next();
      } catch (e) {
        this.scanning = false;
        log.warn('could not compare the maps with the desired state', { error: errorText(e) });
        return;
      }
      longest = Math.max(longest, Number(process.hrtime.bigint() - s0) / 1e6);
      steps++;
      if (!r.done) return void setImmediate(step);
      this.scanning = false;
      // null: a failed write's retry is due, and compares everything itself.
      if (r.value === null) return;
      if (r.value.length === 0) {
        log.debug('compared the maps with the desired state: no drift', { ms: Date.now() - t0, slices: steps, longestSliceMs: Math.round(longest * 100) / 100 });
        return;
      }
      log.debug('maps differ from the desired state', { maps: r.value.join(',') });
      this.repairDue = true;
      this.opts.requestSync();
    };
    setImmediate(step);
  }

  /** At the end of a sync: the full comparison, if a scan found a difference. */
  afterSync(): void {
    if (!this.repairDue) return;
    const { reconciler, log } = this.opts;
    const t0 = process.hrtime.bigint();
    const repairs = reconciler.repairDrift();
    const ms = Math.round(Number(process.hrtime.bigint() - t0) / 1e4) / 100;
    this.repairDue = false;
    const maps = Object.keys(repairs);
    if (maps.length === 0) return log.debug('full comparison with the desired state: nothing to repair', { ms });
    for (const [map, entries] of Object.entries(repairs)) this.opts.repaired?.inc({ map }, entries);
    log.warn('the maps differed from the desired state; repaired', { entries: maps.map((m) => `${m} ${repairs[m]}`).join(','), ms });
  }
}

/** What NftDriftCheck needs of the nftables dataplane (../fallback/nftables.ts). */
export interface NftDriftSource {
  checkDrift(stop?: AbortSignal): Promise<Map<string, number> | null>;
  takeRepaired(): Map<string, number> | null;
}

/**
 * A comparison costs CPU in proportion to the table (at ten thousand
 * services of ten endpoints, about 2.8 s of nft's and 0.7 s of the agent's):
 * the next one starts no sooner than this many times the last one's
 * duration after it ended, so checking takes at most about 5% of a core.
 */
const NFT_DRIFT_SPACING = 20;

/**
 * A commit stops the listing in flight, so on a table that changes more
 * often than a listing takes (every few seconds at ten thousand services)
 * no comparison would ever finish. Once none has for this many sync
 * periods, the next one holds syncs until its listing is in: changes wait
 * for one listing (3.5 s at that size) in return for drift being found
 * within a bounded time. kube-proxy instead rewrites its whole table once
 * an hour.
 */
const NFT_DRIFT_MAX_PERIODS = 20;
/** A held listing that takes longer than this is stopped, and syncs go on. */
const NFT_DRIFT_MAX_HOLD_MS = 30_000;

/**
 * nftables mode's drift check: every --sync-period table inet weir is
 * listed (in a child process, so syncs go on) and compared with what was
 * committed; a difference makes the next sync rewrite the whole table, and
 * once it has, the warning names the chains and maps that differed and
 * weir_drift_repaired_entries_total counts their entries.
 */
export class NftDriftCheck {
  private checking = false;
  /** When the next comparison may start (ms since the epoch). */
  private notBefore = 0;
  /** When the last comparison finished, or the check began (ms since the epoch). */
  private lastCompared = Date.now();

  constructor(
    private readonly opts: {
      readonly table: NftDriftSource;
      readonly log: Logger;
      readonly repaired?: DriftRepairs;
      readonly requestSync: () => void;
      readonly format: (d: ReadonlyMap<string, number>) => string;
      /** --sync-period: how often scan is called. */
      readonly periodMs: number;
      /** Hold syncs until the promise settles (Runner.hold). */
      readonly holdSyncs: (until: Promise<unknown>) => void;
    },
  ) {}

  /** Start a comparison unless one is running. */
  scan(): void {
    if (this.checking || Date.now() < this.notBefore) return;
    this.checking = true;
    const { table, log } = this.opts;
    const t0 = Date.now();
    const starvedMs = t0 - this.lastCompared;
    const hold = starvedMs >= NFT_DRIFT_MAX_PERIODS * this.opts.periodMs;
    const stop = hold ? AbortSignal.timeout(NFT_DRIFT_MAX_HOLD_MS) : undefined;
    const check = table.checkDrift(stop);
    if (hold) {
      log.info('no moment quiet enough to compare table inet weir; syncs wait for one listing', { sinceMs: starvedMs });
      this.opts.holdSyncs(check);
    }
    check
      .then((found) => {
        this.notBefore = Date.now() + NFT_DRIFT_SPACING * (Date.now() - t0);
        if (found === null) {
          if (stop?.aborted) log.warn('table inet weir not compared: its listing took too long, and syncs waited no longer', { ms: Date.now() - t0 });
          return log.debug('table inet weir not compared: a commit came between, or a rewrite is due');
        }
        this.lastCompared = Date.now();
        if (found.size === 0) return log.debug('compared table inet weir with what was committed: no drift', { ms: Date.now() - t0, ...(hold ? { held: true } : {}) });
        log.debug('table inet weir differs from what was committed', { objects: this.opts.format(found) });
        this.opts.requestSync();
      })
      .catch((e: unknown) => log.warn('could not compare table inet weir with what was committed', { error: errorText(e) }))
      .finally(() => (this.checking = false));
  }

  /** At the end of a sync: report the repair its full rewrite made, if it made one. */
  afterSync(): void {
    const repaired = this.opts.table.takeRepaired();
    if (!repaired) return;
    for (const [map, entries] of repaired) this.opts.repaired?.inc({ map }, entries);
    this.opts.log.warn('table inet weir differed from what was committed; repaired', { entries: this.opts.format(repaired) });
  }
}

/** What IptablesRulesCheck needs of the iptables dataplane (../fallback/iptables.ts). */
export interface IptablesRulesSource {
  checkRules(): Promise<ReadonlyArray<{ readonly table: string; readonly what: string }>>;
}

/**
 * iptables mode's check: every --sync-period weir's marker chains and hooks
 * are read (IptablesDataplane.checkRules, in child processes); when any is
 * missing the dataplane's next commit rewrites that family whole, and once
 * it has, a warning names what was missing and
 * weir_drift_repaired_entries_total counts it by table. A rule changed
 * inside a chain is not seen: the hourly full sync rewrites those, as
 * kube-proxy's does.
 */
export class IptablesRulesCheck {
  private checking = false;
  /** Found missing, rewritten by the next sync that succeeds. */
  private missing: ReadonlyArray<{ readonly table: string; readonly what: string }> = [];

  constructor(
    private readonly opts: {
      readonly rules: IptablesRulesSource;
      readonly log: Logger;
      readonly repaired?: DriftRepairs;
      readonly requestSync: () => void;
    },
  ) {}

  /** Start a reading unless one is running. */
  scan(): void {
    if (this.checking) return;
    this.checking = true;
    const { rules, log } = this.opts;
    rules
      .checkRules()
      .then((missing) => {
        if (missing.length === 0) return log.debug("weir's iptables marker chains and hooks are in place");
        this.missing = [...this.missing, ...missing];
        log.debug("weir's iptables rules are not all in place", { missing: missing.map((m) => `${m.table} ${m.what}`).join(',') });
        this.opts.requestSync();
      })
      .catch((e: unknown) => log.warn("could not read weir's iptables rules", { error: errorText(e) }))
      .finally(() => (this.checking = false));
  }

  /** At the end of a sync: report the rewrite it made, if a reading asked for one. */
  afterSync(): void {
    if (this.missing.length === 0) return;
    const tables = new Map<string, number>();
    for (const m of this.missing) tables.set(m.table, (tables.get(m.table) ?? 0) + 1);
    for (const [table, n] of tables) this.opts.repaired?.inc({ map: table }, n);
    this.opts.log.warn("weir's iptables rules were flushed or removed by something else; rewritten", { missing: this.missing.map((m) => `${m.table} ${m.what}`).join(',') });
    this.missing = [];
  }
}
