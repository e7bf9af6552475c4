/**
 * Topology-aware routing, ipMode and the Node's own fields, as kube-proxy
 * (Kubernetes 1.35) reads them. Each topology case names the
 * TestCategorizeEndpoints case of pkg/proxy/topology_test.go it comes from;
 * the plan's cluster-wide set is kube-proxy's clusterEndpoints, its local
 * set localEndpoints.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { parseService, ServiceModel } from '../../ts/model/service';
import { parseEndpointSlice, SliceModel } from '../../ts/model/endpoints';
import { ClusterStore } from '../../ts/model/store';
import { backendKey, PlanContext, planService } from '../../ts/plan/plan';
import { IPv4 } from '../../ts/model/types';
import { SCOPE_LOCAL, SVC_F } from '../../ts/datapath/codecs';
import * as path from 'node:path';
import { TEST_SRC, runPipeline } from './pipeline';

interface Ep {
  ip: string;
  zones?: string[];
  nodes?: string[];
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  node?: string;
}

function service(spec: Partial<NonNullable<V1Service['spec']>> = {}, status?: V1Service['status']): ServiceModel {
  const r = parseService({ metadata: { name: 's', namespace: 'ns' }, spec: { clusterIP: '10.96.0.1', ports: [{ port: 80 }], ...spec }, ...(status ? { status } : {}) });
  if (r.ok !== true) throw new Error(JSON.stringify(r));
  return r.value;
}

function slice(eps: Ep[]): SliceModel {
  const raw: V1EndpointSlice = {
    metadata: { name: 'sl', namespace: 'ns', labels: { 'kubernetes.io/service-name': 's' } },
    addressType: 'IPv4',
    ports: [{ port: 80 }],
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      nodeName: e.node ?? 'elsewhere',
      conditions: { ready: e.ready ?? true, serving: e.serving ?? e.ready ?? true, terminating: e.terminating ?? false },
      ...(e.zones || e.nodes ? { hints: { ...(e.zones ? { forZones: e.zones.map((name) => ({ name })) } : {}), ...(e.nodes ? { forNodes: e.nodes.map((name) => ({ name })) } : {}) } } : {}),
    })),
  };
  const r = parseEndpointSlice(raw);
  if (r.ok !== true) throw new Error(JSON.stringify(r));
  return r.value;
}

const ctx = (zone: string, nodeName = 'host1'): PlanContext => ({ nodeName, zone, nodePortAddrs: ['192.168.77.10' as IPv4] });

/** The ClusterIP's endpoints (addresses only) and its flags. */
function clusterSet(m: ServiceModel, eps: Ep[], c: PlanContext): { ips: string[]; flags: number } {
  const p = planService(m, [slice(eps)], c);
  const fe = p.frontends.find((f) => f.flags & SVC_F.CLUSTER_IP)!;
  return { ips: fe.backends.map((i) => backendKey(p.backends[i]!).split(':')[0]!).sort(), flags: fe.flags };
}

const FOUR: Ep[] = [
  { ip: '10.1.2.3', zones: ['zone-a'] },
  { ip: '10.1.2.4', zones: ['zone-b'] },
  { ip: '10.1.2.5', zones: ['zone-c'] },
  { ip: '10.1.2.6', zones: ['zone-a'] },
];
const ALL4 = ['10.1.2.3', '10.1.2.4', '10.1.2.5', '10.1.2.6'];

interface Case {
  /** The TestCategorizeEndpoints case this row comes from. */
  kp: string;
  zone: string;
  eps: Ep[];
  want: string[];
  topo: number;
}

