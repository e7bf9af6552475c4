/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Forward a NATed packet straight to its egress device.
 *
 * Why not hand it back to the stack: after masquerade (source = node IP) or
 * reverse NAT of a NodePort reply (source = node IP) the packet arrives on
 * ingress with a local source address, and the IPv4 input route drops it as
 * a martian. A FIB lookup plus redirect sends it where the routing table
 * says without that check (and skips the rest of the input path).
 *
 * When the FIB says the destination is this host, or has no route, the stack
 * gets the packet as usual.
 */
#ifndef WEIR_FIB_H
#define WEIR_FIB_H

#include "parse.h"
#include "parse6.h"

#define LOOPBACK_IFINDEX 1 /* lo is always ifindex 1 in its namespace */

/*
 * A node process's datagram on the loopback path is sized for lo's 64 KiB
 * MTU, not for the device it leaves by. Had the socket sent it to the
 * backend directly, the kernel would have fragmented it there (a socket
 * that allows fragmentation sets DF but ignores it for its own packets),
 * as it does after kube-proxy's OUTPUT DNAT. A tc program cannot fragment,
 * and a redirect would drop what does not fit: the datagram goes to the
 * stack instead, which forwards it from lo (the one device that takes a
 * local source) and fragments it on the way out, DF cleared first. TCP
 * needs none of this: its segments are sized for the backend's MSS.
 */
static __always_inline int host_fragment(struct __sk_buff *skb)
{
	__be16 old, new;

	if (bpf_skb_load_bytes(skb, L3_OFF + offsetof(struct iphdr, frag_off), &old, sizeof(old)))
		return TC_ACT_SHOT;
	new = old & ~bpf_htons(IP_DF);
	if (new != old && (bpf_skb_store_bytes(skb, L3_OFF + offsetof(struct iphdr, frag_off), &new, sizeof(new), 0) ||
			   bpf_l3_csum_replace(skb, IP_CSUM_OFF, old, new, sizeof(new))))
		return TC_ACT_SHOT;
	/* Through lo again rather than on: the packet still carries the route
	 * it was looped back with (to this host), and only a fresh pass through
	 * the input path routes it by its new destination. */
	return bpf_redirect(LOOPBACK_IFINDEX, BPF_F_INGRESS);
}

static __always_inline int fib_redirect(struct __sk_buff *skb, const struct pkt *p)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	/* An ICMP error is small, and the kernel never sends it with DF cleared for it. */
	if (skb->ingress_ifindex == LOOPBACK_IFINDEX && p->proto != IPPROTO_TCP && p->proto != IPPROTO_ICMP)
		return host_fragment(skb);
	fib.family = AF_INET;
	fib.l4_protocol = p->proto;
	fib.sport = p->sport;
	fib.dport = p->dport;
	fib.ipv4_src = p->saddr;
	fib.ipv4_dst = p->daddr;
	fib.ifindex = skb->ingress_ifindex;

	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) ||
		    bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0))
			return TC_ACT_SHOT;
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0); /* the kernel resolves the next hop */
	return TC_ACT_OK;
}

/* Send a neighbour the FIB found, or have the kernel resolve it; TC_ACT_OK: the stack decides. */
static __always_inline int fib_send(struct __sk_buff *skb, struct bpf_fib_lookup *fib, long rc)
{
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (bpf_skb_store_bytes(skb, 0, fib->dmac, ETH_ALEN, 0) ||
		    bpf_skb_store_bytes(skb, ETH_ALEN, fib->smac, ETH_ALEN, 0))
			return TC_ACT_SHOT;
		return bpf_redirect(fib->ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib->ifindex, NULL, 0, 0);
	return TC_ACT_OK;
}

/*
 * fib_redirect for IPv6. IPv6 routers never fragment, so a node process's
 * datagram from lo that does not fit the egress device is not given to the
 * stack as IPv4's is (host_fragment): it is redirected like the rest. A
 * subprogram: its lookup struct gets a stack frame of its own.
 */
static __attribute__((noinline)) int fib_redirect6(struct __sk_buff *skb, const struct pkt6 *p)
{
	struct bpf_fib_lookup fib = {};

	fib.family = AF_INET6;
	fib.l4_protocol = p->proto;
	fib.sport = p->sport;
	fib.dport = p->dport;
	__builtin_memcpy(fib.ipv6_src, p->saddr, 16);
	__builtin_memcpy(fib.ipv6_dst, p->daddr, 16);
	fib.ifindex = skb->ingress_ifindex;
	return fib_send(skb, &fib, bpf_fib_lookup(skb, &fib, sizeof(fib), 0));
}

/*
 * A reply to a node process that came through the loopback path: its
 * destination (127.0.0.1, or a local service address) is this host, and it
 * now carries a local source, which every device but lo refuses as a
 * martian. lo takes it (the agent sets accept_local and route_localnet on
 * lo alone) when the frame is addressed to lo's all-zero MAC.
 */
static __always_inline int host_deliver(struct __sk_buff *skb)
{
	__u8 zero[2 * ETH_ALEN] = {};

	if (bpf_skb_store_bytes(skb, 0, zero, sizeof(zero), 0))
		return TC_ACT_SHOT;
	return bpf_redirect(LOOPBACK_IFINDEX, BPF_F_INGRESS);
}

#endif
