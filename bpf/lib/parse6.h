/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv6 parsing into a small summary. Unlike the IPv4 parser (parse.h) this
 * reads through bpf_skb_load_bytes() rather than direct packet access: the
 * L4 header sits behind a variable chain of extension headers, and a copy
 * at a runtime offset is one helper call where direct access would need the
 * verifier to follow every offset the walk can produce.
 *
 * Extension headers are walked in a bounded loop (IP6_MAX_EXT of them;
 * more and the packet is left to the stack). Hop-by-hop, routing and
 * destination options are skipped; the fragment header marks the packet as
 * a fragment; ESP, "no next header" and anything unknown end the walk and
 * leave the packet alone. ICMPv6 error messages (types below 128) are
 * parsed too: their quote of a NATed packet is translated back (icmp6.h).
 */
#ifndef WEIR_PARSE6_H
#define WEIR_PARSE6_H

#include "parse.h"

#ifndef ETH_P_IPV6
#define ETH_P_IPV6 0x86DD
#endif

#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_ICMP6 58
#define NEXTHDR_DEST 60

#define IP6_HLEN 40
#define IP6_PLEN_OFF (L3_OFF + 4)
#define IP6_SRC_OFF (L3_OFF + 8)
#define IP6_DST_OFF (L3_OFF + 24)
#define IP6_MAX_EXT 6 /* extension headers walked before giving up */

#define ICMP6_DST_UNREACH 1
#define ICMP6_PKT_TOOBIG 2
#define ICMP6_TIME_EXCEEDED 3
#define ICMP6_PARAM_PROB 4
#define ICMP6_DST_UNREACH_NOPORT 4

/* The fixed IPv6 header, declared here: <linux/ipv6.h> pulls in libc headers. */
struct weir_ip6hdr {
	__be32 vtc_flow; /* version 4 bits, traffic class 8, flow label 20 */
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__be32 saddr[4];
	__be32 daddr[4];
};

struct pkt6 {
	__be32 saddr[4];
	__be32 daddr[4];
	__u32 l4_off; /* offset of the TCP/UDP/ICMPv6 header */
	__be16 sport;
	__be16 dport;
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP or NEXTHDR_ICMP6 (an error message) */
	__u8 tcp_flags; /* TCP_FLAG_*; 0 otherwise */
	__u8 frag; /* PKT_WHOLE, PKT_FRAG_FIRST or PKT_FRAG_LATER */
	__u8 icmp_type; /* NEXTHDR_ICMP6: the error type */
	__u16 payload_len; /* IPv6 payload length (extension headers included) */
	__u16 pad;
	__be32 frag_id; /* a fragment's identification: names its datagram */
};

