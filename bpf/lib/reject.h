/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * kube-proxy REJECTs traffic to a service without endpoints so clients fail
 * at once instead of timing out. weir answers from the frontend address:
 * a TCP segment gets a RST (connect() -> ECONNREFUSED), a UDP datagram or an
 * SCTP packet gets ICMP port unreachable (a connected socket's next call ->
 * ECONNREFUSED), as the REJECT target answers anything that is not TCP.
 * The reply is built in place and sent back out of the device the packet
 * came in on (bpf_redirect to its egress reaches the pod's end of the veth).
 *
 * Packets with IPv4 options (ihl > 5) are answered too. The ICMP quote
 * carries the whole original header, options included, because the
 * receiver's icmp_unreach() reads ihl * 4 + 8 bytes of it to find the
 * socket. The RST keeps the segment's header length and turns the options
 * into NOPs: a pod's TCP segment is usually CHECKSUM_PARTIAL, and
 * bpf_skb_change_tail() refuses to cut below csum_start + csum_offset + 2,
 * i.e. it cannot trim the packet to an option-less IP header + 20 bytes.
 */
#ifndef WEIR_REJECT_H
#define WEIR_REJECT_H

#include "parse.h"

enum reject_result {
	REJECT_SENT = 0, /* reply built and redirected */
	REJECT_SILENT, /* no reply is due (incoming RST): drop */
	REJECT_FAILED, /* could not build the reply */
};

static __always_inline __u16 csum_of(void *buf, __u32 len)
{
	return csum_fold((__u32)bpf_csum_diff(NULL, 0, buf, len, 0));
}

static __always_inline int swap_macs(struct __sk_buff *skb)
{
	__u8 mac[2 * ETH_ALEN], swapped[2 * ETH_ALEN];

	if (bpf_skb_load_bytes(skb, 0, mac, sizeof(mac)))
		return -1;
	__builtin_memcpy(swapped, mac + ETH_ALEN, ETH_ALEN);
	__builtin_memcpy(swapped + ETH_ALEN, mac, ETH_ALEN);
	return bpf_skb_store_bytes(skb, 0, swapped, sizeof(swapped), 0);
}

static __always_inline void reply_iphdr(struct iphdr *ip, const struct pkt *p, __u8 proto, __u16 tot_len)
{
	__builtin_memset(ip, 0, sizeof(*ip));
	ip->version = 4;
	ip->ihl = 5;
	ip->tot_len = bpf_htons(tot_len);
	ip->frag_off = bpf_htons(IP_DF);
	ip->ttl = 64;
	ip->protocol = proto;
	ip->saddr = p->daddr; /* from the frontend the client addressed */
	ip->daddr = p->saddr;
	ip->check = csum_of(ip, sizeof(*ip));
}

static __always_inline int reject_tcp(struct __sk_buff *skb, const struct pkt *p)
{
	struct {
		__be32 saddr, daddr;
		__u8 zero, proto;
		__be16 len;
		struct tcphdr tcp;
	} ph = {};
	struct {
		struct iphdr ip;
		__u8 opts[40];
	} hdr;
	struct tcphdr in;
	__u32 ihl = p->ihl;
	__u32 payload;
	__u16 tot_len;
	long sum;

	if (p->tcp_flags & TCP_FLAG_RST)
		return REJECT_SILENT; /* never answer a RST with a RST (RFC 9293) */
	/* Redundant at run time (parse checked it), but p->ihl comes back from
	 * the stack as any u8: the verifier needs the bound for the
	 * variable-length checksum and store below. */
	if (ihl < sizeof(hdr.ip) || ihl > sizeof(hdr))
		return REJECT_FAILED;
	if (bpf_skb_load_bytes(skb, L3_OFF, &hdr.ip, sizeof(hdr.ip)) ||
	    bpf_skb_load_bytes(skb, p->l4_off, &in, sizeof(in)))
		return REJECT_FAILED;
	/* For a first fragment this is its share of the segment, not the whole:
	 * the RST's ACK is then short of the sender's, which only a SYN with
	 * data (never fragmented in practice) would notice. */
	payload = bpf_ntohs(hdr.ip.tot_len) - ihl - in.doff * 4;
	if (payload > 0xffff)
		payload = 0;

	ph.tcp.source = p->dport;
	ph.tcp.dest = p->sport;
	ph.tcp.doff = 5;
	ph.tcp.rst = 1;
	if (in.ack) {
		ph.tcp.seq = in.ack_seq; /* RFC 9293: RST takes its seq from the ACK */
	} else {
		ph.tcp.ack = 1;
		ph.tcp.ack_seq = bpf_htonl(bpf_ntohl(in.seq) + payload + in.syn + in.fin);
	}
	ph.saddr = p->daddr;
	ph.daddr = p->saddr;
	ph.proto = IPPROTO_TCP;
	ph.len = bpf_htons(sizeof(struct tcphdr));
	ph.tcp.check = csum_of(&ph, sizeof(ph));

	tot_len = ihl + sizeof(struct tcphdr);
	reply_iphdr(&hdr.ip, p, IPPROTO_TCP, tot_len);
	__builtin_memset(hdr.opts, 1 /* IPOPT_NOOP */, sizeof(hdr.opts));
	hdr.ip.ihl = ihl / 4;
	hdr.ip.check = 0;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&hdr, ihl, 0);
	if (sum < 0)
		return REJECT_FAILED;
	hdr.ip.check = csum_fold((__u32)sum);

	if (bpf_skb_change_tail(skb, L3_OFF + tot_len, 0))
		return REJECT_FAILED;
	if (bpf_skb_store_bytes(skb, L3_OFF, &hdr, ihl, 0) ||
	    bpf_skb_store_bytes(skb, L3_OFF + ihl, &ph.tcp, sizeof(ph.tcp), 0) || swap_macs(skb))
		return REJECT_FAILED;
	bpf_redirect(skb->ifindex, 0);
	return REJECT_SENT;
}

