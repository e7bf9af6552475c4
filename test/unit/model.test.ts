/**
 * kube-proxy semantics of the model and plan, one rule per test.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { parseService } from '../../ts/model/service';
import { SliceModel, endpointsForPort, parseEndpointSlice, sliceEndpoints } from '../../ts/model/endpoints';
import { ServicePlan, backendKey, planService, usableEndpoints } from '../../ts/plan/plan';
import { ServiceModel } from '../../ts/model/service';
import { IPv4 } from '../../ts/model/types';
import { SCOPE_LOCAL, SVC_F } from '../../ts/datapath/codecs';
import { ClusterStore } from '../../ts/model/store';

function svc(spec: V1Service['spec'], extra: Partial<V1Service> = {}): V1Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'ns' }, spec, ...extra };
}

function ok(s: V1Service): ServiceModel {
  const r = parseService(s);
  if (r.ok !== true) throw new Error(`expected valid service, got ${JSON.stringify(r)}`);
  return r.value;
}

function fieldsOf(s: V1Service): string[] {
  const r = parseService(s);
  return r.ok === false ? r.errors.map((e) => e.field) : [];
}

function slice(
  ports: Array<{ name?: string; port: number; protocol?: string }>,
  eps: Array<{ ip: string; node?: string; ready?: boolean; serving?: boolean; terminating?: boolean }>,
  name = 'sl',
): SliceModel {
  const raw: V1EndpointSlice = {
    metadata: { name, namespace: 'ns', labels: { 'kubernetes.io/service-name': 's' } },
    addressType: 'IPv4',
    ports,
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      ...(e.node ? { nodeName: e.node } : {}),
      conditions: {
        ...(e.ready === undefined ? {} : { ready: e.ready }),
        ...(e.serving === undefined ? {} : { serving: e.serving }),
        ...(e.terminating === undefined ? {} : { terminating: e.terminating }),
      },
    })),
  };
  const r = parseEndpointSlice(raw);
  if (r.ok !== true) throw new Error(JSON.stringify(r));
  return r.value;
}

const ctx = { nodeName: 'n1', nodePortAddrs: ['192.168.77.10' as IPv4] };

test('defaults: ClusterIP type, TCP, no affinity, Cluster policies', () => {
  const m = ok(svc({ clusterIP: '10.96.0.1', ports: [{ port: 80 }] }));
  assert.is(m.type, 'ClusterIP');
  assert.is(m.ports[0]!.protocol, 'TCP');
  assert.is(m.affinityTimeout, 0);
  assert.is(m.externalTrafficPolicy, 'Cluster');
});

test('ClientIP affinity defaults to 10800 s and validates the range', () => {
  assert.is(ok(svc({ clusterIP: '10.96.0.1', sessionAffinity: 'ClientIP', ports: [{ port: 80 }] })).affinityTimeout, 10800);
  assert.equal(fieldsOf(svc({ clusterIP: '10.96.0.1', sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 0 } }, ports: [{ port: 80 }] })), [
    'spec.sessionAffinityConfig.clientIP.timeoutSeconds',
  ]);
});

test('invalid fields are named', () => {
  assert.equal(fieldsOf(svc({ clusterIP: '10.96.0.256', ports: [{ port: 80 }] })), ['spec.clusterIP']);
  assert.equal(fieldsOf(svc({ clusterIP: '10.96.0.1', ports: [{ port: 0 }] })), ['spec.ports[0].port']);
  assert.equal(fieldsOf(svc({ clusterIP: '10.96.0.1', ports: [{ port: 80, protocol: 'ICMP' }] })), ['spec.ports[0].protocol']);
  assert.equal(fieldsOf(svc({ clusterIP: '10.96.0.1', ports: [{ port: 80 }, { port: 81 }] })), ['spec.ports[0].name', 'spec.ports[1].name']);
  assert.equal(fieldsOf(svc({ clusterIP: '10.96.0.1', externalTrafficPolicy: 'Nearest', ports: [{ port: 80 }] })), ['spec.externalTrafficPolicy']);
  assert.equal(fieldsOf(svc({ clusterIP: '10.96.0.1', loadBalancerSourceRanges: ['10.0.0.0/33'], ports: [{ port: 80 }] })), ['spec.loadBalancerSourceRanges[0]']);
  assert.equal(fieldsOf(svc({ clusterIP: '10.96.0.1', externalIPs: ['1.2.3'], ports: [{ port: 80 }] })), ['spec.externalIPs[0]']);
});

test('headless, ExternalName, service-proxy-name and IP-less services are skipped, not errors', () => {
  assert.is((parseService(svc({ clusterIP: 'None', ports: [{ port: 80 }] })) as { reason: string }).reason, 'headless');
  assert.is((parseService(svc({ type: 'ExternalName', externalName: 'x.invalid' })) as { reason: string }).reason, 'external-name');
  assert.is(
    (parseService(svc({ clusterIP: '10.96.0.1', ports: [{ port: 80 }] }, { metadata: { name: 's', labels: { 'service.kubernetes.io/service-proxy-name': 'other' } } })) as { reason: string }).reason,
    'service-proxy-name',
  );
  assert.is((parseService(svc({ ports: [{ port: 80 }] })) as { reason: string }).reason, 'no-cluster-ip');
});

test('endpoints join service ports by name and protocol across slices, deduplicated', () => {
  const a = slice(
    [
      { name: 'http', port: 8080 },
      { name: 'dns', port: 53, protocol: 'UDP' },
    ],
    [{ ip: '10.244.1.1' }, { ip: '10.244.1.2', ready: false }],
    'a',
  );
  const b = slice([{ name: 'http', port: 8080 }], [{ ip: '10.244.1.2' }, { ip: '10.244.1.3' }], 'b');
  const http = endpointsForPort([a, b], 'http', 'TCP');
  assert.equal(http.map((e) => `${e.addr}:${e.port}:${e.ready}`).sort(), ['10.244.1.1:8080:true', '10.244.1.2:8080:true', '10.244.1.3:8080:true']);
  assert.equal(
    endpointsForPort([a, b], 'dns', 'UDP').map((e) => `${e.addr}:${e.port}`),
    ['10.244.1.1:53', '10.244.1.2:53'],
  );
  assert.equal(endpointsForPort([a, b], 'dns', 'TCP'), [], 'a UDP slice port does not serve TCP');
});

test('endpoints of a port come sorted by address and port; of two copies, the first ready one, else the first', () => {
  const a = slice([{ name: 'http', port: 8080 }], [{ ip: '10.244.1.9' }, { ip: '10.244.1.5', ready: false, node: 'a' }, { ip: '10.244.1.7', ready: false, node: 'a' }], 'a');
  const b = slice([{ name: 'http', port: 8080 }], [{ ip: '10.244.1.7', ready: false, node: 'b' }, { ip: '10.244.1.5', node: 'b' }, { ip: '10.244.1.10' }], 'b');
  const c = slice([{ name: 'http', port: 9090 }], [{ ip: '10.244.1.5', node: 'c' }], 'c');
  const http = endpointsForPort([a, b, c], 'http', 'TCP');
  assert.equal(
    http.map((e) => `${e.addr}:${e.port} ${e.nodeName} ${e.ready}`),
    ['10.244.1.5:8080 b true', '10.244.1.5:9090 c true', '10.244.1.7:8080 a false', '10.244.1.9:8080  true', '10.244.1.10:8080  true'],
  );
});

test('endpoints of a port match a reference merge over random slices (both sort paths)', () => {
  let seed = 5;
  const rand = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  for (let round = 0; round < 200; round++) {
    const n = 1 + Math.floor(rand() * (round % 2 ? 20 : 70)); // under and over 32
    const slices = [0, 1, 2].map((k) =>
      slice(
        [{ name: 'p', port: rand() < 0.8 ? 80 : 81 }],
        Array.from({ length: n }, () => ({ ip: `10.244.0.${1 + Math.floor(rand() * 40)}`, node: `n${k}`, ready: rand() < 0.5 })),
        `s${k}`,
      ),
    );
    // Reference: first copy, replaced by a later ready one if it is not ready; then sorted.
    const ref = new Map<string, { addr: string; port: number; nodeName: string; ready: boolean; ip: number }>();
    for (const sl of slices) {
      const port = sl.ports[0]!.port;
      for (const ep of sliceEndpoints(sl)) {
        const k = `${ep.addr}:${port}`;
        const prev = ref.get(k);
        const ip = ep.addr.split('.').reduce((a, o) => a * 256 + Number(o), 0);
        if (!prev || (!prev.ready && ep.ready)) ref.set(k, { addr: ep.addr, port, nodeName: ep.nodeName, ready: ep.ready, ip });
      }
    }
    const want = [...ref.values()].sort((a, b) => a.ip - b.ip || a.port - b.port).map((e) => `${e.addr}:${e.port} ${e.nodeName} ${e.ready}`);
    assert.equal(
      endpointsForPort(slices, 'p', 'TCP').map((e) => `${e.addr}:${e.port} ${e.nodeName} ${e.ready}`),
      want,
      `round ${round}`,
    );
  }
});

test("the store's slices of a service follow updates, moves to another service and deletions", () => {
  const store = new ClusterStore(() => undefined);
  const raw = (name: string, service: string, ip: string): V1EndpointSlice => ({
    metadata: { name, namespace: 'ns', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: [{ port: 80 }],
    endpoints: [{ addresses: [ip] }],
  });
  const ips = (service: string): string[] => store.slicesOf(`ns/${service}` as never).map((sl) => `${sl.key} ${sliceEndpoints(sl)[0]!.addr}`);
  store.upsertSlice(raw('a', 'x', '10.244.0.1'), 't');
  store.upsertSlice(raw('b', 'x', '10.244.0.2'), 't');
  store.upsertSlice(raw('a', 'x', '10.244.0.3'), 't');
  assert.equal(ips('x'), ['ns/a 10.244.0.3', 'ns/b 10.244.0.2'], 'an update replaces the slice in place');
  store.upsertSlice(raw('a', 'y', '10.244.0.3'), 't');
  assert.equal(ips('x'), ['ns/b 10.244.0.2']);
  assert.equal(ips('y'), ['ns/a 10.244.0.3'], 'moved to the service it names now');
  store.deleteSlice('ns/b' as never);
  assert.equal(ips('x'), []);
  assert.equal(store.takeDirty().sort(), ['ns/x', 'ns/y']);
  assert.equal(store.takeDirty(), [], 'taken');
});

test('addresses survive the trip through the numeric columns, high ones too', () => {
  const ips = ['0.0.0.1', '10.244.1.2', '127.255.255.255', '128.0.0.0', '192.168.77.10', '255.255.255.254'];
  const s = slice(
    [{ name: 'p', port: 80 }],
    ips.map((ip) => ({ ip })),
  );
  assert.equal(
    sliceEndpoints(s).map((e) => e.addr),
    ips,
  );
  const plan = planService(ok(svc({ clusterIP: '10.96.0.1', ports: [{ name: 'p', port: 80 }] })), [s], ctx);
  assert.equal(
    plan.backends.map(backendKey),
    ips.map((ip) => `${ip}:80/TCP`),
    'sorted as unsigned numbers',
  );
});

test('conditions: nil ready is ready, nil serving follows ready, nil terminating is false', () => {
  const s = slice([{ port: 80 }], [{ ip: '10.244.1.1' }, { ip: '10.244.1.2', ready: false }]);
  assert.equal(
    sliceEndpoints(s).map((e) => [e.ready, e.serving, e.terminating]),
    [
      [true, true, false],
      [false, false, false],
    ],
  );
});

test('usable endpoints: ready ones; with none ready, serving+terminating ones', () => {
  const e = (ready: boolean, serving: boolean, terminating: boolean, id: string) => ({ ready, serving, terminating, id });
  assert.equal(
    usableEndpoints([e(true, true, false, 'a'), e(false, true, true, 'b')]).map((x) => x.id),
    ['a'],
  );
  assert.equal(
    usableEndpoints([e(false, true, true, 'b'), e(false, false, true, 'c'), e(false, false, false, 'd')]).map((x) => x.id),
    ['b'],
  );
  assert.equal(usableEndpoints([e(false, false, false, 'd')]), []);
});

/** One endpoint of port 8080 on n1 (this node) and one on n2. */
const endpointsOnTwoNodes = () =>
  slice(
    [{ port: 8080 }],
    [
      { ip: '10.244.1.1', node: 'n1' },
      { ip: '10.244.2.1', node: 'n2' },
    ],
  );

