/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one exit: every packet weir does not pass on untouched ends in a
 * named verdict, counted per CPU, and the verdict decides the tc action.
 */
#ifndef WEIR_VERDICT_H
#define WEIR_VERDICT_H

#include "fib.h"
#include "maps.h"

/* Handlers return a verdict, or WEIR_PASS for "not ours, leave it alone". */
#define WEIR_PASS (-1)

static __always_inline int verdict_exit(struct __sk_buff *skb, const struct pkt *p, int v)
{
	__u32 key;
	__u64 *count;

	_Static_assert(WEIR_V__MAX <= WEIR_MAX_VERDICTS, "verdict map too small");
	if (v < 0 || v >= WEIR_V__MAX)
		return TC_ACT_OK;
	key = (__u32)v;
	count = bpf_map_lookup_elem(&weir1_verdicts, &key);
	if (count)
		*count += 1; /* per-CPU slot: no atomics needed */
	switch (v) {
	case WEIR_V_FORWARD:
	case WEIR_V_REVNAT:
		return TC_ACT_OK; /* the stack routes the rewritten packet */
	case WEIR_V_FRAG_UNMATCHED:
	case WEIR_V_PASS_MIDFLOW:
	case WEIR_V_PASS_DRAINING:
		return TC_ACT_OK; /* counted, passed on as it came */
	case WEIR_V_FORWARD_REDIRECT:
	case WEIR_V_REVNAT_REDIRECT:
		return fib_redirect(skb, p);
	case WEIR_V_REVNAT_HOST:
		return host_deliver(skb);
	case WEIR_V_REJECT_NO_ENDPOINTS:
		return TC_ACT_REDIRECT; /* reject.h already called bpf_redirect() */
	default:
		return TC_ACT_SHOT;
	}
}

/*
 * The exit of IPv6 packets: the same verdicts, counted at v + WEIR_V_IPV6
 * (weir.h), with IPv6's FIB redirect.
 */
static __always_inline int verdict_exit6(struct __sk_buff *skb, const struct pkt6 *p, int v)
{
	__u32 key;
	__u64 *count;

	_Static_assert(WEIR_V__MAX <= WEIR_V_IPV6 && 2 * WEIR_V_IPV6 <= WEIR_MAX_VERDICTS, "verdict map too small");
	if (v < 0 || v >= WEIR_V__MAX)
		return TC_ACT_OK;
	key = (__u32)v + WEIR_V_IPV6;
	count = bpf_map_lookup_elem(&weir1_verdicts, &key);
	if (count)
		*count += 1;
	switch (v) {
	case WEIR_V_FORWARD:
	case WEIR_V_REVNAT:
	case WEIR_V_FRAG_UNMATCHED:
	case WEIR_V_PASS_MIDFLOW:
	case WEIR_V_PASS_DRAINING:
		return TC_ACT_OK;
	case WEIR_V_FORWARD_REDIRECT:
	case WEIR_V_REVNAT_REDIRECT:
		return fib_redirect6(skb, p);
	case WEIR_V_REVNAT_HOST:
		return host_deliver(skb);
	case WEIR_V_REJECT_NO_ENDPOINTS:
		return TC_ACT_REDIRECT;
	default:
		return TC_ACT_SHOT;
	}
}

#endif
