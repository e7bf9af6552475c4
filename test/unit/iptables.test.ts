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

async function render(caseDir: string): Promise<string> {
  const store = new ClusterStore(() => undefined);
  const src = new FileSource({ dir: caseDir, store, onChange: () => undefined, log: createLogger('error', () => undefined) });
  await src.start();
  src.stop();
  const ctx = { nodeName: 'n1', nodePortAddrs: ['192.168.77.10' as IPv4], zone: store.nodes.get('n1')?.zone ?? '' };
  const plans = [...store.services.values()].map((s) => planService(s, store.slicesOf(s.key), ctx));
  const out = renderAll(plans, { clusterCIDRs: [parseCidr('10.244.0.0/16')!], masqueradeAll: false });
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

test.run();
