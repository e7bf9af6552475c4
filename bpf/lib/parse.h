/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing into a small summary. Headers are copied with
 * bpf_skb_load_bytes rather than read through direct packet pointers: a
 * packet's L4 header is not always in the linear area (GRO, some veth
 * paths), and copies keep the verifier's bounds reasoning trivial.
 */
#ifndef WEIR_PARSE_H
#define WEIR_PARSE_H

#include "common.h"

#define L3_OFF ETH_HLEN
#define IP_CSUM_OFF (L3_OFF + offsetof(struct iphdr, check))
#define IP_SRC_OFF (L3_OFF + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (L3_OFF + offsetof(struct iphdr, daddr))

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

struct pkt {
	__u32 l4_off; /* offset of the TCP/UDP header */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 tcp_flags; /* TCP_FLAG_*; 0 for UDP */
	__u8 ihl; /* IPv4 header length, bytes */
	__u8 pad;
};

/*
 * Fill p for an IPv4 TCP/UDP packet that carries ports. Returns false for
 * everything weir leaves alone: other L3/L4 protocols, truncated headers
 * (the stack will drop those itself), and non-first fragments, which carry
 * no ports to match a frontend on; reassembly is the receiver's business.
 */
static __always_inline bool parse_packet(struct __sk_buff *skb, struct pkt *p)
{
	struct iphdr ip;
	__u8 flags;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return false;
	if (bpf_skb_load_bytes(skb, L3_OFF, &ip, sizeof(ip)))
		return false;
	if (ip.version != 4 || ip.ihl < 5)
		return false;
	if (ip.frag_off & bpf_htons(0x1fff))
		return false;
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return false;
	p->ihl = ip.ihl * 4;
	p->l4_off = L3_OFF + p->ihl;
	p->saddr = ip.saddr;
	p->daddr = ip.daddr;
	p->proto = ip.protocol;
	p->tcp_flags = 0;
	/* Source and destination ports are the first 4 bytes of both headers. */
	if (bpf_skb_load_bytes(skb, p->l4_off, &p->sport, 4))
		return false;
	if (p->proto == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, p->l4_off + 13, &flags, 1))
			return false;
		p->tcp_flags = flags;
	}
	return true;
}

static __always_inline bool tcp_syn_only(const struct pkt *p)
{
	return p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
}

static __always_inline bool tcp_closing(const struct pkt *p)
{
	return p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST));
}

#endif
