/**
 * Which node-process sockets are named for destruction after a sync
 * (ts/datapath/sockterm.ts): the rule on the maps' contents. The kernel
 * side (the iterator destroying them) is test/e2e/socklb.test.ts.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as C from '../../ts/datapath/codecs';
import { MemoryMap, keyString } from '../../ts/datapath/maps';
import { sockTermValue, staleSockets } from '../../ts/datapath/sockterm';

function maps(): { [k in 'skrevnat' | 'skrevnat6' | 'svc' | 'svc6' | 'be' | 'be6']: MemoryMap } {
  return {
    skrevnat: new MemoryMap('skrevnat', C.skKey.size, C.skVal.size),
    skrevnat6: new MemoryMap('skrevnat6', C.sk6Key.size, C.sk6Val.size),
    svc: new MemoryMap('svc', C.svcKey.size, C.svcVal.size),
    svc6: new MemoryMap('svc6', C.svc6Key.size, C.svcVal.size),
    be: new MemoryMap('be', C.u32Key.size, C.backend.size),
    be6: new MemoryMap('be6', C.u32Key.size, C.backend6.size),
  };
}

/** A frontend addr:port/proto whose slots name backends ids[i] (at addr:port of `backends`). */
function frontend(m: ReturnType<typeof maps>, addr: string, port: number, proto: number, backends: Array<[number, string, number]>): void {
  const key = (slot: number): string => keyString(C.svcKey.encode({ addr, port, proto, scope: C.SCOPE_ALL, slot, pad: 0 }));
  m.svc.upsert([[key(0), C.svcVal.encode({ backend_id: 0, count: backends.length, flags: 1, rev_nat_id: 1, affinity_timeout: 0 })]]);
  backends.forEach(([id, a, p], i) => {
    m.svc.upsert([[key(i + 1), C.svcVal.encode({ backend_id: id, count: 0, flags: 0, rev_nat_id: 1, affinity_timeout: 0 })]]);
    m.be.upsert([[keyString(C.u32Key.encode({ value: id })), C.backend.encode({ addr: a, port: p, proto, flags: 0 })]]);
  });
}

function socket(m: ReturnType<typeof maps>, cookie: bigint, backend: [string, number], front: [string, number]): void {
  m.skrevnat.upsert([[keyString(C.skKey.encode({ cookie, addr: backend[0], port: backend[1], pad: 0 })), C.skVal.encode({ addr: front[0], port: front[1], pad: 0, rev_nat_id: 1 })]]);
}

test('a socket on a backend its UDP frontend still has stays; one on a removed backend, or of a deleted service, is named', () => {
  const m = maps();
  frontend(m, '10.96.0.10', 53, C.IPPROTO.UDP, [[7, '10.244.1.2', 5353]]);
  socket(m, 1n, ['10.244.1.2', 5353], ['10.96.0.10', 53]);
  socket(m, 2n, ['10.244.1.3', 5353], ['10.96.0.10', 53]);
  socket(m, 3n, ['10.244.1.9', 5353], ['10.96.0.99', 53]);
  assert.equal(
    staleSockets(m).map((s) => [s.cookie, s.addr, s.port]),
    [
      [2n, '10.244.1.3', 5353],
      [3n, '10.244.1.9', 5353],
    ],
  );
});

test("a TCP frontend's sockets are never named: established connections stay, as with kube-proxy", () => {
  const m = maps();
  frontend(m, '10.96.0.20', 80, C.IPPROTO.TCP, [[8, '10.244.1.2', 8080]]);
  socket(m, 4n, ['10.244.1.4', 8080], ['10.96.0.20', 80]);
  assert.equal(staleSockets(m), []);
});

test('the iterator gets an IPv4 backend in the first address word, an IPv6 one whole', () => {
  const v4 = sockTermValue({ cookie: 1n, family: 4, addr: '10.244.1.3', port: 5353 });
  assert.equal([...v4.subarray(0, 16)], [10, 244, 1, 3, ...new Array<number>(12).fill(0)]);
  assert.is(C.sockterm.decode(v4).port, 5353);
  assert.is(C.sockterm.decode(v4).family, 4);
  const v6 = C.sockterm.decode(sockTermValue({ cookie: 1n, family: 6, addr: 'fd00:244:1::3', port: 5353 }));
  assert.is(v6.addr, 'fd00:244:1::3');
  assert.is(v6.family, 6);
});

test.run();
