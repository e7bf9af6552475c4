/**
 * nftables mode: the service plans rendered as one nftables table, `inet
 * weir`, with kube-proxy's nftables-mode semantics (dispatch through verdict
 * maps, no-endpoint and firewall maps, mark-for-masquerade/masquerading).
 * Pure: plans in, `nft -f` text out (golden-tested); ./nftables.ts applies
 * it incrementally. docs/nftables.md has the layout and why.
 *
 * Where kube-proxy writes a chain per endpoint, weir uses maps:
 *  - the endpoint is chosen by shared rules per (family, policy, count N)
 *    in a `pick-…-N` chain: `dnat to <frontend> . numgen random mod N map
 *    @cluster-endpoints-tcp`, the map holding (frontend, slot) -> endpoint. An
 *    endpoint change is then a map element change, which the kernel applies
 *    without re-validating the table (a rule or goto change re-validates
 *    every rule reachable from the base chains);
 *  - hairpin (a pod reaching itself) is one set of (endpoint . endpoint)
 *    pairs matched after DNAT in `masquerading`;
 *  - off-cluster and --masquerade-all masquerading of ClusterIP traffic is
 *    one rule on the `cluster-ips` set.
 * Only ClientIP session affinity keeps kube-proxy's per-endpoint chains and
 * sets: the affinity set must be updated with the endpoint chosen.
 *
 * Both families live in the one inet table; each map has an IPv6 twin named
 * with a `6` (`service-ips6`), as each family's addresses are typed.
 */
import type * as Crypto from 'node:crypto';
import { Cidr, Family, cidrFamily, ipFamily } from '../model/types';
import { SVC_F } from '../datapath/codecs';
import { PlannedFrontend, ServicePlan, familyPlan } from '../plan/plan';
import type { LocalDetector } from '../runner/local-detector';
import { byServicePort, portFrontends } from './frontends';
import { MASQ_MARK } from './render';

export const NFT_TABLE = 'weir';
/** `inet weir`: the prefix of every command. */
export const T = `inet ${NFT_TABLE}`;

export interface NftContext {
  /** Either family: each family's rules take their own. */
  readonly clusterCIDRs: readonly Cidr[];
  readonly masqueradeAll: boolean;
  /** kube-proxy's detectLocalMode; absent: source in the cluster CIDRs. */
  readonly localTraffic?: LocalDetector;
}

type Policy = 'cluster' | 'local';

/** One service's part of the table (both families). */
export interface NftService {
  /** chain -> rules, this service's own chains. */
  readonly chains: Map<string, string[]>;
  /** affinity set -> its declaration body. */
  readonly sets: Map<string, string>;
  /** map or set -> key -> what follows the key in `add element`: ` : value`, with a comment first where there is one ('' for a set element). */
  readonly elements: Map<string, Map<string, string>>;
  /** `pick-…` chains its elements or chains go to. */
  readonly picks: Set<string>;
}

const fam = (f: Family): { ip: string; addr: string; sfx: string } => (f === 4 ? { ip: 'ip', addr: 'ipv4_addr', sfx: '' } : { ip: 'ip6', addr: 'ipv6_addr', sfx: '6' });

/** An endpoint as dnat writes it: 10.0.0.1:80, [fd00::1]:80. */
const hostPort = (a: string, p: number): string => (a.includes(':') ? `[${a}]:${p}` : `${a}:${p}`);

/**
 * The local-traffic match of one family, as nft text ("ip saddr { … }",
 * `iifname "veth*"`), positive or negated; null: no detector for it.
 */
export function localMatch(ctx: NftContext, family: Family, negate: boolean): string | null {
  const d: LocalDetector = ctx.localTraffic ?? (ctx.clusterCIDRs.length ? { kind: 'cidrs', cidrs: ctx.clusterCIDRs } : { kind: 'none' });
  const op = negate ? '!= ' : '';
  if (d.kind === 'cidrs') {
    const own = d.cidrs.filter((c) => cidrFamily(c) === family);
    if (own.length === 0) return null;
    return `${fam(family).ip} saddr ${op}{ ${own.map((c) => c.text).join(', ')} }`;
  }
  if (d.kind === 'devices') return `iifname ${op}"${d.prefix ? `${d.prefix}*` : d.bridge}"`;
  return null;
}

