/**
 * IPv6 and dual-stack Services: addresses, the model's validation, and the
 * plan split per family as kube-proxy's per-family proxiers see a Service
 * (pkg/proxy: one ServicePortInfo and one endpoints cache per family).
 */
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { parseService, ServiceModel } from '../../ts/model/service';
import { SliceModel, parseEndpointSlice, sliceEndpoints } from '../../ts/model/endpoints';
import { ClusterStore } from '../../ts/model/store';
import { IP, IPv6, cidrContains, compareIP, parseCidr, parseIP, parseIPv6 } from '../../ts/model/types';
import { ServicePlan, backendKey, familyPlan, planService } from '../../ts/plan/plan';
import { SCOPE_LOCAL, SVC_F } from '../../ts/datapath/codecs';
import { TEST_SRC, memoryMaps, runPipeline } from './pipeline';
import * as C from '../../ts/datapath/codecs';
import { keyBuffer } from '../../ts/datapath/maps';
import { rng } from './rng';

test('IPv6 text is kept in one canonical form (RFC 5952), whatever way it was written', () => {
  const cases: Array<[string, string | null]> = [
    ['2001:DB8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:0db8:0000:0000:0000:0000:0002:0001', '2001:db8::2:1'],
    ['::', '::'],
    ['::1', '::1'],
    ['fd00::', 'fd00::'],
    ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
    ['1:0:3:4:5:6:7:8', '1:0:3:4:5:6:7:8'],
    ['1:0:0:4:0:0:0:8', '1:0:0:4::8'],
    ['::ffff:10.1.2.3', '::ffff:a01:203'],
    ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
    ['fe80::1%eth0', null],
    [':::1', null],
    ['1::2::3', null],
    ['1:2:3:4:5:6:7:8:9', null],
    ['1:2:3:4:5:6:7', null],
    ['12345::', null],
    ['::ffff:10.1.2.300', null],
    ['10.1.2.3', null],
    ['fd00::g', null],
  ];
  for (const [input, want] of cases) assert.is(parseIPv6(input), want, input);
  assert.is(parseIP('10.1.2.3'), '10.1.2.3');
  assert.is(parseIP('FD00::1'), 'fd00::1');
});

test('canonical IPv6 text matches the WHATWG URL serializer on random addresses', () => {
  const random = rng(6);
  for (let n = 0; n < 2000; n++) {
    // Mostly zero groups, so that runs of zeros of every length and place occur.
    const groups = Array.from({ length: 8 }, () => (random() < 0.4 ? Math.floor(random() * 0x10000) : 0));
    const full = groups.map((g) => g.toString(16)).join(':');
    const url = new URL(`http://[${full}]/`).hostname.slice(1, -1);
    assert.is(parseIPv6(full), url, full);
    assert.is(parseIPv6(url), url, url);
  }
});

test('CIDRs of both families: prefix match per family, never across families', () => {
  const c = parseCidr('fd00:10:244::/56')!;
  assert.is(c.text, 'fd00:10:244::/56');
  assert.ok(cidrContains(c, 'fd00:10:244:ff::1' as IP));
  assert.not.ok(cidrContains(c, 'fd00:10:244:100::1' as IP));
  assert.not.ok(cidrContains(parseCidr('::/0')!, '10.0.0.1' as IP), 'an IPv6 CIDR holds no IPv4 address');
  assert.not.ok(cidrContains(parseCidr('0.0.0.0/0')!, 'fd00::1' as IP), 'an IPv4 CIDR holds no IPv6 address');
  assert.ok(cidrContains(parseCidr('2001:db8::1')!, '2001:db8::1' as IP), 'a bare address is a /128');
  assert.is(parseCidr('2001:db8::1')!.bits, 128);
  assert.ok(cidrContains(parseCidr('2001:db8::/63')!, '2001:db8:0:1:ffff::' as IP));
  assert.not.ok(cidrContains(parseCidr('2001:db8::/63')!, '2001:db8:0:2::' as IP));
  assert.is(parseCidr('fd00::/129'), null);
  assert.is(parseCidr('fd00::/x'), null);
  assert.ok(compareIP('10.0.0.1' as IP, 'fd00::' as IP) < 0);
  assert.ok(compareIP('fd00::9' as IP, 'fd00::10' as IP) < 0, 'numeric, not text, order');
});