const CASES: Case[] = [
  { kp: 'normal endpoint filtering', zone: 'zone-a', eps: FOUR, want: ['10.1.2.3', '10.1.2.6'], topo: SVC_F.TOPO_ZONE },
  { kp: 'empty node labels', zone: '', eps: [{ ip: '10.1.2.3', zones: ['zone-a'] }], want: ['10.1.2.3'], topo: 0 },
  { kp: 'node in different zone, no endpoint filtering', zone: 'zone-b', eps: [{ ip: '10.1.2.3', zones: ['zone-a'] }], want: ['10.1.2.3'], topo: 0 },
  {
    kp: 'unready endpoint',
    zone: 'zone-a',
    eps: [...FOUR.slice(0, 3), { ip: '10.1.2.6', zones: ['zone-a'], ready: false }],
    want: ['10.1.2.3'],
    topo: SVC_F.TOPO_ZONE,
  },
  {
    kp: 'only unready endpoints in same zone (should not filter)',
    zone: 'zone-a',
    eps: [{ ip: '10.1.2.3', zones: ['zone-a'], ready: false }, FOUR[1]!, FOUR[2]!, { ip: '10.1.2.6', zones: ['zone-a'], ready: false }],
    want: ['10.1.2.4', '10.1.2.5'],
    topo: 0,
  },
  { kp: 'missing hints, no filtering applied', zone: 'zone-a', eps: [FOUR[0]!, FOUR[1]!, { ip: '10.1.2.5' }, FOUR[3]!], want: ALL4, topo: 0 },
  {
    kp: 'multiple hints per endpoint, filtering includes any endpoint with zone included',
    zone: 'zone-c',
    eps: [
      { ip: '10.1.2.3', zones: ['zone-a', 'zone-b', 'zone-c'] },
      { ip: '10.1.2.4', zones: ['zone-b', 'zone-c'] },
      { ip: '10.1.2.5', zones: ['zone-b', 'zone-d'] },
      { ip: '10.1.2.6', zones: ['zone-c'] },
    ],
    want: ['10.1.2.3', '10.1.2.4', '10.1.2.6'],
    topo: SVC_F.TOPO_ZONE,
  },
  {
    kp: 'PreferSameNode: every endpoint has a node hint, one for this node',
    zone: 'zone-a',
    eps: [
      { ip: '10.1.2.3', zones: ['zone-a'], nodes: ['host1'] },
      { ip: '10.1.2.4', zones: ['zone-b'], nodes: ['host2'] },
      { ip: '10.1.2.5', zones: ['zone-a'], nodes: ['host3'] },
    ],
    want: ['10.1.2.3'],
    topo: SVC_F.TOPO_NODE,
  },
  {
    kp: 'PreferSameNode falls back to same-zone when no endpoint is hinted for this node',
    zone: 'zone-a',
    eps: [
      { ip: '10.1.2.3', zones: ['zone-a'], nodes: ['host2'] },
      { ip: '10.1.2.4', zones: ['zone-b'], nodes: ['host3'] },
      { ip: '10.1.2.5', zones: ['zone-a'], nodes: ['host4'] },
    ],
    want: ['10.1.2.3', '10.1.2.5'],
    topo: SVC_F.TOPO_ZONE,
  },
  {
    kp: 'PreferSameNode ignored (same-zone used) when an endpoint lacks a node hint',
    zone: 'zone-b',
    eps: [
      { ip: '10.1.2.3', zones: ['zone-a'], nodes: ['host1'] },
      { ip: '10.1.2.4', zones: ['zone-b'] },
    ],
    want: ['10.1.2.4'],
    topo: SVC_F.TOPO_ZONE,
  },
  {
    kp: 'no ready endpoints: serving-terminating fallback ignores topology',
    zone: 'zone-a',
    eps: [
      { ip: '10.1.2.3', zones: ['zone-a'], ready: false, serving: true, terminating: true },
      { ip: '10.1.2.4', zones: ['zone-b'], ready: false, serving: true, terminating: true },
    ],
    want: ['10.1.2.3', '10.1.2.4'],
    topo: 0,
  },
];

for (const c of CASES) {
  test(`topology (kube-proxy TestCategorizeEndpoints "${c.kp}")`, () => {
    const got = clusterSet(service(), c.eps, ctx(c.zone));
    assert.equal(got.ips, c.want);
    assert.is(got.flags & (SVC_F.TOPO_ZONE | SVC_F.TOPO_NODE), c.topo, 'the frontend shows the topology mode in force');
  });
}