// node:crypto is loaded on first use: a BPF-mode agent's start-up never needs it.
let crypto: typeof Crypto | null = null;

/** kube-proxy's chain name base: 8 base32 characters of a hash, then the readable name (nft allows [A-Za-z0-9_./-]). */
export function nameBase(name: string): string {
  crypto ??= require('node:crypto') as typeof Crypto;
  const hash = crypto
    .createHash('sha256')
    .update(name)
    .digest('base64')
    .replace(/[^A-Za-z0-9]/g, '')
    .slice(0, 8)
    .toUpperCase();
  const base = `${hash}-${name}`;
  return base.length > 200 ? base.slice(0, 197) + '...' : base;
}

/** The shared chain choosing one of N endpoints of a frontend from `<policy>-endpoints`. */
export function pickChainName(family: Family, policy: Policy, n: number): string {
  return `pick${fam(family).sfx}-${policy}-${n}`;
}

const PROTOS = ['tcp', 'udp', 'sctp'] as const;

/**
 * `add chain` and its rules, for a pick chain name: one per protocol, each
 * reading that protocol's endpoint map. (One map keyed by `meta l4proto .
 * th dport` would do, but nft 1.0 cannot add a rule using such a map once
 * the map comes from the kernel: it reads the key's `th` back as conflicting
 * with the rule's protocol.)
 */
export function pickChainLines(name: string): string[] {
  const m = /^pick(6?)-(cluster|local)-(\d+)$/.exec(name)!;
  const f = fam(m[1] ? 6 : 4);
  return [
    `add chain ${T} ${name}`,
    ...PROTOS.map((p) => `add rule ${T} ${name} meta l4proto ${p} dnat ${f.ip} to ${f.ip} daddr . ${p} dport . numgen random mod ${m[3]} map @${m[2]}-endpoints-${p}${f.sfx}`),
  ];
}

