/** Manifests the e2e suites share: a ClusterIP web Service with its EndpointSlice, and one without endpoints. */

/** Service `name` (port 80 → 8080) at clusterIP, and one EndpointSlice with `endpoints` on node n1. */
export function webService(o: { namespace: string; clusterIP: string; endpoints: readonly string[]; name?: string }): string {
  const name = o.name ?? 'web';
  return `apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: ${o.namespace}}
spec:
  clusterIP: ${o.clusterIP}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ${name}-1, namespace: ${o.namespace}, labels: {kubernetes.io/service-name: ${name}}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [${o.endpoints.map((ip) => `{addresses: [${ip}], nodeName: n1}`).join(', ')}]
`;
}

/** A Service with no endpoints (REJECT). */
export function emptyService(o: { namespace: string; clusterIP: string; name?: string }): string {
  return `apiVersion: v1
kind: Service
metadata: {name: ${o.name ?? 'empty'}, namespace: ${o.namespace}}
spec:
  clusterIP: ${o.clusterIP}
  ports: [{port: 80}]
`;
}

/** `n` ClusterIP services of ten endpoints each, as one List (addresses nothing routes to: they only fill the tables). */
export function manyServices(n: number): string {
  const items: object[] = [];
  for (let i = 0; i < n; i++) {
    const name = `fill-${i}`;
    items.push(
      { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'fill' }, spec: { clusterIP: `10.97.${i >> 8}.${i & 255}`, ports: [{ port: 80, targetPort: 8080 }] } },
      {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: `${name}-1`, namespace: 'fill', labels: { 'kubernetes.io/service-name': name } },
        addressType: 'IPv4',
        ports: [{ port: 8080 }],
        endpoints: Array.from({ length: 10 }, (_, k) => ({ addresses: [`10.201.${(i * 10 + k) >> 8}.${(i * 10 + k) & 255}`], nodeName: 'n1' })),
      },
    );
  }
  return JSON.stringify({ apiVersion: 'v1', kind: 'List', items });
}
