/**
 * Table inet weir as the kernel holds it, read from `nft -j list table`
 * into one normalised form that the drift comparison (./nft-drift.ts) and
 * `weir check` (../check/nft-invariants.ts) share: per chain its rules,
 * each reduced to what it refers to; per map or set its elements as
 * "key" -> "value" text in the syntax weir writes them (`10.96.0.1 . tcp .
 * 80` -> `goto pick-cluster-2`). nft prints addresses, verdicts and
 * concatenations in its own JSON shapes; the text form here is what the
 * renderer (./nft-render.ts) writes, so the two compare as strings.
 */

type Json = Record<string, unknown>;

export interface KernelChain {
  /** A base chain (it has a hook). */
  readonly base: boolean;
  /** Each rule's references, normalised (see ruleRefs). */
  readonly rules: string[][];
}

export interface KernelSet {
  readonly map: boolean;
  /** Elements the kernel adds itself (flags dynamic or timeout: the affinity sets). */
  readonly dynamic: boolean;
  /** key -> value ('' for a set element). */
  readonly elements: Map<string, string>;
}

export interface KernelTable {
  readonly chains: Map<string, KernelChain>;
  readonly sets: Map<string, KernelSet>;
}

/** One value of nft's JSON as weir writes it: a concatenation joined with " . ", a verdict as `goto X`. */
export function atomText(v: unknown): string {
  if (v === null || typeof v !== 'object') return String(v);
  const o = v as Json;
  if (Array.isArray(o.concat)) return (o.concat as unknown[]).map(atomText).join(' . ');
  for (const verdict of ['goto', 'jump'] as const) {
    const t = (o[verdict] as Json | undefined)?.target;
    if (typeof t === 'string') return `${verdict} ${t}`;
  }
  for (const verdict of ['drop', 'accept', 'return', 'continue']) if (verdict in o && Object.keys(o).length === 1) return verdict;
  if (o.prefix) return `${atomText((o.prefix as Json).addr)}/${String((o.prefix as Json).len)}`;
  if (Array.isArray(o.range)) return (o.range as unknown[]).map(atomText).join('-');
  return JSON.stringify(v);
}

/**
 * What a rule refers to, sorted: the chains it jumps or goes to (`goto X`),
 * the maps and sets it reads (`@name`) and the modulus of its numgen (`mod
 * N`). Rules compare by these: they are what a hand edit that breaks
 * traffic changes, and they read the same from the JSON and from the text
 * weir wrote.
 */
export function ruleRefs(expr: unknown): string[] {
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (typeof v === 'string') {
      if (v.startsWith('@')) out.push(v);
      return;
    }
    if (v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) return v.forEach(walk);
    const o = v as Json;
    for (const verdict of ['goto', 'jump'] as const) {
      const t = (o[verdict] as Json | undefined)?.target;
      if (typeof t === 'string') out.push(`${verdict} ${t}`);
    }
    const ng = o.numgen as Json | undefined;
    if (ng && typeof ng.mod === 'number') out.push(`mod ${ng.mod}`);
    for (const x of Object.values(o)) walk(x);
  };
  walk(expr);
  return out.sort();
}

/** The same references out of a rule as weir writes it (`meta l4proto tcp dnat ip to … mod 2 map @cluster-endpoints-tcp`). */
export function ruleTextRefs(rule: string): string[] {
  const out: string[] = [];
  for (const m of rule.matchAll(/(?:^|\s)(goto|jump) (\S+)/g)) out.push(`${m[1]} ${m[2]}`);
  for (const m of rule.matchAll(/(?:^|\s)(@\S+)/g)) out.push(m[1]!);
  for (const m of rule.matchAll(/numgen \w+ mod (\d+)/g)) out.push(`mod ${m[1]}`);
  return out.sort();
}

/** An element's key as `nft -j` gives it: the value itself, or {elem: {val, comment}}. */
function elemKey(e: unknown): string {
  const o = e as Json;
  return atomText(o && typeof o === 'object' && o.elem ? (o.elem as Json).val : e);
}

/** Parse the output of `nft -j list table inet weir`. */
export function parseNftJson(text: string): KernelTable {
  const objects = (JSON.parse(text) as { nftables: Json[] }).nftables;
  const chains = new Map<string, KernelChain>();
  const sets = new Map<string, KernelSet>();
  const chain = (name: string): KernelChain => {
    let c = chains.get(name);
    if (!c) chains.set(name, (c = { base: false, rules: [] }));
    return c;
  };
  for (const o of objects) {
    if (o.chain) {
      const c = o.chain as Json;
      const name = c.name as string;
      const had = chains.get(name);
      chains.set(name, { base: c.hook !== undefined, rules: had?.rules ?? [] });
    } else if (o.rule) {
      const r = o.rule as Json;
      chain(r.chain as string).rules.push(ruleRefs(r.expr));
    } else if (o.map || o.set) {
      const s = (o.map ?? o.set) as Json;
      const flags = (s.flags as string[] | string | undefined) ?? [];
      const dynamic = ['dynamic', 'timeout'].some((f) => (Array.isArray(flags) ? flags.includes(f) : flags === f)) || s.timeout !== undefined;
      const elements = new Map<string, string>();
      for (const e of (s.elem as unknown[] | undefined) ?? []) {
        if (o.map) {
          const [k, v] = e as [unknown, unknown];
          elements.set(elemKey(k), atomText(v));
        } else elements.set(elemKey(e), '');
      }
      sets.set(s.name as string, { map: o.map !== undefined, dynamic, elements });
    }
  }
  return { chains, sets };
}
