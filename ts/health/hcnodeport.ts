/**
 * healthCheckNodePort servers (LoadBalancer services with
 * externalTrafficPolicy Local): cloud load balancers probe every node and
 * send traffic only to nodes that answer 200, i.e. that have a ready local
 * endpoint. Same contract as kube-proxy: any path, 200 or 503, JSON body
 * {"service":{"namespace","name"},"localEndpoints":N,"serviceProxyHealthy":bool}.
 */
import * as fs from 'node:fs';
import type * as Http from 'node:http';
import { http } from '../util/lazy';
import { Logger, errorText } from '../util/log';

export interface HealthCheckTarget {
  readonly namespace: string;
  readonly name: string;
  readonly port: number;
  readonly localEndpoints: number;
}

interface Entry {
  server: Http.Server;
  target: HealthCheckTarget;
}

export class HealthCheckNodePorts {
  private readonly servers = new Map<number, Entry>();
  private readonly log: Logger;
  private readonly host: string;
  private readonly proxyHealthy: () => boolean;

  constructor(opts: { log: Logger; host?: string; proxyHealthy: () => boolean }) {
    this.log = opts.log;
    // Both families, as kube-proxy serves one per family: a dual-stack
    // socket on :: takes IPv4 checks too (IPV6_V6ONLY off below), where the
    // kernel has IPv6 at all.
    this.host = opts.host ?? (fs.existsSync('/proc/net/if_inet6') ? '::' : '0.0.0.0');
    this.proxyHealthy = opts.proxyHealthy;
  }

  /** Serve exactly these targets: open new ports, close gone ones, update counts. */
  update(targets: readonly HealthCheckTarget[]): void {
    const want = new Map(targets.map((t) => [t.port, t]));
    for (const [port, e] of this.servers) {
      if (!want.has(port)) {
        e.server.close();
        this.servers.delete(port);
      }
    }
    for (const [port, t] of want) {
      const cur = this.servers.get(port);
      if (cur) {
        cur.target = t;
        continue;
      }
      const entry: Entry = { target: t, server: http().createServer((_req, res) => this.answer(entry, res)) };
      entry.server.on('error', (e) => {
        this.log.error('healthCheckNodePort unavailable', { object: `Service ${t.namespace}/${t.name}`, field: 'spec.healthCheckNodePort', port, error: errorText(e) });
        this.servers.delete(port);
      });
      entry.server.listen({ port, host: this.host, ipv6Only: false });
      this.servers.set(port, entry);
    }
  }

  close(): void {
    for (const e of this.servers.values()) e.server.close();
    this.servers.clear();
  }

  private answer(entry: Entry, res: Http.ServerResponse): void {
    const t = entry.target;
    const body = JSON.stringify({
      service: { namespace: t.namespace, name: t.name },
      localEndpoints: t.localEndpoints,
      serviceProxyHealthy: this.proxyHealthy(),
    });
    res.writeHead(t.localEndpoints > 0 ? 200 : 503, {
      'content-type': 'application/json',
      'x-content-type-options': 'nosniff',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  }
}
