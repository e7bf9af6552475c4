/**
 * The invariant checker (`weir check`): clean on whatever the reconciler
 * writes, over random sequences of services; and each kind of corruption
 * is reported by map, key and rule.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import * as C from '../../ts/datapath/codecs';
import { MemoryMap, keyString } from '../../ts/datapath/maps';
import { checkMaps, formatViolations } from '../../ts/check/invariants';
import { ClusterStore } from '../../ts/model/store';
import { PORT_WORDS } from '../../ts/reconcile/ports';
import { Reconciler } from '../../ts/reconcile/reconciler';
import { Syncer } from '../../ts/runner/sync';
import { createLogger } from '../../ts/util/log';
import { memoryMaps, memoryPortsMap } from './pipeline';
import { rng } from './rng';

function world(extra: { ct?: MemoryMap; seed?: (maps: ReturnType<typeof memoryMaps>) => void } = {}) {
  const maps = { ...memoryMaps(), ids: new MemoryMap('weir1_ids', 4, C.ids.size), ports: memoryPortsMap(), ...(extra.ct ? { ct: extra.ct } : {}) };
  maps.ids.upsert([[keyString(C.u32Key.encode({ value: 0 })), C.ids.encode({})]]); // an array map's entry always exists
  extra.seed?.(maps);
  const store = new ClusterStore(() => undefined);
  const reconciler = new Reconciler(maps);
  reconciler.adopt();
  const syncer = new Syncer({ store, reconciler, log: createLogger('error', () => undefined), ctx: { nodeName: 'n1', nodePortAddrs: ['192.168.1.1' as never] } });
  return { maps, store, reconciler, sync: () => syncer.sync() };
}

const service = (name: string, ip: string, extra: Partial<NonNullable<V1Service['spec']>> = {}): V1Service => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default' },
  spec: { clusterIP: ip, ports: [{ port: 80, targetPort: 8080 }], ...extra },
});
const slice = (svc: string, eps: Array<{ ip: string; node?: string; ready?: boolean; terminating?: boolean }>): V1EndpointSlice => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: `${svc}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': svc } },
  addressType: 'IPv4',
  ports: [{ port: 8080 }],
  endpoints: eps.map((e) => ({ addresses: [e.ip], nodeName: e.node ?? 'n1', conditions: { ready: e.ready ?? true, serving: true, terminating: e.terminating ?? false } })),
});

test('clean after every step of random service changes', () => {
  for (let seed = 1; seed <= 20; seed++) {
    const next = rng(seed);
    const r = { next, int: (n: number): number => Math.floor(next() * n) };
    const w = world();
    for (let step = 0; step < 40; step++) {
      const i = r.int(8);
      const name = `s${i}`;
      if (r.next() < 0.25) {
        const svc = w.store.services.get(`default/${name}` as never);
        if (svc) w.store.deleteService(svc.key);
      } else {
        const type = (['ClusterIP', 'NodePort', 'LoadBalancer'] as const)[r.int(3)]!;
        w.store.upsertService(
          service(name, `10.96.0.${i + 1}`, {
            type,
            ...(type !== 'ClusterIP' ? { externalTrafficPolicy: r.next() < 0.5 ? 'Local' : 'Cluster' } : {}),
            ...(type === 'LoadBalancer' ? { loadBalancerSourceRanges: ['10.0.0.0/8'] } : {}),
            ...(r.next() < 0.3 ? { sessionAffinity: 'ClientIP' } : {}),
            ...(r.next() < 0.3 ? { externalIPs: [`172.16.0.${r.int(4) + 1}`] } : {}),
          }),
          't',
        );
        if (type === 'LoadBalancer') {
          w.store.upsertService(
            { ...service(name, `10.96.0.${i + 1}`, { type, loadBalancerSourceRanges: ['10.0.0.0/8'] }), status: { loadBalancer: { ingress: [{ ip: `172.17.0.${i + 1}` }] } } },
            't',
          );
        }
        const n = r.int(5);
        w.store.upsertSlice(
          slice(
            name,
            Array.from({ length: n }, (_, e) => ({ ip: `10.244.${r.int(3)}.${e + 1}`, node: r.next() < 0.5 ? 'n1' : 'n2', ready: r.next() < 0.8, terminating: r.next() < 0.2 })),
          ),
          't',
        );
      }
      w.sync();
      const found = checkMaps(w.maps);
      assert.equal(formatViolations(found), '', `seed ${seed} step ${step}`);
    }
  }
});

/** Two ClusterIP services with two endpoints each, checked clean. */
function programmed() {
  const w = world();
  w.store.upsertService(service('a', '10.96.0.1'), 't');
  w.store.upsertSlice(slice('a', [{ ip: '10.244.1.1' }, { ip: '10.244.1.2' }]), 't');
  w.store.upsertService(service('b', '10.96.0.2'), 't');
  w.store.upsertSlice(slice('b', [{ ip: '10.244.1.3' }]), 't');
  w.sync();
  assert.equal(checkMaps(w.maps), []);
  const entry = (ip: string, slot: number): [string, C.SvcVal] => {
    for (const [k, v] of w.maps.svc.entries) {
      const key = C.svcKey.decode(Buffer.from(k, 'latin1'));
      if (key.addr === ip && key.slot === slot) return [k, C.svcVal.decode(v)];
    }
    throw new Error(`no ${ip} slot ${slot}`);
  };
  return { ...w, entry };
}

