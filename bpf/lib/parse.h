/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing into a small summary, with direct packet access (no helper
 * call per header: this runs for every packet on every pod device). When the
 * headers are not all in the linear area (GRO, some veth paths) they are
 * pulled in once and the pointers re-derived.
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

/* Ethernet + the longest IPv4 header + the TCP bytes we read (through the flags). */
#define PARSE_PULL (ETH_HLEN + 60 + 14)

/*
 * Fill p for an IPv4 TCP/UDP packet that carries ports. Returns false for
 * everything weir leaves alone: other L3/L4 protocols, truncated headers
 * (the stack will drop those itself), and non-first fragments. Those carry
 * no L4 header, so there are no ports to find a frontend or a conntrack
 * entry with; tc ingress runs before the stack's defragmentation, and a
 * tc program cannot reassemble. A first fragment is handled like any
 * packet (its L4 checksum update is incremental, so it stays right for the
 * whole datagram). Known limit: a datagram fragmented on its way to a
 * frontend, or a fragmented reply, does not survive NAT (the other
 * fragments keep the old addresses); fixing it needs a {saddr, daddr, IP
 * id, proto} -> ports map filled from first fragments, as Cilium does.
 */
static __always_inline bool parse_packet(struct __sk_buff *skb, struct pkt *p)
{
	void *data, *data_end;
	struct iphdr *ip;
	__u8 *l4;
	__u32 ihl;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return false;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + PARSE_PULL > data_end) {
		/* Short packets fail the pull harmlessly; the bounds checks below decide. */
		bpf_skb_pull_data(skb, skb->len < PARSE_PULL ? skb->len : PARSE_PULL);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end)
		return false;
	if (ip->version != 4 || ip->ihl < 5)
		return false;
	if (ip->frag_off & bpf_htons(0x1fff))
		return false;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return false;
	ihl = ip->ihl * 4;
	l4 = (__u8 *)ip + ihl;
	if ((void *)(l4 + 4) > data_end)
		return false;
	p->ihl = ihl;
	p->l4_off = L3_OFF + ihl;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->sport = *(__be16 *)l4;
	p->dport = *(__be16 *)(l4 + 2);
	p->tcp_flags = 0;
	if (p->proto == IPPROTO_TCP) {
		if ((void *)(l4 + 14) > data_end)
			return false;
		p->tcp_flags = l4[13];
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
