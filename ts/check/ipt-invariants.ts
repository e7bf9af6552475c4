/**
 * `weir check` in iptables mode: the invariants of weir's chains that make
 * every packet correct, verified over one `iptables-save` (and one
 * `ip6tables-save`), without knowing what the agent meant to write
 * (./invariants.ts is BPF mode's, ./nft-invariants.ts nftables mode's).
 *
 *  - the fixed part is there: the shared chains, the rules that mark and
 *    masquerade, drop a Local service's traffic without local endpoints,
 *    the NodePort jump last in nat WEIR-SERVICES, and the jumps from the
 *    built-in chains (a flushed table or a removed jump serves nothing);
 *  - every WEIR- chain a rule jumps to exists, and each of a service's own
 *    chains has rules (an empty one lets the packet through untranslated);
 *  - each WEIR-SVC/SVL chain chooses uniformly: of its n jumps to endpoint
 *    chains (ClientIP affinity's `recent --rcheck` rules aside) the i-th
 *    matches with probability 1/(n-i) and the last with no condition, as
 *    kube-proxy writes them;
 *  - each WEIR-SEP chain DNATs, once;
 *  - nothing without an owner: no service chain that no rule jumps to
 *    (but a local-policy chain that only marks for drop: a Local policy
 *    without local endpoints, whose frontends are dropped in filter).
 * A check taken while an agent writes may see a large rewrite between two
 * of its sections (each iptables-restore COMMIT is atomic).
 */
import { ruleArgs } from '../fallback/iptables';
import { HOOKS, PREFIX } from '../fallback/render';
import type { Violation } from './invariants';

type Table = 'nat' | 'filter';

/** The shared chains of each table (render.ts's Tables), and the rule each must hold, as iptables-save prints it. */
const FIXED: Record<Table, ReadonlyArray<{ chain: string; rule?: RegExp; what?: string }>> = {
  nat: [
    { chain: 'WEIR-SERVICES' },
    { chain: 'WEIR-NODEPORTS' },
    { chain: 'WEIR-MARK-MASQ', rule: / -j MARK --set-xmark 0x40000\/0x40000$/, what: 'the masquerade mark' },
    { chain: 'WEIR-POSTROUTING', rule: / -j MASQUERADE\b/, what: 'MASQUERADE of marked traffic' },
    { chain: 'WEIR-MASQ-OFFCLUSTER', rule: / -j WEIR-MARK-MASQ$/, what: 'the mark of off-cluster traffic to a cluster IP' },
  ],
  filter: [
    { chain: 'WEIR-SERVICES' },
    { chain: 'WEIR-PROXY-FIREWALL' },
    { chain: 'WEIR-FORWARD', rule: / -m mark --mark 0x80000\/0x80000 -j DROP$/, what: "the drop of a Local service's traffic without local endpoints" },
  ],
};

/** A service's own chains: the ones that must have rules and an owner. */
const OWN = /^WEIR-(SVC|SVL|EXT|SEP|FW)-/;

/** Chains and their rules (the text after `-A <chain> `) of one table in a save. */
export function savedTable(save: string, table: Table): Map<string, string[]> | null {
  const body = new RegExp(`^\\*${table}\\n([\\s\\S]*?)^COMMIT`, 'm').exec(save)?.[1];
  if (body === undefined) return null;
  const chains = new Map<string, string[]>();
  for (const line of body.split('\n')) {
    const declared = /^:(\S+)/.exec(line);
    if (declared) chains.set(declared[1]!, []);
    const rule = /^-A (\S+) (.*)$/.exec(line);
    if (rule) (chains.get(rule[1]!) ?? chains.set(rule[1]!, []).get(rule[1]!)!).push(rule[2]!);
  }
  return chains;
}

const target = (rule: string): string | undefined => / -j (\S+)/.exec(` ${rule}`)?.[1];

