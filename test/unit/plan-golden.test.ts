/**
 * Golden tests of the plan itself, before any dataplane: manifests in
 * test/golden-plan/<case>/ -> every service's frontends and the endpoints
 * behind each, both IP families, compared with test/golden-plan/<case>.golden.
 * (test/golden pins what the BPF maps hold, test/golden-iptables the rules.)
 * WEIR_UPDATE_GOLDEN=1 rewrites the expected files (review the diff!).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SCOPE_LOCAL, SVC_F } from '../../ts/datapath/codecs';
import { ClusterStore } from '../../ts/model/store';
import { IP, compareIP } from '../../ts/model/types';
import { ServicePlan, backendKey, frontendKey, planService } from '../../ts/plan/plan';
import { FileSource } from '../../ts/source/file';
import { createLogger } from '../../ts/util/log';
import { TEST_SRC } from './pipeline';

const dir = path.join(TEST_SRC, 'golden-plan');

/** SVC_F names as the flags print: CLUSTER_IP -> cluster-ip. */
const FLAG_NAMES = Object.entries(SVC_F).map(([name, bit]) => [bit, name.toLowerCase().replace(/_/g, '-')] as const);

/** One block per frontend, sorted by address (IPv4 first), port, protocol, scope. */
function formatPlans(plans: readonly ServicePlan[]): string {
  const rows: Array<{ addr: IP; sort: string; lines: string[] }> = [];
  for (const p of plans) {
    for (const f of p.frontends) {
      const flags = FLAG_NAMES.filter(([bit]) => f.flags & bit).map(([, n]) => n);
      const scope = f.scope === SCOPE_LOCAL ? 'local' : 'all';
      const aff = f.affinityTimeout ? ` affinity=${f.affinityTimeout}s` : '';
      const ranges = f.sourceRanges.length ? ` sources=${f.sourceRanges.map((c) => c.text).join(',')}` : '';
      const lines = [`${frontendKey(f)} scope=${scope} ${p.service} [${flags.join(',')}]${aff}${ranges}`];
      for (const i of f.backends) lines.push(`  -> ${backendKey(p.backends[i]!)}${p.backends[i]!.local ? ' (local)' : ''}${p.backends[i]!.terminating ? ' (terminating)' : ''}`);
      const others = f.members.filter((m) => !f.backends.includes(m));
      if (others.length) lines.push(`  members not chosen: ${others.map((i) => backendKey(p.backends[i]!)).join(' ')}`);
      if (f.backends.length === 0) lines.push(`  ${f.flags & SVC_F.DROP_EMPTY ? 'no usable endpoints: drop' : 'no endpoints: reject'}`);
      rows.push({ addr: f.addr, sort: `${String(f.port).padStart(5, '0')}/${f.proto}/${scope}`, lines });
    }
  }
  rows.sort((a, b) => compareIP(a.addr, b.addr) || (a.sort < b.sort ? -1 : a.sort > b.sort ? 1 : 0));
  return rows.flatMap((r) => r.lines).join('\n') + '\n';
}

async function planCase(caseDir: string): Promise<string> {
  const store = new ClusterStore((origin, errors) => {
    throw new Error(`${origin}: ${errors.map((e) => `${e.object} ${e.field}: ${e.message}`).join('; ')}`);
  });
  const src = new FileSource({ dir: caseDir, store, onChange: () => undefined, log: createLogger('error', () => undefined) });
  await src.start();
  src.stop();
  // The node's addresses of both families answer NodePorts; it has no ::1 NodePort (nor does kube-proxy).
  const node = store.nodes.get('n1');
  const ctx = { nodeName: 'n1', nodePortAddrs: node?.internalIPs ?? [], nodeIPs: node?.internalIPs ?? [], zone: node?.zone ?? '' };
  return formatPlans([...store.services.values()].map((s) => planService(s, store.slicesOf(s.key), ctx)));
}

for (const name of fs
  .readdirSync(dir)
  .filter((n) => fs.statSync(path.join(dir, n)).isDirectory())
  .sort()) {
  test(`plan golden: ${name}`, async () => {
    const text = await planCase(path.join(dir, name));
    const file = path.join(dir, `${name}.golden`);
    if (process.env.WEIR_UPDATE_GOLDEN === '1') fs.writeFileSync(file, text);
    assert.fixture(text, fs.readFileSync(file, 'utf8'));
  });
}

test.run();
