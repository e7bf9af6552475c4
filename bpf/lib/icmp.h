/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMP errors about a NATed IPv4 flow (destination unreachable, including
 * fragmentation needed; time exceeded; parameter problem) translated like
 * the flow, so the socket that sent the quoted packet finds them. icmp6.h
 * does the same for IPv6 and explains the two cases (a quote client ->
 * backend names the flow's REV entry, a quote frontend -> client its FWD
 * entry); the rewrites here are the same, with IPv4's checksums:
 *
 *  - ICMP's checksum covers the message only (no pseudo header), so a new
 *    destination of the error itself changes the outer IP checksum alone;
 *  - the quote carries a whole IPv4 header with its own checksum. A quoted
 *    address is rewritten together with that checksum, which keeps the
 *    quoted header's one's-complement sum (and so the ICMP checksum over
 *    it) unchanged: one helper call, not two;
 *  - a quoted port changes the ICMP checksum; the quote's own L4 checksum
 *    is left as it is (the quote is truncated; no receiver checks it).
 */
#ifndef WEIR_ICMP_H
#define WEIR_ICMP_H

#include "ct.h"
#include "verdict.h"

#define ICMP_CSUM_OFF 2 /* in the ICMP header */
#define ICMP_HLEN 8

/* A quoted address at off, with the quoted header's checksum at qcsum_off (see above). */
static __always_inline int icmp_quote_addr(struct __sk_buff *skb, __u32 off, __be32 old, __be32 addr, __u32 qcsum_off)
{
	if (old == addr)
		return 0;
	if (bpf_skb_store_bytes(skb, off, &addr, sizeof(addr), 0))
		return -1;
	return bpf_l3_csum_replace(skb, qcsum_off, old, addr, sizeof(addr)) ? -1 : 0;
}

static __always_inline int icmp_quote_port(struct __sk_buff *skb, __u32 off, __be16 old, __be16 port, __u32 csum_off)
{
	if (old == port)
		return 0;
	if (bpf_skb_store_bytes(skb, off, &port, sizeof(port), 0))
		return -1;
	return bpf_l4_csum_replace(skb, csum_off, old, port, sizeof(port)) ? -1 : 0;
}

/* The error's own destination (outer header): the IPv4 header checksum only. */
static __always_inline int icmp_error_daddr(struct __sk_buff *skb, __be32 old, __be32 addr)
{
	if (old == addr)
		return 0;
	if (bpf_skb_store_bytes(skb, IP_DST_OFF, &addr, sizeof(addr), 0))
		return -1;
	return bpf_l3_csum_replace(skb, IP_CSUM_OFF, old, addr, sizeof(addr)) ? -1 : 0;
}

/*
 * An ICMP error whose header is at l4_off (the caller checked the type): a
 * verdict as icmp6.h's (WEIR_V_REVNAT / WEIR_V_FORWARD, their _REDIRECT
 * forms when the flow's packets are redirected), or WEIR_PASS when its
 * quote is no flow of ours. A global function: verified once, apart from
 * its callers' state.
 */
