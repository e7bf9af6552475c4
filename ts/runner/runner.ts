/**
 * Coalesces change notifications into syncs (kube-proxy's minSyncPeriod):
 * a burst of events becomes one sync, never more often than every
 * `minSyncPeriodMs`, and a failed sync is retried with backoff. It also
 * remembers since when an update has been waiting, which is what /healthz
 * reports on.
 *
 * A sync that programmed everything but a few services (their plan threw;
 * see Syncer) is not a failure: the node is synced, and changes keep
 * syncing at the usual pace. Only the retry for what it left is on the
 * backoff, so a service that always fails costs one sync per backoff.
 *
 * A sync may also return a promise (iptables mode's restores run in a
 * child process the event loop does not wait on): no other sync starts
 * until it settles, and its outcome counts as a synchronous one's would.
 */
import { Logger, errorText } from '../util/log';

const noop = (): void => undefined;

export interface RunnerOptions {
  readonly minSyncPeriodMs: number;
  /** One sync. Throws (or rejects) when it failed; returns (or resolves to) false when it completed but left work to retry. */
  readonly sync: () => boolean | void | Promise<boolean | void>;
  readonly log: Logger;
  /** First retry delay after a failure; doubles up to maxRetryMs. */
  readonly retryMs?: number;
  readonly maxRetryMs?: number;
}

export class Runner {
  private readonly opts: RunnerOptions;
  private timer: NodeJS.Timeout | null = null;
  /** When the timer fires (ms timestamp). */
  private timerAt = 0;
  /** The timer retries what an incomplete sync left: a change may sync sooner. */
  private timerYields = false;
  private lastSyncAt = 0;
  private failures = 0;
  private stopped = false;
  /** Holds in force (see hold), and whether a sync came due under one. */
  private holds = 0;
  private deferred = false;
  /** ms timestamp of the oldest request no sync has taken yet; 0 when none. */
  private queuedSince = 0;
  /** While a sync that returned a promise runs: since when what it writes has waited. */
  private runningSince = 0;
  /** That sync, until it settles. */
  private running: Promise<unknown> | null = null;
  /** ms timestamp of the last request for a sync (kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds). */
  lastQueuedAt = 0;
  lastSuccessAt = 0;
  syncs = 0;
  errors = 0;
  private firstSuccess: (() => void) | null = null;
  /** Resolves after the first successful sync. */
  readonly synced = new Promise<void>((r) => (this.firstSuccess = r));

  constructor(opts: RunnerOptions) {
    this.opts = opts;
  }

  /** Something changed: sync soon. */
  request(): void {
    if (this.stopped) return;
    this.lastQueuedAt = Date.now();
    if (this.queuedSince === 0) this.queuedSince = this.lastQueuedAt;
    const wait = Math.max(0, this.lastSyncAt + this.opts.minSyncPeriodMs - Date.now());
    if (this.timer) {
      if (!this.timerYields || this.timerAt <= Date.now() + wait) return;
      clearTimeout(this.timer);
    }
    this.schedule(wait);
  }

  /** Sync right now (the agent's first full sync); failures are retried as usual. */
  syncNow(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.lastQueuedAt = Date.now();
    if (this.queuedSince === 0) this.queuedSince = this.lastQueuedAt;
    this.run();
  }

  /**
   * No sync until `until` settles; one that comes due meanwhile runs as soon
   * as it has, with everything requested in between. nftables mode's drift
   * check holds syncs for a listing that the changes never left room for.
   */
  hold(until: Promise<unknown>): void {
    this.holds++;
    const release = (): void => {
      this.holds--;
      if (this.holds > 0 || !this.deferred || this.stopped) return;
      this.deferred = false;
      if (!this.timer) this.schedule(Math.max(0, this.lastSyncAt + this.opts.minSyncPeriodMs - Date.now()));
    };
    until.then(release, release);
  }

  /** Whether a sync that returned a promise is still running. */
  get busy(): boolean {
    return this.running !== null;
  }

  /** Settles once no sync is running (at once when none is): a stopping agent lets a write it started finish. */
  async settled(): Promise<void> {
    while (this.running) await this.running.then(noop, noop);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(ms: number, yields = false): void {
    this.timerAt = Date.now() + ms;
    this.timerYields = yields;
    this.timer = setTimeout(() => this.run(), ms);
  }

  /** The next retry delay: doubles with each failure in a row, up to maxRetryMs. */
  private backoff(): number {
    this.failures++;
    const base = this.opts.retryMs ?? 1000;
    return Math.min(base * 2 ** (this.failures - 1), this.opts.maxRetryMs ?? 30000);
  }

  private run(): void {
    this.timer = null;
    if (this.stopped) return;
    if (this.holds > 0) {
      this.deferred = true;
      return;
    }
    this.lastSyncAt = Date.now();
    const waitingSince = this.queuedSince;
    this.queuedSince = 0;
    let result: boolean | void | Promise<boolean | void>;
    try {
      result = this.opts.sync();
    } catch (e) {
      return this.failed(e, waitingSince);
    }
    if (!(result instanceof Promise)) return this.succeeded(result !== false);
    // What it writes still waits until it ends (what /healthz reports on: a write that hangs is a stuck agent).
    this.runningSince = waitingSince || this.lastSyncAt;
    this.running = result;
    // Its outcome is handled before the hold lets a sync that came due meanwhile be scheduled (a failure's backoff first).
    result.then(
      (r) => {
        this.runningSince = 0;
        this.running = null;
        this.succeeded(r !== false);
      },
      (e: unknown) => {
        this.runningSince = 0;
        this.running = null;
        this.failed(e, waitingSince);
      },
    );
    this.hold(result);
  }

  /** ms timestamp of the oldest change not yet synced (queued, or being written); 0 when idle. */
  get pendingSince(): number {
    const since = [this.queuedSince, this.runningSince].filter((t) => t > 0);
    return since.length ? Math.min(...since) : 0;
  }

  private failed(e: unknown, waitingSince: number): void {
    if (this.stopped) return;
    this.errors++;
    // Still waiting since the oldest request: the failed sync's, or one that came while it ran.
    this.queuedSince = waitingSince || this.queuedSince || Date.now();
    const delay = this.backoff();
    this.opts.log.error('sync failed; will retry', { error: errorText(e), retryInMs: delay, attempt: this.failures });
    if (!this.timer) this.schedule(delay);
  }

  private succeeded(complete: boolean): void {
    if (this.stopped) return;
    this.syncs++;
    this.lastSuccessAt = Date.now();
    this.firstSuccess?.();
    this.firstSuccess = null;
    if (complete) {
      this.failures = 0;
      return;
    }
    const delay = this.backoff();
    this.opts.log.debug('sync left services to retry', { retryInMs: delay, attempt: this.failures });
    if (!this.timer) this.schedule(delay, true);
  }
}
