/**
 * Cold starts of two builds, paired: `node dist/bench/paired.js --a DIR --b DIR`
 * starts each build's agent in turn (A then B, then B then A, ...) on the
 * same generated manifests in one box, so that a slow spell of the machine
 * falls on both. DIR is a checkout with `make bpf native ts` done. Reports
 * each build's median and, per pair, B − A: its median and in how many
 * pairs B was faster. This is how a start-up change is judged: a single
 * median moves by more than most changes are worth from one run to the next.
 *
 *   node dist/bench/paired.js --a /tmp/old --b . [--services 10000] [--endpoints 10] [--pairs 10]
 *
 * All traffic stays inside a cluster in a box (test/box); nothing is sent.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Box } from '../test/box/box';
import { cleanupAndSettle, firstSyncMs, lbMapArgs, lbMapEntries } from './coldstart';
import { epAddr, writeManifests } from './manifests';

interface Start {
  ms: number;
  firstSyncMs: number;
}

/** Node flags in a CLI's `#!/usr/bin/env -S node ...` line: how `weir` runs it when executed. */
function shebangFlags(cli: string): string[] {
  const first = fs.readFileSync(cli, 'utf8').split('\n', 1)[0] ?? '';
  return /^#!\/usr\/bin\/env -S node (.*)$/.exec(first)?.[1]?.split(' ').filter(Boolean) ?? [];
}

async function coldStart(box: Box, cli: string, lbMapEntries: number): Promise<Start> {
  await cleanupAndSettle(box);
  const t0 = Date.now();
  const agent = await box.startAgent('n1', lbMapArgs(lbMapEntries), { cli, nodeFlags: shebangFlags(cli), readyTimeoutMs: 120_000 });
  const ms = Date.now() - t0;
  const syncMs = firstSyncMs(agent.logs());
  await agent.stop();
  return { ms, firstSyncMs: syncMs };
}

/** For an even count, the mean of the two middle values (pairs are few and even). */
const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : ((s[(s.length - 1) >> 1] ?? NaN) + (s[s.length >> 1] ?? NaN)) / 2;
};

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      a: { type: 'string' },
      b: { type: 'string' },
      services: { type: 'string', default: '10000' },
      endpoints: { type: 'string', default: '10' },
      pairs: { type: 'string', default: '10' },
    },
  });
  if (!values.a || !values.b) throw new Error('usage: paired --a DIR --b DIR [--services N] [--endpoints M] [--pairs P]');
  const cli = (dir: string): string => path.resolve(dir, 'dist/ts/cli/main.js');
  const builds = { a: cli(values.a), b: cli(values.b) };
  const services = Number(values.services);
  const endpoints = Number(values.endpoints);
  const pairs = Number(values.pairs);
  const lb = lbMapEntries(services, endpoints);
  const box = await Box.create({ nodes: 1 });
  try {
    writeManifests(box.manifestDir, services, (i) => Array.from({ length: endpoints }, (_, j) => epAddr(i * endpoints + j)));
    // One start of each, not counted: the page cache and the kernel's first module loads.
    await coldStart(box, builds.a, lb);
    await coldStart(box, builds.b, lb);
    const a: Start[] = [];
    const b: Start[] = [];
    for (let i = 0; i < pairs; i++) {
      const order = i % 2 === 0 ? (['a', 'b'] as const) : (['b', 'a'] as const);
      for (const which of order) (which === 'a' ? a : b).push(await coldStart(box, builds[which], lb));
      process.stdout.write(`pair ${i + 1}: A ${a.at(-1)?.ms} ms, B ${b.at(-1)?.ms} ms\n`);
    }
    const diff = a.map((x, i) => (b[i]?.ms ?? NaN) - x.ms);
    const syncDiff = a.map((x, i) => (b[i]?.firstSyncMs ?? NaN) - x.firstSyncMs);
    const out = {
      services,
      endpoints,
      pairs,
      a: { dir: path.resolve(values.a), coldStartMs: median(a.map((x) => x.ms)), firstSyncMs: median(a.map((x) => x.firstSyncMs)), allMs: a.map((x) => x.ms) },
      b: { dir: path.resolve(values.b), coldStartMs: median(b.map((x) => x.ms)), firstSyncMs: median(b.map((x) => x.firstSyncMs)), allMs: b.map((x) => x.ms) },
      bMinusA: { coldStartMs: median(diff), firstSyncMs: median(syncDiff), bFasterPairs: diff.filter((d) => d < 0).length },
    };
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } finally {
    await box.destroy();
  }
}

main().catch((e) => {
  process.stderr.write(`paired failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exitCode = 1;
});