static __always_inline bool ip6_eq(const __be32 *a, const __be32 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

static __always_inline bool ip6_zero(const __be32 *a)
{
	return !(a[0] | a[1] | a[2] | a[3]);
}

static __always_inline void ip6_cp(__be32 *dst, const __be32 *src)
{
	dst[0] = src[0];
	dst[1] = src[1];
	dst[2] = src[2];
	dst[3] = src[3];
}

/* ::1, the only IPv6 loopback address. */
static __always_inline bool ip6_loopback(const __be32 *a)
{
	return !(a[0] | a[1] | a[2]) && a[3] == bpf_htonl(1);
}

/*
 * Walk the extension headers that start at *off with next header *nexthdr;
 * on return both name the upper-layer header. *frag and *frag_id are set
 * from a fragment header. False when the chain is longer than IP6_MAX_EXT or unreadable.
 */
static __always_inline bool ip6_skip_ext(struct __sk_buff *skb, __u32 *off, __u8 *nexthdr, __u8 *frag, __be32 *frag_id)
{
	__u8 nh = *nexthdr;
	__u32 o = *off;

	for (int i = 0; i < IP6_MAX_EXT; i++) {
		__u8 ext[8];

		if (nh != NEXTHDR_HOP && nh != NEXTHDR_ROUTING && nh != NEXTHDR_DEST && nh != NEXTHDR_AUTH &&
		    nh != NEXTHDR_FRAGMENT) {
			*nexthdr = nh;
			*off = o;
			return true;
		}
		if (bpf_skb_load_bytes(skb, o, ext, sizeof(ext)))
			return false;
		if (nh == NEXTHDR_FRAGMENT) {
			__u16 fo = ((__u16)ext[2] << 8) | ext[3];

			/* Offset in 8-byte units in the top 13 bits, M flag in bit 0. */
			*frag = (fo & 0xfff8) ? PKT_FRAG_LATER : (fo & 1) ? PKT_FRAG_FIRST : *frag;
			__builtin_memcpy(frag_id, ext + 4, sizeof(*frag_id));
			o += 8;
		} else if (nh == NEXTHDR_AUTH) {
			o += ((__u32)ext[1] + 2) * 4;
		} else {
			o += ((__u32)ext[1] + 1) * 8;
		}
		nh = ext[0];
	}
	return false;
}

/*
 * Fill p for an IPv6 TCP/UDP/SCTP packet or an ICMPv6 error message; false
 * for everything weir leaves alone (neighbour discovery and other ICMPv6
 * informational messages, other protocols, truncated headers). A
 * later fragment has no L4 header: its ports are left zero for frag6.h.
 */
static __attribute__((noinline)) bool parse_packet6(struct __sk_buff *skb, struct pkt6 *p)
{
	struct weir_ip6hdr ip6;
	__u8 nh, frag = PKT_WHOLE;
	__u32 off = L3_OFF + IP6_HLEN;
	__u8 l4[14];

	if (bpf_skb_load_bytes(skb, L3_OFF, &ip6, sizeof(ip6)))
		return false;
	if ((ip6.vtc_flow & bpf_htonl(0xf0000000)) != bpf_htonl(0x60000000))
		return false;
	nh = ip6.nexthdr;
	p->frag_id = 0;
	if (!ip6_skip_ext(skb, &off, &nh, &frag, &p->frag_id))
		return false;
	if (nh != IPPROTO_TCP && nh != IPPROTO_UDP && nh != IPPROTO_SCTP && nh != NEXTHDR_ICMP6)
		return false;
	/* A fragmented SCTP packet is left alone, as for IPv4 (parse.h). */
	if (nh == IPPROTO_SCTP && frag != PKT_WHOLE)
		return false;
	ip6_cp(p->saddr, ip6.saddr);
	ip6_cp(p->daddr, ip6.daddr);
	p->l4_off = off;
	p->proto = nh;
	p->frag = frag;
	p->payload_len = bpf_ntohs(ip6.payload_len);
	p->tcp_flags = 0;
	p->icmp_type = 0;
	p->sport = 0;
	p->dport = 0;
	p->pad = 0;
	if (frag == PKT_FRAG_LATER)
		return nh != NEXTHDR_ICMP6;
	if (bpf_skb_load_bytes(skb, off, l4, nh == IPPROTO_TCP ? 14 : 4))
		return false;
	if (nh == NEXTHDR_ICMP6) {
		/* Errors only (types 1-4): echo, neighbour and router discovery,
		 * MLD are informational (128 and up) and none of weir's business. */
		if (l4[0] < ICMP6_DST_UNREACH || l4[0] > ICMP6_PARAM_PROB || frag != PKT_WHOLE)
			return false;
		p->icmp_type = l4[0];
		return true;
	}
	p->sport = *(__be16 *)l4;
	p->dport = *(__be16 *)(l4 + 2);
	if (nh == IPPROTO_TCP)
		p->tcp_flags = l4[13];
	return true;
}

static __always_inline bool tcp6_syn_only(const struct pkt6 *p)
{
	return p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
}

static __always_inline bool tcp6_closing(const struct pkt6 *p)
{
	return p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST));
}

#endif
