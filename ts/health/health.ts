/**
 * kube-proxy compatible agent health (default port 10256): /healthz and
 * /livez answer 200 while updates are being applied, and 503 once a queued
 * update has waited longer than the health timeout (a stuck agent should be
 * restarted, and a node with a stuck proxy should not get new traffic).
 *
 * /healthz also answers 503 while this node is not eligible for traffic:
 * its Node is being deleted (deletionTimestamp set, or gone), or carries the
 * cluster autoscaler's ToBeDeletedByClusterAutoscaler taint. Load balancers
 * that probe it (eTP=Cluster services) then drain the node before it goes
 * (KEP-3836, kube-proxy's ProxyHealthServer.SyncNode). /livez ignores the
 * Node: a draining node's proxy is alive and must not be restarted.
 */
import type { AddressInfo } from 'node:net';
import { http } from '../util/lazy';

export interface HealthState {
  /** ms timestamp since which an update waits, 0 when none. */
  pendingSince(): number;
  lastSuccessAt(): number;
  /** false while this node is draining (see above); true until its Node says otherwise. */
  nodeEligible(): boolean;
}

export interface HealthServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Told of every answer: kubeproxy_proxy_healthz_total / kubeproxy_proxy_livez_total{code} count them. */
export type AnswerSink = (path: 'healthz' | 'livez', code: number) => void;

export function startHealthServer(opts: { host: string; port: number; timeoutMs: number; state: HealthState; answered?: AnswerSink }): Promise<HealthServer> {
  const server = http().createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (url !== '/healthz' && url !== '/livez') {
      res.writeHead(404).end();
      return;
    }
    const now = Date.now();
    const pending = opts.state.pendingSince();
    const proxyHealthy = pending === 0 || now - pending <= opts.timeoutMs;
    const body: Record<string, unknown> = {
      lastUpdated: opts.state.lastSuccessAt() ? new Date(opts.state.lastSuccessAt()).toISOString() : null,
      currentTime: new Date(now).toISOString(),
      pendingSince: pending ? new Date(pending).toISOString() : null,
    };
    let healthy = proxyHealthy;
    if (url === '/healthz') {
      const eligible = opts.state.nodeEligible();
      body.nodeEligible = eligible;
      healthy &&= eligible;
    }
    const code = healthy ? 200 : 503;
    opts.answered?.(url === '/healthz' ? 'healthz' : 'livez', code);
    res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
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