test('topology (kube-proxy "externalTrafficPolicy: Local, topology ignored for Local endpoints" and "conflicting topology and localness")', () => {
  const m = service({ type: 'NodePort', externalTrafficPolicy: 'Local', ports: [{ port: 80, nodePort: 30080 }] });
  const eps: Ep[] = [
    { ip: '10.0.0.0', zones: ['zone-a'], node: 'host1' },
    { ip: '10.0.0.1', zones: ['zone-b'], node: 'host1' },
    { ip: '10.0.0.2', zones: ['zone-a'] },
    { ip: '10.0.0.3', zones: ['zone-b'] },
  ];
  const p = planService(m, [slice(eps)], ctx('zone-a'));
  const ips = (idx: readonly number[]): string[] => idx.map((i) => p.backends[i]!.addr as string).sort();
  const nodePort = (scope: number) => p.frontends.find((f) => f.flags & SVC_F.NODE_PORT && f.scope === scope)!;
  assert.equal(ips(p.frontends.find((f) => f.flags & SVC_F.CLUSTER_IP)!.backends), ['10.0.0.0', '10.0.0.2'], 'clusterEndpoints: same zone');
  assert.equal(ips(nodePort(0).backends), ['10.0.0.0', '10.0.0.2'], 'in-cluster short-circuit uses clusterEndpoints');
  assert.equal(ips(nodePort(SCOPE_LOCAL).backends), ['10.0.0.0', '10.0.0.1'], 'localEndpoints: every local one, whatever its zone');
  assert.is(nodePort(SCOPE_LOCAL).flags & SVC_F.TOPO_ZONE, 0);
  assert.equal(p.backends.length, 4, 'every endpoint stays a member: established flows keep working');
});

test('topology (kube-proxy "internalTrafficPolicy: Local, topology ignored for Local endpoints")', () => {
  const m = service({ internalTrafficPolicy: 'Local' });
  const got = clusterSet(
    m,
    [
      { ip: '10.1.2.3', zones: ['zone-a'], node: 'host1' },
      { ip: '10.1.2.4', zones: ['zone-b'], node: 'host1' },
      { ip: '10.1.2.6', zones: ['zone-a'] },
    ],
    ctx('zone-a'),
  );
  assert.equal(got.ips, ['10.1.2.3', '10.1.2.4']);
  assert.is(got.flags & SVC_F.TOPO_ZONE, 0);
});

test('topology follows the zone the plan is given (a Node relabelled re-plans)', () => {
  assert.equal(clusterSet(service(), FOUR, ctx('zone-a')).ips, ['10.1.2.3', '10.1.2.6']);
  assert.equal(clusterSet(service(), FOUR, ctx('zone-b')).ips, ['10.1.2.4']);
  assert.equal(clusterSet(service(), FOUR, ctx('zone-x')).ips, ALL4, 'no endpoint for this zone: all of them');
});

test('hints: a nameless zone or node hint names the field; empty hints are no hints', () => {
  const r = parseEndpointSlice({
    metadata: { name: 'sl', namespace: 'ns', labels: { 'kubernetes.io/service-name': 's' } },
    addressType: 'IPv4',
    ports: [{ port: 80 }],
    endpoints: [{ addresses: ['10.0.0.1'], hints: { forZones: [{ name: '' }] } }],
  });
  assert.is(r.ok, false);
  assert.equal(r.ok === false ? r.errors.map((e) => e.field) : [], ['endpoints[0].hints.forZones[0].name']);
  assert.is(slice([{ ip: '10.0.0.1', zones: [] }]).hints, undefined, 'no hints column when no endpoint has one');
});

test('trafficDistribution: the known values are kept; another (a later API version) counts as unset, and the Service is served', () => {
  assert.is(service().trafficDistribution, '');
  for (const v of ['PreferClose', 'PreferSameZone', 'PreferSameNode']) assert.is(service({ trafficDistribution: v }).trafficDistribution, v);
  const r = parseService({ metadata: { name: 's', namespace: 'ns' }, spec: { clusterIP: '10.96.0.1', ports: [{ port: 80 }], trafficDistribution: 'Nearby' } });
  assert.is(r.ok === true ? r.value.trafficDistribution : r, '');
});

