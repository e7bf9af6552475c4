/**
 * Names of enum weir_verdict (bpf/shared/weir.h), by index: the per-CPU
 * counter map is indexed by it. test/unit/codecs.test.ts checks this list
 * against the enum in the object's BTF.
 */
export const VERDICTS = [
  'forward',
  'revnat',
  'forward_redirect',
  'revnat_redirect',
  'reject_no_endpoints',
  'drop_no_endpoints',
  'drop_nat_failed',
  'drop_reject_failed',
  'drop_no_backend',
  'drop_no_local_endpoints',
  'drop_source_range',
  'drop_no_snat_port',
  'drop_revnat_missing',
  'frag_unmatched',
  'revnat_host',
  'drop_loopback_source',
  'pass_midflow',
  'pass_draining',
  'icmp_local',
  'icmp_local_redirect',
] as const;

export type Verdict = (typeof VERDICTS)[number];

/**
 * The counter map holds both families: IPv4 packets at the reason's index,
 * IPv6 packets at reason + VERDICT_IPV6 (WEIR_V_IPV6 in weir.h). An IPv6
 * counter is named like its IPv4 one with `/ipv6` after it (`forward/ipv6`),
 * so a reader that knows only the IPv4 names keeps working and one that
 * wants both splits at the slash.
 */
export const VERDICT_IPV6 = 32;

export interface VerdictSlot {
  /** `forward` (IPv4) or `forward/ipv6`. */
  name: string;
  reason: Verdict;
  family: 4 | 6;
  /** Key in the counter map. */
  index: number;
}

/** Every counter of the map, IPv4 reasons first, then IPv6, each in enum order. */
export const VERDICT_SLOTS: readonly VerdictSlot[] = [
  ...VERDICTS.map((reason, i) => ({ name: reason, reason, family: 4 as const, index: i })),
  ...VERDICTS.map((reason, i) => ({ name: `${reason}/ipv6`, reason, family: 6 as const, index: i + VERDICT_IPV6 })),
];

/** The counter map key of a reason in a family. */
export function verdictIndex(reason: Verdict, family: 4 | 6 = 4): number {
  return VERDICTS.indexOf(reason) + (family === 6 ? VERDICT_IPV6 : 0);
}

/** C enumerator name -> our name: WEIR_V_REJECT_NO_ENDPOINTS -> reject_no_endpoints. */
export function verdictName(cName: string): string {
  return cName.replace(/^WEIR_V_/, '').toLowerCase();
}
