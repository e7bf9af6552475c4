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
