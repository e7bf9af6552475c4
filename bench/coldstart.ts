/** What every measured cold start shares (bench/run.ts, bench/paired.ts). */
import { DEFAULT_SIZES } from '../ts/datapath/loader';
import type { Box } from '../test/box/box';

/**
 * `weir cleanup`, then a quiet pause: the kernel frees the maps cleanup
 * unpinned on a workqueue after it returns (~100 ms of a core, with the
 * last agent's exit), which would be charged to the next start. A node's
 * cold start has nothing to free.
 */
export async function cleanupAndSettle(box: Box): Promise<void> {
  // Removing ten thousand services' iptables rules takes seconds (two of them reading them back).
  await box.weir('n1', ['cleanup'], 120_000);
  await new Promise((r) => setTimeout(r, 1000));
}

/**
 * Service map entries `services` × `endpoints` need: one per frontend plus
 * one per endpoint, with a quarter to spare. The agent's default holds
 * 10,000 services of 10 to 20 endpoints; larger runs size it.
 */
export function lbMapEntries(services: number, endpoints: number): number {
  return Math.max(DEFAULT_SIZES.svc, Math.ceil(services * (endpoints + 1) * 1.25));
}

/** `--lb-map-entries` when the default is too small, else nothing. */
export function lbMapArgs(entries: number): string[] {
  return entries > DEFAULT_SIZES.svc ? ['--lb-map-entries', String(entries)] : [];
}

/** The duration of the agent's first sync, from its log. */
export function firstSyncMs(logs: string): number {
  return Number(/"msg":"synced","services":\d+,"upserts":\d+,"deletes":\d+,"ms":([\d.]+)/.exec(logs)?.[1] ?? NaN);
}
