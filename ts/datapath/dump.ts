/**
 * Readable views of the service maps. The same function prints
 * `weir services` from pinned maps and the golden files of the plan tests
 * from the in-memory twin, so what a test pins down is what an operator sees.
 */
import * as C from './codecs';
import { MapIO, keyBuffer } from './maps';
import { IP, compareIP } from '../model/types';
import { protoName } from '../reconcile/reconciler';

export interface BackendView {
  id: number;
  addr: string;
  port: number;
  proto: string;
  flags: string[];
}

export interface FrontendView {
  addr: string;
  port: number;
  proto: string;
  scope: 'all' | 'local';
  revNatId: number;
  flags: string[];
  affinityTimeout: number;
  /** Backends in slot order (slot = index + 1); null where a slot is missing. */
  backends: Array<BackendView | null>;
}

export interface ServicesView {
  frontends: FrontendView[];
  backends: BackendView[];
}

const SVC_FLAG_NAMES: Array<[number, string]> = [
  [C.SVC_F.CLUSTER_IP, 'cluster-ip'],
  [C.SVC_F.NODE_PORT, 'node-port'],
  [C.SVC_F.EXTERNAL_IP, 'external-ip'],
  [C.SVC_F.LOAD_BALANCER, 'load-balancer'],
  [C.SVC_F.AFFINITY, 'affinity'],
  [C.SVC_F.ETP_LOCAL, 'etp-local'],
  [C.SVC_F.ITP_LOCAL, 'itp-local'],
  [C.SVC_F.SRC_RANGES, 'source-ranges'],
  [C.SVC_F.DROP_EMPTY, 'drop-empty'],
  [C.SVC_F.TOPO_ZONE, 'topology-zone'],
  [C.SVC_F.TOPO_NODE, 'topology-node'],
];
const BE_FLAG_NAMES: Array<[number, string]> = [
  [C.BE_F.LOCAL, 'local'],
  [C.BE_F.TERMINATING, 'terminating'],
];

function names(flags: number, table: Array<[number, string]>): string[] {
  return table.filter(([bit]) => flags & bit).map(([, n]) => n);
}

/** One family's service and backend maps, and the codecs of its keys and backends. */
interface FamilyMaps {
  svc: MapIO;
  be: MapIO;
  svcKey: typeof C.svcKey | typeof C.svc6Key;
  backend: typeof C.backend | typeof C.backend6;
}

/** Both families' frontends and backends (the IPv6 twins when given: docs/ipv6.md). */
export function readServices(maps: { svc: MapIO; be: MapIO; svc6?: MapIO; be6?: MapIO }): ServicesView {
  const families: FamilyMaps[] = [{ svc: maps.svc, be: maps.be, svcKey: C.svcKey, backend: C.backend }];
  if (maps.svc6 && maps.be6) families.push({ svc: maps.svc6, be: maps.be6, svcKey: C.svc6Key, backend: C.backend6 });
  const backends = new Map<number, BackendView>();
  const frontends: FrontendView[] = [];
  for (const fam of families) {
    for (const [k, v] of fam.be.dump()) {
      const id = C.u32Key.decode(keyBuffer(k)).value;
      const b = fam.backend.decode(v);
      backends.set(id, { id, addr: b.addr, port: b.port, proto: protoName(b.proto), flags: names(b.flags, BE_FLAG_NAMES) });
    }
  }
  for (const fam of families) {
    const entries = fam.svc.dump().map(([k, v]) => ({ key: fam.svcKey.decode(keyBuffer(k)), val: C.svcVal.decode(v) }));
    const slots = new Map<string, number>();
    const feId = (k: { addr: string; port: number; proto: number; scope: number }): string => `${k.addr}|${k.port}|${k.proto}|${k.scope}`;
    for (const e of entries) if (e.key.slot > 0) slots.set(`${feId(e.key)}|${e.key.slot}`, e.val.backend_id);
    for (const { key, val } of entries) {
      if (key.slot !== 0) continue;
      const list: Array<BackendView | null> = [];
      for (let s = 1; s <= val.count; s++) {
        const id = slots.get(`${feId(key)}|${s}`);
        list.push(id === undefined ? null : (backends.get(id) ?? { id, addr: '?', port: 0, proto: '?', flags: ['missing'] }));
      }
      frontends.push({
        addr: key.addr,
        port: key.port,
        proto: protoName(key.proto),
        scope: key.scope === C.SCOPE_LOCAL ? 'local' : 'all',
        revNatId: val.rev_nat_id,
        flags: names(val.flags, SVC_FLAG_NAMES),
        affinityTimeout: val.affinity_timeout,
        backends: list,
      });
    }
  }
  frontends.sort((a, b) => compareIP(a.addr as IP, b.addr as IP) || a.port - b.port || a.proto.localeCompare(b.proto) || a.scope.localeCompare(b.scope));
  return { frontends, backends: [...backends.values()].sort((a, b) => a.id - b.id) };
}

/** addr:port, with an IPv6 address in brackets (as the CLI prints and takes endpoints). */
export function hostPort(addr: string, port: number): string {
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

function beText(b: BackendView): string {
  return `${hostPort(b.addr, b.port)}/${b.proto}${b.flags.length ? ` (${b.flags.join(',')})` : ''}`;
}

/** The first line of `weir services`: what its less obvious words mean. */
export const SERVICES_LEGEND =
  '# scope=local: what outside clients get under externalTrafficPolicy Local, scope=all: every other client; ' +
  'frontend=N: its id, as weir ct names it; #N: the backends a new connection picks among';

/**
 * Sorted text, one frontend per block, under SERVICES_LEGEND; then every
 * backend by its id (the id a frontend's #N lines and weir ct name).
 * Stable: golden files compare it byte for byte.
 */
export function formatServices(view: ServicesView): string {
  const lines: string[] = [SERVICES_LEGEND];
  for (const f of view.frontends) {
    const aff = f.affinityTimeout ? ` affinity=${f.affinityTimeout}s` : '';
    const empty = f.flags.includes('drop-empty') ? 'no local endpoints: drop' : 'no endpoints: reject';
    const count = f.backends.length === 0 ? empty : `${f.backends.length} backend${f.backends.length === 1 ? '' : 's'}`;
    // Id 0 is no id: iptables mode's view, read back from its chains.
    const id = f.revNatId ? ` frontend=${f.revNatId}` : '';
    lines.push(`${hostPort(f.addr, f.port)}/${f.proto} scope=${f.scope}${id} [${f.flags.join(',')}]${aff} ${count}`);
    f.backends.forEach((b, i) => lines.push(`  #${i + 1} ${b ? `backend ${b.id} ${beText(b)}` : '(missing)'}`));
  }
  lines.push('backends:');
  for (const b of view.backends) lines.push(`  backend ${b.id} ${beText(b)}`);
  return lines.join('\n') + '\n';
}