/** A frontend's backends (plan indices) as "addr:port/PROTO". */
const keysOf = (p: ServicePlan, idx: readonly number[]): string[] => idx.map((i) => backendKey(p.backends[i]!));

test("internalTrafficPolicy Local: ClusterIP slots hold only this node's endpoints", () => {
  const m = ok(svc({ clusterIP: '10.96.0.1', internalTrafficPolicy: 'Local', ports: [{ port: 80 }] }));
  const p = planService(m, [endpointsOnTwoNodes()], ctx);
  assert.is(p.frontends.length, 1);
  assert.equal(keysOf(p, p.frontends[0]!.backends), ['10.244.1.1:8080/TCP']);
  assert.ok(p.frontends[0]!.flags & SVC_F.ITP_LOCAL);
});

test('externalTrafficPolicy Local: external frontends get a local-scope entry; in-cluster scope keeps all endpoints', () => {
  const m = ok(
    svc(
      { type: 'LoadBalancer', clusterIP: '10.96.0.1', externalTrafficPolicy: 'Local', externalIPs: ['203.0.113.5'], ports: [{ port: 80, nodePort: 30080 }] },
      { status: { loadBalancer: { ingress: [{ ip: '203.0.113.9' }] } } },
    ),
  );
  const p = planService(m, [endpointsOnTwoNodes()], ctx);
  const byKey = (addr: string, scope: number) => p.frontends.find((f) => f.addr === addr && f.scope === scope);
  assert.equal(byKey('10.96.0.1', 0)?.backends.length, 2, 'ClusterIP: every endpoint');
  assert.not.ok(byKey('10.96.0.1', SCOPE_LOCAL), 'no local scope for ClusterIP');
  for (const addr of ['203.0.113.5', '203.0.113.9', '192.168.77.10']) {
    assert.equal(byKey(addr, 0)?.backends.length, 2, `${addr}: in-cluster clients reach all endpoints`);
    assert.equal(keysOf(p, byKey(addr, SCOPE_LOCAL)?.backends ?? []), ['10.244.1.1:8080/TCP'], `${addr}: external clients reach local endpoints only`);
  }
  assert.is(byKey('192.168.77.10', 0)?.port, 30080);
});

