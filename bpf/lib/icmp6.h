/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMPv6 errors about a NATed flow (destination unreachable, packet too
 * big, time exceeded, parameter problem) translated like the flow, so the
 * socket that sent the quoted packet finds them: without this a Packet Too
 * Big about a backend's reply would reach the backend addressed to the
 * ClusterIP, and path MTU discovery through a service would stall (Linux's
 * conntrack does the same for kube-proxy's NAT, as "related" packets).
 *
 * The quoted packet is one this node translated, so it appears as NATed:
 *
 *  - client -> backend (after DNAT; a router toward the backend complains
 *    to the client or the masquerade address): the flow's REV entry, keyed
 *    as the quote reversed, names it. The quote's destination becomes the
 *    frontend again, and after masquerade its source and the error's
 *    destination become the client;
 *  - frontend -> client (after reverse NAT; a router toward the client
 *    complains to the frontend address): the FWD entry, keyed as the quote
 *    reversed, names it. The quote's source and the error's destination
 *    become the backend, and after masquerade the quote's destination the
 *    masquerade address.
 *
 * The ICMPv6 checksum covers the pseudo header (the error's addresses) and
 * the whole message with the quote: every change is folded in
 * incrementally. The quote's own L4 checksum is not updated: the quote is
 * usually truncated, and no receiver checks it. An error does not refresh
 * the flow's conntrack entries (it says nothing about the flow being alive).
 */
#ifndef WEIR_ICMP6_H
#define WEIR_ICMP6_H

#include "ct6.h"
#include "nat6.h"
#include "verdict.h"

#define ICMP6_CSUM_OFF 2 /* in the ICMPv6 header */
#define ICMP6_HLEN 8 /* type, code, checksum, 4 bytes (MTU, pointer or unused) */

/* Replace a 128-bit address inside the message at off, folding the change into the ICMPv6 checksum. */
static __always_inline int icmp6_quote_addr(struct __sk_buff *skb, __u32 off, const __be32 *old, const __be32 *addr,
					    __u32 csum_off)
{
	__be32 from[4], to[4];
	__s64 diff;

	if (ip6_eq(old, addr))
		return 0;
	ip6_cp(from, old);
	ip6_cp(to, addr);
	if (bpf_skb_store_bytes(skb, off, to, sizeof(to), 0))
		return -1;
	diff = bpf_csum_diff(from, sizeof(from), to, sizeof(to), 0);
	if (diff < 0)
		return -1;
	return bpf_l4_csum_replace(skb, csum_off, 0, (__u32)diff, 0) ? -1 : 0;
}

static __always_inline int icmp6_quote_port(struct __sk_buff *skb, __u32 off, __be16 old, __be16 port, __u32 csum_off)
{
	if (old == port)
		return 0;
	if (bpf_skb_store_bytes(skb, off, &port, sizeof(port), 0))
		return -1;
	return bpf_l4_csum_replace(skb, csum_off, old, port, sizeof(port)) ? -1 : 0;
}

/*
 * An error goes on the way its flow's packets do: by FIB redirect when the
 * flow's are (masquerade, NodePort), and always from lo, where one arrives
 * when this node generated it toward a local address (a NodePort's node
 * IP): the input path would not forward it from lo.
 */
static __always_inline int icmp6_verdict(const struct weir_ct6_val *ct, bool from_host, int v)
{
	/* To a node process on the loopback path: only lo takes it, as the flow's replies. */
	if (v == WEIR_V_REVNAT && (ct->flags & WEIR_CT_F_HOST))
		return WEIR_V_REVNAT_HOST;
	if (!from_host && !(ct->flags & WEIR_CT_F_REDIRECT))
		return v;
	return v == WEIR_V_FORWARD ? WEIR_V_FORWARD_REDIRECT : WEIR_V_REVNAT_REDIRECT;
}

/*
 * An ICMPv6 error whose header is at l4_off: a verdict, or WEIR_PASS when
 * its quote is no flow of ours. A global function, verified once whatever
 * the state of its caller (scalars only, scratch6.h): the error's
 * destination is read from the packet, and the caller reads it back.
 */
__attribute__((noinline)) int handle_icmp6_error(struct __sk_buff *skb, __u32 l4_off, __u32 from_host)
{
	__u64 now = weir_now();
	__u32 csum_off = l4_off + ICMP6_CSUM_OFF;
	__u32 q_off = l4_off + ICMP6_HLEN;
	__u32 q_l4 = q_off + IP6_HLEN;
	__be32 daddr[4];
	struct weir_ct6_key k = {};
	struct weir_ct6_val *ct;
	struct weir_ip6hdr q;
	__u8 nh, frag = PKT_WHOLE;
	__be32 frag_id = 0;
	__be16 ports[2];
	bool snat;

	if (l4_off > 0xffff || bpf_skb_load_bytes(skb, IP6_DST_OFF, daddr, sizeof(daddr)) ||
	    bpf_skb_load_bytes(skb, q_off, &q, sizeof(q)))
		return WEIR_PASS;
	nh = q.nexthdr;
	if (!ip6_skip_ext(skb, &q_l4, &nh, &frag, &frag_id) || frag == PKT_FRAG_LATER)
		return WEIR_PASS;
	if ((nh != IPPROTO_TCP && nh != IPPROTO_UDP && nh != IPPROTO_SCTP) ||
	    bpf_skb_load_bytes(skb, q_l4, ports, sizeof(ports)))
		return WEIR_PASS;

	/* Both directions' entries are keyed as the quote reversed. */
	ip6_cp(k.saddr, q.daddr);
	ip6_cp(k.daddr, q.saddr);
	k.sport = ports[1];
	k.dport = ports[0];
	k.proto = nh;
	k.dir = WEIR_CT_REV;
	ct = bpf_map_lookup_elem(&weir1_ct6, &k);
	if (ct && ct6_alive(&k, ct, now)) {
		/* The quote went client -> backend: it becomes client -> frontend. */
		__u32 id = ct->rev_nat_id;
		struct weir_revnat6 *rn = bpf_map_lookup_elem(&weir1_revnat6, &id);

		if (!rn)
			return WEIR_V_DROP_REVNAT_MISSING;
		snat = ct->flags & WEIR_CT_F_SNAT;
		if (icmp6_quote_addr(skb, q_off + 24, q.daddr, rn->addr, csum_off) ||
		    icmp6_quote_port(skb, q_l4 + 2, ports[1], rn->port, csum_off))
			return WEIR_V_DROP_NAT_FAILED;
		if (snat && (icmp6_quote_addr(skb, q_off + 8, q.saddr, ct->nat_addr, csum_off) ||
			     icmp6_quote_port(skb, q_l4, ports[0], ct->nat_port, csum_off) ||
			     nat6_addr(skb, IP6_DST_OFF, daddr, ct->nat_addr, csum_off, 0, true)))
			return WEIR_V_DROP_NAT_FAILED;
		return icmp6_verdict(ct, from_host, WEIR_V_REVNAT);
	}
	k.dir = WEIR_CT_FWD;
	ct = bpf_map_lookup_elem(&weir1_ct6, &k);
	if (ct && ct6_alive(&k, ct, now)) {
		/* The quote went frontend -> client: it becomes backend -> client. */
		__u32 id = ct->backend_id;
		struct weir_backend6 *be = bpf_map_lookup_elem(&weir1_be6, &id);

		if (!be)
			return WEIR_V_DROP_NO_BACKEND;
		snat = ct->flags & WEIR_CT_F_SNAT;
		if (icmp6_quote_addr(skb, q_off + 8, q.saddr, be->addr, csum_off) ||
		    icmp6_quote_port(skb, q_l4, ports[0], be->port, csum_off) ||
		    nat6_addr(skb, IP6_DST_OFF, daddr, be->addr, csum_off, 0, true))
			return WEIR_V_DROP_NAT_FAILED;
		if (snat && (icmp6_quote_addr(skb, q_off + 24, q.daddr, ct->nat_addr, csum_off) ||
			     icmp6_quote_port(skb, q_l4 + 2, ports[1], ct->nat_port, csum_off)))
			return WEIR_V_DROP_NAT_FAILED;
		return icmp6_verdict(ct, from_host, WEIR_V_FORWARD);
	}
	return WEIR_PASS;
}

#endif
