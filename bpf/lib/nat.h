/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Address and port rewrites with incremental checksum updates.
 *
 * The L4 checksum covers a pseudo header with both addresses, so address
 * changes use BPF_F_PSEUDO_HDR (which also keeps CHECKSUM_PARTIAL packets
 * from pods with TX offload correct); port changes do not. A UDP checksum
 * of zero means "none" and must stay zero, hence BPF_F_MARK_MANGLED_0.
 */
#ifndef WEIR_NAT_H
#define WEIR_NAT_H

#include "parse.h"

static __always_inline __u32 l4_csum_off(const struct pkt *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check) : offsetof(struct udphdr, check));
}

/* Rewrite the source (is_src) or destination address and port. 0 on success. */
static __always_inline int nat_rewrite(struct __sk_buff *skb, struct pkt *p, bool is_src, __be32 addr,
				       __be16 port)
{
	__be32 old_addr = is_src ? p->saddr : p->daddr;
	__be16 old_port = is_src ? p->sport : p->dport;
	__u32 csum_off = l4_csum_off(p);
	__u64 l4_flags = 0;
	bool l4_csum = true;

	if (p->proto == IPPROTO_UDP) {
		__u16 udp_csum;

		if (bpf_skb_load_bytes(skb, csum_off, &udp_csum, sizeof(udp_csum)))
			return -1;
		l4_csum = udp_csum != 0;
		l4_flags = BPF_F_MARK_MANGLED_0;
	}
	if (old_addr != addr) {
		if (l4_csum &&
		    bpf_l4_csum_replace(skb, csum_off, old_addr, addr, l4_flags | BPF_F_PSEUDO_HDR | sizeof(addr)))
			return -1;
		if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, addr, sizeof(addr)))
			return -1;
		if (bpf_skb_store_bytes(skb, is_src ? IP_SRC_OFF : IP_DST_OFF, &addr, sizeof(addr), 0))
			return -1;
	}
	if (old_port != port) {
		if (l4_csum && bpf_l4_csum_replace(skb, csum_off, old_port, port, l4_flags | sizeof(port)))
			return -1;
		/* Both TCP and UDP keep source port at +0 and destination at +2. */
		if (bpf_skb_store_bytes(skb, p->l4_off + (is_src ? 0 : 2), &port, sizeof(port), 0))
			return -1;
	}
	if (is_src) {
		p->saddr = addr;
		p->sport = port;
	} else {
		p->daddr = addr;
		p->dport = port;
	}
	return 0;
}

#endif
