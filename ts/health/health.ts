/**
 * kube-proxy compatible agent health (default port 10256): /healthz and
 * /livez answer 200 while updates are being applied, and 503 once a queued
 * update has waited longer than the health timeout (a stuck agent should be
 * restarted, and a node with a stuck proxy should not get new traffic).
 */
import type { AddressInfo } from 'node:net';
import { http } from '../util/lazy';

export interface HealthState {
  /** ms timestamp since which an update waits, 0 when none. */
  pendingSince(): number;
  lastSuccessAt(): number;
}

export interface HealthServer {
  readonly port: number;
  close(): Promise<void>;
}

export function startHealthServer(opts: { host: string; port: number; timeoutMs: number; state: HealthState }): Promise<HealthServer> {
  const server = http().createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (url !== '/healthz' && url !== '/livez') {
      res.writeHead(404).end();
      return;
    }
    const now = Date.now();
    const pending = opts.state.pendingSince();
    const healthy = pending === 0 || now - pending <= opts.timeoutMs;
    const body = {
      lastUpdated: opts.state.lastSuccessAt() ? new Date(opts.state.lastSuccessAt()).toISOString() : null,
      currentTime: new Date(now).toISOString(),
      pendingSince: pending ? new Date(pending).toISOString() : null,
    };
    res.writeHead(healthy ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () => new Promise((r) => server.close(() => r())),
      });
    });
  });
}
