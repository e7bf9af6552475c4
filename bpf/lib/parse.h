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

#define IP_DF 0x4000 /* don't fragment */
#define IP_MF 0x2000 /* more fragments follow */
#define IP_OFFSET 0x1fff /* fragment offset, in 8-byte units */

#define L3_OFF ETH_HLEN
#define IP_CSUM_OFF (L3_OFF + offsetof(struct iphdr, check))
#define IP_TOT_LEN_OFF (L3_OFF + offsetof(struct iphdr, tot_len))
#define IP_SRC_OFF (L3_OFF + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (L3_OFF + offsetof(struct iphdr, daddr))

#define ICMP_TYPE_DEST_UNREACH 3 /* includes code 4, fragmentation needed (path MTU) */
#define ICMP_TYPE_TIME_EXCEEDED 11
#define ICMP_TYPE_PARAMETERPROB 12

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

/* pkt.frag: where the packet stands in its datagram. */
#define PKT_WHOLE 0 /* not a fragment */
#define PKT_FRAG_FIRST 1 /* first fragment: L4 header present, more follow */
#define PKT_FRAG_LATER 2 /* later fragment: no L4 header; frag.h finds its ports */

struct pkt {
	__u32 l4_off; /* offset of the TCP/UDP header (later fragment: of its payload) */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP or IPPROTO_ICMP (an error message, icmp.h) */
	__u8 tcp_flags; /* TCP_FLAG_*; 0 for UDP and later fragments */
	__u8 ihl; /* IPv4 header length, bytes */
	__u8 frag; /* PKT_WHOLE, PKT_FRAG_FIRST or PKT_FRAG_LATER */
	__be16 ip_id; /* IPv4 identification: names the datagram of a fragment */
	__u16 pad;
	__u32 ifindex; /* device the packet entered on */
};

/* Ethernet + the longest IPv4 header + the TCP bytes we read (through the flags). */
#define PARSE_PULL (ETH_HLEN + 60 + 14)

/* Is an ICMP message of this type an error that quotes a packet weir may have translated? */
static __always_inline bool icmp_error_type(__u8 type)
{
	return type == ICMP_TYPE_DEST_UNREACH || type == ICMP_TYPE_TIME_EXCEEDED || type == ICMP_TYPE_PARAMETERPROB;
}

/*
 * Fill p for an IPv4 TCP/UDP/SCTP packet (all three start with the two
 * ports), or an unfragmented ICMP error (ports zero; its quote is icmp.h's
 * business); false for everything weir leaves alone: other L3/L4 protocols
 * and ICMP messages, and truncated headers (the stack drops those itself).
 * A later fragment has no L4 header: its ports are left zero for frag.h to
 * find.
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
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_SCTP &&
	    (ip->protocol != IPPROTO_ICMP || (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))))
		return false;
	/* SCTP fragments its own messages into chunks; an IP-fragmented SCTP
	 * packet is left alone (a port change needs its whole length for the
	 * CRC update, which its first fragment does not carry). */
	if (ip->protocol == IPPROTO_SCTP && (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return false;
	ihl = ip->ihl * 4;
	p->ihl = ihl;
	p->ifindex = skb->ingress_ifindex;
	p->l4_off = L3_OFF + ihl;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->tcp_flags = 0;
	p->ip_id = ip->id;
	p->sport = 0;
	p->dport = 0;
	if (ip->frag_off & bpf_htons(IP_OFFSET)) {
		p->frag = PKT_FRAG_LATER;
		return true;
	}
	p->frag = ip->frag_off & bpf_htons(IP_MF) ? PKT_FRAG_FIRST : PKT_WHOLE;
	l4 = (__u8 *)ip + ihl;
	if ((void *)(l4 + 4) > data_end)
		return false;
	if (p->proto == IPPROTO_ICMP)
		return icmp_error_type(l4[0]);
	p->sport = *(__be16 *)l4;
	p->dport = *(__be16 *)(l4 + 2);
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
