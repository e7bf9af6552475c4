/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Moving node processes' connected UDP sockets off a backend that left.
 *
 * The socket hooks point a connected UDP socket at a backend once, at
 * connect(); no hook runs for its later sends. When that backend leaves
 * the service, the socket would go on sending to it, where kube-proxy
 * deletes the flow's conntrack entry and the next datagram is balanced
 * again. The agent names such sockets (cookie and backend) in
 * weir1_sockterm and runs this iterator over the UDP sockets of its
 * network namespace: each one named and still connected to that backend
 * is destroyed (bpf_sock_destroy, 5.5+ for the iterator, 6.5+ for the
 * kfunc). Its owner gets ECONNABORTED and connects again, to a live
 * backend, as after Cilium's socket termination.
 *
 * The kernel's own structs, reduced to the fields read here: CO-RE finds
 * each field in the running kernel's layout by name.
 */
#ifndef WEIR_SOCKTERM_H
#define WEIR_SOCKTERM_H

#include <linux/in6.h>
#include "common.h"

#define WEIR_MAX_SOCKTERM 4096

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64); /* socket cookie */
	__type(value, struct weir_sockterm);
	__uint(max_entries, WEIR_MAX_SOCKTERM);
} weir1_sockterm SEC(".maps");

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

struct sock_common {
	__be32 skc_daddr;
	__be16 skc_dport;
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
} __attribute__((preserve_access_index));

struct udp_sock;

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

/* Is the socket still connected to the backend it was named with? */
static __always_inline bool sockterm_connected_to(const struct sock_common *sk, const struct weir_sockterm *t)
{
	const __be32 *d6;

	if (sk->skc_dport != t->port)
		return false;
	if (sk->skc_family == AF_INET)
		return t->family == 4 && sk->skc_daddr == t->addr[0];
	if (sk->skc_family != AF_INET6)
		return false;
	d6 = sk->skc_v6_daddr.in6_u.u6_addr32;
	/* A dual-stack socket connected to an IPv4 backend holds it mapped. */
	if (t->family == 4)
		return !(d6[0] | d6[1]) && d6[2] == bpf_htonl(0xffff) && d6[3] == t->addr[0];
	return d6[0] == t->addr[0] && d6[1] == t->addr[1] && d6[2] == t->addr[2] && d6[3] == t->addr[3];
}

/* One UDP socket of the namespace: destroy it if named; the seq file counts the destroyed. */
static __always_inline int sockterm_visit(struct bpf_iter__udp *ctx)
{
	struct sock_common *sk = (struct sock_common *)ctx->udp_sk;
	struct weir_sockterm *t;
	__u64 cookie;

	if (!sk)
		return 0;
	cookie = bpf_get_socket_cookie(sk);
	t = bpf_map_lookup_elem(&weir1_sockterm, &cookie);
	if (!t || !sockterm_connected_to(sk, t))
		return 0;
	if (!bpf_sock_destroy(sk))
		bpf_seq_write(ctx->meta->seq, &cookie, sizeof(cookie));
	return 0;
}

#endif