// kube-proxy TestLoadBalancer "same node to LB1, SNATted to LB1": source ranges that hold a node IP admit the LB IPs as sources.
test('loadBalancerSourceRanges that hold a node IP also admit the LB IPs themselves; others stay as written', () => {
  const lb = (ranges: string[]) =>
    ok(
      svc(
        { type: 'LoadBalancer', clusterIP: '10.96.0.1', loadBalancerSourceRanges: ranges, ports: [{ port: 80, nodePort: 30080 }] },
        { status: { loadBalancer: { ingress: [{ ip: '203.0.113.9' }, { ip: '203.0.113.10' }] } } },
      ),
    );
  const ranges = (ranges: string[], nodeIPs: IPv4[]): string[][] =>
    planService(lb(ranges), [endpointsOnTwoNodes()], { ...ctx, nodeIPs })
      .frontends.filter((f) => f.flags & SVC_F.LOAD_BALANCER)
      .map((f) => f.sourceRanges.map((c) => c.text));
  const node = ['192.168.77.10' as IPv4];
  assert.equal(ranges(['192.168.0.0/16'], node), [
    ['192.168.0.0/16', '203.0.113.9/32', '203.0.113.10/32'],
    ['192.168.0.0/16', '203.0.113.9/32', '203.0.113.10/32'],
  ]);
  assert.equal(ranges(['10.0.0.0/8'], node), [['10.0.0.0/8'], ['10.0.0.0/8']], 'the node is not admitted: nothing added');
  assert.equal(ranges(['192.168.0.0/16'], []), [['192.168.0.0/16'], ['192.168.0.0/16']], 'no node IP known: nothing added');
  const nodePort = planService(lb(['192.168.0.0/16']), [endpointsOnTwoNodes()], { ...ctx, nodeIPs: node }).frontends.find((f) => f.flags & SVC_F.NODE_PORT);
  assert.equal(nodePort?.sourceRanges, [], 'NodePorts are not filtered');
});

