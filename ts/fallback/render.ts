/**
 * The iptables fallback: the same service plans rendered as iptables rules in
 * kube-proxy's structure, under weir's own prefix so it never collides with
 * kube-proxy and can be removed cleanly. Pure: plans in, iptables-restore
 * text out (golden-tested).
 *
 * nat table
 *   PREROUTING, OUTPUT  -> WEIR-SERVICES
 *   POSTROUTING         -> WEIR-POSTROUTING (MASQUERADE what WEIR-MARK-MASQ marked)
 *   WEIR-SERVICES       per frontend: ClusterIP -> WEIR-SVC-x (or WEIR-SVL-x with
 *                       internalTrafficPolicy Local), externalIP / LB IP -> WEIR-EXT-x,
 *                       last: LOCAL destinations -> WEIR-NODEPORTS
 *   WEIR-EXT-x          eTP Cluster: mark masquerade, -> WEIR-SVC-x;
 *                       eTP Local: pods -> WEIR-SVC-x, node-local sources masquerade -> WEIR-SVC-x,
 *                       others -> WEIR-SVL-x (local endpoints, client IP kept)
 *   WEIR-SVC-x/SVL-x    `recent --rcheck` per endpoint (ClientIP affinity), then
 *                       `statistic --mode random --probability 1/(n-i)`, last unconditional
 *   WEIR-SEP-y          hairpin masquerade, `recent --set`, DNAT
 * filter table
 *   INPUT, FORWARD, OUTPUT -> WEIR-SERVICES (REJECT: no endpoints; DROP: Local without local ones),
 *                             WEIR-PROXY-FIREWALL (loadBalancerSourceRanges), WEIR-FORWARD (drop mark)
 *
 * IPv6 is the same structure in ip6tables (as kube-proxy runs one proxier
 * per family): each family's half of the plans (familyPlan) is rendered with
 * that family's host masks, cluster CIDRs and `recent` mask; endpoints are
 * written [addr]:port, and REJECT answers ICMPv6 port unreachable.
 */
import type * as Crypto from 'node:crypto';
import { Cidr, Family, cidrFamily } from '../model/types';
import { SVC_F } from '../datapath/codecs';
import { ServicePlan, backendKey, familyPlan } from '../plan/plan';
import { byServicePort, portFrontends } from './frontends';

export const PREFIX = 'WEIR-';
export const MASQ_MARK = '0x40000';
export const DROP_MARK = '0x80000';

/** Jumps from the built-in chains (kept outside iptables-restore so --noflush leaves others alone). */
export const HOOKS: ReadonlyArray<{ table: 'nat' | 'filter'; chain: string; rule: string }> = [
  { table: 'nat', chain: 'PREROUTING', rule: '-m comment --comment "weir service portals" -j WEIR-SERVICES' },
  { table: 'nat', chain: 'OUTPUT', rule: '-m comment --comment "weir service portals" -j WEIR-SERVICES' },
  { table: 'nat', chain: 'POSTROUTING', rule: '-m comment --comment "weir postrouting rules" -j WEIR-POSTROUTING' },
  { table: 'filter', chain: 'INPUT', rule: '-m conntrack --ctstate NEW -m comment --comment "weir service portals" -j WEIR-SERVICES' },
  { table: 'filter', chain: 'FORWARD', rule: '-m conntrack --ctstate NEW -m comment --comment "weir service portals" -j WEIR-SERVICES' },
  { table: 'filter', chain: 'OUTPUT', rule: '-m conntrack --ctstate NEW -m comment --comment "weir service portals" -j WEIR-SERVICES' },
  { table: 'filter', chain: 'INPUT', rule: '-m conntrack --ctstate NEW -m comment --comment "weir load balancer firewall" -j WEIR-PROXY-FIREWALL' },
  { table: 'filter', chain: 'FORWARD', rule: '-m conntrack --ctstate NEW -m comment --comment "weir load balancer firewall" -j WEIR-PROXY-FIREWALL' },
  { table: 'filter', chain: 'OUTPUT', rule: '-m conntrack --ctstate NEW -m comment --comment "weir load balancer firewall" -j WEIR-PROXY-FIREWALL' },
  { table: 'filter', chain: 'FORWARD', rule: '-m comment --comment "weir forwarding rules" -j WEIR-FORWARD' },
  { table: 'filter', chain: 'INPUT', rule: '-m comment --comment "weir forwarding rules" -j WEIR-FORWARD' },
];