/** The table's fixed part: base chains, top-level chains, maps and sets, and their rules (no `add table`). */
export function skeleton(ctx: NftContext): string[] {
  const out: string[] = [];
  const base: Array<[string, string, string, number, string]> = [
    // Filtering sees the destination before DNAT (firewall), except the
    // no-endpoint check of node processes, which runs after nat-output so
    // that their eTP=Local short-circuit is translated first (kube-proxy's
    // filter-output-post-dnat).
    ['filter-prerouting', 'filter', 'prerouting', -110, 'ct state new jump firewall-check'],
    ['filter-input', 'filter', 'input', -110, 'ct state new jump endpoints-check'],
    ['filter-forward', 'filter', 'forward', -110, 'ct state new jump endpoints-check'],
    ['filter-output', 'filter', 'output', -110, 'ct state new jump firewall-check'],
    ['filter-output-post-dnat', 'filter', 'output', -90, 'ct state new jump endpoints-check'],
    ['nat-prerouting', 'nat', 'prerouting', -100, 'jump services'],
    ['nat-output', 'nat', 'output', -100, 'jump services'],
    ['nat-postrouting', 'nat', 'postrouting', 100, 'jump masquerading'],
  ];
  for (const name of ['services', 'masquerading', 'mark-for-masquerade', 'reject-chain', 'endpoints-check', 'firewall-check']) out.push(`add chain ${T} ${name}`);
  for (const family of [4, 6] as const) {
    const { addr, ip, sfx } = fam(family);
    const frontend = `${addr} . inet_proto . inet_service`;
    out.push(
      `add map ${T} service-ips${sfx} { type ${frontend} : verdict; comment "ClusterIP, ExternalIP, LoadBalancer IP and NodePort traffic"; }`,
      `add map ${T} no-endpoint-services${sfx} { type ${frontend} : verdict; comment "drop or reject traffic to frontends without endpoints"; }`,
      `add map ${T} firewall-ips${sfx} { type ${frontend} : verdict; comment "frontends subject to loadBalancerSourceRanges"; }`,
      `add set ${T} cluster-ips${sfx} { type ${frontend}; comment "ClusterIP frontends with endpoints"; }`,
      `add set ${T} hairpin${sfx} { type ${addr} . ${addr}; comment "endpoint . endpoint: a pod reaching itself through a service"; }`,
    );
    for (const policy of ['cluster', 'local']) {
      for (const p of PROTOS) {
        out.push(`add map ${T} ${policy}-endpoints-${p}${sfx} { typeof ${ip} daddr . ${p} dport . numgen random mod 1 : ${ip} daddr . ${p} dport; comment "frontend . slot -> endpoint"; }`);
      }
    }
  }
  for (const [name, type, hook, prio] of base) out.push(`add chain ${T} ${name} { type ${type} hook ${hook} priority ${prio}; }`);
  for (const [name, , , , rule] of base) out.push(`add rule ${T} ${name} ${rule}`);
  out.push(`add rule ${T} mark-for-masquerade meta mark set meta mark | ${MASQ_MARK}`);
  for (const family of [4, 6] as const) {
    const { ip, sfx } = fam(family);
    out.push(`add rule ${T} masquerading ct status dnat ${ip} saddr . ${ip} daddr @hairpin${sfx} masquerade fully-random`);
  }
  out.push(
    `add rule ${T} masquerading meta mark & ${MASQ_MARK} == 0 return`,
    `add rule ${T} masquerading meta mark set meta mark ^ ${MASQ_MARK}`,
    `add rule ${T} masquerading masquerade fully-random`,
  );
  // kube-proxy rejects with ICMP port unreachable; a TCP client takes an
  // ICMPv6 one as a soft error and retries for about a second, so TCP gets
  // a reset instead: refused at once in both families.
  out.push(`add rule ${T} reject-chain meta l4proto tcp reject with tcp reset`, `add rule ${T} reject-chain reject`);
  for (const family of [4, 6] as const) {
    const { ip, sfx } = fam(family);
    const key = `${ip} daddr . meta l4proto . th dport`;
    // Off-cluster traffic to a ClusterIP is masqueraded (its reply must come back through this node); --masquerade-all: all of it.
    const notLocal = localMatch(ctx, family, true);
    if (ctx.masqueradeAll) out.push(`add rule ${T} services ${key} @cluster-ips${sfx} jump mark-for-masquerade`);
    else if (notLocal) out.push(`add rule ${T} services ${key} @cluster-ips${sfx} ${notLocal} jump mark-for-masquerade`);
    out.push(`add rule ${T} services ${key} vmap @service-ips${sfx}`);
    out.push(`add rule ${T} endpoints-check ${key} vmap @no-endpoint-services${sfx}`);
    out.push(`add rule ${T} firewall-check ${key} vmap @firewall-ips${sfx}`);
  }
  return out;
}

function element(out: NftService, set: string, key: string, value = '', comment = ''): void {
  let m = out.elements.get(set);
  if (!m) out.elements.set(set, (m = new Map<string, string>()));
  m.set(key, `${comment ? ` comment "${comment}"` : ''}${value ? ` : ${value}` : ''}`);
}

/** What a frontend is, as `weir services` shows it (the comment of its dispatch element). */
function kindOf(f: PlannedFrontend): string {
  return f.flags & SVC_F.NODE_PORT ? 'node-port' : f.flags & SVC_F.LOAD_BALANCER ? 'load-balancer' : f.flags & SVC_F.EXTERNAL_IP ? 'external-ip' : 'cluster-ip';
}

/** A frontend as a map key: `10.96.0.1 . tcp . 80`. */
const feKey = (f: PlannedFrontend): string => `${f.addr} . ${f.proto.toLowerCase()} . ${f.port}`;

export function renderNftService(plan: ServicePlan, ctx: NftContext): NftService {
  const out: NftService = { chains: new Map(), sets: new Map(), elements: new Map(), picks: new Set() };
  for (const family of [4, 6] as const) {
    if (!plan.frontends.some((f) => ipFamily(f.addr) === family)) continue;
    renderFamily(familyPlan(plan, family), family, ctx, out);
  }
  return out;
}

