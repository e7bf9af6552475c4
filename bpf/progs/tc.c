// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc ingress programs. Parse, dispatch, and leave through the single exit
 * that counts the verdict; the logic lives in bpf/lib/service.h (IPv4) and
 * bpf/lib/service6.h (IPv6).
 *
 * Entry points by where a packet comes from, because kube-proxy's rules
 * depend on it: weir_tc_pod on pod-facing devices (senders are this node's
 * pods), weir_tc_ext on external devices (outside clients, other nodes),
 * weir_tc_host on lo (node processes whose socket the socket hooks leave
 * alone: bound to 127.0.0.1, or to the local service address itself).
 *
 * One tc egress program, weir_tc_egress on pod-facing and external
 * devices: ICMP errors the node itself generates about NATed flows
 * (bpf/lib/egress.h); everything else leaves after a one-byte look.
 */
#include "common.h"
#include "egress.h"
#include "frag.h"
#include "frag6.h"
#include "parse.h"
#include "parse6.h"
#include "service.h"
#include "service6.h"
#include "verdict.h"

/*
 * IPv6, in a function of its own (a global one: the verifier checks it once
 * per program, apart from the IPv4 path).
 */
__attribute__((noinline)) int tc_ingress6(struct __sk_buff *skb, __u32 origin)
{
	struct pkt6 p;

	if (!parse_packet6(skb, &p))
		return TC_ACT_OK;
	if (!frag6_track(&p))
		return verdict_exit6(skb, &p, WEIR_V_FRAG_UNMATCHED);
	return verdict_exit6(skb, &p, handle_packet6(skb, &p, (enum origin)origin));
}

/*
 * IPv4 in a subprogram too: the BPF stack limit (512 bytes) is for a chain
 * of calls, and the IPv4 path's frame inlined in the entry point would
 * leave the IPv6 path too little.
 */
static __attribute__((noinline)) int tc_ingress4(struct __sk_buff *skb, enum origin origin)
{
	struct pkt p;

	if (!parse_packet(skb, &p))
		return TC_ACT_OK;
	if (!frag_track(&p))
		return verdict_exit(skb, &p, WEIR_V_FRAG_UNMATCHED);
	return verdict_exit(skb, &p, handle_packet(skb, &p, origin));
}

static __always_inline int tc_ingress(struct __sk_buff *skb, enum origin origin)
{
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return tc_ingress6(skb, origin);
	return tc_ingress4(skb, origin);
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

SEC("tc")
int weir_tc_egress(struct __sk_buff *skb)
{
	return tc_egress(skb);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