export interface RenderContext {
  /** Either family: each family's rules take their own. */
  readonly clusterCIDRs: readonly Cidr[];
  readonly masqueradeAll: boolean;
  /**
   * The local-traffic detector as iptables matches (`-s CIDR`, `-i PREFIX+`,
   * `-i BRIDGE`: kube-proxy's detectLocalMode); absent: `-s` each cluster CIDR.
   */
  readonly localTraffic?: readonly string[];
  /** The family rendered (default 4): iptables-restore text for 4, ip6tables-restore text for 6; each plan's half of this family is rendered. */
  readonly family?: Family;
}

/** What differs between the iptables and ip6tables text of the same rules. */
interface FamilyText {
  /** A single address as a match: 10.0.0.1/32, fd00::1/128. */
  readonly host: (addr: string) => string;
  /** An endpoint as DNAT writes it: 10.0.0.1:80, [fd00::1]:80. */
  readonly hostPort: (addr: string, port: number) => string;
  /** `recent`'s whole-address mask. */
  readonly mask: string;
  /** REJECT as kube-proxy's: ICMP port unreachable (iptables' default; said outright for ip6tables). */
  readonly reject: string;
  readonly clusterCIDRs: readonly Cidr[];
}

const V4_TEXT = { host: (a: string) => `${a}/32`, hostPort: (a: string, p: number) => `${a}:${p}`, mask: '255.255.255.255', reject: 'REJECT' };
const V6_TEXT = {
  host: (a: string) => `${a}/128`,
  hostPort: (a: string, p: number) => `[${a}]:${p}`,
  mask: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
  reject: 'REJECT --reject-with icmp6-port-unreachable',
};

function familyText(ctx: RenderContext): FamilyText {
  const family = ctx.family ?? 4;
  const own = ctx.clusterCIDRs.every((c) => cidrFamily(c) === family) ? ctx.clusterCIDRs : ctx.clusterCIDRs.filter((c) => cidrFamily(c) === family);
  return { ...(family === 4 ? V4_TEXT : V6_TEXT), clusterCIDRs: own };
}

/**
 * The matches that select traffic from this node's pods, in the family
 * rendered (empty: no detector): a device match holds for both families,
 * a source match only in its own.
 */
function localMatches(ctx: RenderContext, fam: FamilyText): readonly string[] {
  if (!ctx.localTraffic) return fam.clusterCIDRs.map((c) => `-s ${c.text}`);
  const v6 = (ctx.family ?? 4) === 6;
  return ctx.localTraffic.filter((m) => !m.startsWith('-s ') || m.includes(':') === v6);
}

/** One service's rules: its own chains, and its lines in the shared chains. */
export interface ServiceRules {
  readonly service: string;
  /** chain -> rules, nat table (WEIR-SVC/SVL/EXT/SEP of this service). */
  readonly natChains: Map<string, string[]>;
  /** chain -> rules, filter table (WEIR-FW of this service). */
  readonly filterChains: Map<string, string[]>;
  /** lines for WEIR-SERVICES / WEIR-NODEPORTS (nat) and WEIR-SERVICES / WEIR-PROXY-FIREWALL (filter). */
  readonly natServices: string[];
  readonly natNodePorts: string[];
  readonly filterServices: string[];
  readonly filterFirewall: string[];
}

// node:crypto is loaded on first use: a BPF-mode agent's start-up never needs it.
let crypto: typeof Crypto | null = null;

/** A chain name: prefix + 16 hex of a hash, within iptables' 28 characters. */
export function chainName(kind: 'SVC' | 'SVL' | 'EXT' | 'SEP' | 'FW', id: string): string {
  crypto ??= require('node:crypto') as typeof Crypto;
  return `${PREFIX}${kind}-${crypto.createHash('sha256').update(id).digest('hex').slice(0, 16).toUpperCase()}`;
}

const proto = (p: string): string => p.toLowerCase();
const comment = (text: string): string => `-m comment --comment "${text}"`;

function endpointRules(eps: readonly string[], sep: (bk: string) => string, affinity: number, name: string, mask: string): string[] {
  const rules: string[] = [];
  if (affinity > 0) {
    for (const bk of eps) rules.push(`${comment(`${name} -> ${bk}`)} -m recent --name ${sep(bk)} --mask ${mask} --rsource --rcheck --seconds ${affinity} --reap -j ${sep(bk)}`);
  }
  eps.forEach((bk, i) => {
    const n = eps.length - i;
    const stat = n > 1 ? ` -m statistic --mode random --probability ${(1 / n).toFixed(10)}` : '';
    rules.push(`${comment(`${name} -> ${bk}`)}${stat} -j ${sep(bk)}`);
  });
  return rules;
}