function svc(spec: V1Service['spec'], extra: Partial<V1Service> = {}): V1Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'ns' }, spec, ...extra };
}

function ok(s: V1Service): ServiceModel {
  const r = parseService(s);
  if (r.ok !== true) throw new Error(`expected valid service, got ${JSON.stringify(r)}`);
  return r.value;
}

function errorsOf(s: V1Service): string[] {
  const r = parseService(s);
  return r.ok === false ? r.errors.map((e) => `${e.object} ${e.field}: ${e.message}`) : [];
}

const ports = [{ port: 80, nodePort: 30080 }];

test('a dual-stack Service keeps both cluster IPs, primary first, and external addresses of both families', () => {
  const m = ok(
    svc(
      {
        type: 'LoadBalancer',
        ipFamilyPolicy: 'PreferDualStack',
        ipFamilies: ['IPv6', 'IPv4'],
        clusterIP: 'fd00:96::0001',
        clusterIPs: ['fd00:96::0001', '10.96.0.1'],
        externalIPs: ['2001:db8::e', '203.0.113.5'],
        loadBalancerSourceRanges: ['2001:db8:1::/48', '198.51.100.0/24'],
        ports,
      },
      { status: { loadBalancer: { ingress: [{ ip: '2001:DB8::9' }, { ip: '203.0.113.9' }] } } },
    ),
  );
  assert.equal(m.clusterIPs, ['fd00:96::1', '10.96.0.1']);
  assert.equal(m.externalIPs, ['2001:db8::e', '203.0.113.5']);
  assert.equal(m.loadBalancerIPs, ['2001:db8::9', '203.0.113.9']);
  assert.equal(
    m.loadBalancerSourceRanges.map((c) => c.text),
    ['2001:db8:1::/48', '198.51.100.0/24'],
  );
});

test('bad IPv6 input and family mismatches are errors naming the object and field', () => {
  assert.equal(errorsOf(svc({ clusterIP: 'fd00::zz', ports })), ['ns/s spec.clusterIP: invalid IP "fd00::zz"']);
  assert.equal(errorsOf(svc({ clusterIP: '10.96.0.1', clusterIPs: ['10.96.0.1', 'fd00::1::2'], ports })), ['ns/s spec.clusterIPs[1]: invalid IP "fd00::1::2"']);
  assert.equal(errorsOf(svc({ ipFamilies: ['IPv4'], clusterIP: 'fd00::1', ports })), ['ns/s spec.clusterIPs[0]: IPv6 address fd00::1 does not match spec.ipFamilies[0] IPv4']);
  assert.equal(errorsOf(svc({ ipFamilies: ['IPv6', 'IPv4'], clusterIP: '10.96.0.1', clusterIPs: ['10.96.0.1', 'fd00::1'], ports })), [
    'ns/s spec.clusterIPs[0]: IPv4 address 10.96.0.1 does not match spec.ipFamilies[0] IPv6',
    'ns/s spec.clusterIPs[1]: IPv6 address fd00::1 does not match spec.ipFamilies[1] IPv4',
  ]);
  assert.equal(errorsOf(svc({ clusterIP: '10.96.0.1', clusterIPs: ['10.96.0.1', '10.96.0.2'], ports })), ['ns/s spec.clusterIPs: must hold at most one address of each family']);
  assert.equal(errorsOf(svc({ ipFamilyPolicy: 'SingleStack', clusterIP: '10.96.0.1', clusterIPs: ['10.96.0.1', 'fd00::1'], ports })), [
    'ns/s spec.clusterIPs: a SingleStack service has one cluster IP',
  ]);
  assert.equal(errorsOf(svc({ ipFamilies: ['IPv5'], clusterIP: '10.96.0.1', ports })), ['ns/s spec.ipFamilies[0]: unsupported value "IPv5" (expected IPv4 or IPv6)']);
  assert.equal(errorsOf(svc({ ipFamilyPolicy: 'Sometimes', clusterIP: '10.96.0.1', ports })), [
    'ns/s spec.ipFamilyPolicy: unsupported value "Sometimes" (expected SingleStack, PreferDualStack, RequireDualStack)',
  ]);
  assert.equal(errorsOf(svc({ clusterIP: '10.96.0.1', externalIPs: ['2001:db8::1::'], ports })), ['ns/s spec.externalIPs[0]: invalid IP "2001:db8::1::"']);
  assert.equal(errorsOf(svc({ clusterIP: '10.96.0.1', loadBalancerSourceRanges: ['2001:db8::/200'], ports })), ['ns/s spec.loadBalancerSourceRanges[0]: invalid CIDR "2001:db8::/200"']);
  assert.equal(errorsOf(svc({ type: 'LoadBalancer', clusterIP: '10.96.0.1', ports }, { status: { loadBalancer: { ingress: [{ ip: 'fd00::x' }] } } })), [
    'ns/s status.loadBalancer.ingress[0].ip: invalid IP "fd00::x"',
  ]);
});