__attribute__((noinline)) int handle_icmp_error(struct __sk_buff *skb, __u32 l4_off)
{
	__u64 now = weir_now();
	__u32 csum_off = l4_off + ICMP_CSUM_OFF;
	__u32 q_off = l4_off + ICMP_HLEN;
	__u32 qcsum_off = q_off + offsetof(struct iphdr, check);
	struct weir_ct_key k = {};
	struct weir_ct_val *ct;
	struct iphdr q;
	__be16 ports[2];
	__be32 daddr;
	__u32 q_l4;

	if (l4_off > 0xffff || bpf_skb_load_bytes(skb, IP_DST_OFF, &daddr, sizeof(daddr)) ||
	    bpf_skb_load_bytes(skb, q_off, &q, sizeof(q)))
		return WEIR_PASS;
	if (q.version != 4 || q.ihl < 5 || (q.frag_off & bpf_htons(IP_OFFSET)))
		return WEIR_PASS;
	if (q.protocol != IPPROTO_TCP && q.protocol != IPPROTO_UDP && q.protocol != IPPROTO_SCTP)
		return WEIR_PASS;
	q_l4 = q_off + q.ihl * 4;
	if (bpf_skb_load_bytes(skb, q_l4, ports, sizeof(ports)))
		return WEIR_PASS;

	/* Both directions' entries are keyed as the quote reversed. */
	k.saddr = q.daddr;
	k.daddr = q.saddr;
	k.sport = ports[1];
	k.dport = ports[0];
	k.proto = q.protocol;
	k.dir = WEIR_CT_REV;
	ct = bpf_map_lookup_elem(&weir1_ct, &k);
	if (ct && ct_alive(&k, ct, now)) {
		/* The quote went client -> backend: it becomes client -> frontend. */
		__u32 id = ct->rev_nat_id;
		struct weir_revnat *rn = bpf_map_lookup_elem(&weir1_revnat, &id);

		if (!rn)
			return WEIR_V_DROP_REVNAT_MISSING;
		if (icmp_quote_addr(skb, q_off + offsetof(struct iphdr, daddr), q.daddr, rn->addr, qcsum_off) ||
		    icmp_quote_port(skb, q_l4 + 2, ports[1], rn->port, csum_off))
			return WEIR_V_DROP_NAT_FAILED;
		if ((ct->flags & WEIR_CT_F_SNAT) &&
		    (icmp_quote_addr(skb, q_off + offsetof(struct iphdr, saddr), q.saddr, ct->nat_addr, qcsum_off) ||
		     icmp_quote_port(skb, q_l4, ports[0], ct->nat_port, csum_off) ||
		     icmp_error_daddr(skb, daddr, ct->nat_addr)))
			return WEIR_V_DROP_NAT_FAILED;
		/* To a node process on the loopback path (now addressed to 127.0.0.1,
		 * say): only lo takes it, as the flow's replies (service.h). */
		if (ct->flags & WEIR_CT_F_HOST)
			return WEIR_V_REVNAT_HOST;
		return ct->flags & WEIR_CT_F_REDIRECT ? WEIR_V_REVNAT_REDIRECT : WEIR_V_REVNAT;
	}
	k.dir = WEIR_CT_FWD;
	ct = bpf_map_lookup_elem(&weir1_ct, &k);
	if (ct && ct_alive(&k, ct, now)) {
		/* The quote went frontend -> client: it becomes backend -> client. */
		__u32 id = ct->backend_id;
		struct weir_backend *be = bpf_map_lookup_elem(&weir1_be, &id);

		if (!be)
			return WEIR_V_DROP_NO_BACKEND;
		if (icmp_quote_addr(skb, q_off + offsetof(struct iphdr, saddr), q.saddr, be->addr, qcsum_off) ||
		    icmp_quote_port(skb, q_l4, ports[0], be->port, csum_off) || icmp_error_daddr(skb, daddr, be->addr))
			return WEIR_V_DROP_NAT_FAILED;
		if ((ct->flags & WEIR_CT_F_SNAT) &&
		    (icmp_quote_addr(skb, q_off + offsetof(struct iphdr, daddr), q.daddr, ct->nat_addr, qcsum_off) ||
		     icmp_quote_port(skb, q_l4 + 2, ports[1], ct->nat_port, csum_off)))
			return WEIR_V_DROP_NAT_FAILED;
		return ct->flags & WEIR_CT_F_REDIRECT ? WEIR_V_FORWARD_REDIRECT : WEIR_V_FORWARD;
	}
	return WEIR_PASS;
}

/*
 * An error arriving at tc ingress (parse_packet let it through), from
 * another host or, through lo, from this node toward a local address (a
 * masqueraded flow's). As icmp6_verdict: it goes on by FIB redirect when
 * its flow's packets do, and always when it came from lo; the redirect
 * routes by the error's new destination.
 */
static __always_inline int handle_icmp(struct __sk_buff *skb, struct pkt *p, bool from_host)
{
	int v = handle_icmp_error(skb, p->l4_off);

	if (from_host && v == WEIR_V_FORWARD)
		v = WEIR_V_FORWARD_REDIRECT;
	else if (from_host && v == WEIR_V_REVNAT)
		v = WEIR_V_REVNAT_REDIRECT;
	if ((v == WEIR_V_FORWARD_REDIRECT || v == WEIR_V_REVNAT_REDIRECT) &&
	    bpf_skb_load_bytes(skb, IP_DST_OFF, &p->daddr, sizeof(p->daddr)))
		return WEIR_V_DROP_NAT_FAILED;
	return v;
}

#endif
