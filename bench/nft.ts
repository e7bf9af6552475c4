/**
 * nftables mode's control plane at scale: S services × 10 endpoints
 * programmed from cold (one sync: plan, render, one `nft -f -`), then one
 * change at a time (an endpoint replaced; an endpoint added or removed),
 * each a whole sync, p50/p99 over the runs.
 *
 *   node dist/bench/nft.js [--services 1000,10000] [--changes 100]
 *
 * Needs root. Every nft command runs in a network namespace this script
 * creates (`weir-bench-nft-<random>`) and deletes at the end; the
 * machine's own rules are never touched.
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import { parseArgs } from 'node:util';
import { ClusterStore } from '../ts/model/store';
import { IP } from '../ts/model/types';
import { Syncer } from '../ts/runner/sync';
import { NftablesDataplane } from '../ts/fallback/nftables';
import { AsyncCommandRunner, runCommandAsync } from '../ts/fallback/command';
import { createLogger } from '../ts/util/log';
import { epAddr, serviceObj, sliceObj } from './manifests';

const ENDPOINTS = 10;

async function inner(services: number, changes: number): Promise<void> {
  const log = createLogger('error', () => undefined);
  const store = new ClusterStore(() => undefined);
  const eps = (i: number, shift = 0): string[] => Array.from({ length: ENDPOINTS + shift }, (_, k) => epAddr(i * ENDPOINTS + k));
  for (let i = 0; i < services; i++) {
    store.upsertService(serviceObj(i), 'bench');
    store.upsertSlice(sliceObj(i, eps(i)), 'bench');
  }
  // The nft process alone, per transaction: the rest of a sync is planning and rendering.
  const nftMs: number[] = [];
  const run: AsyncCommandRunner = async (argv, o) => {
    const t = process.hrtime.bigint();
    const r = await runCommandAsync(argv, o);
    nftMs.push(Number(process.hrtime.bigint() - t) / 1e6);
    return r;
  };
  const dp = new NftablesDataplane({ ctx: { clusterCIDRs: [], masqueradeAll: false }, log, run });
  const syncer = new Syncer({ store, reconciler: dp, log, ctx: { nodeName: 'n1', nodePortAddrs: ['192.168.77.10' as IP] } });
  const t0 = process.hrtime.bigint();
  const cold = await syncer.syncAsync();
  const coldMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const coldNftMs = nftMs[0] ?? NaN;
  const timed = async (change: (i: number, k: number) => void): Promise<number[]> => {
    const ms: number[] = [];
    nftMs.length = 0;
    for (let k = 0; k < changes; k++) {
      const i = crypto.randomInt(services);
      change(i, k);
      const t = process.hrtime.bigint();
      await syncer.syncAsync();
      ms.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    nftOnly.push(...nftMs);
    return ms.sort((a, b) => a - b);
  };
  const nftOnly: number[] = [];
  // An endpoint replaced: the endpoint count stays, so only map elements change.
  const replaced = await timed((i, k) => {
    const list = eps(i);
    list[k % ENDPOINTS] = `10.250.${k >> 8}.${k & 255}`;
    store.upsertSlice(sliceObj(i, list), 'bench');
  });
  // An endpoint added or removed: the frontend moves to another pick chain.
  const scaled = await timed((i, k) => store.upsertSlice(sliceObj(i, eps(i, k % 2 === 0 ? 1 : -1)), 'bench'));
  // The floor of any change: starting a process from this (large) one, and nft doing nothing.
  const spawnMs: number[] = [];
  for (let k = 0; k < 20; k++) {
    const t = process.hrtime.bigint();
    await runCommandAsync(['nft', '-f', '-'], { input: '\n' });
    spawnMs.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  spawnMs.sort((a, b) => a - b);
  const pct = (a: number[], p: number): number => a[Math.min(a.length - 1, Math.ceil((p / 100) * a.length) - 1)]!;
  const round = (x: number): number => Math.round(x * 10) / 10;
  const rules = execFileSync('nft', ['list', 'table', 'inet', 'weir'], { encoding: 'utf8', maxBuffer: 1 << 30 }).split('\n').length;
  process.stdout.write(
    JSON.stringify({
      services,
      endpoints: ENDPOINTS,
      coldMs: round(coldMs),
      coldNftMs: round(coldNftMs),
      coldUpserts: cold.upserts,
      tableLines: rules,
      replaceEndpoint: { p50: round(pct(replaced, 50)), p99: round(pct(replaced, 99)), max: round(replaced.at(-1)!) },
      addOrRemoveEndpoint: { p50: round(pct(scaled, 50)), p99: round(pct(scaled, 99)), max: round(scaled.at(-1)!) },
      emptyNftProcess: { p50: round(pct(spawnMs, 50)) },
      nftProcessOfAChange: {
        p50: round(
          pct(
            nftOnly.sort((a, b) => a - b),
            50,
          ),
        ),
        p99: round(pct(nftOnly, 99)),
      },
    }) + '\n',
  );
}

function main(): void {
  const { values } = parseArgs({ options: { services: { type: 'string', default: '1000,10000' }, changes: { type: 'string', default: '100' }, inner: { type: 'boolean', default: false } } });
  if (values.inner) return void inner(Number(values.services), Number(values.changes));
  const ns = `weir-bench-nft-${crypto.randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    for (const s of values.services.split(',')) {
      // A fresh table per size: the first sync of each is a cold start.
      execFileSync('ip', ['netns', 'exec', ns, 'nft', 'flush', 'ruleset']);
      execFileSync('ip', ['netns', 'exec', ns, process.execPath, __filename, '--inner', '--services', s, '--changes', values.changes], { stdio: 'inherit' });
    }
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
}

main();