function rawSlice(name: string, family: 'IPv4' | 'IPv6', eps: Array<{ ip: string; node?: string; ready?: boolean; terminating?: boolean }>, port = 8080): V1EndpointSlice {
  return {
    metadata: { name, namespace: 'ns', labels: { 'kubernetes.io/service-name': 's' } },
    addressType: family,
    ports: [{ port }],
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      ...(e.node ? { nodeName: e.node } : {}),
      conditions: { ...(e.ready === undefined ? {} : { ready: e.ready }), ...(e.terminating === undefined ? {} : { terminating: e.terminating, serving: true }) },
    })),
  };
}

function slice(name: string, family: 'IPv4' | 'IPv6', eps: Array<{ ip: string; node?: string; ready?: boolean; terminating?: boolean }>): SliceModel {
  const r = parseEndpointSlice(rawSlice(name, family, eps));
  if (r.ok !== true) throw new Error(JSON.stringify(r));
  return r.value;
}

test('addressType IPv6 slices are read (canonical addresses); an address of the wrong family is named', () => {
  const s = slice('v6', 'IPv6', [{ ip: 'FD00:10:244:0:0:0:0:1', node: 'n1' }]);
  assert.equal(
    sliceEndpoints(s).map((e) => [e.addr, e.nodeName, e.ready]),
    [['fd00:10:244::1', 'n1', true]],
  );
  const bad = parseEndpointSlice(rawSlice('v6', 'IPv6', [{ ip: '10.244.1.1' }]));
  assert.equal(bad.ok === false ? bad.errors.map((e) => `${e.object} ${e.field}: ${e.message}`) : [], ['ns/v6 endpoints[0].addresses[0]: invalid IPv6 address "10.244.1.1"']);
  const bad4 = parseEndpointSlice(rawSlice('v4', 'IPv4', [{ ip: 'fd00::1' }]));
  assert.equal(bad4.ok === false ? bad4.errors.map((e) => e.field) : [], ['endpoints[0].addresses[0]']);
  assert.is((parseEndpointSlice({ ...rawSlice('f', 'IPv4', []), addressType: 'FQDN' }) as { ok: string }).ok, 'skip');
});