/* The 8-byte ICMP header of a destination-unreachable message. Declared
 * here rather than taken from <linux/icmp.h>: on Debian that header pulls in
 * glibc's <sys/socket.h>, which a BPF target cannot compile without the
 * 32-bit libc headers. */
struct weir_icmp_unreach {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__u32 unused;
};
#define ICMP_DEST_UNREACH 3
#define ICMP_PORT_UNREACH 3

#define ICMP_ROOM (sizeof(struct iphdr) + sizeof(struct weir_icmp_unreach))
#define ICMP_QUOTE_MAX (60 + 8) /* original header (up to 60 bytes) + 8 bytes, RFC 792 */

static __always_inline int reject_udp(struct __sk_buff *skb, const struct pkt *p)
{
	struct {
		struct weir_icmp_unreach icmp;
		__u8 quote[ICMP_QUOTE_MAX];
	} msg = {};
	struct iphdr ip;
	__u32 qlen = p->ihl + 8;
	long sum;

	/* Redundant at run time (parse caps ihl at 60), but p->ihl comes back
	 * from the stack as any u8: the verifier needs this bound for the
	 * variable-length load and checksum below. */
	if (qlen > sizeof(msg.quote))
		return REJECT_FAILED;
	if (bpf_skb_load_bytes(skb, L3_OFF, msg.quote, qlen))
		return REJECT_FAILED;
	msg.icmp.type = ICMP_DEST_UNREACH;
	msg.icmp.code = ICMP_PORT_UNREACH;
	/* ICMP header + quote are contiguous in msg; qlen is a multiple of 4, as csum_diff wants. */
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&msg, sizeof(msg.icmp) + qlen, 0);
	if (sum < 0)
		return REJECT_FAILED;
	msg.icmp.checksum = csum_fold((__u32)sum);
	reply_iphdr(&ip, p, IPPROTO_ICMP, sizeof(ip) + sizeof(msg.icmp) + qlen);

	/* Trim to header + 8 bytes, then open room for the new IP + ICMP headers. */
	if (bpf_skb_change_tail(skb, L3_OFF + qlen, 0))
		return REJECT_FAILED;
	if (bpf_skb_adjust_room(skb, ICMP_ROOM, BPF_ADJ_ROOM_MAC, 0))
		return REJECT_FAILED;
	if (bpf_skb_store_bytes(skb, L3_OFF, &ip, sizeof(ip), 0) ||
	    bpf_skb_store_bytes(skb, L3_OFF + sizeof(ip), &msg.icmp, sizeof(msg.icmp), 0) || swap_macs(skb))
		return REJECT_FAILED;
	bpf_redirect(skb->ifindex, 0);
	return REJECT_SENT;
}

static __always_inline int reject(struct __sk_buff *skb, const struct pkt *p)
{
	int r;

	/* One answer per datagram, to its first fragment (whose quote names the
	 * ports): the REJECT target never answers a later fragment either. */
	if (p->frag == PKT_FRAG_LATER)
		return WEIR_V_DROP_NO_ENDPOINTS;
	r = p->proto == IPPROTO_TCP ? reject_tcp(skb, p) : reject_udp(skb, p);

	return r == REJECT_SENT     ? WEIR_V_REJECT_NO_ENDPOINTS
	       : r == REJECT_SILENT ? WEIR_V_DROP_NO_ENDPOINTS
				    : WEIR_V_DROP_REJECT_FAILED;
}

#endif
