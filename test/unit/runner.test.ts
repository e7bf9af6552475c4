/**
 * The runner: bursts coalesce into one sync, the minimum interval is kept
 * between syncs, and a failed sync is retried with backoff.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Runner } from '../../ts/runner/runner';
import { createLogger } from '../../ts/util/log';

const quiet = createLogger('error', () => undefined);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('a burst of changes becomes one sync', async () => {
  let n = 0;
  const r = new Runner({ minSyncPeriodMs: 0, sync: () => void n++, log: quiet });
  for (let i = 0; i < 100; i++) r.request();
  await sleep(20);
  assert.is(n, 1);
  assert.is(r.pendingSince, 0);
  r.stop();
});

test('minSyncPeriod: no two syncs closer than the interval', async () => {
  const times: number[] = [];
  const r = new Runner({ minSyncPeriodMs: 150, sync: () => void times.push(Date.now()), log: quiet });
  r.request();
  await sleep(10);
  r.request();
  await sleep(10);
  r.request();
  await sleep(400);
  assert.is(times.length, 2, 'the later requests coalesce into one sync after the interval');
  assert.ok(times[1]! - times[0]! >= 145, `${times[1]! - times[0]!} ms apart`);
  r.stop();
});

test('a failed sync is retried, and pendingSince survives until success', async () => {
  let calls = 0;
  const r = new Runner({
    minSyncPeriodMs: 0,
    retryMs: 20,
    sync: () => {
      if (++calls < 3) throw new Error('ENOMEM');
    },
    log: quiet,
  });
  r.request();
  await sleep(5);
  assert.ok(r.pendingSince > 0, 'still pending after a failure');
  await sleep(150);
  assert.is(calls, 3);
  assert.is(r.errors, 2);
  assert.is(r.pendingSince, 0);
  r.stop();
});

test.run();
