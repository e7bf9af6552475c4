/**
 * `weir check` in iptables mode (ts/check/ipt-invariants.ts): every golden
 * case, written by the iptables dataplane and read back with iptables-save
 * and ip6tables-save, holds every invariant; each hand edit that breaks
 * traffic is reported naming the table and chain. As root, in a network
 * namespace of its own; the pure cases run anywhere.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseCidr } from '../../ts/model/types';
import { IptablesDataplane } from '../../ts/fallback/iptables';
import { CommandRunner } from '../../ts/fallback/command';
import { checkIptables, checkIptablesSaves } from '../../ts/check/ipt-invariants';
import { formatViolations } from '../../ts/check/invariants';
import { createLogger } from '../../ts/util/log';
import { TEST_SRC, casePlans } from './pipeline';

const GOLDEN = path.join(TEST_SRC, 'golden-iptables');
const CIDRS = [parseCidr('10.244.0.0/16')!, parseCidr('fd00:10:244::/56')!];

test('a save without weir chains is reported table by table; an empty save has no tables', () => {
  const text = formatViolations(checkIptables('*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n', 'iptables'));
  assert.match(text, /^iptables nat WEIR-SERVICES: missing$/m);
  assert.match(text, /^iptables nat PREROUTING: no jump to WEIR-SERVICES: weir's rules are not reached from it$/m);
  assert.match(text, /^iptables filter WEIR-FORWARD: missing$/m);
  assert.equal(checkIptables('', 'ip6tables'), [
    { map: 'ip6tables nat', key: 'table', rule: 'missing' },
    { map: 'ip6tables filter', key: 'table', rule: 'missing' },
  ]);
});

/** Write a golden case's services with the iptables dataplane, as an agent's first sync does. */
async function load(run: CommandRunner, name: string): Promise<void> {
  const dp = new IptablesDataplane({ ctx: { clusterCIDRs: CIDRS, masqueradeAll: false }, log: createLogger('error', () => undefined), run: async (argv, o) => run(argv, o?.input) });
  for (const p of await casePlans(path.join(GOLDEN, name))) dp.setService(p.service, p);
  await dp.commit();
}

test('every golden case holds the invariants as iptables-save prints it; each hand edit that breaks traffic is reported by chain', async () => {
  if (process.getuid?.() !== 0) return;
  const ns = `weir-ipt-check-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    const run: CommandRunner = (argv, input) => {
      const r = spawnSync('ip', ['netns', 'exec', ns, ...argv], { input, encoding: 'utf8' });
      return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
    };
    const check = (): string => formatViolations(checkIptablesSaves(run(['iptables-save']).stdout, run(['ip6tables-save']).stdout));
    const sh = (cmd: string): void => {
      const r = run(['sh', '-c', cmd]);
      assert.is(r.code, 0, `${cmd}: ${r.stderr}`);
    };
    for (const name of fs.readdirSync(GOLDEN).filter((n) => fs.statSync(path.join(GOLDEN, n)).isDirectory())) {
      run(['iptables', '-t', 'nat', '-F']);
      await load(run, name);
      assert.is(check(), '', name);
    }
    // A chain of the service g/web:http (three endpoints, ClientIP affinity) in kube-proxy-shapes, and one of its endpoints'.
    const chainOf = (kind: string): string => {
      const m = new RegExp(`^-A (WEIR-${kind}-\\S+) .*--comment "[^"]*g/web:http`, 'm').exec(run(['iptables-save', '-t', 'nat']).stdout);
      assert.ok(m, `a ${kind} chain of g/web:http`);
      return m[1]!;
    };
    const edits: Array<[string, () => void, RegExp[]]> = [
      [
        "the service's last endpoint jump deleted",
        () => sh(`iptables -t nat -D ${chainOf('SVC')} 6`),
        [
          /^iptables nat WEIR-SVC-\S+ rule 4: probability 0\.33333333349 where 2 endpoints are left to choose from \(1\/2\): the choice is not uniform$/m,
          /^iptables nat WEIR-SVC-\S+ rule 5: the last endpoint's jump has probability 0\.50000000000: the packets it leaves go on untranslated$/m,
        ],
      ],
      [
        'an endpoint chain flushed',
        () => sh(`iptables -t nat -F ${chainOf('SEP')}`),
        [/^iptables nat WEIR-SVC-\S+ rule \d: jumps to WEIR-SEP-\S+, which is empty: the packet goes on untranslated$/m, /^iptables nat WEIR-SEP-\S+: 0 DNAT rules/m],
      ],
      [
        'the NodePort jump deleted',
        () => sh('iptables -t nat -D WEIR-SERVICES $(iptables -t nat -S WEIR-SERVICES | grep -c "^-A")'),
        [/^iptables nat WEIR-SERVICES: the jump to WEIR-NODEPORTS is not its last rule/m],
      ],
      ['a hook deleted', () => sh('iptables -t nat -D PREROUTING -m comment --comment "weir service portals" -j WEIR-SERVICES'), [/^iptables nat PREROUTING: no jump to WEIR-SERVICES/m]],
      [
        'the nat table flushed',
        () => sh('iptables -t nat -F'),
        [/^iptables nat WEIR-MARK-MASQ: no rule for the masquerade mark$/m, /^iptables nat POSTROUTING: no jump to WEIR-POSTROUTING/m, /^iptables nat WEIR-SERVICES: the jump to WEIR-NODEPORTS/m],
      ],
      [
        'a service chain nothing jumps to',
        () => sh(`iptables -t nat -D WEIR-NODEPORTS -d 192.168.77.10/32 -p tcp -m comment --comment "g/web:http node port" -m tcp --dport 30080 -j ${chainOf('EXT')}`),
        [/^iptables nat WEIR-EXT-\S+: no rule jumps to it$/m],
      ],
      ['the drop of Local traffic without endpoints flushed', () => sh('iptables -t filter -F WEIR-FORWARD'), [/^iptables filter WEIR-FORWARD: no rule for the drop/m]],
    ];
    for (const [what, edit, want] of edits) {
      run(['iptables', '-t', 'nat', '-F']);
      await load(run, 'kube-proxy-shapes');
      assert.is(check(), '', `${what}: clean before the edit`);
      edit();
      const text = check();
      for (const w of want) assert.match(text, w, `${what}:\n${text}`);
    }
    // IPv6: an endpoint chain's DNAT deleted, reported under ip6tables.
    await load(run, 'dual-stack');
    const sep6 = /^-A (WEIR-SEP-\S+) (.*-j DNAT .*)$/m.exec(run(['ip6tables-save', '-t', 'nat']).stdout);
    assert.ok(sep6, 'an IPv6 endpoint chain');
    sh(`ip6tables -t nat -D ${sep6[1]} ${sep6[2]}`);
    assert.match(check(), new RegExp(`^ip6tables nat ${sep6[1]}: 0 DNAT rules: an endpoint chain translates to its endpoint once$`, 'm'));
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
});

test.run();