test('a bad update to a dual-stack Service is reported and the last good version stays; other objects keep applying', () => {
  const reported: string[] = [];
  const store = new ClusterStore((_o, errs) => reported.push(...errs.map((e) => `${e.object} ${e.field}`)));
  const good = svc({ ipFamilies: ['IPv4', 'IPv6'], clusterIP: '10.96.0.1', clusterIPs: ['10.96.0.1', 'fd00::1'], ports });
  assert.ok(store.upsertService(good, 't'));
  assert.not.ok(store.upsertService(svc({ ipFamilies: ['IPv4', 'IPv6'], clusterIP: '10.96.0.1', clusterIPs: ['10.96.0.1', '10.96.0.2'], ports }), 't'));
  assert.equal(reported, ['ns/s spec.clusterIPs', 'ns/s spec.clusterIPs[1]']);
  assert.equal(store.services.get('ns/s' as never)?.clusterIPs, ['10.96.0.1', 'fd00::1']);
  assert.ok(store.upsertService({ ...svc({ clusterIP: 'fd00::2', ports }), metadata: { name: 'other', namespace: 'ns' } }, 't'));
  assert.ok(store.upsertSlice(rawSlice('s-v6', 'IPv6', [{ ip: 'fd00:10::1' }]), 't'));
  assert.is(store.slicesOf('ns/s' as never).length, 1);
});

const ctx = { nodeName: 'n1', nodePortAddrs: ['192.168.77.10', 'fd00:77::10'] as IP[] };
const keys = (p: ServicePlan, idx: readonly number[]): string[] => idx.map((i) => backendKey(p.backends[i]!));
const fe = (p: ServicePlan, addr: string, scope = 0) => p.frontends.find((f) => f.addr === addr && f.scope === scope);

const v4slice = slice('s-v4', 'IPv4', [
  { ip: '10.244.1.1', node: 'n1' },
  { ip: '10.244.2.1', node: 'n2' },
]);
const v6slice = slice('s-v6', 'IPv6', [
  { ip: 'fd00:10:244:2::1', node: 'n2' },
  { ip: 'fd00:10:244:1::10', node: 'n1' },
  { ip: 'fd00:10:244:1::9', node: 'n1' },
]);

test("each family's frontends get that family's endpoints only, NodePorts on each family's node addresses", () => {
  const m = ok(svc({ type: 'NodePort', ipFamilies: ['IPv4', 'IPv6'], clusterIP: '10.96.0.1', clusterIPs: ['10.96.0.1', 'fd00:96::1'], ports }));
  const p = planService(m, [v6slice, v4slice], ctx);
  assert.equal(
    p.frontends.map((f) => `${f.addr}:${f.port}`),
    ['10.96.0.1:80', '192.168.77.10:30080', 'fd00:96::1:80', 'fd00:77::10:30080'],
    'IPv4 first, then IPv6',
  );
  for (const addr of ['10.96.0.1', '192.168.77.10']) assert.equal(keys(p, fe(p, addr)!.backends), ['10.244.1.1:8080/TCP', '10.244.2.1:8080/TCP']);
  for (const addr of ['fd00:96::1', 'fd00:77::10']) {
    assert.equal(keys(p, fe(p, addr)!.backends), ['[fd00:10:244:1::9]:8080/TCP', '[fd00:10:244:1::10]:8080/TCP', '[fd00:10:244:2::1]:8080/TCP'], 'numeric order');
  }
  assert.equal(
    p.backends.map((b) => b.local),
    [true, false, true, true, false],
  );
  // The same plan split per family, as each family's dataplane takes it.
  const six = familyPlan(p, 6);
  assert.equal(
    six.frontends.map((f) => f.addr),
    ['fd00:96::1', 'fd00:77::10'],
  );
  assert.equal(keys(six, six.frontends[0]!.backends), keys(p, fe(p, 'fd00:96::1')!.backends));
  assert.equal(
    six.backends.map((b) => b.ip),
    [0, 0, 0],
  );
  const four = familyPlan(p, 4);
  assert.equal(keys(four, four.frontends[0]!.members), ['10.244.1.1:8080/TCP', '10.244.2.1:8080/TCP']);
  const v4only = planService(ok(svc({ clusterIP: '10.96.0.1', ports })), [v4slice], ctx);
  assert.is(familyPlan(v4only, 4), v4only, 'a one-family plan is its own half');
});

