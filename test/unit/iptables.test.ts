/**
 * Golden test of the iptables renderer: manifests in
 * test/golden-iptables/<case>/ -> iptables-restore text (nat, then filter),
 * compared with test/golden-iptables/<case>.golden. The golden file is meant
 * to be read by a reviewer: chains follow kube-proxy's names and order.
 * WEIR_UPDATE_GOLDEN=1 rewrites the expected files.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ClusterStore } from '../../ts/model/store';
import { IP, parseCidr } from '../../ts/model/types';
import { planService } from '../../ts/plan/plan';
import { renderAll } from '../../ts/fallback/render';
import { iptablesServices } from '../../ts/fallback/view';
import { CommandRunner } from '../../ts/fallback/command';
import { formatServices } from '../../ts/datapath/dump';
import { FileSource } from '../../ts/source/file';
import { createLogger } from '../../ts/util/log';
import { TEST_SRC } from './pipeline';

const dir = path.join(TEST_SRC, 'golden-iptables');

async function render(caseDir: string, masqueradeAll = false): Promise<string> {
  const store = new ClusterStore(() => undefined);
  const src = new FileSource({ dir: caseDir, store, onChange: () => undefined, log: createLogger('error', () => undefined) });
  await src.start();
  src.stop();
  const ctx = { nodeName: 'n1', nodePortAddrs: ['192.168.77.10' as IP, 'fd00:77::10' as IP], zone: store.nodes.get('n1')?.zone ?? '' };
  const plans = [...store.services.values()].map((s) => planService(s, store.slicesOf(s.key), ctx));
  const clusterCIDRs = [parseCidr('10.244.0.0/16')!, parseCidr('fd00:10:244::/56')!];
  const out = renderAll(plans, { clusterCIDRs, masqueradeAll });
  // ip6tables-restore input follows when a service has an IPv6 frontend.
  if (!plans.some((p) => p.frontends.some((f) => f.addr.includes(':')))) return out.nat + out.filter;
  const v6 = renderAll(plans, { clusterCIDRs, masqueradeAll, family: 6 });
  return out.nat + out.filter + '# ip6tables-restore\n' + v6.nat + v6.filter;
}

for (const name of fs.readdirSync(dir).filter((n) => fs.statSync(path.join(dir, n)).isDirectory())) {
  test(`iptables golden: ${name}`, async () => {
    const text = await render(path.join(dir, name));
    const file = path.join(dir, `${name}.golden`);
    if (process.env.WEIR_UPDATE_GOLDEN === '1') fs.writeFileSync(file, text);
    assert.fixture(text, fs.readFileSync(file, 'utf8'));
  });
}

test('random choice: probabilities 1/(n-i), the last rule unconditional', async () => {
  const text = await render(path.join(dir, 'kube-proxy-shapes'));
  const svc = text.split('\n').filter((l) => l.includes('"g/web:http -> ') && l.includes('-j WEIR-SEP-') && !l.includes('recent'));
  assert.is(svc.length, 3);
  assert.match(svc[0]!, /--probability 0\.3333333333/);
  assert.match(svc[1]!, /--probability 0\.5000000000/);
  assert.not.match(svc[2]!, /statistic/);
});

// kube-proxy TestInternalExternalMasquerade "masqueradeAll": only traffic to a ClusterIP is masqueraded for it.
test('--masquerade-all adds masquerade rules that match a ClusterIP as destination, and nothing else', async () => {
  const base = (await render(path.join(dir, 'kube-proxy-shapes'))).split('\n');
  const all = (await render(path.join(dir, 'kube-proxy-shapes'), true)).split('\n');
  const added = all.filter((l) => !base.includes(l));
  assert.ok(added.length > 0);
  for (const l of added) assert.match(l, /^-A WEIR-SV[CL]-\w+ .* -d 10\.96\.\d+\.\d+\/32 -p \w+ -m \w+ --dport \d+ -j WEIR-MARK-MASQ$/);
  assert.equal(
    base.filter((l) => !all.includes(l)),
    [],
    'no rule of the default rendering changes',
  );
});

test('weir services in iptables mode lists the frontends of both families, IPv6 ones from ip6tables-save', async () => {
  const [v4, v6] = (await render(path.join(dir, 'dual-stack'))).split('# ip6tables-restore\n') as [string, string];
  const table = (text: string, t: string): string => text.slice(text.indexOf(`*${t}`), text.indexOf('COMMIT', text.indexOf(`*${t}`)));
  const run: CommandRunner = (argv) => ({ code: 0, stdout: table(argv[0] === 'ip6tables-save' ? v6 : v4, argv[2]!), stderr: '' });
  const text = formatServices(iptablesServices(run)!);
  assert.match(text, /^10\.96\.6\.1:80\/TCP .*\[cluster-ip\] 2 backends$/m);
  assert.match(text, /^\[?fd00:96::6:1\]?:80\/TCP .*\[cluster-ip\] 3 backends\n {2}#1 backend \d+ \[?fd00:10:244:1::9\]?:8080\/TCP$/m);
  assert.match(text, /^\[?fd00:96::6:2\]?:53\/UDP .*1 backend\n {2}#1 backend \d+ \[?fd00:10:244:1::62\]?:53\/UDP$/m);
  assert.match(text, /^\[?fd00:96::6:4\]?:80\/TCP .*no endpoints: reject$/m);
  assert.match(text, /^\[?fd00:77::10\]?:30601\/TCP .*\[node-port\] 3 backends$/m);
  // IPv4 first, then IPv6 (printed [addr]:port or addr:port).
  const addrs = text
    .split('\n')
    .filter((l) => /^\S+:\d+\//.test(l))
    .map((l) => l.split(' ')[0]!);
  assert.is(
    addrs.findIndex((a) => a.includes('::')),
    addrs.filter((a) => !a.includes('::')).length,
  );
});

test.run();
