/** `--metrics-addr`: GET /metrics in the Prometheus text format. */
import type { AddressInfo } from 'node:net';
import { http } from '../util/lazy';
import { Registry } from './registry';

export function startMetricsServer(opts: { host: string; port: number; registry: Registry }): Promise<{ port: number; close(): Promise<void> }> {
  const server = http().createServer((req, res) => {
    if ((req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    let body: string;
    try {
      body = opts.registry.render();
    } catch (e) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(String(e));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(body);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () =>
      resolve({ port: (server.address() as AddressInfo).port, close: () => new Promise((r) => server.close(() => r())) }),
    );
  });
}