test('an IPv6-only Service has IPv6 frontends only; an IPv4 slice of it backs nothing', () => {
  const m = ok(svc({ ipFamilyPolicy: 'SingleStack', ipFamilies: ['IPv6'], clusterIP: 'fd00:96::2', ports: [{ port: 53 }] }));
  const p = planService(m, [v4slice, v6slice], ctx);
  assert.equal(
    p.frontends.map((f) => f.addr),
    ['fd00:96::2'],
  );
  assert.equal(
    p.backends.map((b) => b.addr.includes(':')),
    [true, true, true],
  );
  const none = planService(m, [v4slice], ctx);
  assert.equal(none.frontends[0]!.backends, [], 'no IPv6 endpoints: reject');
  assert.equal(familyPlan(p, 4).frontends, []);
});

test('the same IPv6 endpoint written two ways in two slices is one backend', () => {
  const m = ok(svc({ clusterIP: 'fd00:96::3', ports }));
  const a = slice('a', 'IPv6', [{ ip: 'fd00:10::0001', node: 'n1', ready: false }]);
  const b = slice('b', 'IPv6', [{ ip: 'fd00:10:0:0:0:0:0:1', node: 'n1' }]);
  const p = planService(m, [a, b], ctx);
  assert.equal(keys(p, fe(p, 'fd00:96::3')!.backends), ['[fd00:10::1]:8080/TCP'], 'the ready copy wins');
  assert.is(p.backends.length, 1);
});

test('eTP=Local, affinity and source ranges apply per family; ranges of one family leave the other open (kube-proxy)', () => {
  const m = ok(
    svc(
      {
        type: 'LoadBalancer',
        ipFamilies: ['IPv6', 'IPv4'],
        clusterIP: 'fd00:96::4',
        clusterIPs: ['fd00:96::4', '10.96.0.4'],
        externalTrafficPolicy: 'Local',
        sessionAffinity: 'ClientIP',
        loadBalancerSourceRanges: ['2001:db8:1::/48'],
        ports,
      },
      { status: { loadBalancer: { ingress: [{ ip: '2001:db8::4' }, { ip: '203.0.113.4' }] } } },
    ),
  );
  const p = planService(m, [v4slice, v6slice], ctx);
  const lb6 = fe(p, '2001:db8::4')!;
  const lb4 = fe(p, '203.0.113.4')!;
  assert.equal(
    lb6.sourceRanges.map((c) => c.text),
    ['2001:db8:1::/48'],
  );
  assert.ok(lb6.flags & SVC_F.SRC_RANGES);
  assert.equal(lb4.sourceRanges, []);
  assert.not.ok(lb4.flags & SVC_F.SRC_RANGES);
  for (const f of p.frontends) assert.ok(f.flags & SVC_F.AFFINITY, `${f.addr}: affinity`);
  assert.equal(keys(p, fe(p, '2001:db8::4', SCOPE_LOCAL)!.backends), ['[fd00:10:244:1::9]:8080/TCP', '[fd00:10:244:1::10]:8080/TCP']);
  assert.equal(keys(p, fe(p, '203.0.113.4', SCOPE_LOCAL)!.backends), ['10.244.1.1:8080/TCP']);
  assert.equal(keys(p, fe(p, 'fd00:77::10', SCOPE_LOCAL)!.backends), ['[fd00:10:244:1::9]:8080/TCP', '[fd00:10:244:1::10]:8080/TCP']);
  // A node address inside an IPv6 range admits the IPv6 LB IPs as sources (not the IPv4 ones).
  const admitted = planService(m, [v6slice], { ...ctx, nodeIPs: ['2001:db8:1::10' as IPv6] });
  assert.equal(
    fe(admitted, '2001:db8::4')!.sourceRanges.map((c) => c.text),
    ['2001:db8:1::/48', '2001:db8::4/128'],
  );
});

