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
import { IPv4, parseCidr } from '../../ts/model/types';
import { planService } from '../../ts/plan/plan';
import { renderAll } from '../../ts/fallback/render';
import { FileSource } from '../../ts/source/file';
import { createLogger } from '../../ts/util/log';
import { TEST_SRC } from './pipeline';

const dir = path.join(TEST_SRC, 'golden-iptables');

async function render(caseDir: string, masqueradeAll = false): Promise<string> {
  const store = new ClusterStore(() => undefined);
  const src = new FileSource({ dir: caseDir, store, onChange: () => undefined, log: createLogger('error', () => undefined) });
  await src.start();
  src.stop();
  const ctx = { nodeName: 'n1', nodePortAddrs: ['192.168.77.10' as IPv4], zone: store.nodes.get('n1')?.zone ?? '' };
  const plans = [...store.services.values()].map((s) => planService(s, store.slicesOf(s.key), ctx));
  const out = renderAll(plans, { clusterCIDRs: [parseCidr('10.244.0.0/16')!], masqueradeAll });
  return out.nat + out.filter;
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

test.run();