// kube-proxy service.go: ingress IPs are used only when proxyutil.IsVIPMode (ipMode nil or VIP).
test('LoadBalancer ipMode: VIP or absent is programmed; Proxy, or a mode weir does not know, is not (the LB must see the traffic)', () => {
  const lb = (ingress: Array<{ ip: string; ipMode?: string }>): ReturnType<typeof parseService> =>
    parseService({ metadata: { name: 's', namespace: 'ns' }, spec: { type: 'LoadBalancer', clusterIP: '10.96.0.1', ports: [{ port: 80, nodePort: 30080 }] }, status: { loadBalancer: { ingress } } });
  const ips = (r: ReturnType<typeof parseService>): string[] => (r.ok === true ? [...r.value.loadBalancerIPs] : []);
  assert.equal(ips(lb([{ ip: '203.0.113.1' }, { ip: '203.0.113.2', ipMode: 'VIP' }, { ip: '203.0.113.3', ipMode: 'Proxy' }])), ['203.0.113.1', '203.0.113.2']);
  assert.equal(ips(lb([{ ip: '203.0.113.1', ipMode: 'Tunnel' }, { ip: '203.0.113.2' }])), ['203.0.113.2'], 'the Service is served, without that IP');
  const m = service({ type: 'LoadBalancer', ports: [{ port: 80, nodePort: 30080 }] }, { loadBalancer: { ingress: [{ ip: '203.0.113.3', ipMode: 'Proxy' }] } });
  const p = planService(m, [slice([{ ip: '10.0.0.1' }])], ctx(''));
  assert.not.ok(
    p.frontends.some((f) => f.addr === '203.0.113.3'),
    'no frontend for a Proxy-mode IP',
  );
  assert.ok(
    p.frontends.some((f) => f.flags & SVC_F.NODE_PORT),
    'its NodePort still is',
  );
});

test('Node: zone label, InternalIPs and draining (deletionTimestamp or the autoscaler taint); a deleted Node is not eligible', () => {
  const store = new ClusterStore(() => undefined);
  const node = (extra: Partial<V1Node> = {}, meta: Partial<NonNullable<V1Node['metadata']>> = {}): V1Node => ({
    metadata: { name: 'n1', labels: { 'topology.kubernetes.io/zone': 'zone-a' }, ...meta },
    status: { addresses: [{ type: 'InternalIP', address: '192.168.77.10' }] },
    ...extra,
  });
  assert.ok(store.nodeEligible('n1'), 'eligible before the Node is known');
  assert.ok(store.upsertNode(node(), 'kube'));
  assert.is(store.nodes.get('n1')?.zone, 'zone-a');
  assert.equal(store.nodes.get('n1')?.internalIPs, ['192.168.77.10']);
  assert.ok(store.nodeEligible('n1'));
  const v = store.nodesVersion;
  assert.not.ok(store.upsertNode(node(), 'kube'), 'the same Node again changes nothing');
  assert.is(store.nodesVersion, v);
  assert.ok(store.upsertNode(node({ spec: { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', effect: 'NoSchedule' }] } }), 'kube'));
  assert.not.ok(store.nodeEligible('n1'), 'ToBeDeletedByClusterAutoscaler taint');
  store.upsertNode(node(), 'kube');
  assert.ok(store.nodeEligible('n1'), 'taint removed');
  store.upsertNode(node({}, { deletionTimestamp: new Date() }), 'kube');
  assert.not.ok(store.nodeEligible('n1'), 'deletionTimestamp set');
  store.deleteNode('n1');
  assert.not.ok(store.nodeEligible('n1'), 'deleted');
  assert.ok(store.nodeEligible('n2'), 'another node never seen');
});

test('the topology in force is logged for services that ask for one or are narrowed, once per change', async () => {
  const res = await runPipeline(path.join(TEST_SRC, 'golden', 'topology'));
  const said = (): string[] =>
    res.logs
      .filter((l) => l.msg === 'topology')
      .map((l) => `${String(l.object)} ${String(l.trafficDistribution)} ${String(l.topology)}`)
      .sort();
  const want = ['Service topo/noded PreferSameNode same-node', 'Service topo/partial PreferClose none', 'Service topo/zoned PreferSameZone same-zone'];
  assert.equal(said(), want);
  assert.match(String(res.logs.find((l) => l.object === 'Service topo/partial')?.why), /not every ready endpoint has a hint/);
  for (const k of res.store.services.keys()) res.store.dirty.add(k);
  res.sync();
  assert.equal(said(), want, 'a re-plan without change says nothing again');
});

test.run();
