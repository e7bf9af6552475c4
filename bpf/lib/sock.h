/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Socket-level load balancing for node processes (and hostNetwork pods).
 * Their packets never cross a pod-facing tc ingress, so the service address
 * is translated when the socket is connected or a datagram is sent, and
 * translated back when the application asks who it talks to (getpeername)
 * or receives a datagram (recvmsg). No per-packet NAT happens at all.
 */
#ifndef WEIR_SOCK_H
#define WEIR_SOCK_H

#include "cfg.h"
#include "lb.h"

/*
 * A socket bound to 127/8, or to the very address it sends to (a VIP-like
 * load balancer's IP on lo), cannot talk to a backend from that source:
 * the kernel refuses a 127/8 source off lo (EINVAL), and no backend can
 * answer an LB IP. kube-proxy masquerades such traffic; a socket hook
 * cannot change the source, so these sockets keep the service address and
 * their packets take the loopback path, where weir_tc_host NATs them with
 * the node IP as source.
 */
static __always_inline bool sock_needs_masquerade(const struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	__be32 src;

	if (!sk)
		return false;
	src = sk->src_ip4;
	return src && ((bpf_ntohl(src) >> 24) == 127 || src == ctx->user_ip4);
}

/* Rewrite the destination of a connect/sendmsg to a chosen backend. 1 = allow. */
static __always_inline int sock_forward(struct bpf_sock_addr *ctx)
{
	struct weir_config *cfg = cfg_get();
	struct weir_svc_key key;
	struct weir_svc_val *svc;
	struct weir_backend *be;
	struct weir_sk_key sk = {};
	struct weir_sk_val sv = {};
	struct pkt p = {};
	__u32 backend_id = 0;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 1;
	p.daddr = ctx->user_ip4;
	p.dport = (__be16)ctx->user_port; /* network order in the low 16 bits */
	p.proto = ctx->protocol;
	svc = lb_frontend(&key, &p, WEIR_SCOPE_ALL);
	if (!svc || sock_needs_masquerade(ctx))
		return 1;
	/* No endpoints: fail the call at once (EPERM) rather than let the
	 * application time out; REJECT and DROP are not expressible here. */
	if (svc->count == 0)
		return 0;
	/* loadBalancerSourceRanges hold for node processes too (kube-proxy
	 * filters them in OUTPUT): the source is the socket's bound address,
	 * else the node IP the kernel will choose. Refused, not dropped. */
	if ((svc->flags & WEIR_SVC_F_SRC_RANGES) &&
	    !cidr_match(svc->rev_nat_id, ctx->sk && ctx->sk->src_ip4 ? ctx->sk->src_ip4 : (cfg ? cfg->snat_addr : 0)))
		return 0;
	/* The node is the client; its IP keys ClientIP affinity. */
	be = lb_select(&key, svc, cfg ? cfg->snat_addr : 0, &backend_id, weir_now());
	if (!be)
		return 0;
	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.addr = be->addr;
	sk.port = be->port;
	sv.addr = p.daddr;
	sv.port = p.dport;
	sv.rev_nat_id = svc->rev_nat_id;
	bpf_map_update_elem(&weir1_skrevnat, &sk, &sv, BPF_ANY);
	ctx->user_ip4 = be->addr;
	ctx->user_port = (__u32)be->port;
	return 1;
}

/* Show the frontend instead of the backend (recvmsg source, getpeername). Always 1. */
static __always_inline int sock_reverse(struct bpf_sock_addr *ctx)
{
	struct weir_sk_key sk = {};
	struct weir_sk_val *sv;

	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.addr = ctx->user_ip4;
	sk.port = (__be16)ctx->user_port;
	sv = bpf_map_lookup_elem(&weir1_skrevnat, &sk);
	if (sv) {
		ctx->user_ip4 = sv->addr;
		ctx->user_port = (__u32)sv->port;
	}
	return 1;
}

#endif
