/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMP and ICMPv6 errors this node generates about a flow weir NATed,
 * translated at tc egress of the pod-facing and external devices.
 *
 * weir DNATs a pod's packet at tc ingress; the kernel then forwards it. When
 * the packet does not fit the next link (IPv4 with DF, or any IPv6 packet),
 * or its TTL runs out, or the next hop does not answer, the kernel itself
 * sends the error, quoting the packet as it forwarded it: client -> backend.
 * Such an error is locally generated, so no tc ingress program sees it on
 * its way to the client (errors from other hosts are translated at
 * ingress: icmp.h, icmp6.h). The client's socket is connected to the
 * frontend and ignores an error about a backend: path MTU discovery through
 * a ClusterIP breaks, and a large TCP transfer stalls.
 *
 * Why an egress program rather than answering bpf_fib_lookup's FRAG_NEEDED
 * at ingress with an error built from the pre-NAT header: that would cover
 * the path MTU case only, and only for the packets weir redirects (the
 * rest is forwarded by the stack, which decides about the MTU after weir
 * ran); TTL exceeded and host unreachable come from the stack later still.
 * At egress every error the node generates passes, whatever produced it,
 * and the translation is the one ingress already does (icmp.h, icmp6.h).
 *
 * The cost for everything else is what this file keeps small: the program
 * reads one byte (IPv4 protocol, IPv6 next header) by direct packet access
 * and returns. Only ICMP errors go on to a subprogram, which checks the
 * type and looks the quote up in conntrack.
 */
#ifndef WEIR_EGRESS_H
#define WEIR_EGRESS_H

#include "fib.h"
#include "icmp.h"
#include "icmp6.h"
#include "parse.h"
#include "parse6.h"

/* The error's destination changed (it was about a reply, addressed to the frontend, and now goes to the backend): route
 * it again. */
static __always_inline int egress_fib_send(struct __sk_buff *skb, struct bpf_fib_lookup *fib)
{
	/* An input-style lookup from the device the error was about to leave by:
	 * the routing table's answer for the new destination. */
	fib->ifindex = skb->ifindex;
	return fib_send(skb, fib, bpf_fib_lookup(skb, fib, sizeof(*fib), 0));
}

/*
 * The one exit of the egress program: a translated error counts as
 * WEIR_V_ICMP_LOCAL when it leaves as routed (its destination, the client,
 * is unchanged), or WEIR_V_ICMP_LOCAL_REDIRECT when it got a new destination
 * and is sent by FIB redirect; handle_icmp*_error's drops count as
 * themselves. IPv6 counts at v + WEIR_V_IPV6, as at ingress.
 */
static __always_inline int egress_verdict(__u32 v, __u32 family6)
{
	__u32 key = v + (family6 ? WEIR_V_IPV6 : 0);
	__u64 *count = bpf_map_lookup_elem(&weir1_verdicts, &key);

	if (count)
		*count += 1;
	return v == WEIR_V_ICMP_LOCAL || v == WEIR_V_ICMP_LOCAL_REDIRECT ? TC_ACT_OK : TC_ACT_SHOT;
}

/* Translated, dropped, or WEIR_PASS: the verdict to count. */
static __always_inline int egress_outcome(int v)
{
	switch (v) {
	case WEIR_PASS:
		return WEIR_PASS;
	case WEIR_V_FORWARD:
	case WEIR_V_REVNAT:
	case WEIR_V_FORWARD_REDIRECT:
	case WEIR_V_REVNAT_REDIRECT:
	case WEIR_V_REVNAT_HOST:
		return WEIR_V_ICMP_LOCAL; /* the caller tells a new destination */
	default:
		return v;
	}
}

/* An IPv4 ICMP message leaving: errors about our flows are translated. */
__attribute__((noinline)) int egress_icmp4(struct __sk_buff *skb)
{
	struct bpf_fib_lookup fib = {};
	struct iphdr ip;
	__u8 type;
	__be32 daddr;
	int v;

	if (bpf_skb_load_bytes(skb, L3_OFF, &ip, sizeof(ip)) || ip.protocol != IPPROTO_ICMP || ip.ihl < 5 ||
	    (ip.frag_off & bpf_htons(IP_MF | IP_OFFSET)) ||
	    bpf_skb_load_bytes(skb, L3_OFF + ip.ihl * 4, &type, sizeof(type)) || !icmp_error_type(type))
		return TC_ACT_OK;
	v = egress_outcome(handle_icmp_error(skb, L3_OFF + ip.ihl * 4));
	if (v == WEIR_PASS)
		return TC_ACT_OK;
	if (v == WEIR_V_ICMP_LOCAL) {
		if (bpf_skb_load_bytes(skb, IP_DST_OFF, &daddr, sizeof(daddr)))
			return egress_verdict(WEIR_V_DROP_NAT_FAILED, 0);
		if (daddr == ip.daddr)
			return egress_verdict(v, 0);
		fib.family = AF_INET;
		fib.l4_protocol = IPPROTO_ICMP;
		fib.ipv4_src = ip.saddr;
		fib.ipv4_dst = daddr;
		egress_verdict(WEIR_V_ICMP_LOCAL_REDIRECT, 0);
		return egress_fib_send(skb, &fib);
	}
	return egress_verdict(v, 0);
}

/* An ICMPv6 message right after the fixed header (the kernel's own errors carry no extension header). */
__attribute__((noinline)) int egress_icmp6(struct __sk_buff *skb)
{
	struct bpf_fib_lookup fib = {};
	struct weir_ip6hdr ip6;
	__be32 daddr[4];
	__u8 type;
	int v;

	if (bpf_skb_load_bytes(skb, L3_OFF, &ip6, sizeof(ip6)) || ip6.nexthdr != NEXTHDR_ICMP6 ||
	    bpf_skb_load_bytes(skb, L3_OFF + IP6_HLEN, &type, sizeof(type)) || type < ICMP6_DST_UNREACH ||
	    type > ICMP6_PARAM_PROB)
		return TC_ACT_OK;
	v = egress_outcome(handle_icmp6_error(skb, L3_OFF + IP6_HLEN, 0));
	if (v == WEIR_PASS)
		return TC_ACT_OK;
	if (v == WEIR_V_ICMP_LOCAL) {
		if (bpf_skb_load_bytes(skb, IP6_DST_OFF, daddr, sizeof(daddr)))
			return egress_verdict(WEIR_V_DROP_NAT_FAILED, 1);
		if (ip6_eq(daddr, ip6.daddr))
			return egress_verdict(v, 1);
		fib.family = AF_INET6;
		fib.l4_protocol = NEXTHDR_ICMP6;
		__builtin_memcpy(fib.ipv6_src, ip6.saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, daddr, 16);
		egress_verdict(WEIR_V_ICMP_LOCAL_REDIRECT, 1);
		return egress_fib_send(skb, &fib);
	}
	return egress_verdict(v, 1);
}

/* The fast path: one byte read for anything but ICMP/ICMPv6. */
static __always_inline int tc_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + L3_OFF;

		if ((void *)(ip + 1) <= data_end && ip->protocol != IPPROTO_ICMP)
			return TC_ACT_OK;
		return egress_icmp4(skb);
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct weir_ip6hdr *ip6 = data + L3_OFF;

		if ((void *)(ip6 + 1) <= data_end && ip6->nexthdr != NEXTHDR_ICMP6)
			return TC_ACT_OK;
		return egress_icmp6(skb);
	}
	return TC_ACT_OK;
}

#endif
