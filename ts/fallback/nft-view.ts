/**
 * `weir services` in nftables mode: the frontends and endpoints read back
 * from table inet weir (`nft -j list table`), in the view the BPF mode
 * prints from its maps. A frontend is an element of service-ips (its
 * comment says its kind) or of no-endpoint-services; its endpoints are
 * the elements of the endpoint map its pick chain reads, in slot order, or
 * (ClientIP affinity) the DNAT targets of its endpoint chains. Backend ids
 * are assigned in order of appearance (nftables has none).
 */
import { BackendView, FrontendView, ServicesView } from '../datapath/dump';
import { IP, compareIP } from '../model/types';
import { CommandRunner, runCommand } from './command';

type Json = Record<string, unknown>;

interface Elem {
  key: unknown[];
  comment: string;
  value: unknown;
}

function elems(map: Json): Elem[] {
  const out: Elem[] = [];
  for (const e of (map.elem as unknown[][] | undefined) ?? []) {
    let k = e[0] as Json;
    let comment = '';
    if (k.elem) {
      const inner = k.elem as Json;
      comment = (inner.comment as string | undefined) ?? '';
      k = inner.val as Json;
    }
    out.push({ key: (k.concat as unknown[] | undefined) ?? [k], comment, value: e[1] });
  }
  return out;
}

const gotoTarget = (v: unknown): string | undefined => ((v as Json | null)?.goto as Json | undefined)?.target as string | undefined;

export function nftServices(run: CommandRunner = runCommand): ServicesView | null {
  const r = run(['nft', '-j', 'list', 'table', 'inet', 'weir']);
  if (r.code !== 0) return null;
  const objects = (JSON.parse(r.stdout) as { nftables: Json[] }).nftables;
  const maps = new Map<string, Elem[]>();
  const rules = new Map<string, Json[][]>();
  for (const o of objects) {
    if (o.map) {
      const m = o.map as Json;
      maps.set(m.name as string, elems(m));
    } else if (o.rule) {
      const rule = o.rule as Json;
      const chain = rule.chain as string;
      rules.set(chain, [...(rules.get(chain) ?? []), rule.expr as Json[]]);
    }
  }
  const backends = new Map<string, BackendView>();
  const beOf = (addr: string, port: number, proto: string): BackendView => {
    const k = `${addr}:${port}/${proto}`;
    let b = backends.get(k);
    if (!b) backends.set(k, (b = { id: backends.size + 1, addr, port, proto, flags: [] }));
    return b;
  };
  /** The endpoints a verdict leads to, for frontend key [addr, proto, port]. */
  const endpoints = (target: string | undefined, key: unknown[], proto: string, depth = 0): BackendView[] => {
    if (!target || depth > 3) return [];
    const pick = /^pick(6?)-(cluster|local)-\d+$/.exec(target);
    if (pick) {
      const found = (maps.get(`${pick[2]}-endpoints-${String(key[1])}${pick[1]}`) ?? []).filter((e) => e.key[0] === key[0] && e.key[1] === key[2]);
      found.sort((a, b) => Number(a.key[2]) - Number(b.key[2]));
      return found.map((e) => {
        const [addr, port] = ((e.value as Json).concat as [string, number] | undefined) ?? ['', 0];
        return beOf(addr, port, proto);
      });
    }
    const own = rules.get(target) ?? [];
    if (target.startsWith('external')) return endpoints(gotoTarget(own.at(-1)?.at(-1)), key, proto, depth + 1);
    // An affinity chain: its unconditional or numgen rules name the endpoint chains.
    const out: BackendView[] = [];
    for (const expr of own) {
      if (JSON.stringify(expr).includes('"@affinity')) continue;
      const ep = gotoTarget(expr.at(-1));
      const dnat = (rules.get(ep ?? '') ?? []).flatMap((e) => e.map((x) => x.dnat as Json | undefined)).find((d) => d);
      if (dnat) out.push(beOf(dnat.addr as string, dnat.port as number, proto));
    }
    return out;
  };
  const frontends: FrontendView[] = [];
  for (const sfx of ['', '6']) {
    for (const e of maps.get(`service-ips${sfx}`) ?? []) {
      const [addr, proto, port] = e.key as [string, string, number];
      const PROTO = proto.toUpperCase();
      const kind = /(cluster-ip|node-port|load-balancer|external-ip)/.exec(e.comment)?.[1] ?? 'cluster-ip';
      const affinity = Number(/affinity=(\d+)/.exec(e.comment)?.[1] ?? 0);
      frontends.push({ addr, port, proto: PROTO, scope: 'all', revNatId: 0, flags: [kind], affinityTimeout: affinity, backends: endpoints(gotoTarget(e.value), e.key, PROTO) });
    }
    for (const e of maps.get(`no-endpoint-services${sfx}`) ?? []) {
      const [addr, proto, port] = e.key as [string, string, number];
      // A frontend served to some clients (eTP=Local: pods and the node) is listed once, above.
      if (frontends.some((f) => f.addr === addr && f.port === port && f.proto === proto.toUpperCase())) continue;
      const drop = (e.value as Json | null)?.drop !== undefined;
      const kind = /(cluster-ip|node-port|load-balancer|external-ip)/.exec(e.comment)?.[1] ?? 'cluster-ip';
      frontends.push({ addr, port, proto: proto.toUpperCase(), scope: 'all', revNatId: 0, flags: drop ? [kind, 'drop-empty'] : [kind], affinityTimeout: 0, backends: [] });
    }
  }
  frontends.sort((a, b) => compareIP(a.addr as IP, b.addr as IP) || a.port - b.port || a.proto.localeCompare(b.proto));
  return { frontends, backends: [...backends.values()] };
}