export function renderService(dualPlan: ServicePlan, ctx: RenderContext): ServiceRules {
  const plan = familyPlan(dualPlan, ctx.family ?? 4);
  const out: ServiceRules = { service: plan.service, natChains: new Map(), filterChains: new Map(), natServices: [], natNodePorts: [], filterServices: [], filterFirewall: [] };
  const fam = familyText(ctx);
  const { host, mask } = fam;
  // Chains are named and ordered by the endpoint's "addr:port/PROTO", as kube-proxy's are by its endpoint string.
  const keys = plan.backends.map(backendKey);
  const keysOf = (idx: readonly number[]): string[] => idx.map((i) => keys[i]!);
  for (const [sp, fes] of byServicePort(plan)) {
    const id = `${plan.service}:${sp}`;
    const name = `${plan.service}:${sp.split('/')[0]}`;
    const svc = chainName('SVC', id);
    const svl = chainName('SVL', id);
    const ext = chainName('EXT', id);
    const sep = (bk: string): string => chainName('SEP', `${id}/${bk}`);
    const p = proto(fes[0]!.proto);
    const affinity = fes[0]!.affinityTimeout;
    const { clusterIPs, external, itpLocal, etpLocal, clusterFe, local: localIdx } = portFrontends(fes);
    const clusterSet = clusterFe ? keysOf(clusterFe.backends) : undefined;
    const localSet = keysOf(localIdx);
    const hasEndpoints = fes.some((f) => f.backends.length > 0) || fes.some((f) => f.flags & SVC_F.DROP_EMPTY);
    const members = [...new Set([...(clusterFe?.backends ?? []), ...localIdx])].sort((a, b) => (keys[a]! < keys[b]! ? -1 : keys[a]! > keys[b]! ? 1 : 0));

    for (const i of members) {
      const bk = keys[i]!;
      const be = plan.backends[i]!;
      const rules = [`${comment(name)} -s ${host(be.addr)} -j WEIR-MARK-MASQ`];
      const to = fam.hostPort(be.addr, be.port);
      if (affinity > 0) rules.push(`${comment(name)} -m recent --name ${sep(bk)} --mask ${mask} --rsource --set -p ${p} -j DNAT --to-destination ${to}`);
      else rules.push(`${comment(name)} -p ${p} -j DNAT --to-destination ${to}`);
      out.natChains.set(sep(bk), rules);
    }
    // masqueradeAll matches the ClusterIP as destination (as kube-proxy's
    // rule does): external traffic that continues into these chains keeps
    // its traffic policy's masquerade decision.
    const masqAll = ctx.masqueradeAll ? clusterIPs.map((f) => `${comment(`${name} cluster IP`)} -d ${host(f.addr)} -p ${p} -m ${p} --dport ${f.port} -j WEIR-MARK-MASQ`) : [];
    if (clusterSet && clusterSet.length > 0) out.natChains.set(svc, [...(itpLocal ? [] : masqAll), ...endpointRules(clusterSet, sep, affinity, name, mask)]);
    if (itpLocal || etpLocal) {
      out.natChains.set(
        svl,
        localSet.length > 0 ? [...(itpLocal ? masqAll : []), ...endpointRules(localSet, sep, affinity, name, mask)] : [`${comment(`${name} has no local endpoints`)} -j MARK --or-mark ${DROP_MARK}`],
      );
    }

    // ClusterIPs.
    for (const f of clusterIPs) {
      const match = `-d ${host(f.addr)} -p ${p} -m ${p} --dport ${f.port}`;
      if (f.backends.length === 0) {
        const target = hasEndpoints ? 'DROP' : fam.reject;
        out.filterServices.push(`${comment(`${name} has no ${hasEndpoints ? 'local ' : ''}endpoints`)} ${match} -j ${target}`);
        continue;
      }
      if (localMatches(ctx, fam).length > 0) out.natServices.push(`${comment(`${name} cluster IP`)} ${match} -j WEIR-MASQ-OFFCLUSTER`);
      out.natServices.push(`${comment(`${name} cluster IP`)} ${match} -j ${itpLocal ? svl : svc}`);
    }

    // External frontends share one EXT chain per service port.
    if (external.length > 0 && hasEndpoints) {
      const rules: string[] = [];
      if (etpLocal) {
        for (const m of localMatches(ctx, fam)) rules.push(`${comment(`pod traffic for ${name} external destinations`)} ${m} -j ${clusterSet && clusterSet.length ? svc : svl}`);
        rules.push(`${comment(`masquerade LOCAL traffic for ${name} external destinations`)} -m addrtype --src-type LOCAL -j WEIR-MARK-MASQ`);
        rules.push(`${comment(`route LOCAL traffic for ${name} external destinations`)} -m addrtype --src-type LOCAL -j ${clusterSet && clusterSet.length ? svc : svl}`);
        rules.push(`-j ${svl}`);
      } else {
        rules.push(`${comment(`masquerade traffic for ${name} external destinations`)} -j WEIR-MARK-MASQ`, `-j ${svc}`);
      }
      out.natChains.set(ext, rules);
    }
    for (const f of external) {
      if (f.scope !== 0) continue;
      const match = `-d ${host(f.addr)} -p ${p} -m ${p} --dport ${f.port}`;
      const kind = f.flags & SVC_F.NODE_PORT ? 'node port' : f.flags & SVC_F.LOAD_BALANCER ? 'loadbalancer IP' : 'external IP';
      if (!hasEndpoints) {
        out.filterServices.push(`${comment(`${name} has no endpoints`)} ${match} -j ${fam.reject}`);
        continue;
      }
      const line = `${comment(`${name} ${kind}`)} ${match} -j ${ext}`;
      if (f.flags & SVC_F.NODE_PORT) out.natNodePorts.push(line);
      else out.natServices.push(line);
      if (f.sourceRanges.length > 0) {
        const fw = chainName('FW', `${id}/${f.addr}`);
        // Matched on the original destination: the filter table sees packets after DNAT.
        out.filterFirewall.push(`${comment(`${name} loadbalancer IP`)} -p ${p} -m conntrack --ctorigdst ${host(f.addr)} --ctorigdstport ${f.port} -j ${fw}`);
        out.filterChains.set(fw, [...f.sourceRanges.map((c) => `${comment(`${name} allowed source`)} -s ${c.text} -j RETURN`), `${comment(`${name} other sources`)} -j DROP`]);
      }
    }
  }
  return out;
}