function renderFamily(plan: ServicePlan, family: Family, ctx: NftContext, out: NftService): void {
  const { ip, addr, sfx } = fam(family);
  const [ns, name] = plan.service.split('/');
  for (const [sp, fes] of byServicePort(plan)) {
    const [portName, PROTO] = sp.split('/');
    const proto = PROTO!.toLowerCase();
    const base = nameBase(`${ns}/${name}/${proto}/${portName}`);
    const affinity = fes[0]!.affinityTimeout;
    const { clusterIPs, external, itpLocal, etpLocal, clusterFe, local } = portFrontends(fes);
    const sets: Record<Policy, readonly number[]> = { cluster: clusterFe?.backends ?? [], local };
    const hasEndpoints = fes.some((f) => f.backends.length > 0 || f.flags & SVC_F.DROP_EMPTY);
    const endpointId = (i: number): string => {
      const b = plan.backends[i]!;
      return nameBase(`${ns}/${name}/${proto}/${portName}__${b.addr.replaceAll(':', '.')}/${b.port}`);
    };
    for (const i of new Set([...sets.cluster, ...sets.local])) {
      const a = plan.backends[i]!.addr;
      element(out, `hairpin${sfx}`, `${a} . ${a}`);
    }

    /** Where a frontend's traffic under a policy goes (a verdict), adding what that needs; null: no endpoints. */
    const target = (f: PlannedFrontend, policy: Policy): string | null => {
      const eps = sets[policy];
      if (eps.length === 0) return null;
      if (affinity > 0) return `goto ${affinityChain(policy)}`;
      const pick = pickChainName(family, policy, eps.length);
      out.picks.add(pick);
      eps.forEach((i, slot) => {
        const b = plan.backends[i]!;
        element(out, `${policy}-endpoints-${proto}${sfx}`, `${f.addr} . ${f.port} . ${slot}`, `${b.addr} . ${b.port}`);
      });
      return `goto ${pick}`;
    };
    /** ClientIP affinity: kube-proxy's per-endpoint sets and chains, for one policy's endpoints. */
    const affinityChain = (policy: Policy): string => {
      const chain = `${policy === 'cluster' ? 'service' : 'local'}${sfx}-${base}`;
      if (out.chains.has(chain)) return chain;
      const eps = sets[policy];
      const rules: string[] = [];
      for (const i of eps) rules.push(`${ip} saddr @affinity${sfx}-${endpointId(i)} goto endpoint${sfx}-${endpointId(i)}`);
      // Uniform choice by cascade: rule k takes 1/(n-k) of what reaches it.
      eps.forEach((i, k) => rules.push(`${k < eps.length - 1 ? `numgen random mod ${eps.length - k} == 0 ` : ''}goto endpoint${sfx}-${endpointId(i)}`));
      out.chains.set(chain, rules);
      for (const i of eps) {
        const id = endpointId(i);
        const b = plan.backends[i]!;
        out.sets.set(`affinity${sfx}-${id}`, `type ${addr}; flags dynamic,timeout; timeout ${affinity}s;`);
        out.chains.set(`endpoint${sfx}-${id}`, [`update @affinity${sfx}-${id} { ${ip} saddr }`, `meta l4proto ${proto} dnat ${ip} to ${hostPort(b.addr, b.port)}`]);
      }
      return chain;
    };

    for (const f of clusterIPs) {
      const to = f.backends.length > 0 ? target(f, itpLocal ? 'local' : 'cluster') : null;
      if (to === null) {
        // kube-proxy: no endpoints at all -> reject; endpoints, none usable here (iTP=Local) -> drop.
        element(out, `no-endpoint-services${sfx}`, feKey(f), hasEndpoints ? 'drop' : 'goto reject-chain', `${plan.service}:${portName} ${kindOf(f)}`);
        continue;
      }
      element(out, `service-ips${sfx}`, feKey(f), to, `${plan.service}:${portName} ${kindOf(f)}${affinity ? ` affinity=${affinity}` : ''}`);
      element(out, `cluster-ips${sfx}`, feKey(f));
    }

    const scope0 = external.filter((f) => f.scope === 0);
    if (scope0.length === 0) continue;
    if (!hasEndpoints) {
      for (const f of scope0) element(out, `no-endpoint-services${sfx}`, feKey(f), 'goto reject-chain', `${plan.service}:${portName} ${kindOf(f)}`);
      continue;
    }
    const ext = `external${sfx}-${base}`;
    const rules: string[] = [];
    // Each frontend's own elements: the pick chains key on the destination.
    let toCluster: string | null = null;
    let toLocal: string | null = null;
    const shortCircuit: Policy = sets.cluster.length ? 'cluster' : 'local';
    for (const f of scope0) {
      if (!etpLocal || shortCircuit === 'cluster') toCluster = target(f, 'cluster') ?? toCluster;
      if (etpLocal) toLocal = target(f, 'local') ?? toLocal;
      element(out, `service-ips${sfx}`, feKey(f), `goto ${ext}`, `${plan.service}:${portName} ${kindOf(f)}${affinity ? ` affinity=${affinity}` : ''}`);
      if (etpLocal && sets.local.length === 0) element(out, `no-endpoint-services${sfx}`, feKey(f), 'drop', `${plan.service}:${portName} ${kindOf(f)}`);
      if (f.sourceRanges.length > 0) {
        const fw = `firewall${sfx}-${base}`;
        out.chains.set(fw, [`${ip} saddr != { ${f.sourceRanges.map((c) => c.text).join(', ')} } drop`]);
        element(out, `firewall-ips${sfx}`, feKey(f), `goto ${fw}`);
      }
    }
    if (!etpLocal) {
      // Endpoints may be on other nodes: masquerade, so replies come back through this node.
      rules.push('jump mark-for-masquerade');
      if (toCluster) rules.push(toCluster);
    } else {
      // eTP=Local keeps the client's address, except for pods and the node
      // itself, which reach every endpoint (kube-proxy's short-circuit).
      const sc = shortCircuit === 'cluster' ? toCluster : toLocal;
      const pods = localMatch(ctx, family, false);
      if (pods && sc) rules.push(`${pods} ${sc}`);
      rules.push('fib saddr type local jump mark-for-masquerade');
      if (sc) rules.push(`fib saddr type local ${sc}`);
      if (toLocal) rules.push(toLocal);
    }
    out.chains.set(ext, rules);
  }
}