test('terminating fallback per family: no ready IPv6 endpoint uses the serving+terminating ones, IPv4 unaffected', () => {
  const m = ok(svc({ ipFamilies: ['IPv4', 'IPv6'], clusterIP: '10.96.0.5', clusterIPs: ['10.96.0.5', 'fd00:96::5'], ports }));
  const term6 = slice('t6', 'IPv6', [
    { ip: 'fd00::a', ready: false, terminating: true },
    { ip: 'fd00::b', ready: false },
  ]);
  const p = planService(m, [v4slice, term6], ctx);
  assert.equal(keys(p, fe(p, 'fd00:96::5')!.backends), ['[fd00::a]:8080/TCP']);
  assert.equal(keys(p, fe(p, '10.96.0.5')!.backends), ['10.244.1.1:8080/TCP', '10.244.2.1:8080/TCP']);
});

/** What the IPv6 maps hold, one line per frontend: "addr:port/PROTO scope rev=N [slot backends]", and the member entries of its rev id. */
function view6(maps: ReturnType<typeof memoryMaps>): string[] {
  const masters: Array<{ k: ReturnType<typeof C.svc6Key.decode>; v: ReturnType<typeof C.svcVal.decode> }> = [];
  const slots = new Map<string, number>();
  for (const [k, v] of maps.svc6.entries) {
    const key = C.svc6Key.decode(keyBuffer(k));
    const val = C.svcVal.decode(v);
    if (key.slot === 0) masters.push({ k: key, v: val });
    else slots.set(`${key.addr}|${key.port}|${key.proto}|${key.scope}|${key.slot}`, val.backend_id);
  }
  const be = (id: number): string => {
    const v = maps.be6.entries.get(u32(id));
    if (!v) return `missing#${id}`;
    const b = C.backend6.decode(v);
    return `[${b.addr}]:${b.port}`;
  };
  return masters
    .map(({ k, v }) => {
      const chosen = Array.from({ length: v.count }, (_, i) => be(slots.get(`${k.addr}|${k.port}|${k.proto}|${k.scope}|${i + 1}`) ?? -1));
      const rn = maps.revnat6.entries.get(u32(v.rev_nat_id));
      const rev = rn ? C.revnat6.decode(rn) : null;
      const members = [...maps.member.entries.keys()].map((mk) => C.memberKey.decode(keyBuffer(mk))).filter((m) => m.rev_nat_id === v.rev_nat_id).length;
      return `[${k.addr}]:${k.port}/${k.proto} scope=${k.scope} revnat=${rev ? `[${rev.addr}]:${rev.port}` : 'missing'} members=${members} -> ${chosen.join(' ')}`;
    })
    .sort();
}

function u32(n: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b.toString('latin1');
}

const DUAL = path.join(TEST_SRC, 'golden-iptables', 'dual-stack');
const NODE_ADDRS = ['192.168.77.10', 'fd00:77::10'] as IP[];