/** The shared chains' fixed rules. */
function fixedRules(ctx: RenderContext): { nat: Map<string, string[]>; filter: Map<string, string[]> } {
  return {
    nat: new Map([
      ['WEIR-MARK-MASQ', [`-j MARK --or-mark ${MASQ_MARK}`]],
      [
        'WEIR-POSTROUTING',
        [`-m mark ! --mark ${MASQ_MARK}/${MASQ_MARK} -j RETURN`, `-j MARK --xor-mark ${MASQ_MARK}`, `${comment('weir service traffic requiring SNAT')} -j MASQUERADE --random-fully`],
      ],
      ['WEIR-MASQ-OFFCLUSTER', [...localMatches(ctx, familyText(ctx)).map((m) => `${m} -j RETURN`), `${comment('off-cluster traffic to a cluster IP')} -j WEIR-MARK-MASQ`]],
    ]),
    filter: new Map([['WEIR-FORWARD', [`${comment('traffic to a Local service without local endpoints')} -m mark --mark ${DROP_MARK}/${DROP_MARK} -j DROP`]]]),
  };
}

/**
 * A whole table as iptables-restore input. Chains in `chains` are (re)declared and filled; `edits`
 * (`-D`/`-I` lines) follow, jumping to chains now in place; `remove` are deleted last.
 */
export function restoreText(table: 'nat' | 'filter', chains: ReadonlyMap<string, readonly string[]>, remove: readonly string[] = [], edits: readonly string[] = []): string {
  const lines = [`*${table}`];
  for (const c of chains.keys()) lines.push(`:${c} - [0:0]`);
  for (const c of remove) lines.push(`:${c} - [0:0]`);
  for (const [c, rules] of chains) for (const r of rules) lines.push(`-A ${c} ${r}`);
  lines.push(...edits);
  for (const c of remove) lines.push(`-X ${c}`);
  lines.push('COMMIT');
  return lines.join('\n') + '\n';
}

/** The shared chains that jump nowhere but to built-in targets: written before any service chain, which may jump to them. */
export const LEAF_CHAINS: ReadonlySet<string> = new Set(['WEIR-MARK-MASQ', 'WEIR-POSTROUTING', 'WEIR-FORWARD']);

/**
 * A fixed chain of each table that always holds a rule: empty or gone, the
 * table was flushed, replaced or deleted by something other than weir
 * (IptablesDataplane.checkRules).
 */
export const MARKER_CHAINS: Readonly<Record<'nat' | 'filter', string>> = { nat: 'WEIR-MARK-MASQ', filter: 'WEIR-FORWARD' };

