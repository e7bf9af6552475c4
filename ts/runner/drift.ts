/**
 * The agent's drift check (BPF mode): every --sync-period the reconciler's
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