test('the IPv6 half of each plan lands in the IPv6 maps, the IPv4 half where it always did', async () => {
  const res = await runPipeline(DUAL, { nodePortAddrs: NODE_ADDRS });
  assert.equal(
    res.logs.filter((l) => l.level === 'error'),
    [],
  );
  const lines = res.text.split('\n').filter((l) => /^\S+:\d+\/\w+ scope/.test(l));
  // weir services lists the IPv4 frontends as before, then the IPv6 ones ([addr]:port).
  assert.equal(
    lines.filter((l) => !l.startsWith('[')).map((l) => l.split(' ')[0]),
    ['10.96.6.1:80/TCP', '10.96.6.3:80/TCP', '192.168.77.10:30601/TCP', '192.168.77.10:30603/TCP', '192.168.77.10:30603/TCP', '203.0.113.63:80/TCP', '203.0.113.63:80/TCP'],
    'the IPv4 maps as before',
  );
  assert.equal(lines.filter((l) => l.startsWith('[')).length, 11, 'and the IPv6 frontends after them');
  const firstV6 = lines.findIndex((l) => l.startsWith('['));
  assert.ok(
    lines.slice(firstV6).every((l) => l.startsWith('[')),
    'IPv4 first',
  );
  assert.equal(view6(res.maps), [
    '[2001:db8::63]:80/6 scope=0 revnat=[2001:db8::63]:80 members=3 -> [fd00:10:244:1::63]:8080 [fd00:10:244:2::63]:8080',
    '[2001:db8::63]:80/6 scope=1 revnat=[2001:db8::63]:80 members=3 -> [fd00:10:244:1::63]:8080',
    '[2001:db8:e::3]:80/6 scope=0 revnat=[2001:db8:e::3]:80 members=3 -> [fd00:10:244:1::63]:8080 [fd00:10:244:2::63]:8080',
    '[2001:db8:e::3]:80/6 scope=1 revnat=[2001:db8:e::3]:80 members=3 -> [fd00:10:244:1::63]:8080',
    '[fd00:77::10]:30601/6 scope=0 revnat=[fd00:77::10]:30601 members=3 -> [fd00:10:244:1::9]:8080 [fd00:10:244:1::61]:8080 [fd00:10:244:2::61]:8080',
    '[fd00:77::10]:30603/6 scope=0 revnat=[fd00:77::10]:30603 members=3 -> [fd00:10:244:1::63]:8080 [fd00:10:244:2::63]:8080',
    '[fd00:77::10]:30603/6 scope=1 revnat=[fd00:77::10]:30603 members=3 -> [fd00:10:244:1::63]:8080',
    '[fd00:96::6:1]:80/6 scope=0 revnat=[fd00:96::6:1]:80 members=3 -> [fd00:10:244:1::9]:8080 [fd00:10:244:1::61]:8080 [fd00:10:244:2::61]:8080',
    '[fd00:96::6:2]:53/17 scope=0 revnat=[fd00:96::6:2]:53 members=1 -> [fd00:10:244:1::62]:53',
    '[fd00:96::6:3]:80/6 scope=0 revnat=[fd00:96::6:3]:80 members=3 -> [fd00:10:244:1::63]:8080 [fd00:10:244:2::63]:8080',
    '[fd00:96::6:4]:80/6 scope=0 revnat=[fd00:96::6:4]:80 members=0 -> ',
  ]);
  // One id space: no backend id or rev_nat id names an entry of both families.
  const ids = (m: { entries: Map<string, Buffer> }): number[] => [...m.entries.keys()].map((k) => keyBuffer(k).readUInt32LE(0));
  const shared = (a: number[], b: number[]): number[] => a.filter((x) => b.includes(x));
  assert.equal(shared(ids(res.maps.be), ids(res.maps.be6)), []);
  assert.equal(shared(ids(res.maps.revnat), ids(res.maps.revnat6)), []);
  // The IPv6 source range of the LoadBalancer, owned by its rev_nat id; the IPv4 frontends have none.
  assert.equal(
    [...res.maps.cidr6.entries.keys()].map((k) => C.cidr6Key.decode(keyBuffer(k))).map((c) => `${c.addr}/${c.prefixlen - 32}`),
    ['2001:db8:1::/48'],
  );
  assert.is(res.maps.cidr.entries.size, 0);
  const sizes = res.reconciler.sizes();
  for (const [name, m] of Object.entries(res.maps)) assert.is(m.entries.size, sizes[name as keyof typeof sizes], name);
});