test('service ports that reach the same endpoint port share one backend; TCP and UDP of one port do not', () => {
  const m = ok(
    svc({
      clusterIP: '10.96.0.1',
      ports: [
        { name: 'http', port: 80, targetPort: 8080 },
        { name: 'alt', port: 8080, targetPort: 8080 },
        { name: 'dns', port: 53, targetPort: 8080, protocol: 'UDP' },
      ],
    }),
  );
  const sl = slice(
    [
      { name: 'http', port: 8080 },
      { name: 'alt', port: 8080 },
      { name: 'dns', port: 8080, protocol: 'UDP' },
    ],
    [
      { ip: '10.244.1.2', node: 'n1' },
      { ip: '10.244.1.1', node: 'n2' },
    ],
  );
  const p = planService(m, [sl], ctx);
  assert.equal(p.backends.map(backendKey), ['10.244.1.1:8080/TCP', '10.244.1.2:8080/TCP', '10.244.1.1:8080/UDP', '10.244.1.2:8080/UDP'], 'each endpoint once, sorted by address within a port');
  const fe = (port: number) => p.frontends.find((f) => f.port === port)!;
  assert.equal(fe(80).members, fe(8080).members, 'http and alt name the same two backends');
  assert.equal(keysOf(p, fe(53).backends), ['10.244.1.1:8080/UDP', '10.244.1.2:8080/UDP']);
  assert.is(p.backends[fe(80).members[0]!]!.local, false, '10.244.1.1 is on n2');
  assert.is(p.backends[fe(80).members[1]!]!.local, true, '10.244.1.2 is on this node');
});