const u32 = (n: number): string => keyString(C.u32Key.encode({ value: n }));

test('a rev_nat id two frontends hold, and a revnat entry naming another frontend', () => {
  const w = programmed();
  const [bk, bv] = w.entry('10.96.0.2', 0);
  const aRev = w.entry('10.96.0.1', 0)[1].rev_nat_id;
  w.maps.svc.upsert([[bk, C.svcVal.encode({ ...bv, rev_nat_id: aRev })]]);
  const text = formatViolations(checkMaps(w.maps));
  assert.match(text, `weir1_svc 10.96.0.2:80/TCP all slot 0: rev_nat id ${aRev} is also held by 10.96.0.1:80/TCP`);
  assert.match(text, `weir1_revnat ${aRev}: holds 10.96.0.1:80, but rev_nat id ${aRev} names 10.96.0.2:80/TCP`);
  assert.match(text, `weir1_revnat ${bv.rev_nat_id}: no master entry holds this rev_nat id`);
});

test('a missing slot, a slot beyond the count, a stranger in a slot, a missing backend', () => {
  const w = programmed();
  const [mk, mv] = w.entry('10.96.0.1', 0);
  const [s2] = w.entry('10.96.0.1', 2);
  w.maps.svc.remove([s2]);
  let text = formatViolations(checkMaps(w.maps));
  assert.match(text, 'weir1_svc 10.96.0.1:80/TCP all slot 2: missing (count 2)');

  const w2 = programmed();
  const [, m2] = w2.entry('10.96.0.1', 0);
  const [s1k] = w2.entry('10.96.0.1', 1);
  w2.maps.svc.upsert([[w2.entry('10.96.0.1', 0)[0], C.svcVal.encode({ ...m2, count: 1 })]]);
  const strangerId = w2.entry('10.96.0.2', 1)[1].backend_id;
  w2.maps.svc.upsert([[s1k, C.svcVal.encode({ backend_id: strangerId })]]);
  text = formatViolations(checkMaps(w2.maps));
  assert.match(text, "weir1_svc 10.96.0.1:80/TCP all slot 2: beyond its master's count 1");
  assert.match(text, `weir1_svc 10.96.0.1:80/TCP all slot 1: backend ${strangerId} is not a member of rev_nat id ${m2.rev_nat_id}`);

  const w3 = programmed();
  const id = w3.entry('10.96.0.2', 1)[1].backend_id;
  w3.maps.be.remove([u32(id)]);
  text = formatViolations(checkMaps(w3.maps));
  assert.match(text, `weir1_svc 10.96.0.2:80/TCP all slot 1: names backend ${id}, which does not exist`);
  assert.match(text, `weir1_member ${w3.entry('10.96.0.2', 0)[1].rev_nat_id}/${id}: backend ${id} does not exist`);
  void mk;
  void mv;
});

