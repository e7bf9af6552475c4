/**
 * Golden tests of the plan: manifests in test/golden/<case>/ -> the sorted
 * dump `weir services` prints, compared with test/golden/<case>.golden.
 * WEIR_UPDATE_GOLDEN=1 rewrites the expected files (review the diff!).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TEST_SRC, runPipeline } from './pipeline';

const dir = path.join(TEST_SRC, 'golden');
for (const name of fs
  .readdirSync(dir)
  .filter((n) => fs.statSync(path.join(dir, n)).isDirectory())
  .sort()) {
  test(`golden: ${name}`, async () => {
    const res = await runPipeline(path.join(dir, name));
    const file = path.join(dir, `${name}.golden`);
    if (process.env.WEIR_UPDATE_GOLDEN === '1') fs.writeFileSync(file, res.text);
    assert.fixture(res.text, fs.readFileSync(file, 'utf8'));
  });
}

test('bad input: each error names the file, object and field; good objects still apply', async () => {
  const res = await runPipeline(path.join(dir, 'bad-input'));
  const errs = res.logs.filter((l) => l.level === 'error' || l.level === 'warn');
  const find = (pred: (l: Record<string, unknown>) => boolean): Record<string, unknown> | undefined => errs.find(pred);
  const badIp = find((l) => l.object === 'Service default/bad-ip');
  assert.ok(badIp, 'bad clusterIP reported');
  assert.is(badIp.field, 'spec.clusterIP');
  assert.match(String(badIp.file), /bad\.yaml$/);
  assert.is(find((l) => l.object === 'Service default/bad-port')?.field, 'spec.ports[0].port');
  assert.match(String(find((l) => String(l.object).startsWith('ConfigMap'))?.msg), /unknown kind/);
  const malformed = find((l) => String(l.file).endsWith('malformed.yaml'));
  assert.ok(malformed, 'malformed YAML reported');
  assert.match(String(malformed.msg), /malformed/);
  const orphan = find((l) => l.object === 'EndpointSlice default/orphan-1');
  assert.is(orphan?.field, 'metadata.labels[kubernetes.io/service-name]');
  assert.match(res.text, /10\.96\.1\.1:80\/TCP .* 1 backend/);
  assert.not.match(res.text, /10\.96\.1\.2/);
});

test.run();
