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
] as const;

export type Verdict = (typeof VERDICTS)[number];

/** C enumerator name -> our name: WEIR_V_REJECT_NO_ENDPOINTS -> reject_no_endpoints. */
export function verdictName(cName: string): string {
  return cName.replace(/^WEIR_V_/, '').toLowerCase();
}
