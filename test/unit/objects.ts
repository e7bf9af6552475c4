/** Kubernetes objects the unit suites build: a ClusterIP Service in `default` and its one EndpointSlice. */
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import type { ClusterStore } from '../../ts/model/store';

export function service(name: string, ip: string, port = 80): V1Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'default' }, spec: { clusterIP: ip, ports: [{ port }] } };
}

export function slice(svc: string, addrs: string[], port = 8080): V1EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${svc}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': svc } },
    addressType: 'IPv4',
    ports: [{ port }],
    endpoints: addrs.map((a) => ({ addresses: [a] })),
  };
}

/** Put a Service and its slice into the store. */
export function putService(store: ClusterStore, name: string, ip: string, addrs: string[]): void {
  store.upsertService(service(name, ip), 't');
  store.upsertSlice(slice(name, addrs), 't');
}
