/**
 * /healthz semantics: 200 while updates flow, 503 once a queued update has
 * waited longer than the timeout (kube-proxy's contract).
 */
import * as http from 'node:http';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startHealthServer } from '../../ts/health/health';

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

test('200 when idle or recently queued, 503 when a queued update is older than the timeout', async () => {
  let pending = 0;
  const server = await startHealthServer({ host: '127.0.0.1', port: 0, timeoutMs: 1000, state: { pendingSince: () => pending, lastSuccessAt: () => Date.now() - 5000, nodeEligible: () => true } });
  try {
    assert.is((await get(server.port, '/healthz')).status, 200);
    pending = Date.now() - 500;
    assert.is((await get(server.port, '/livez')).status, 200);
    pending = Date.now() - 1500;
    const r = await get(server.port, '/healthz');
    assert.is(r.status, 503);
    assert.ok((JSON.parse(r.body) as { pendingSince?: unknown }).pendingSince);
    assert.is((await get(server.port, '/other')).status, 404);
  } finally {
    await server.close();
  }
});

test('every /healthz and /livez answer is told with its path and code (kubeproxy_proxy_{healthz,livez}_total); other paths are not', async () => {
  let pending = 0;
  const told: string[] = [];
  const server = await startHealthServer({
    host: '127.0.0.1',
    port: 0,
    timeoutMs: 1000,
    state: { pendingSince: () => pending, lastSuccessAt: () => Date.now(), nodeEligible: () => true },
    answered: (path, code) => told.push(`${path} ${code}`),
  });
  try {
    await get(server.port, '/healthz');
    await get(server.port, '/livez');
    pending = Date.now() - 1500;
    await get(server.port, '/healthz');
    await get(server.port, '/livez?verbose');
    await get(server.port, '/metrics');
    assert.equal(told, ['healthz 200', 'livez 200', 'healthz 503', 'livez 503']);
  } finally {
    await server.close();
  }
});

// kube-proxy's proxy_health_test.go: "node is being deleted" / "node has ToBeDeleted taint" cases.
test('a draining node: /healthz 503 with nodeEligible false, /livez still 200', async () => {
  let eligible = true;
  const server = await startHealthServer({ host: '127.0.0.1', port: 0, timeoutMs: 1000, state: { pendingSince: () => 0, lastSuccessAt: () => Date.now(), nodeEligible: () => eligible } });
  try {
    let r = await get(server.port, '/healthz');
    assert.is(r.status, 200);
    assert.is((JSON.parse(r.body) as { nodeEligible?: unknown }).nodeEligible, true);
    eligible = false;
    r = await get(server.port, '/healthz');
    assert.is(r.status, 503);
    assert.is((JSON.parse(r.body) as { nodeEligible?: unknown }).nodeEligible, false);
    r = await get(server.port, '/livez');
    assert.is(r.status, 200, 'liveness ignores the Node: a draining proxy is not restarted');
    assert.is((JSON.parse(r.body) as { nodeEligible?: unknown }).nodeEligible, undefined);
  } finally {
    await server.close();
  }
});

test.run();
