/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * REJECT for IPv6 frontends without endpoints (reject.h explains why): a
 * TCP segment gets a RST from the frontend address, a UDP datagram an
 * ICMPv6 destination unreachable / port unreachable (RFC 4443 type 1 code
 * 4) quoting it, as ip6tables' REJECT does. Both are built in place and
 * sent back out of the device the packet came in on.
 *
 * The RST drops the original's extension headers (bpf_skb_adjust_room
 * removes them from behind the fixed header). The ICMPv6 quote carries the
 * original's headers up to and including the first 8 bytes of its L4
 * header, which is what the receiver's icmpv6_notify() needs to find the
 * socket.
 */
#ifndef WEIR_REJECT6_H
#define WEIR_REJECT6_H

#include "parse6.h"
#include "reject.h"

/* The IPv6 pseudo header (RFC 8200 8.1) in front of what it covers. */
struct weir_ip6_pseudo {
	__be32 saddr[4];
	__be32 daddr[4];
	__be32 len;
	__be32 nexthdr; /* three zero bytes, then the next header */
};

static __always_inline void reply_ip6hdr(struct weir_ip6hdr *ip6, const struct pkt6 *p, __u8 nexthdr, __u16 plen)
{
	ip6->vtc_flow = bpf_htonl(0x60000000);
	ip6->payload_len = bpf_htons(plen);
	ip6->nexthdr = nexthdr;
	ip6->hop_limit = 64;
	ip6_cp(ip6->saddr, p->daddr); /* from the frontend the client addressed */
	ip6_cp(ip6->daddr, p->saddr);
}

static __attribute__((noinline)) int reject6_tcp(struct __sk_buff *skb, const struct pkt6 *p)
{
	struct {
		struct weir_ip6_pseudo ph;
		struct tcphdr tcp;
	} seg = {};
	struct weir_ip6hdr ip6;
	struct tcphdr in;
	__u32 ext = p->l4_off - L3_OFF - IP6_HLEN;
	__u32 payload;
	long sum;

	if (p->tcp_flags & TCP_FLAG_RST)
		return REJECT_SILENT; /* never answer a RST with a RST (RFC 9293) */
	if (bpf_skb_load_bytes(skb, p->l4_off, &in, sizeof(in)))
		return REJECT_FAILED;
	payload = p->payload_len - ext - in.doff * 4;
	if (payload > 0xffff)
		payload = 0;
	seg.tcp.source = p->dport;
	seg.tcp.dest = p->sport;
	seg.tcp.doff = 5;
	seg.tcp.rst = 1;
	if (in.ack) {
		seg.tcp.seq = in.ack_seq; /* RFC 9293: RST takes its seq from the ACK */
	} else {
		seg.tcp.ack = 1;
		seg.tcp.ack_seq = bpf_htonl(bpf_ntohl(in.seq) + payload + in.syn + in.fin);
	}
	ip6_cp(seg.ph.saddr, p->daddr);
	ip6_cp(seg.ph.daddr, p->saddr);
	seg.ph.len = bpf_htonl(sizeof(struct tcphdr));
	seg.ph.nexthdr = bpf_htonl(IPPROTO_TCP);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&seg, sizeof(seg), 0);
	if (sum < 0)
		return REJECT_FAILED;
	seg.tcp.check = csum_fold((__u32)sum);
	reply_ip6hdr(&ip6, p, IPPROTO_TCP, sizeof(struct tcphdr));

	if (ext && (ext > 0xffff || bpf_skb_adjust_room(skb, -(__s32)ext, BPF_ADJ_ROOM_NET, 0)))
		return REJECT_FAILED;
	if (bpf_skb_change_tail(skb, L3_OFF + IP6_HLEN + sizeof(struct tcphdr), 0))
		return REJECT_FAILED;
	if (bpf_skb_store_bytes(skb, L3_OFF, &ip6, sizeof(ip6), 0) ||
	    bpf_skb_store_bytes(skb, L3_OFF + IP6_HLEN, &seg.tcp, sizeof(seg.tcp), 0) || swap_macs(skb))
		return REJECT_FAILED;
	bpf_redirect(skb->ifindex, 0);
	return REJECT_SENT;
}

#define ICMP6_QUOTE_MAX 128 /* the original's headers through 8 bytes of its L4 header */
#define ICMP6_ROOM (IP6_HLEN + sizeof(struct weir_icmp_unreach))

static __attribute__((noinline)) int reject6_udp(struct __sk_buff *skb, const struct pkt6 *p)
{
	struct {
		struct weir_ip6_pseudo ph;
		struct weir_icmp_unreach icmp;
		__u8 quote[ICMP6_QUOTE_MAX];
	} msg = {};
	struct weir_ip6hdr ip6;
	/* A multiple of 8, as extension headers are. 64 bits wide: the bound
	 * checked below must be the register the helper gets. */
	__u64 qlen = (__u64)p->l4_off + 8 - L3_OFF;
	__u32 mlen;
	long sum;

	/* Two tests with a barrier between: merged into one range check, the
	 * verifier would not see the bound on qlen for the load below. */
	if (qlen < IP6_HLEN + 8)
		return REJECT_FAILED;
	barrier_var(qlen);
	if (qlen > sizeof(msg.quote))
		return REJECT_FAILED;
	if (bpf_skb_load_bytes(skb, L3_OFF, msg.quote, qlen))
		return REJECT_FAILED;
	mlen = sizeof(msg.icmp) + qlen;
	ip6_cp(msg.ph.saddr, p->daddr);
	ip6_cp(msg.ph.daddr, p->saddr);
	msg.ph.len = bpf_htonl(mlen);
	msg.ph.nexthdr = bpf_htonl(NEXTHDR_ICMP6);
	msg.icmp.type = ICMP6_DST_UNREACH;
	msg.icmp.code = ICMP6_DST_UNREACH_NOPORT;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&msg, sizeof(msg.ph) + mlen, 0);
	if (sum < 0)
		return REJECT_FAILED;
	msg.icmp.checksum = csum_fold((__u32)sum);
	reply_ip6hdr(&ip6, p, NEXTHDR_ICMP6, mlen);

	/* Trim to the quote, then open room for the new IPv6 + ICMPv6 headers. */
	if (bpf_skb_change_tail(skb, L3_OFF + qlen, 0))
		return REJECT_FAILED;
	if (bpf_skb_adjust_room(skb, ICMP6_ROOM, BPF_ADJ_ROOM_MAC, 0))
		return REJECT_FAILED;
	if (bpf_skb_store_bytes(skb, L3_OFF, &ip6, sizeof(ip6), 0) ||
	    bpf_skb_store_bytes(skb, L3_OFF + IP6_HLEN, &msg.icmp, sizeof(msg.icmp), 0) || swap_macs(skb))
		return REJECT_FAILED;
	bpf_redirect(skb->ifindex, 0);
	return REJECT_SENT;
}

/* Each reply is built in a subprogram of its own: its buffers get a stack frame apart from the handlers'. */
static __always_inline int reject6(struct __sk_buff *skb, const struct pkt6 *p)
{
	int r = p->proto == IPPROTO_TCP ? reject6_tcp(skb, p) : reject6_udp(skb, p);

	return r == REJECT_SENT     ? WEIR_V_REJECT_NO_ENDPOINTS
	       : r == REJECT_SILENT ? WEIR_V_DROP_NO_ENDPOINTS
				    : WEIR_V_DROP_REJECT_FAILED;
}

#endif
