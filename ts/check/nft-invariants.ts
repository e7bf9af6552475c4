/**
 * `weir check` in nftables mode: the invariants of table inet weir that
 * make every packet correct, verified over one listing of it, without
 * knowing what the agent meant to write (./invariants.ts is BPF mode's).
 *
 *  - the fixed part is there: its chains, maps and sets, and each of its
 *    rules (a flushed `services` chain serves nothing);
 *  - every chain a rule or verdict element jumps or goes to exists and,
 *    unless it is one of the fixed chains, has rules (an empty chain lets
 *    the packet through untranslated);
 *  - each pick chain `pick…-<policy>-N` reads its policy's endpoint maps
 *    with `numgen … mod N`, and every frontend that reaches it has the
 *    slots 0..N-1 in the map of its protocol: a missing slot sends that
 *    share of new connections to the service address itself;
 *  - nothing without an owner: no endpoint slot that no frontend draws, no
 *    cluster-ips element without its service-ips one, and no chain with
 *    rules that nothing refers to, pick chains included (one flushed and
 *    unreferenced is waiting for the next commit to delete it, as
 *    kube-proxy does).
 * A check taken while an agent writes sees one transaction or the other
 * (nft applies each atomically).
 */
import { KernelTable, ruleTextRefs } from '../fallback/nft-json';
import { skeleton } from '../fallback/nft-render';
import type { Violation } from './invariants';

const PROTOS = ['tcp', 'udp', 'sctp'];

/** The fixed part, as the renderer writes it for any node: chain -> rules' references; and the maps and sets. */
function fixedPart(): { chains: Map<string, string[][]>; sets: string[] } {
  const chains = new Map<string, string[][]>();
  const sets: string[] = [];
  // No local-traffic detector: the one rule that depends on it is then absent, not required.
  for (const line of skeleton({ clusterCIDRs: [], masqueradeAll: false })) {
    const m = /^add (chain|map|set|rule) inet weir (\S+)(?: (.*))?$/.exec(line);
    if (!m) continue;
    if (m[1] === 'chain') chains.set(m[2]!, chains.get(m[2]!) ?? []);
    else if (m[1] === 'rule') chains.get(m[2]!)!.push(ruleTextRefs(m[3]!));
    else sets.push(m[2]!);
  }
  return { chains, sets };
}

