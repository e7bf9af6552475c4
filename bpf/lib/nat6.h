/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv6 address and port rewrites (SCTP's CRC32c: sctp.h). IPv6 has no header checksum; the L4
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
#include "sctp.h"
#include "scratch6.h"

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

/*
 * Rewrite the source (is_src) or destination address and port of the
 * TCP/UDP packet whose L4 header is at l4_off to the scratch's nat_addr and
 * port. The old values are read back from the packet. 0 on success. A
 * global function (scratch6.h): four call sites, verified once. proto
 * carries NAT6_L3_ONLY for a later fragment, which has no L4 header: only
 * its address changes.
 */
#define NAT6_L3_ONLY 0x100

__attribute__((noinline)) int nat6_set(struct __sk_buff *skb, __u32 l4_off, __u32 proto, __u32 is_src, __u32 port32)
{
	struct scratch6 *sc = scratch6_get();
	__u32 addr_off = is_src ? IP6_SRC_OFF : IP6_DST_OFF;
	__u32 csum_off = l4_csum_off6((__u8)proto, l4_off);
	__be16 port = (__be16)port32;
	__be32 old[4], addr[4];
	__u64 flags = 0;
	bool csum = true;
	__be16 old_port;

	if (!sc || l4_off > 0xffff)
		return -1;
	ip6_cp(addr, sc->nat_addr);
	if (proto & NAT6_L3_ONLY)
		return bpf_skb_store_bytes(skb, addr_off, addr, sizeof(addr), 0) ? -1 : 0;
	/* SCTP's CRC covers no address: the address is a plain store, the port sctp.h's. */
	if (proto == IPPROTO_SCTP) {
		if (bpf_skb_store_bytes(skb, addr_off, addr, sizeof(addr), 0) ||
		    bpf_skb_load_bytes(skb, l4_off + (is_src ? 0 : 2), &old_port, sizeof(old_port)))
			return -1;
		return sctp_set_port(skb, l4_off, l4_off - L3_OFF, is_src, (__u32)old_port | (__u32)port << 16);
	}
	if (bpf_skb_load_bytes(skb, addr_off, old, sizeof(old)) ||
	    bpf_skb_load_bytes(skb, l4_off + (is_src ? 0 : 2), &old_port, sizeof(old_port)))
		return -1;
	if (proto == IPPROTO_UDP) {
		__be16 check;

		if (bpf_skb_load_bytes(skb, csum_off, &check, sizeof(check)))
			return -1;
		csum = check != 0;
		flags = BPF_F_MARK_MANGLED_0;
	}
	if (!ip6_eq(old, addr) && nat6_addr(skb, addr_off, old, addr, csum_off, flags, csum))
		return -1;
	if (old_port != port) {
		if (bpf_skb_store_bytes(skb, l4_off + (is_src ? 0 : 2), &port, sizeof(port), 0))
			return -1;
		if (csum && bpf_l4_csum_replace(skb, csum_off, old_port, port, flags | sizeof(port)))
			return -1;
	}
	return 0;
}

/* Rewrite the source (is_src) or destination of the packet; p follows. 0 on success. */
static __always_inline int nat6_rewrite(struct __sk_buff *skb, struct pkt6 *p, bool is_src, const __be32 *addr,
					__be16 port)
{
	struct scratch6 *sc = scratch6_get();

	if (!sc)
		return -1;
	ip6_cp(sc->nat_addr, addr);
	if (nat6_set(skb, p->l4_off, p->proto | (p->frag == PKT_FRAG_LATER ? NAT6_L3_ONLY : 0), is_src, port))
		return -1;
	if (is_src) {
		ip6_cp(p->saddr, addr);
		p->sport = port;
	} else {
		ip6_cp(p->daddr, addr);
		p->dport = port;
	}
	return 0;
}

#endif