test('IPv6 changes write only what changed; slots keep their places; removal empties the IPv6 maps', async () => {
  const res = await runPipeline(DUAL, { nodePortAddrs: NODE_ADDRS });
  const before = view6(res.maps);
  const slotOf = (addr: string): Map<string, number> => {
    const out = new Map<string, number>();
    for (const [k, v] of res.maps.svc6.entries) {
      const key = C.svc6Key.decode(keyBuffer(k));
      if (key.addr === addr && key.slot > 0 && key.scope === 0) out.set(String(C.svcVal.decode(v).backend_id), key.slot);
    }
    return out;
  };
  const slotsBefore = slotOf('fd00:96::6:1');
  // One endpoint of the dual service leaves its IPv6 slice.
  res.store.upsertSlice(
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'dual-v6', namespace: 'ds', labels: { 'kubernetes.io/service-name': 'dual' } },
      addressType: 'IPv6',
      ports: [{ name: 'http', port: 8080 }],
      endpoints: [
        { addresses: ['fd00:10:244:2::61'], nodeName: 'n2' },
        { addresses: ['fd00:10:244:1::9'], nodeName: 'n1' },
      ],
    },
    't',
  );
  const writes: string[] = [];
  for (const m of Object.values(res.maps)) {
    const up = m.updateBatch.bind(m);
    const rm = m.removeBatch.bind(m);
    m.updateBatch = (k, v, n) => (writes.push(`${m.name}+${n}`), up(k, v, n));
    m.removeBatch = (k, n) => (writes.push(`${m.name}-${n}`), rm(k, n));
  }
  res.sync();
  const after = view6(res.maps);
  assert.equal(
    after.filter((l) => !before.includes(l)).map((l) => l.split(' ')[0]),
    ['[fd00:77::10]:30601/6', '[fd00:96::6:1]:80/6'],
  );
  assert.ok(!writes.some((w) => /weir1_(svc|be|revnat|cidr)[+-]/.test(w)), `no IPv4 map written: ${writes.join(' ')}`);
  assert.ok(writes.includes('weir1_be6-1'), writes.join(' '));
  // Survivors keep their slots: the last slot moved into the hole, nothing else.
  const slotsAfter = slotOf('fd00:96::6:1');
  let moved = 0;
  for (const [id, slot] of slotsAfter) if (slotsBefore.get(id) !== slot) moved++;
  assert.ok(moved <= 1, `${moved} slots moved`);
  for (const key of [...res.store.services.keys()]) res.store.deleteService(key);
  res.sync();
  for (const m of ['svc6', 'be6', 'revnat6', 'cidr6', 'member', 'svc', 'be', 'revnat'] as const) assert.is(res.maps[m].entries.size, 0, m);
});

test('a restarted agent adopts the IPv6 entries: same ids, same slots, nothing rewritten; stale IPv6 entries are pruned', async () => {
  const first = await runPipeline(DUAL, { nodePortAddrs: NODE_ADDRS });
  const snapshot = (): Record<string, string[]> =>
    Object.fromEntries(Object.entries(first.maps).map(([n, m]) => [n, [...m.entries].map(([k, v]) => `${Buffer.from(k, 'latin1').toString('hex')}=${v.toString('hex')}`).sort()]));
  // Slots in an order a plan would not choose (as after endpoint changes): adoption keeps them.
  const slot = (n: number): string => C.svc6Key.encode({ addr: 'fd00:96::6:1', port: 80, proto: 6, scope: 0, slot: n }).toString('latin1');
  const [s1, s3] = [first.maps.svc6.entries.get(slot(1))!, first.maps.svc6.entries.get(slot(3))!];
  assert.not.equal(s1, s3);
  first.maps.svc6.upsert([
    [slot(1), s3],
    [slot(3), s1],
  ]);
  const before = snapshot();
  // Someone's leftover: an IPv6 frontend no service has, and a backend nobody names.
  first.maps.svc6.upsert([[C.svc6Key.encode({ addr: 'fd00:dead::1', port: 80, proto: 6, scope: 0, slot: 0 }).toString('latin1'), C.svcVal.encode({ count: 0, rev_nat_id: 9999 })]]);
  first.maps.be6.upsert([[u32(8888), C.backend6.encode({ addr: 'fd00:dead::2', port: 80, proto: 6 })]]);
  const again = await runPipeline(DUAL, { nodePortAddrs: NODE_ADDRS, maps: first.maps });
  assert.equal(
    again.logs.filter((l) => l.level === 'error'),
    [],
  );
  assert.equal(snapshot(), before, 'the same entries, ids and slots as before the restart, and the leftovers gone');
});

test.run();
