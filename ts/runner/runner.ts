/**
 * Coalesces change notifications into syncs (kube-proxy's minSyncPeriod):
 * a burst of events becomes one sync, never more often than every
 * `minSyncPeriodMs`, and a failed sync is retried with backoff. It also
 * remembers since when an update has been waiting, which is what /healthz
 * reports on.
 */
import { Logger, errorText } from '../util/log';

export interface RunnerOptions {
  readonly minSyncPeriodMs: number;
  readonly sync: () => void;
  readonly log: Logger;
  /** First retry delay after a failure; doubles up to maxRetryMs. */
  readonly retryMs?: number;
  readonly maxRetryMs?: number;
}

export class Runner {
  private readonly opts: RunnerOptions;
  private timer: NodeJS.Timeout | null = null;
  private lastSyncAt = 0;
  private failures = 0;
  private stopped = false;
  /** ms timestamp of the oldest request not yet synced; 0 when idle. */
  pendingSince = 0;
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
    if (this.pendingSince === 0) this.pendingSince = Date.now();
    if (this.timer) return;
    const wait = Math.max(0, this.lastSyncAt + this.opts.minSyncPeriodMs - Date.now());
    this.schedule(wait);
  }

  /** Sync right now (the agent's first full sync); failures are retried as usual. */
  syncNow(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.pendingSince === 0) this.pendingSince = Date.now();
    this.run();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(ms: number): void {
    this.timer = setTimeout(() => this.run(), ms);
  }

  private run(): void {
    this.timer = null;
    if (this.stopped) return;
    this.lastSyncAt = Date.now();
    const waitingSince = this.pendingSince;
    this.pendingSince = 0;
    try {
      this.opts.sync();
      this.syncs++;
      this.failures = 0;
      this.lastSuccessAt = Date.now();
      this.firstSuccess?.();
      this.firstSuccess = null;
    } catch (e) {
      this.errors++;
      this.failures++;
      this.pendingSince = waitingSince || Date.now();
      const base = this.opts.retryMs ?? 1000;
      const delay = Math.min(base * 2 ** (this.failures - 1), this.opts.maxRetryMs ?? 30000);
      this.opts.log.error('sync failed; will retry', { error: errorText(e), retryInMs: delay, attempt: this.failures });
      if (!this.timer) this.schedule(delay);
    }
  }
}
