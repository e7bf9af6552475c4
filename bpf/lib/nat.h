/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Address and port rewrites with incremental checksum updates (SCTP's
 * CRC32c: sctp.h).
 *
 * The L4 checksum covers a pseudo header with both addresses, so address
 * changes use BPF_F_PSEUDO_HDR (which also keeps CHECKSUM_PARTIAL packets
 * from pods with TX offload correct); port changes do not. A UDP checksum
 * of zero means "none" and must stay zero, hence BPF_F_MARK_MANGLED_0.
 */
#ifndef WEIR_NAT_H
#define WEIR_NAT_H

#include "parse.h"
#include "sctp.h"

static __always_inline __u32 l4_csum_off(const struct pkt *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check) : offsetof(struct udphdr, check));
}

/* The summary follows the packet: later steps see the translated tuple. */
static __always_inline void pkt_set(struct pkt *p, bool is_src, __be32 addr, __be16 port)
{
	if (is_src) {
		p->saddr = addr;
		p->sport = port;
	} else {
		p->daddr = addr;
		p->dport = port;
	}
}

/*
 * A later fragment has no L4 header: only its address changes, and with it
 * only the IPv4 header checksum. The L4 checksum lives in the first
 * fragment, whose incremental update (new addresses in the pseudo header,
 * new port) is right for the whole datagram. p takes the translated port
 * too, so the caller sees the same tuple as for the first fragment.
 */
static __always_inline int nat_rewrite_l3(struct __sk_buff *skb, struct pkt *p, bool is_src, __be32 addr, __be16 port)
{
	__be32 old_addr = is_src ? p->saddr : p->daddr;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + L3_OFF;

	if ((void *)(ip + 1) > data_end)
		return -1;
	if (is_src)
		ip->saddr = addr;
	else
		ip->daddr = addr;
	if (old_addr != addr && bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, addr, sizeof(addr)))
		return -1;
	pkt_set(p, is_src, addr, port);
	return 0;
}

/*
 * Rewrite the source (is_src) or destination address and port. 0 on success.
 *
 * The new values go into the packet by direct access (the verifier makes a
 * cloned skb private before the program runs); only the checksums go
 * through helpers, because only the kernel knows whether the skb carries a
 * CHECKSUM_PARTIAL pseudo-header sum or a CHECKSUM_COMPLETE csum to keep in
 * step. Three helper calls for a DNAT instead of five: this runs for every
 * packet of every NATed flow.
 */
static __always_inline int nat_rewrite(struct __sk_buff *skb, struct pkt *p, bool is_src, __be32 addr, __be16 port)
{
	__be32 old_addr = is_src ? p->saddr : p->daddr;
	__be16 old_port = is_src ? p->sport : p->dport;
	__u32 csum_off = l4_csum_off(p);
	__u32 l4_off = p->l4_off;
	__u64 l4_flags = 0;
	bool l4_csum = true;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + L3_OFF;
	__be16 *ports;

	if (p->frag == PKT_FRAG_LATER)
		return nat_rewrite_l3(skb, p, is_src, addr, port);
	/* SCTP's CRC covers no address: the address is an IPv4 header change, the port sctp.h's. */
	if (p->proto == IPPROTO_SCTP) {
		if (nat_rewrite_l3(skb, p, is_src, addr, port))
			return -1;
		return sctp_set_port(skb, p->l4_off, p->ihl, is_src, (__u32)old_port | (__u32)port << 16);
	}
	/* parse_packet checked these bounds; a helper call since may have moved the data. */
	if (l4_off > L3_OFF + 60)
		return -1;
	ports = data + l4_off;
	if ((void *)(ip + 1) > data_end || (void *)(ports + 4) > data_end)
		return -1;
	if (p->proto == IPPROTO_UDP) {
		/* A UDP checksum of zero means "none" and must stay zero. */
		l4_csum = ports[3] != 0;
		l4_flags = BPF_F_MARK_MANGLED_0;
	}
	/* Both TCP and UDP keep source port at +0 and destination at +2. */
	if (is_src) {
		ip->saddr = addr;
		ports[0] = port;
	} else {
		ip->daddr = addr;
		ports[1] = port;
	}
	/* Packet pointers are invalid from here on: helpers only. */
	if (old_addr != addr) {
		if (l4_csum &&
		    bpf_l4_csum_replace(skb, csum_off, old_addr, addr, l4_flags | BPF_F_PSEUDO_HDR | sizeof(addr)))
			return -1;
		if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, addr, sizeof(addr)))
			return -1;
	}
	if (old_port != port && l4_csum && bpf_l4_csum_replace(skb, csum_off, old_port, port, l4_flags | sizeof(port)))
		return -1;
	pkt_set(p, is_src, addr, port);
	return 0;
}

#endif
