/**
 * The TypeScript codecs against the one source of truth: the BTF of the
 * compiled BPF object (struct names, member names, offsets, sizes; the
 * verdict enum) and the #defines of bpf/shared/weir.h. Any drift fails here.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as C from '../../ts/datapath/codecs';
import { VERDICTS, VERDICT_IPV6, VERDICT_SLOTS, verdictIndex, verdictName } from '../../ts/datapath/verdicts';
import { MAP_NAMES } from '../../ts/datapath/loader';
import { TEST_SRC } from './pipeline';

const ROOT = path.resolve(TEST_SRC, '..');
const OBJ = path.join(ROOT, 'build/bpf/tc.o');
const HEADER = fs.readFileSync(path.join(ROOT, 'bpf/shared/weir.h'), 'utf8');

interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: Array<{ name: string; type_id: number; bits_offset: number }>;
  values?: Array<{ name: string; val: number }>;
}

/** An object's BTF: its types, and each type's size by id. */
function btfOf(obj: string): { types: BtfType[]; sizeOf: (id: number) => number } {
  const types = (JSON.parse(execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', obj], { encoding: 'utf8' })) as { types: BtfType[] }).types;
  const byId = new Map(types.map((t) => [t.id, t]));
  const sizeOf = (id: number): number => {
    const t = byId.get(id)!;
    if (t.size !== undefined) return t.size;
    if (t.kind === 'ARRAY') return t.nr_elems! * sizeOf(t.type_id!); // __be32 addr[4]
    if (t.type_id !== undefined) return sizeOf(t.type_id); // typedef, const, volatile
    throw new Error(`no size for BTF type ${id} (${t.kind})`);
  };
  return { types, sizeOf };
}

// Structs of the maps both objects share are in tc.o's BTF; those only the socket programs use, in sock.o's.
for (const [obj, codecs] of [
  [OBJ, C.SHARED_STRUCTS],
  [path.join(ROOT, 'build/bpf/sock.o'), C.SOCK_STRUCTS],
] as const) {
  const { types, sizeOf } = btfOf(obj);
  for (const codec of codecs) {
    test(`${codec.cName} matches BTF`, () => {
      const t = types.find((x) => x.kind === 'STRUCT' && x.name === codec.cName);
      assert.ok(t, `struct ${codec.cName} in ${obj}`);
      assert.is(codec.size, t.size, 'struct size');
      assert.equal(
        codec.fields.map((f) => `${f.name}@${f.offset}:${f.size}`),
        t.members!.map((m) => `${m.name}@${m.bits_offset / 8}:${sizeOf(m.type_id)}`),
      );
    });
  }
}

test('verdict names follow enum weir_verdict in weir.h', () => {
  // The enum only types locals of inlined functions, so BTF does not carry
  // it; the header is the source of truth.
  const body = /enum weir_verdict \{([^}]*)\}/.exec(HEADER)![1]!;
  const names = [...body.matchAll(/^\s*(WEIR_V_\w+)/gm)].map((m) => m[1]!).filter((n) => n !== 'WEIR_V__MAX');
  assert.equal([...VERDICTS], names.map(verdictName));
});

test('IPv6 verdicts count at reason + WEIR_V_IPV6, named <reason>/ipv6, within the map', () => {
  assert.is(VERDICT_IPV6, Number(/#define WEIR_V_IPV6 (\d+)/.exec(HEADER)![1]));
  const max = Number(/#define WEIR_MAX_VERDICTS (\d+)/.exec(HEADER)![1]);
  assert.ok(VERDICTS.length <= VERDICT_IPV6 && 2 * VERDICT_IPV6 <= max, 'both families fit the pinned map');
  assert.is(VERDICT_SLOTS.length, 2 * VERDICTS.length);
  assert.equal(
    VERDICT_SLOTS.find((v) => v.name === 'forward/ipv6'),
    { name: 'forward/ipv6', reason: 'forward', family: 6, index: VERDICT_IPV6 },
  );
  assert.is(verdictIndex('reject_no_endpoints', 6), VERDICTS.indexOf('reject_no_endpoints') + VERDICT_IPV6);
  assert.is(new Set(VERDICT_SLOTS.map((v) => v.index)).size, VERDICT_SLOTS.length, 'no two names share a counter');
});

test('flag and scope constants match weir.h', () => {
  const define = (name: string): number => {
    const m = new RegExp(`#define ${name}\\s+\\(?\\s*(\\d+)(?:\\s*<<\\s*(\\d+))?\\s*\\)?`).exec(HEADER);
    if (!m) throw new Error(`#define ${name} not found`);
    return Number(m[1]) << Number(m[2] ?? 0);
  };
  for (const [k, v] of Object.entries(C.SVC_F)) assert.is(v, define(`WEIR_SVC_F_${k}`), k);
  for (const [k, v] of Object.entries(C.BE_F)) assert.is(v, define(`WEIR_BE_F_${k}`), k);
  for (const [k, v] of Object.entries(C.CT_F)) assert.is(v, define(`WEIR_CT_F_${k}`), k);
  for (const [k, v] of Object.entries(C.MEMBER_F)) assert.is(v, define(`WEIR_MEMBER_F_${k}`), k);
  for (const [k, v] of Object.entries(C.CFG_F)) assert.is(v, define(`WEIR_CFG_F_${k}`), k);
  for (const [k, v] of Object.entries(C.CFG6_F)) assert.is(v, define(`WEIR_CFG6_F_${k}`), k);
  assert.is(C.CT_DIR.FWD, define('WEIR_CT_FWD'));
  assert.is(C.CT_DIR.REV, define('WEIR_CT_REV'));
  assert.is(C.SCOPE_ALL, define('WEIR_SCOPE_ALL'));
  assert.is(C.SCOPE_LOCAL, define('WEIR_SCOPE_LOCAL'));
});

test('map names match weir.h and the object', () => {
  const btf = btfOf(OBJ).types;
  const maps = btf.find((x) => x.kind === 'DATASEC' && x.name === '.maps');
  assert.ok(maps, '.maps section');
  const vars = new Set(btf.filter((x) => x.kind === 'VAR').map((x) => x.name));
  for (const name of Object.values(MAP_NAMES)) {
    assert.ok(HEADER.includes(`"${name}"`), `${name} in weir.h`);
    assert.ok(vars.has(name), `${name} declared in the object`);
  }
});

test('encode/decode round trip', () => {
  const k = { addr: '10.96.0.10', port: 443, proto: 6, scope: 1, slot: 7, pad: 0 };
  const buf = C.svcKey.encode(k);
  assert.equal([...buf], [10, 96, 0, 10, 0x01, 0xbb, 6, 1, 7, 0, 0, 0]);
  assert.equal(C.svcKey.decode(buf), k);
  const v = { last_seen: 123456789012345n, backend_id: 9, rev_nat_id: 3, nat_addr: '169.254.42.1', nat_port: 40000, flags: 1 };
  assert.equal(C.ctVal.decode(C.ctVal.encode(v)), v);
});

test('IPv6 addresses: every text form in, RFC 5952 out, bad text named', () => {
  const k = { addr: 'fd00:10:96::a', port: 443, proto: 6, scope: 0, slot: 2, pad: 0 };
  const buf = C.svc6Key.encode(k);
  assert.equal([...buf.subarray(0, 16)], [0xfd, 0, 0, 0x10, 0, 0x96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a]);
  assert.equal([...buf.subarray(16)], [0x01, 0xbb, 6, 0, 2, 0, 0, 0]);
  assert.equal(C.svc6Key.decode(buf), k);
  const round = (ip: string): string => {
    const b = Buffer.alloc(16);
    C.writeIp6(b, 0, ip);
    return C.readIp6(b, 0);
  };
  assert.is(round('2001:0DB8:0000:0000:0001:0000:0000:0001'), '2001:db8::1:0:0:1', 'first longest zero run, lower case');
  assert.is(round('::'), '::');
  assert.is(round('::1'), '::1');
  assert.is(round('fe80::'), 'fe80::');
  assert.is(round('2001:db8:0:1:1:1:1:1'), '2001:db8:0:1:1:1:1:1', 'a single zero group stays');
  assert.is(round('::ffff:10.96.0.10'), '::ffff:a60:a', 'a trailing dotted quad');
  for (const bad of ['1::2::3', '1:2:3', 'fd00::g', '1:2:3:4:5:6:7:8:9', '::ffff:300.1.1.1', '10.96.0.10']) {
    assert.throws(
      () => C.writeIp6(Buffer.alloc(16), 0, bad),
      (e: Error) => e.message.includes(JSON.stringify(bad)),
      bad,
    );
  }
  const v = { last_seen: 5n, backend_id: 9, rev_nat_id: 3, nat_addr: 'fd00::1', nat_port: 61000, flags: 1, pad: 0 };
  assert.equal(C.ct6Val.decode(C.ct6Val.encode(v)), v);
});

test.run();
