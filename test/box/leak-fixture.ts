/**
 * Used by test/e2e/box.test.ts: builds a box with everything a real suite
 * leaves around — a pod with an echo server, a node process in the node's
 * cgroup, a process the box never tracked (as a killed agent's child would
 * be), nested pin directories — prints `state <json>`, then fails the way a
 * broken test would:
 *   throw    an uncaught exception
 *   reject   an unhandled promise rejection
 *   withbox  an error inside withBox (destroyed in its finally; exit 1)
 *   signal   waits for SIGTERM / SIGINT from the test
 * The box's own cleanup must remove everything in every case.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Box, withBox } from './box';

export interface FixtureState {
  prefix: string;
  pinBase: string;
  cgroupBase: string;
  pids: number[];
}

async function populate(box: Box): Promise<FixtureState> {
  await box.addPod('n1', 'p');
  const echo = await box.startEcho('p', { tcp: [8080], udp: [] });
  const nodeProc = box.spawnArgv(box.argvFor('n1', ['sleep', '60']), box.node('n1').ns);
  // Not tracked by the box, detached from us: only the namespace sweep finds it.
  const stray = spawn('nsenter', [`--net=/run/netns/${box.pod('p').ns}`, '--', 'sleep', '60'], { detached: true, stdio: 'ignore' });
  stray.unref();
  fs.mkdirSync(path.join(box.pinRoot('n1'), 'sub'), { recursive: true });
  return { prefix: box.prefix, pinBase: box.pinBase, cgroupBase: box.cgroupBase, pids: [echo.pid!, nodeProc.pid!, stray.pid!] };
}

function report(s: FixtureState): void {
  process.stdout.write(`state ${JSON.stringify(s)}\n`);
}

async function main(): Promise<void> {
  const mode = process.argv[2];
  if (mode === 'withbox') {
    await withBox({ nodes: 1 }, async (box) => {
      report(await populate(box));
      throw new Error('deliberate failure inside withBox');
    });
    return;
  }
  const box = await Box.create({ nodes: 1 });
  report(await populate(box));
  if (mode === 'throw') {
    setTimeout(() => {
      throw new Error('deliberate uncaught exception');
    }, 10);
  } else if (mode === 'reject') {
    void Promise.reject(new Error('deliberate unhandled rejection'));
  } else {
    // Bounded: the test signals long before this.
    setTimeout(() => undefined, 30_000);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`fixture: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