export function checkNftTable(t: KernelTable): Violation[] {
  const out: Violation[] = [];
  const bad = (object: string, key: string, rule: string): void => void out.push({ map: object, key, rule });
  const fixed = fixedPart();

  for (const set of fixed.sets) if (!t.sets.has(set)) bad(set, 'map', 'missing from table inet weir');
  for (const [name, rules] of fixed.chains) {
    const c = t.chains.get(name);
    if (!c) {
      bad(name, 'chain', 'missing from table inet weir');
      continue;
    }
    // Each fixed rule, by its references, once per occurrence.
    const have = c.rules.map((r) => r.join(' '));
    for (const r of rules) {
      const i = have.indexOf(r.join(' '));
      if (i >= 0) have.splice(i, 1);
      else bad(name, 'chain', r.length ? `lacks its rule referring to ${r.join(', ')}` : 'lacks one of its rules');
    }
  }

  // Who refers to each chain, and the chains referred to that do not exist or are empty.
  const referenced = new Set<string>();
  const target = (from: string, key: string, ref: string): void => {
    const m = /^(?:goto|jump) (\S+)$/.exec(ref);
    if (!m) return;
    const name = m[1]!;
    referenced.add(name);
    const c = t.chains.get(name);
    if (!c) bad(from, key, `${ref}: chain ${name} does not exist`);
    else if (c.rules.length === 0 && !fixed.chains.has(name)) bad(from, key, `${ref}: chain ${name} has no rules, so packets pass it untranslated`);
  };
  for (const [name, c] of t.chains) {
    c.rules.forEach((refs, i) => {
      for (const ref of refs) {
        target(name, `rule ${i + 1}`, ref);
        if (ref.startsWith('@') && !t.sets.has(ref.slice(1))) bad(name, `rule ${i + 1}`, `reads ${ref}, which does not exist`);
      }
    });
  }
  for (const [name, s] of t.sets) if (s.map) for (const [key, value] of s.elements) target(name, key, value);

  // Pick chains: their rules, then the slots each frontend reaching one needs.
  const picks = new Map<string, { policy: string; sfx: string; n: number }>();
  for (const [name, c] of t.chains) {
    const m = /^pick(6?)-(cluster|local)-(\d+)$/.exec(name);
    // Flushed and unreferenced: no frontend uses it, and the next commit deletes it.
    if (!m || (c.rules.length === 0 && !referenced.has(name))) continue;
    const [, sfx, policy, n] = m as unknown as [string, string, string, string];
    picks.set(name, { policy, sfx, n: Number(n) });
    for (const p of PROTOS) {
      const want = [`@${policy}-endpoints-${p}${sfx}`, `mod ${n}`].sort().join(' ');
      if (!c.rules.some((r) => r.join(' ') === want)) bad(name, 'chain', `lacks its ${p} rule choosing one of ${n} slots from @${policy}-endpoints-${p}${sfx}`);
    }
  }
  /** "map\taddr . port" -> [slots the frontend draws, the element that leads there]. */
  const draws = new Map<string, [number, string]>();
  for (const sfx of ['', '6']) {
    for (const [key, value] of t.sets.get(`service-ips${sfx}`)?.elements ?? []) {
      const [addr, proto, port] = key.split(' . ');
      const first = /^goto (\S+)$/.exec(value)?.[1];
      if (!first) continue;
      // The pick chains this frontend reaches: the element's target, or those its external chain goes to.
      const reached = picks.has(first) ? [first] : (t.chains.get(first)?.rules ?? []).flatMap((r) => r.map((ref) => /^(?:goto|jump) (pick\S+)$/.exec(ref)?.[1] ?? '')).filter((p) => picks.has(p));
      for (const p of reached) {
        const { policy, n } = picks.get(p)!;
        const map = `${policy}-endpoints-${proto}${sfx}`;
        draws.set(`${map}\t${addr} . ${port}`, [n, `service-ips${sfx} ${key}`]);
        const els = t.sets.get(map)?.elements;
        if (!els) continue; // reported above, by the pick chain's rule
        for (let slot = 0; slot < n; slot++) {
          if (!els.has(`${addr} . ${port} . ${slot}`)) bad(map, `${addr} . ${port} . ${slot}`, `missing: ${p} draws slot ${slot} of ${n} for ${key}, whose connections there go untranslated`);
        }
      }
    }
    for (const policy of ['cluster', 'local']) {
      for (const proto of PROTOS) {
        const map = `${policy}-endpoints-${proto}${sfx}`;
        for (const key of t.sets.get(map)?.elements.keys() ?? []) {
          const parts = key.split(' . ');
          const slot = Number(parts.pop());
          const d = draws.get(`${map}\t${parts.join(' . ')}`);
          if (!d) bad(map, key, 'no frontend draws from this endpoint slot');
          else if (slot >= d[0]) bad(map, key, `slot beyond the ${d[0]} that ${d[1]} draws`);
        }
      }
    }
    for (const key of t.sets.get(`cluster-ips${sfx}`)?.elements.keys() ?? []) {
      if (!t.sets.get(`service-ips${sfx}`)?.elements.has(key)) bad(`cluster-ips${sfx}`, key, `no service-ips${sfx} element for this frontend`);
    }
  }

  for (const [name, c] of t.chains) {
    if (c.base || fixed.chains.has(name) || referenced.has(name) || c.rules.length === 0) continue;
    bad(name, 'chain', 'has rules but nothing refers to it');
  }
  return out;
}