/** Commands adding a whole service (for a full sync and the golden dump). */
export function serviceLines(s: NftService): string[] {
  const out: string[] = [];
  for (const [set, decl] of s.sets) out.push(`add set ${T} ${set} { ${decl} }`);
  for (const c of s.chains.keys()) out.push(`add chain ${T} ${c}`);
  for (const [c, rules] of s.chains) for (const r of rules) out.push(`add rule ${T} ${c} ${r}`);
  for (const [set, els] of s.elements) for (const [k, tail] of els) out.push(`add element ${T} ${set} { ${k}${tail} }`);
  return out;
}

/**
 * The whole table from scratch, in one transaction: the old table (if any)
 * is removed in the same transaction, so traffic sees either all of the old
 * rules or all of the new. Pick chains come before the endpoint elements:
 * the kernel checks each element against every rule bound to its map.
 */
export function fullScript(services: Iterable<NftService>, ctx: NftContext): string {
  const list = [...services];
  const picks = new Set<string>();
  for (const s of list) for (const p of s.picks) picks.add(p);
  const lines = [`add table ${T} { comment "weir service rules"; }`, `delete table ${T}`, `add table ${T} { comment "weir service rules"; }`, ...skeleton(ctx)];
  for (const p of [...picks].sort(comparePick)) lines.push(...pickChainLines(p));
  for (const s of list) lines.push(...serviceLines(s));
  return lines.join('\n') + '\n';
}

/** pick-cluster-2 before pick-cluster-10. */
export function comparePick(a: string, b: string): number {
  const na = Number(/(\d+)$/.exec(a)![1]);
  const nb = Number(/(\d+)$/.exec(b)![1]);
  const pa = a.slice(0, a.lastIndexOf('-'));
  const pb = b.slice(0, b.lastIndexOf('-'));
  return pa < pb ? -1 : pa > pb ? 1 : na - nb;
}

/** Every service's part, sorted by service (what the golden test prints). */
export function renderAllNft(plans: readonly ServicePlan[], ctx: NftContext): string {
  const sorted = [...plans].sort((a, b) => a.service.localeCompare(b.service));
  return fullScript(
    sorted.map((p) => renderNftService(p, ctx)),
    ctx,
  );
}