/** The violations in one family's save; `tool` names it (iptables, ip6tables). */
export function checkIptables(save: string, tool: string): Violation[] {
  const out: Violation[] = [];
  for (const table of ['nat', 'filter'] as const) {
    const where = `${tool} ${table}`;
    const bad = (key: string, rule: string): void => void out.push({ map: where, key, rule });
    const chains = savedTable(save, table);
    if (!chains) {
      bad('table', 'missing');
      continue;
    }
    for (const { chain, rule, what } of FIXED[table]) {
      const rules = chains.get(chain);
      if (!rules) bad(chain, 'missing');
      else if (rule && !rules.some((r) => rule.test(` ${r}`))) bad(chain, `no rule for ${what}`);
    }
    const services = chains.get('WEIR-SERVICES');
    if (table === 'nat' && services && target(services.at(-1) ?? '') !== 'WEIR-NODEPORTS') bad('WEIR-SERVICES', 'the jump to WEIR-NODEPORTS is not its last rule: NodePorts after it go untranslated');
    // Jumps from the built-in chains, compared by their words (as IptablesDataplane.checkRules does).
    const words = (rule: string): string => ruleArgs(rule).sort().join('\0');
    for (const h of HOOKS) {
      if (h.table !== table) continue;
      if (!(chains.get(h.chain) ?? []).some((r) => words(r) === words(h.rule))) bad(h.chain, `no jump to ${target(h.rule)}: weir's rules are not reached from it`);
    }
    const referenced = new Set<string>();
    for (const [name, rules] of chains) {
      rules.forEach((r, i) => {
        const to = target(r);
        if (!to?.startsWith(PREFIX)) return;
        referenced.add(to);
        if (!chains.has(to)) bad(`${name} rule ${i + 1}`, `jumps to ${to}, which does not exist`);
        else if (OWN.test(to) && chains.get(to)!.length === 0) bad(`${name} rule ${i + 1}`, `jumps to ${to}, which is empty: the packet goes on untranslated`);
      });
    }
    for (const [name, rules] of chains) {
      if (!OWN.test(name)) continue;
      // A local-policy chain without local endpoints only marks for drop; kube-proxy, too, keeps it where nothing jumps to it.
      const dropOnly = name.startsWith('WEIR-SVL-') && !rules.some((r) => target(r)?.startsWith('WEIR-SEP-'));
      if (!referenced.has(name) && rules.length > 0 && !dropOnly) bad(name, 'no rule jumps to it');
      if (/^WEIR-(SVC|SVL)-/.test(name)) out.push(...cascade(where, name, rules));
      if (name.startsWith('WEIR-SEP-')) {
        const dnat = rules.filter((r) => / -j DNAT --to-destination \S+/.test(` ${r}`)).length;
        if (dnat !== 1) bad(name, `${dnat} DNAT rules: an endpoint chain translates to its endpoint once`);
      }
    }
  }
  return out;
}

/** Both families: ip6tables only where weir has chains (the agent writes none until a service has an IPv6 frontend). */
export function checkIptablesSaves(save4: string, save6: string): Violation[] {
  return [...checkIptables(save4, 'iptables'), ...(save6.includes(':WEIR-SERVICES') ? checkIptables(save6, 'ip6tables') : [])];
}

/** A service chain's random choice among its endpoints: uniform, and every packet ends at one. */
function cascade(where: string, chain: string, rules: readonly string[]): Violation[] {
  const out: Violation[] = [];
  // Rule numbers (from 1) of the jumps to endpoint chains, affinity's aside.
  const picks = rules.flatMap((r, i) => (target(r)?.startsWith('WEIR-SEP-') && !/ --rcheck\b/.test(` ${r}`) ? [i + 1] : []));
  picks.forEach((at, i) => {
    const n = picks.length - i;
    const p = / --probability (\S+)/.exec(rules[at - 1]!)?.[1];
    const key = `${chain} rule ${at}`;
    if (n === 1) {
      if (p !== undefined) out.push({ map: where, key, rule: `the last endpoint's jump has probability ${p}: the packets it leaves go on untranslated` });
      return;
    }
    // iptables keeps a probability in 32 bits: 1/3 reads back as 0.33333333349.
    if (p === undefined || Math.abs(Number(p) - 1 / n) > 1e-6) {
      out.push({ map: where, key, rule: `probability ${p ?? 'none'} where ${n} endpoints are left to choose from (1/${n}): the choice is not uniform` });
    }
  });
  return out;
}
