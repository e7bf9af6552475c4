/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The socket hooks for IPv6 sockets of node processes (sock.h has the
 * why): connect6/sendmsg6 point the socket at a backend of an IPv6
 * frontend, recvmsg6/getpeername6 show the frontend again. The same rules
 * as IPv4: a socket bound to ::1 or to the frontend address itself keeps
 * it (no backend could answer that source; weir_tc_host masquerades those
 * on lo), drain, REJECT/DROP without endpoints, loadBalancerSourceRanges
 * with the socket's source or else the node's IPv6 address, which also
 * keys ClientIP affinity. An IPv4-mapped destination (::ffff:a.b.c.d) on
 * a dual-stack socket is an IPv4 one: sock.h's rules and maps. Pods'
 * sockets: sock_pod_translates, the same for both families.
 */
#ifndef WEIR_SOCK6_H
#define WEIR_SOCK6_H

#include "cfg.h"
#include "lb6.h"
#include "sock.h"

static __always_inline void sock6_dst(const struct bpf_sock_addr *ctx, __be32 *a)
{
	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
}

/* The source the socket has chosen, if any (sock_source); all zero: the kernel picks it by the route. */
static __always_inline void sock6_source(const struct bpf_sock_addr *ctx, bool sendmsg, __be32 *src)
{
	struct bpf_sock *sk;

	if (sendmsg) {
		src[0] = ctx->msg_src_ip6[0];
		src[1] = ctx->msg_src_ip6[1];
		src[2] = ctx->msg_src_ip6[2];
		src[3] = ctx->msg_src_ip6[3];
		if (!ip6_zero(src))
			return;
	}
	sk = ctx->sk;
	if (!sk) {
		src[0] = src[1] = src[2] = src[3] = 0;
		return;
	}
	src[0] = sk->src_ip6[0];
	src[1] = sk->src_ip6[1];
	src[2] = sk->src_ip6[2];
	src[3] = sk->src_ip6[3];
}

/* ::ffff:a.b.c.d, an IPv4 address on an IPv6 socket. */
static __always_inline bool ip6_v4mapped(const __be32 *a)
{
	return !(a[0] | a[1]) && a[2] == bpf_htonl(0xffff);
}

/*
 * Point the call at addr:port: the peer connect or sendmsg goes to, or
 * that recvmsg or getpeername shows. Word by word: the context takes
 * 32-bit stores only.
 */
static __always_inline void sock6_set_addr(struct bpf_sock_addr *ctx, const __be32 addr[4], __be16 port)
{
	ctx->user_ip6[0] = addr[0];
	ctx->user_ip6[1] = addr[1];
	ctx->user_ip6[2] = addr[2];
	ctx->user_ip6[3] = addr[3];
	ctx->user_port = (__u32)port;
}

/*
 * A dual-stack socket sending to an IPv4-mapped address sends IPv4: the
 * IPv4 frontends and rev-NAT entries apply, the backend is written back
 * mapped. Its source, if chosen, is mapped too (else it could not send to
 * an IPv4 address at all).
 */
static __always_inline int sock6_forward_mapped(struct bpf_sock_addr *ctx, bool sendmsg, __be32 daddr)
{
	struct weir_backend *be;
	__be32 src[4];
	int allow;

	sock6_source(ctx, sendmsg, src);
	allow = sock_pick(ctx, daddr, (__be16)ctx->user_port, ip6_v4mapped(src) ? src[3] : 0, &be);
	if (be) {
		ctx->user_ip6[3] = be->addr;
		ctx->user_port = (__u32)be->port;
	}
	return allow;
}

/* Rewrite the destination of a connect6/sendmsg6 to a chosen backend. 1 = allow. */
static __always_inline int sock6_forward(struct bpf_sock_addr *ctx, bool sendmsg)
{
	struct weir_config *cfg = cfg_get();
	struct weir_config6 *cfg6 = cfg6_get();
	struct weir_svc6_key key;
	struct weir_svc_val *svc;
	struct weir_backend6 *be;
	struct weir_sk6_key sk = {};
	struct weir_sk6_val sv = {};
	struct pkt6 p = {};
	__be32 node[4] = {};
	__be32 src[4];
	__u32 backend_id = 0;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 1;
	sock6_dst(ctx, p.daddr);
	if (ip6_v4mapped(p.daddr))
		return sock6_forward_mapped(ctx, sendmsg, p.daddr[3]);
	p.dport = (__be16)ctx->user_port; /* network order in the low 16 bits */
	p.proto = ctx->protocol;
	svc = port_frontend(p.dport) ? lb6_frontend(&key, &p, WEIR_SCOPE_ALL) : NULL;
	if (!svc)
		return 1;
	if (!sock_in_host(ctx, cfg) && !sock_pod_translates(ctx, cfg, svc))
		return 1;
	sock6_source(ctx, sendmsg, src);
	if (!ip6_zero(src) && (ip6_loopback(src) || ip6_eq(src, p.daddr)))
		return 1;
	if (cfg && (cfg->flags & WEIR_CFG_F_DRAIN))
		return 1;
	if (svc->count == 0)
		return sock_refuse(ctx, !(svc->flags & WEIR_SVC_F_DROP_EMPTY));
	if (cfg6)
		ip6_cp(node, cfg6->snat_addr);
	if ((svc->flags & WEIR_SVC_F_SRC_RANGES) && !cidr6_match(svc->rev_nat_id, ip6_zero(src) ? node : src))
		return sock_refuse(ctx, false);
	be = lb6_select(&key, svc, node, &backend_id, weir_now());
	if (!be)
		return 0;
	if (!sk_conn_used(ctx) || !sk_conn_save(ctx, be->addr, be->port, p.daddr, p.dport)) {
		sk.cookie = bpf_get_socket_cookie(ctx);
		ip6_cp(sk.addr, be->addr);
		sk.port = be->port;
		ip6_cp(sv.addr, p.daddr);
		sv.port = p.dport;
		sv.rev_nat_id = svc->rev_nat_id;
		bpf_map_update_elem(&weir1_skrevnat6, &sk, &sv, BPF_ANY);
	}
	sock6_set_addr(ctx, be->addr, be->port);
	return 1;
}

/* Show the frontend instead of the backend (recvmsg6 source, getpeername6). Always 1. */
static __always_inline int sock6_reverse(struct bpf_sock_addr *ctx)
{
	struct weir_sk6_key sk = {};
	struct weir_sk6_val *sv;
	struct weir_sk_conn *c;

	if (!port_backend((__be16)ctx->user_port))
		return 1; /* as sock_reverse */
	sock6_dst(ctx, sk.addr);
	sk.port = (__be16)ctx->user_port;
	if (ip6_v4mapped(sk.addr)) {
		__be32 addr;
		__be16 port;

		if (sock_frontend(ctx, sk.addr[3], sk.port, &addr, &port)) {
			ctx->user_ip6[3] = addr;
			ctx->user_port = (__u32)port;
		}
		return 1;
	}
	c = sk_conn_find(ctx, sk.addr, sk.port);
	if (c) {
		sock6_set_addr(ctx, c->frontend, c->frontend_port);
		return 1;
	}
	sk.cookie = bpf_get_socket_cookie(ctx);
	sv = bpf_map_lookup_elem(&weir1_skrevnat6, &sk);
	if (sv) {
		sock6_set_addr(ctx, sv->addr, sv->port);
	}
	return 1;
}

#endif