/** The order in which chains are removed: a chain only once nothing that is still there jumps to it. */
function removeRank(chain: string): number {
  if (LEAF_CHAINS.has(chain)) return 3;
  if (chain.startsWith('WEIR-SEP-') || chain.startsWith('WEIR-FW-')) return 2;
  if (chain.startsWith('WEIR-SVC-') || chain.startsWith('WEIR-SVL-')) return 1;
  return 0;
}

/**
 * Chains per iptables-restore section (see restoreSections).
 */
export const SECTION_CHAINS = 1000;

/**
 * A table's changes as iptables-restore input, from groups of chains that
 * jump only within their group or to a group before them (the leaf shared
 * chains, each service's own chains, then the other shared chains).
 *
 * iptables-nft (1.8.x) keeps the names of every chain a `--noflush`
 * transaction declares, appends to or jumps to in a sorted linked list
 * walked once per rule: one transaction's cost grows with the square of
 * the chains it names (ten thousand services of ten endpoints, 110,000
 * chains, did not finish in ten minutes), and each COMMIT starts a new
 * list. So a large change is cut into sections of whole groups, about
 * `max` chains each, in group order: each section is atomic, a jump is
 * only written once its target is in place, and the chains to remove go
 * last, in sections of their own, callers before callees. A small change
 * stays one transaction.
 */
export function restoreSections(
  table: 'nat' | 'filter',
  groups: ReadonlyArray<ReadonlyMap<string, readonly string[]>>,
  remove: readonly string[] = [],
  edits: readonly string[] = [],
  max = SECTION_CHAINS,
): string {
  const total = groups.reduce((n, g) => n + g.size, 0);
  if (total + remove.length <= max) return restoreText(table, new Map(groups.flatMap((g) => [...g])), remove, edits);
  let out = '';
  let section = new Map<string, readonly string[]>();
  for (const g of groups) {
    if (section.size > 0 && section.size + g.size > max) {
      out += restoreText(table, section);
      section = new Map();
    }
    for (const [c, rules] of g) section.set(c, rules);
  }
  if (section.size > 0 || edits.length > 0) out += restoreText(table, section, [], edits);
  const gone = [...remove].sort((a, b) => removeRank(a) - removeRank(b));
  for (let i = 0; i < gone.length; i += max) out += restoreText(table, new Map(), gone.slice(i, i + max));
  return out;
}

/**
 * The tables of one sync: the top-level chains with the fixed rules, to
 * which each service's rules are added in service order, then `finish()`
 * appends the NodePort jump, which must be the last rule of WEIR-SERVICES.
 */
export class Tables {
  readonly nat: Map<string, string[]>;
  readonly filter: Map<string, string[]>;
  private readonly natServices: string[] = [];
  private readonly natNodePorts: string[] = [];
  private readonly filterServices: string[] = [];
  private readonly filterFirewall: string[] = [];

  constructor(ctx: RenderContext) {
    const fixed = fixedRules(ctx);
    this.nat = new Map([['WEIR-SERVICES', this.natServices], ['WEIR-NODEPORTS', this.natNodePorts], ...fixed.nat]);
    this.filter = new Map([['WEIR-SERVICES', this.filterServices], ['WEIR-PROXY-FIREWALL', this.filterFirewall], ...fixed.filter]);
  }

  /** A service's jump rules; its own chains are the caller's to add (a partial sync writes only changed ones). */
  addJumps(r: ServiceRules): void {
    this.natServices.push(...r.natServices);
    this.natNodePorts.push(...r.natNodePorts);
    this.filterServices.push(...r.filterServices);
    this.filterFirewall.push(...r.filterFirewall);
  }

  finish(): void {
    this.natServices.push(`${comment('weir service nodeports; NOTE: this must be the last rule in this chain')} -m addrtype --dst-type LOCAL -j WEIR-NODEPORTS`);
  }
}

/** Every rule of every service, in one full-sync text per table (what the golden test prints). */
export function renderAll(plans: readonly ServicePlan[], ctx: RenderContext): { nat: string; filter: string } {
  const t = new Tables(ctx);
  for (const plan of [...plans].sort((a, b) => a.service.localeCompare(b.service))) {
    const r = renderService(plan, ctx);
    t.addJumps(r);
    for (const [c, rules] of r.natChains) t.nat.set(c, rules);
    for (const [c, rules] of r.filterChains) t.filter.set(c, rules);
  }
  t.finish();
  return { nat: restoreText('nat', t.nat), filter: restoreText('filter', t.filter) };
}
