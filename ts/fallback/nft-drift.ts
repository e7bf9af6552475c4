/**
 * nftables mode's drift comparison: table inet weir as the kernel holds it
 * (./nft-json.ts) against what the dataplane last committed. Pure.
 *
 * Compared: which chains, maps and sets exist; each chain's rules, in
 * order, by what each refers to (chains it goes to, maps it reads, numgen
 * modulus: ./nft-json.ts ruleRefs); each map's and set's elements, key and
 * value. Not compared: the elements of the affinity sets (the kernel adds
 * them), comments, and a rule's matches beyond its references (a rule
 * edited in place keeping its targets goes unnoticed until the next full
 * rewrite).
 */
import { KernelTable, ruleTextRefs } from './nft-json';

export interface CommittedTable {
  /** chain -> its rules as weir wrote them (after `add rule inet weir <chain> `). */
  readonly chains: ReadonlyMap<string, readonly string[]>;
  /** Every map and set declared; true: its elements are the kernel's (affinity). */
  readonly sets: ReadonlyMap<string, boolean>;
  /** "set\tkey" -> what follows the key in `add element` (` comment "…" : value`, or ''). */
  readonly elements: ReadonlyMap<string, { readonly value: string }>;
}

/** The value part of an element's tail as the renderer writes it: ` comment "x" : goto y` -> `goto y`. */
export function elementValue(tail: string): string {
  const t = tail.replace(/^ comment "[^"]*"/, '');
  return t.startsWith(' : ') ? t.slice(3) : '';
}

/**
 * Object name -> how many of its entries differ (a missing or extra chain
 * or set counts 1; a chain whose rules differ counts the rules that do; a
 * map or set counts missing, extra and changed elements). Empty: no drift.
 */
export function compareTable(committed: CommittedTable, kernel: KernelTable): Map<string, number> {
  const out = new Map<string, number>();
  const add = (name: string, n: number): void => void (n > 0 && out.set(name, (out.get(name) ?? 0) + n));
  for (const [name, rules] of committed.chains) {
    const k = kernel.chains.get(name);
    if (!k) {
      add(name, 1);
      continue;
    }
    add(
      name,
      rulesDiffer(
        rules.map((r) => ruleTextRefs(r).join(' ')),
        k.rules.map((r) => r.join(' ')),
      ),
    );
  }
  for (const name of kernel.chains.keys()) if (!committed.chains.has(name)) add(name, 1);
  const expectCount = new Map<string, number>();
  for (const id of committed.elements.keys()) {
    const set = id.slice(0, id.indexOf('\t'));
    expectCount.set(set, (expectCount.get(set) ?? 0) + 1);
  }
  for (const [name, dynamic] of committed.sets) {
    const k = kernel.sets.get(name);
    if (!k) {
      add(name, 1);
      continue;
    }
    if (dynamic) continue;
    let matched = 0;
    let differ = 0;
    for (const [key, value] of k.elements) {
      const e = committed.elements.get(`${name}\t${key}`);
      if (!e) differ++;
      else {
        matched++;
        if (elementValue(e.value) !== value) differ++;
      }
    }
    add(name, differ + (expectCount.get(name) ?? 0) - matched);
  }
  for (const name of kernel.sets.keys()) if (!committed.sets.has(name)) add(name, 1);
  return out;
}

/**
 * How many rules differ: those one side has and the other lacks, a rule
 * replaced counting once (a rule inserted counts 1, not every rule after
 * it); or where both hold the same rules in another order, those out of
 * place.
 */
function rulesDiffer(want: readonly string[], have: readonly string[]): number {
  const count = new Map<string, number>();
  for (const r of want) count.set(r, (count.get(r) ?? 0) + 1);
  for (const r of have) count.set(r, (count.get(r) ?? 0) - 1);
  let missing = 0;
  let extra = 0;
  for (const c of count.values()) {
    if (c > 0) missing += c;
    else extra -= c;
  }
  // A rule replaced counts once.
  let n = Math.max(missing, extra);
  if (n > 0) return n;
  for (let i = 0; i < want.length; i++) if (want[i] !== have[i]) n++;
  return n;
}

/** "service-ips 1,pick-cluster-2 3": the differences as the log prints them, by name. */
export function formatDrift(d: ReadonlyMap<string, number>): string {
  return [...d]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, n]) => `${name} ${n}`)
    .join(',');
}