test('every nodePort 1-65535 is accepted, whatever range the API server used; others name the field', () => {
  for (const nodePort of [1, 80, 8080, 29999, 30000, 32767, 32768, 40000, 65535]) {
    const m = ok(svc({ type: 'NodePort', clusterIP: '10.96.0.1', ports: [{ port: 80, nodePort }] }));
    assert.is(m.ports[0]?.nodePort, nodePort, String(nodePort));
  }
  for (const nodePort of [65536, -1, 1.5]) {
    const r = parseService(svc({ type: 'NodePort', clusterIP: '10.96.0.1', ports: [{ port: 80, nodePort }] }));
    assert.is(r.ok, false, String(nodePort));
    if (r.ok === false)
      assert.equal(
        r.errors.map((e) => e.field),
        ['spec.ports[0].nodePort'],
      );
  }
});

test('SCTP ports are programmed like TCP and UDP ones', () => {
  const m = ok(
    svc({
      clusterIP: '10.96.0.1',
      ports: [
        { name: 'a', port: 80, protocol: 'SCTP' },
        { name: 'b', port: 81 },
      ],
    }),
  );
  const p = planService(m, [], ctx);
  assert.equal(
    p.frontends.map((f) => `${f.port}/${f.proto}`),
    ['80/SCTP', '81/TCP'],
  );
});

test.run();
