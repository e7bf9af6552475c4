/**
 * `weir check` in nftables mode (ts/check/nft-invariants.ts): every golden
 * table, as the kernel lists it, holds every invariant; each hand edit
 * that breaks traffic is reported naming the object. As root, in a
 * network namespace of its own; the pure cases run anywhere.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseCidr } from '../../ts/model/types';
import { NftContext, pickChainLines } from '../../ts/fallback/nft-render';
import { NftablesDataplane } from '../../ts/fallback/nftables';
import { CommandRunner } from '../../ts/fallback/command';
import { KernelTable, parseNftJson } from '../../ts/fallback/nft-json';
import { checkNftTable } from '../../ts/check/nft-invariants';
import { formatViolations } from '../../ts/check/invariants';
import { createLogger } from '../../ts/util/log';
import { TEST_SRC, casePlans } from './pipeline';

const CTX: NftContext = { clusterCIDRs: [parseCidr('10.244.0.0/16')!, parseCidr('fd00:10:244::/56')!], masqueradeAll: false };
const GOLDEN = path.join(TEST_SRC, 'golden-nft');

test('a table without its fixed part is reported: each chain, map and set missing', () => {
  const text = formatViolations(checkNftTable({ chains: new Map(), sets: new Map() }));
  assert.match(text, /^services chain: missing from table inet weir$/m);
  assert.match(text, /^service-ips map: missing from table inet weir$/m);
});

async function load(run: CommandRunner, name: string): Promise<void> {
  const dp = new NftablesDataplane({ ctx: CTX, log: createLogger('error', () => undefined), run: async (argv, o) => run(argv, o?.input) });
  for (const p of await casePlans(path.join(GOLDEN, name))) dp.setService(p.service, p);
  await dp.commit();
}

test('every golden table holds the invariants; each hand edit that breaks traffic is reported by name', async () => {
  if (process.getuid?.() !== 0) return;
  const ns = `weir-nft-check-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    const run: CommandRunner = (argv, input) => {
      const r = spawnSync('ip', ['netns', 'exec', ns, ...argv], { input, encoding: 'utf8' });
      return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
    };
    const table = (): KernelTable => parseNftJson(run(['nft', '-j', 'list', 'table', 'inet', 'weir']).stdout);
    const nft = (...args: string[]): void => assert.is(run(['nft', ...args]).code, 0, args.join(' '));
    for (const name of fs.readdirSync(GOLDEN).filter((n) => fs.statSync(path.join(GOLDEN, n)).isDirectory())) {
      await load(run, name);
      assert.is(formatViolations(checkNftTable(table())), '', name);
    }
    const edits: Array<[string, () => void, RegExp]> = [
      [
        'an endpoint slot deleted',
        () => nft('delete', 'element', 'inet', 'weir', 'cluster-endpoints-tcp', '{ 10.96.0.20 . 443 . 0 }'),
        /^cluster-endpoints-tcp 10\.96\.0\.20 \. 443 \. 0: missing: pick-cluster-2 draws slot 0 of 2 for 10\.96\.0\.20 \. tcp \. 443/m,
      ],
      [
        'a stray slot added',
        () => nft('add', 'element', 'inet', 'weir', 'cluster-endpoints-tcp', '{ 10.96.0.20 . 443 . 5 : 10.244.9.9 . 80 }'),
        /^cluster-endpoints-tcp 10\.96\.0\.20 \. 443 \. 5: slot beyond the 2 that/m,
      ],
      ['a pick chain flushed', () => nft('flush', 'chain', 'inet', 'weir', 'pick-cluster-2'), /^service-ips 10\.96\.0\.20 \. tcp \. 443: goto pick-cluster-2: chain pick-cluster-2 has no rules/m],
      ['the services chain flushed', () => nft('flush', 'chain', 'inet', 'weir', 'services'), /^services chain: lacks its rule referring to @service-ips$/m],
      ['a chain nothing refers to', () => (nft('add', 'chain', 'inet', 'weir', 'stray'), nft('add', 'rule', 'inet', 'weir', 'stray', 'drop')), /^stray chain: has rules but nothing refers to it$/m],
      [
        'a pick chain no frontend goes to',
        () => assert.is(run(['nft', '-f', '-'], pickChainLines('pick-cluster-7').join('\n') + '\n').code, 0),
        /^pick-cluster-7 chain: has rules but nothing refers to it$/m,
      ],
      [
        'a cluster-ips element without its frontend',
        () => nft('add', 'element', 'inet', 'weir', 'cluster-ips', '{ 10.96.9.9 . tcp . 80 }'),
        /^cluster-ips 10\.96\.9\.9 \. tcp \. 80: no service-ips element/m,
      ],
    ];
    for (const [what, edit, want] of edits) {
      await load(run, 'kube-proxy-shapes');
      edit();
      const text = formatViolations(checkNftTable(table()));
      assert.match(text, want, `${what}:\n${text}`);
    }
    // A pick chain flushed when its last frontend left waits, unreferenced, for the next commit to delete it.
    await load(run, 'kube-proxy-shapes');
    nft('add', 'chain', 'inet', 'weir', 'pick-cluster-7');
    assert.is(formatViolations(checkNftTable(table())), '');
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
});

test.run();
