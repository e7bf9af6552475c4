// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc ingress programs. Parse, dispatch, and leave through the single exit
 * that counts the verdict; the logic lives in bpf/lib/service.h.
 *
 * Two entry points because kube-proxy's rules depend on where a packet
 * comes from: weir_tc_pod on pod-facing devices (senders are this node's
 * pods), weir_tc_ext on external devices (outside clients, other nodes).
 */
#include "common.h"
#include "parse.h"
#include "service.h"
#include "verdict.h"

static __always_inline int tc_ingress(struct __sk_buff *skb, enum origin origin)
{
	struct pkt p;

	switch (parse_packet(skb, &p)) {
	case PARSE_OK:
		return verdict_exit(skb, &p, handle_packet(skb, &p, origin));
	case PARSE_FRAG_UNMATCHED:
		return verdict_exit(skb, &p, WEIR_V_FRAG_UNMATCHED);
	default:
		return TC_ACT_OK;
	}
}

SEC("tc")
int weir_tc_pod(struct __sk_buff *skb)
{
	return tc_ingress(skb, FROM_POD);
}

SEC("tc")
int weir_tc_ext(struct __sk_buff *skb)
{
	return tc_ingress(skb, FROM_EXTERNAL);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