test('entries without an owner, and ids above the high-water marks', () => {
  const w = programmed();
  w.maps.member.upsert([[keyString(C.memberKey.encode({ rev_nat_id: 999, backend_id: 1 })), C.u32Key.encode({ value: 1 })]]);
  w.maps.cidr.upsert([[keyString(C.cidrKey.encode({ prefixlen: 40, owner: 998, addr: '10.0.0.0' })), C.u32Key.encode({ value: 1 })]]);
  w.maps.be.upsert([[u32(77), C.backend.encode({ addr: '10.244.9.9', port: 1, proto: 6 })]]);
  const text = formatViolations(checkMaps(w.maps));
  assert.match(text, 'weir1_member 999/1: no master entry holds rev_nat id 999');
  assert.match(text, 'weir1_cidr 998 10.0.0.0/8: no master entry holds rev_nat id 998');
  assert.match(text, 'weir1_be 77: no slot or member names this backend');
  assert.match(text, 'weir1_be 77: backend id 77 is not below the high-water mark');
});

test('dual-stack: clean on what the reconciler writes to both families; IPv6 corruption is named by its map', () => {
  const w = world();
  w.store.upsertService(service('d', '10.96.0.9', { clusterIPs: ['10.96.0.9', 'fd00:96::9'], type: 'NodePort' }), 't');
  w.store.upsertSlice(slice('d', [{ ip: '10.244.1.9' }]), 't');
  w.store.upsertSlice(
    {
      ...slice('d', []),
      metadata: { name: 'd-6', namespace: 'default', labels: { 'kubernetes.io/service-name': 'd' } },
      addressType: 'IPv6',
      endpoints: [{ addresses: ['fd00:244::9'] }, { addresses: ['fd00:244::10'] }],
    },
    't',
  );
  w.sync();
  assert.ok(w.maps.svc6.entries.size > 0 && w.maps.be6.entries.size === 2);
  assert.equal(checkMaps(w.maps), []);
  // An IPv6 backend goes missing under its slot, and an IPv6 frontend's revnat entry names another port.
  const [bk] = [...w.maps.be6.entries][0]!;
  w.maps.be6.remove([bk]);
  const [rk, rv] = [...w.maps.revnat6.entries][0]!;
  w.maps.revnat6.upsert([[rk, C.revnat6.encode({ ...C.revnat6.decode(rv), port: 1 })]]);
  const text = formatViolations(checkMaps(w.maps));
  assert.match(text, /^weir1_svc6 \[fd00:96::9\]:80\/TCP all slot \d: names backend \d+, which does not exist$/m);
  assert.match(text, /^weir1_member \d+\/\d+: backend \d+ does not exist$/m);
  assert.match(text, /^weir1_revnat6 \d+: holds \[fd00:96::9\]:1, but rev_nat id \d+ names \[fd00:96::9\]:80\/TCP$/m);
  assert.not.match(text, /weir1_(svc|be|revnat) /, 'the IPv4 family is fine');
});

/** The port filter's bit for a frontend or backend port, as the programs read it. */
function marked(ports: MemoryMap, half: 'frontend' | 'backend', port: number): boolean {
  const word = (half === 'backend' ? PORT_WORDS : 0) + (port >> 6);
  const v = ports.lookup(u32(word))!.readBigUInt64LE(0);
  return ((v >> BigInt(port & 63)) & 1n) === 1n;
}

