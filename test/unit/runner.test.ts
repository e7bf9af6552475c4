/**
 * The runner: bursts coalesce into one sync, the minimum interval is kept
 * between syncs, and a failed sync is retried with backoff; a sync that
 * returns a promise keeps the next one back until it settles.
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

test('a sync that left work (returned false) counts as synced and is retried with backoff', async () => {
  const times: number[] = [];
  let left = 3;
  const r = new Runner({
    minSyncPeriodMs: 0,
    retryMs: 20,
    sync: () => {
      times.push(Date.now());
      return --left <= 0;
    },
    log: quiet,
  });
  let ready = false;
  void r.synced.then(() => (ready = true));
  r.request();
  await sleep(5);
  assert.ok(ready, 'the node is synced');
  assert.is(r.pendingSince, 0, 'nothing reported as waiting');
  await sleep(150);
  assert.is(times.length, 3, 'retried until the sync left nothing');
  assert.ok(times[2]! - times[1]! >= 35, `backoff doubles: ${times[2]! - times[1]!} ms`);
  assert.is(r.errors, 0);
  await sleep(100);
  assert.is(times.length, 3, 'no sync after a complete one');
  r.stop();
});

test('a change during the backoff of a sync that left work syncs at the usual pace', async () => {
  let n = 0;
  const r = new Runner({ minSyncPeriodMs: 0, retryMs: 10_000, sync: () => ++n > 1, log: quiet });
  r.request();
  await sleep(10);
  assert.is(n, 1);
  r.request();
  await sleep(20);
  assert.is(n, 2, 'the change did not wait for the 10 s retry');
  r.stop();
});

test('a change during the backoff of a failed sync waits for the retry', async () => {
  let n = 0;
  const r = new Runner({
    minSyncPeriodMs: 0,
    retryMs: 10_000,
    sync: () => {
      if (++n === 1) throw new Error('EPERM');
    },
    log: quiet,
  });
  r.request();
  await sleep(10);
  r.request();
  await sleep(20);
  assert.is(n, 1);
  r.stop();
});

test('a hold keeps syncs back until it settles, then the changes made meanwhile sync once; a rejected hold releases too', async () => {
  let n = 0;
  const r = new Runner({ minSyncPeriodMs: 0, sync: () => void n++, log: quiet });
  let release!: () => void;
  r.hold(new Promise<void>((resolve) => (release = resolve)));
  for (let i = 0; i < 5; i++) r.request();
  await sleep(30);
  assert.is(n, 0, 'nothing synced while held');
  assert.ok(r.pendingSince > 0, 'the changes are pending (what /healthz reports on)');
  release();
  await sleep(20);
  assert.is(n, 1);
  assert.is(r.pendingSince, 0);
  r.hold(Promise.reject(new Error('listing failed')));
  r.request();
  await sleep(20);
  assert.is(n, 2);
  r.stop();
});

test('a sync that returns a promise: its changes are pending until it settles, no other sync starts meanwhile, changes made meanwhile sync once after it, and a rejection is a failure retried with backoff', async () => {
  let started = 0;
  let running = 0;
  let overlapped = false;
  let fail = false;
  const finish: Array<() => void> = [];
  const r = new Runner({
    minSyncPeriodMs: 0,
    retryMs: 40,
    sync: () => {
      started++;
      overlapped ||= running > 0;
      running++;
      const failing = fail;
      return new Promise<boolean>((resolve, reject) =>
        finish.push(() => {
          running--;
          if (failing) reject(new Error('iptables-restore failed'));
          else resolve(true);
        }),
      );
    },
    log: quiet,
  });
  r.request();
  await sleep(10);
  assert.is(started, 1);
  assert.ok(r.pendingSince > 0, 'what the running sync writes is pending until it ends (a write that hangs is a stuck agent)');
  for (let i = 0; i < 5; i++) r.request();
  await sleep(30);
  assert.is(started, 1, 'no second sync while the first runs');
  assert.ok(r.pendingSince > 0, 'the changes made meanwhile are pending');
  finish.shift()!();
  await sleep(20);
  assert.is(started, 2, 'they sync once, after it');
  finish.shift()!();
  await sleep(10);
  assert.is(r.syncs, 2);
  assert.is(r.pendingSince, 0);
  fail = true;
  r.request();
  await sleep(10);
  assert.is(started, 3);
  fail = false;
  finish.shift()!();
  await sleep(10);
  assert.is(r.errors, 1, 'a rejection is a failure');
  assert.ok(r.pendingSince > 0, 'and its change is pending again');
  assert.is(started, 3, 'retried only after its backoff');
  await sleep(60);
  assert.is(started, 4);
  finish.shift()!();
  await sleep(10);
  assert.is(r.pendingSince, 0);
  assert.not.ok(overlapped);
  r.stop();
});

test('settled: at once when no sync runs; after a running one that returned a promise settles, rejected or not', async () => {
  let finish!: (ok: boolean) => void;
  const r = new Runner({
    minSyncPeriodMs: 0,
    retryMs: 10_000,
    sync: () => new Promise<void>((resolve, reject) => (finish = (ok) => (ok ? resolve() : reject(new Error('iptables-restore failed'))))),
    log: quiet,
  });
  let settled = false;
  await r.settled();
  r.request();
  await sleep(10);
  assert.ok(r.busy);
  void r.settled().then(() => (settled = true));
  await sleep(20);
  assert.not.ok(settled, 'not while the sync runs');
  finish(false);
  await sleep(5);
  assert.ok(settled);
  assert.not.ok(r.busy);
  r.stop();
});

test.run();
