/** The benchmarks' generated Services and EndpointSlices (one port, TCP, every endpoint ready on n1). */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';

/** k-th endpoint address: 10.200.0.0 upward (100k endpoints fit). */
export const epAddr = (k: number): string => `10.${200 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`;
export const vip = (i: number): string => `10.96.${i >> 8}.${i & 255}`;

export function serviceObj(i: number, name = `svc-${String(i).padStart(5, '0')}`): V1Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'bench' }, spec: { clusterIP: vip(i), ports: [{ name: 'http', port: 80, targetPort: 8080 }] } };
}

export function sliceObj(i: number, addrs: string[], name = `svc-${String(i).padStart(5, '0')}`, port = 8080): V1EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${name}-1`, namespace: 'bench', labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port, protocol: 'TCP' }],
    endpoints: addrs.map((a) => ({ addresses: [a], nodeName: 'n1', conditions: { ready: true } })),
  };
}

/** Generated manifests: `count` services in JSON List files of 500. */
export function writeManifests(dir: string, count: number, endpoints: (i: number) => string[]): void {
  for (let f = 0; f * 500 < count; f++) {
    const items: object[] = [];
    for (let i = f * 500; i < Math.min(count, (f + 1) * 500); i++) items.push(serviceObj(i), sliceObj(i, endpoints(i)));
    fs.writeFileSync(path.join(dir, `gen-${String(f).padStart(3, '0')}.json`), JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));
  }
}