test('the port filter is on and marks the ports in use; an unmarked one is reported', () => {
  const w = programmed();
  assert.ok(marked(w.maps.ports, 'frontend', 0), 'switched on');
  assert.ok(marked(w.maps.ports, 'frontend', 80));
  assert.ok(marked(w.maps.ports, 'backend', 8080));
  assert.not.ok(marked(w.maps.ports, 'frontend', 8080), 'a backend port is no frontend port');
  assert.not.ok(marked(w.maps.ports, 'backend', 80));
  w.maps.ports.upsert([[u32(80 >> 6), Buffer.alloc(8)]]);
  assert.match(formatViolations(checkMaps(w.maps)), 'weir1_ports frontend port 80: not marked, but weir1_svc uses it');
  // A full comparison (the drift repair) writes the word back.
  w.reconciler.repairDrift();
  assert.equal(formatViolations(checkMaps(w.maps)), '');
});

test('a word cleared while no agent ran is marked again when the next agent adopts the maps', () => {
  const w = programmed();
  w.maps.ports.upsert([[u32(80 >> 6), Buffer.alloc(8)]]);
  assert.not.ok(marked(w.maps.ports, 'frontend', 80));
  new Reconciler(w.maps).adopt();
  assert.ok(marked(w.maps.ports, 'frontend', 80));
  assert.equal(formatViolations(checkMaps(w.maps)), '');
});

test("a departed backend's port stays marked: conntrack still holds its flows", () => {
  const w = programmed();
  w.store.upsertService({ ...service('c', '10.96.0.3'), spec: { clusterIP: '10.96.0.3', ports: [{ port: 81, targetPort: 9090 }] } }, 't');
  w.store.upsertSlice({ ...slice('c', [{ ip: '10.244.1.9' }]), ports: [{ port: 9090 }] }, 't');
  w.sync();
  assert.ok(marked(w.maps.ports, 'backend', 9090));
  w.store.deleteService('default/c' as never);
  w.sync();
  assert.ok(marked(w.maps.ports, 'backend', 9090));
  assert.ok(marked(w.maps.ports, 'frontend', 81), 'nothing is cleared while the pins live');
  assert.equal(formatViolations(checkMaps(w.maps)), '');
});

test('a filter no agent switched on yet is seeded from the maps, conntrack included, then switched on', () => {
  // An upgrade: the maps hold a service and a flow to a backend that has since left; the filter is new.
  const ct = new MemoryMap('weir1_ct', C.ctKey.size, C.ctVal.size);
  const rev = C.ctKey.encode({ saddr: '10.244.7.7', daddr: '10.244.0.5', sport: 7777, dport: 40000, proto: C.IPPROTO.TCP, dir: C.CT_DIR.REV });
  const fwd = C.ctKey.encode({ saddr: '10.244.0.5', daddr: '10.96.0.9', sport: 40000, dport: 99, proto: C.IPPROTO.TCP, dir: C.CT_DIR.FWD });
  ct.upsert([
    [keyString(rev), C.ctVal.encode({})],
    [keyString(fwd), C.ctVal.encode({})],
  ]);
  const first = programmed();
  const w = world({
    ct,
    seed: (maps) => {
      for (const m of ['svc', 'be', 'revnat', 'member'] as const) for (const [k, v] of first.maps[m].entries) maps[m].upsert([[k, Buffer.from(v)]]);
    },
  });
  assert.ok(marked(w.maps.ports, 'frontend', 0), 'switched on at adoption');
  assert.ok(marked(w.maps.ports, 'backend', 7777), "the departed backend's replies are still looked up");
  assert.not.ok(marked(w.maps.ports, 'backend', 40000), 'a forward entry names no backend port');
  assert.ok(marked(w.maps.ports, 'frontend', 80), 'ports of the frontends the maps held');
  assert.ok(marked(w.maps.ports, 'backend', 8080));
  ct.remove([keyString(fwd)]);
  assert.equal(
    formatViolations(checkMaps(w.maps))
      .split('\n')
      .filter((l) => l.includes('weir1_ports')),
    [],
  );
});

test.run();
