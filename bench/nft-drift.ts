/**
 * The cost of nftables mode's drift check at scale: S services × 10
 * endpoints programmed, then table inet weir compared with what was
 * committed R times: the `nft -j list table` process (wall and CPU), and
 * weir's part (JSON parse and comparison, CPU of this process).
 *
 *   node dist/bench/nft-drift.js [--services 10000] [--runs 5]
 *
 * Needs root. nft runs only in a network namespace this script creates
 * (`weir-bench-nftdrift-<random>`) and deletes at the end.
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { ClusterStore } from '../ts/model/store';
import { IP } from '../ts/model/types';
import { Syncer } from '../ts/runner/sync';
import { NftablesDataplane } from '../ts/fallback/nftables';
import { AsyncCommandRunner, runCommand } from '../ts/fallback/command';
import { createLogger } from '../ts/util/log';
import { epAddr, serviceObj, sliceObj } from './manifests';

const ENDPOINTS = 10;

/** CPU ms of this process's waited-for children (utime + stime from /proc/self/stat). */
function childCpuMs(): number {
  const stat = fs.readFileSync('/proc/self/stat', 'utf8');
  // After the command name's ")": field 3 onward; cutime and cstime are fields 16 and 17, in ticks of 10 ms.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[13]) + Number(f[14])) * 10;
}

async function inner(services: number, runs: number): Promise<void> {
  const log = createLogger('error', () => undefined);
  const store = new ClusterStore(() => undefined);
  for (let i = 0; i < services; i++) {
    store.upsertService(serviceObj(i), 'bench');
    store.upsertSlice(
      sliceObj(
        i,
        Array.from({ length: ENDPOINTS }, (_, k) => epAddr(i * ENDPOINTS + k)),
      ),
      'bench',
    );
  }
  let nftWall = 0;
  let nftCpu = 0;
  // The listing's cost, measured in this process (the last command run is the drift check's listing).
  const run: AsyncCommandRunner = (argv, o) => {
    const c0 = childCpuMs();
    const t0 = process.hrtime.bigint();
    const r = runCommand(argv, o?.input);
    nftWall = Number(process.hrtime.bigint() - t0) / 1e6;
    nftCpu = childCpuMs() - c0;
    return Promise.resolve(r);
  };
  const dp = new NftablesDataplane({ ctx: { clusterCIDRs: [], masqueradeAll: false }, log, run });
  await new Syncer({ store, reconciler: dp, log, ctx: { nodeName: 'n1', nodePortAddrs: ['192.168.77.10' as IP] } }).syncAsync();
  const rows: Array<{ nftWallMs: number; nftCpuMs: number; weirCpuMs: number; wallMs: number; drift: number }> = [];
  for (let k = 0; k < runs; k++) {
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const found = await dp.checkDrift();
    const wall = Number(process.hrtime.bigint() - t0) / 1e6;
    const cpu = process.cpuUsage(cpu0);
    rows.push({ nftWallMs: nftWall, nftCpuMs: nftCpu, weirCpuMs: (cpu.user + cpu.system) / 1000, wallMs: wall, drift: found?.size ?? -1 });
  }
  const med = (f: (r: (typeof rows)[number]) => number): number => Math.round([...rows.map(f)].sort((a, b) => a - b)[rows.length >> 1]!);
  const bytes = runCommand(['nft', '-j', 'list', 'table', 'inet', 'weir']).stdout.length;
  process.stdout.write(
    JSON.stringify({
      services,
      endpoints: ENDPOINTS,
      listingBytes: bytes,
      drift: rows.map((r) => r.drift),
      medianMs: { wall: med((r) => r.wallMs), nftWall: med((r) => r.nftWallMs), nftCpu: med((r) => r.nftCpuMs), weirCpuParseAndCompare: med((r) => r.weirCpuMs) },
    }) + '\n',
  );
}

function main(): void {
  const { values } = parseArgs({ options: { services: { type: 'string', default: '10000' }, runs: { type: 'string', default: '5' }, inner: { type: 'boolean', default: false } } });
  if (values.inner) return void inner(Number(values.services), Number(values.runs));
  const ns = `weir-bench-nftdrift-${crypto.randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    for (const s of values.services.split(',')) execFileSync('ip', ['netns', 'exec', ns, process.execPath, __filename, '--inner', '--services', s, '--runs', values.runs], { stdio: 'inherit' });
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
}

main();
