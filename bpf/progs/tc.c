// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc ingress programs. Parse, dispatch, and leave through the single exit
 * that counts the verdict; the logic lives in bpf/lib/service.h.
 *
 * Entry points by where a packet comes from, because kube-proxy's rules
 * depend on it: weir_tc_pod on pod-facing devices (senders are this node's
 * pods), weir_tc_ext on external devices (outside clients, other nodes),
 * weir_tc_host on lo (node processes whose socket the socket hooks leave
 * alone: bound to 127.0.0.1, or to the local service address itself).
 */
#include "common.h"
#include "frag.h"
#include "parse.h"
#include "service.h"
#include "verdict.h"

static __always_inline int tc_ingress(struct __sk_buff *skb, enum origin origin)
{
	struct pkt p;

	if (!parse_packet(skb, &p))
		return TC_ACT_OK;
	if (!frag_track(&p))
		return verdict_exit(skb, &p, WEIR_V_FRAG_UNMATCHED);
	return verdict_exit(skb, &p, handle_packet(skb, &p, origin));
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

SEC("tc")
int weir_tc_host(struct __sk_buff *skb)
{
	return tc_ingress(skb, FROM_HOST);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
