/** `--metrics-addr`: GET /metrics in the Prometheus text format. */
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { http } from '../util/lazy';

export interface MetricsServerOptions {
  readonly host: string;
  readonly port: number;
  readonly registry: Registry;
}

export function startMetricsServer(opts: MetricsServerOptions): Promise<{ port: number; close(): Promise<void> }> {
  const { registry } = opts;
  const server = http().createServer((req, res) => {
    if ((req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      (e: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(String(e)),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve({ port: (server.address() as AddressInfo).port, close: () => new Promise((r) => server.close(() => r())) }));
  });
}
