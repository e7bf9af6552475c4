/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv6 address and port rewrites. IPv6 has no header checksum; the L4
 * checksum covers a pseudo header with both 128-bit addresses, so an
 * address change is one bpf_csum_diff() over the old and new address fed to
 * bpf_l4_csum_replace() as a difference (size 0) with BPF_F_PSEUDO_HDR,
 * which keeps CHECKSUM_PARTIAL packets from pods with TX offload correct,
 * as nat.h does for IPv4. A UDP checksum of zero is invalid over IPv6 (RFC
 * 8200) but is kept zero all the same: the stack drops such a datagram
 * either way.
 */
#ifndef WEIR_NAT6_H
#define WEIR_NAT6_H

#include "parse6.h"

/* Offset of the checksum in the L4 header at p->l4_off (TCP, UDP, ICMPv6). */
static __always_inline __u32 l4_csum_off6(__u8 proto, __u32 l4_off)
{
	return l4_off + (proto == IPPROTO_TCP ? offsetof(struct tcphdr, check) : offsetof(struct udphdr, check));
}

/* Store a 128-bit address at off and fold the change into the checksum at csum_off (pseudo header). */
static __always_inline int nat6_addr(struct __sk_buff *skb, __u32 off, const __be32 *old, const __be32 *addr,
				     __u32 csum_off, __u64 flags, bool csum)
{
	__be32 from[4], to[4];
	__s64 diff;

	ip6_cp(from, old);
	ip6_cp(to, addr);
	if (bpf_skb_store_bytes(skb, off, to, sizeof(to), 0))
		return -1;
	if (!csum)
		return 0;
	diff = bpf_csum_diff(from, sizeof(from), to, sizeof(to), 0);
	if (diff < 0)
		return -1;
	return bpf_l4_csum_replace(skb, csum_off, 0, (__u32)diff, flags | BPF_F_PSEUDO_HDR) ? -1 : 0;
}

/* Rewrite the source (is_src) or destination address and port of a TCP/UDP packet. 0 on success. */
static __always_inline int nat6_rewrite(struct __sk_buff *skb, struct pkt6 *p, bool is_src, const __be32 *addr,
					__be16 port)
{
	__u32 csum_off = l4_csum_off6(p->proto, p->l4_off);
	__be16 old_port = is_src ? p->sport : p->dport;
	__be32 *old = is_src ? p->saddr : p->daddr;
	__u64 flags = 0;
	bool csum = true;

	if (p->proto == IPPROTO_UDP) {
		__be16 check;

		if (bpf_skb_load_bytes(skb, csum_off, &check, sizeof(check)))
			return -1;
		csum = check != 0;
		flags = BPF_F_MARK_MANGLED_0;
	}
	if (!ip6_eq(old, addr) && nat6_addr(skb, is_src ? IP6_SRC_OFF : IP6_DST_OFF, old, addr, csum_off, flags, csum))
		return -1;
	if (old_port != port) {
		if (bpf_skb_store_bytes(skb, p->l4_off + (is_src ? 0 : 2), &port, sizeof(port), 0))
			return -1;
		if (csum && bpf_l4_csum_replace(skb, csum_off, old_port, port, flags | sizeof(port)))
			return -1;
	}
	ip6_cp(old, addr);
	if (is_src)
		p->sport = port;
	else
		p->dport = port;
	return 0;
}

#endif
