/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Socket-level load balancing. Node processes' (and hostNetwork pods')
 * packets never cross a pod-facing tc ingress, so the service address is
 * translated when the socket is connected or a datagram is sent, and
 * translated back when the application asks who it talks to (getpeername)
 * or receives a datagram (recvmsg). No per-packet NAT happens at all.
 *
 * Pods whose cgroups lie under --cgroup-root (a DaemonSet gives the host's
 * root) meet the same hooks in their own network namespace. Their packets
 * do cross the tc programs, so translating at connect() is an optimisation
 * for them, taken only where it changes nothing a client or backend can
 * see (sock_pod_translates).
 */
#ifndef WEIR_SOCK_H
#define WEIR_SOCK_H

#include "cfg.h"
#include "lb.h"
#include "ports.h"
#include "sockconn.h"

#define ECONNREFUSED 111

/*
 * Set by the loader (native/weir_bpf.c) when the kernel has
 * bpf_set_retval() for socket hooks (5.18+); read-only data, so on older
 * kernels the verifier never sees the call (as weir_coarse_clock).
 */
const volatile __u32 weir_sock_retval = 0;

/*
 * Fail the call. A socket hook can only let it through or fail it. What
 * kube-proxy's REJECT rule in OUTPUT does to a node process: its RST fails
 * a TCP connect with ECONNREFUSED (set here where the kernel lets us, else
 * EPERM), and the rule's own drop fails a UDP send with EPERM. A DROP
 * fails at once with EPERM instead of timing out.
 */
static __always_inline int sock_refuse(const struct bpf_sock_addr *ctx, bool reject)
{
	if (reject && ctx->protocol == IPPROTO_TCP && weir_sock_retval)
		bpf_set_retval(-ECONNREFUSED);
	return 0;
}

/*
 * The source the socket has chosen, if any: its bound address, or for a
 * datagram an IP_PKTINFO source (msg_src_ip4 is readable in sendmsg only,
 * hence the compile-time flag). 0: the kernel picks it by the route.
 */
static __always_inline __be32 sock_source(const struct bpf_sock_addr *ctx, bool sendmsg)
{
	if (sendmsg && ctx->msg_src_ip4)
		return ctx->msg_src_ip4;
	return ctx->sk ? ctx->sk->src_ip4 : 0;
}

/*
 * A socket bound to 127/8, or to the very address it sends to (a VIP-like
 * load balancer's IP on lo), cannot talk to a backend from that source:
 * the kernel refuses a 127/8 source off lo (EINVAL), and no backend can
 * answer an LB IP. kube-proxy masquerades such traffic; a socket hook
 * cannot change the source, so these sockets keep the service address and
 * their packets take the loopback path, where weir_tc_host NATs them with
 * the node IP as source.
 */
static __always_inline bool sock_needs_masquerade(__be32 src, __be32 dst)
{
	return src && ((bpf_ntohl(src) >> 24) == 127 || src == dst);
}

/* Is the socket in the node's network namespace (or is that unknown)? */
static __always_inline bool sock_in_host(struct bpf_sock_addr *ctx, const struct weir_config *cfg)
{
	return !cfg || !cfg->host_netns || bpf_get_netns_cookie(ctx) == cfg->host_netns;
}

/*
 * Whether a pod's socket is pointed at a backend here, or keeps the service
 * address for the tc path. Only a plain ClusterIP TCP connect() with
 * endpoints is: the tc path would not masquerade it, and nothing about it depends on
 * the pod's address, which connect() does not know yet. The tc path keeps
 * the rest, so each behaves as it does without socket hooks:
 *  - external frontends (NodePort, LB, externalIPs), which masquerade pod
 *    traffic under externalTrafficPolicy Cluster, and --masquerade-all;
 *  - ClientIP affinity and loadBalancerSourceRanges, keyed on the source;
 *  - no endpoints: REJECT answers with a TCP RST or ICMP, DROP drops,
 *    where a hook could only fail the call;
 *  - UDP: conntrack keeps an unconnected socket's source port on one
 *    backend, as kube-proxy's does, where a hook would choose per
 *    datagram; and a connected socket whose backend leaves moves to
 *    another (the tc path's stale-flow rule), where a socket pointed at
 *    the backend could only be destroyed, from inside the pod's network
 *    namespace.
 * A pod connecting to itself this way talks to itself directly; the tc
 * path would show it the hairpin address as source.
 */
static __always_inline bool sock_pod_translates(const struct bpf_sock_addr *ctx, const struct weir_config *cfg,
						const struct weir_svc_val *svc)
{
	if (ctx->protocol != IPPROTO_TCP ||
	    (cfg->flags & (WEIR_CFG_F_SOCK_HOSTNS_ONLY | WEIR_CFG_F_MASQUERADE_ALL | WEIR_CFG_F_DRAIN)))
		return false;
	if (!(svc->flags & WEIR_SVC_F_CLUSTER_IP) || (svc->flags & (WEIR_SVC_F_AFFINITY | WEIR_SVC_F_SRC_RANGES)))
		return false;
	return svc->count > 0;
}

/*
 * The IPv4 frontend choice for a socket sending to daddr:dport from src:
 * connect4/sendmsg4, and connect6/sendmsg6 to an IPv4-mapped address. 1 =
 * allow, 0 = refuse; *be is the backend to send to instead, if any (the
 * socket's rev-NAT entry is written).
 */
static __always_inline int sock_pick(struct bpf_sock_addr *ctx, __be32 daddr, __be16 dport, __be32 src,
				     struct weir_backend **out)
{
	struct weir_config *cfg = cfg_get();
	struct weir_svc_key key;
	struct weir_svc_val *svc;
	struct weir_backend *be;
	struct weir_sk_key sk = {};
	struct weir_sk_val sv = {};
	struct pkt p = {};
	__u32 backend_id = 0;

	*out = NULL;
	p.daddr = daddr;
	p.dport = dport;
	p.proto = ctx->protocol;
	svc = port_frontend(dport) ? lb_frontend(&key, &p, WEIR_SCOPE_ALL) : NULL;
	if (!svc)
		return 1;
	if (!sock_in_host(ctx, cfg) && !sock_pod_translates(ctx, cfg, svc))
		return 1;
	if (sock_needs_masquerade(src, p.daddr))
		return 1;
	/* Handing over: the other proxy's OUTPUT rules take new connections. */
	if (cfg && (cfg->flags & WEIR_CFG_F_DRAIN))
		return 1;
	/* No endpoints at all: REJECT; endpoints, but none the policy allows here: DROP. */
	if (svc->count == 0)
		return sock_refuse(ctx, !(svc->flags & WEIR_SVC_F_DROP_EMPTY));
	/* loadBalancerSourceRanges hold for node processes too (kube-proxy
	 * filters them in OUTPUT): the source is the one the socket chose, else
	 * the node IP. An unbound socket's source is picked later, by the route
	 * to the backend, so the node IP stands in for it (they differ only
	 * where that route has an address of its own). Refused, not dropped. */
	if ((svc->flags & WEIR_SVC_F_SRC_RANGES) &&
	    !cidr_match(svc->rev_nat_id, src ? src : (cfg ? cfg->snat_addr : 0)))
		return sock_refuse(ctx, false);
	/* The node is the client; its IP keys ClientIP affinity. */
	be = lb_select(&key, svc, cfg ? cfg->snat_addr : 0, &backend_id, weir_now());
	if (!be)
		return 0;
	*out = be;
	if (sk_conn_used(ctx)) {
		__be32 b[4] = { 0, 0, 0, be->addr };
		__be32 f[4] = { 0, 0, 0, p.daddr };

		if (sk_conn_save(ctx, b, be->port, f, p.dport))
			return 1;
	}
	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.addr = be->addr;
	sk.port = be->port;
	sv.addr = p.daddr;
	sv.port = p.dport;
	sv.rev_nat_id = svc->rev_nat_id;
	bpf_map_update_elem(&weir1_skrevnat, &sk, &sv, BPF_ANY);
	return 1;
}

/* Rewrite the destination of a connect/sendmsg to a chosen backend. 1 = allow. */
static __always_inline int sock_forward(struct bpf_sock_addr *ctx, bool sendmsg)
{
	struct weir_backend *be;
	int allow;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 1;
	allow = sock_pick(ctx, ctx->user_ip4, (__be16)ctx->user_port /* network order in the low 16 bits */,
			  sock_source(ctx, sendmsg), &be);
	if (be) {
		ctx->user_ip4 = be->addr;
		ctx->user_port = (__u32)be->port;
	}
	return allow;
}

/*
 * The frontend an IPv4 backend of this socket stands for (recvmsg,
 * getpeername): true, with its address and port, if there is one. A TCP
 * socket's own storage first, then skrevnat.
 */
static __always_inline bool sock_frontend(struct bpf_sock_addr *ctx, __be32 addr, __be16 port, __be32 *fe_addr,
					  __be16 *fe_port)
{
	__be32 a[4] = { 0, 0, 0, addr };
	struct weir_sk_conn *c = sk_conn_find(ctx, a, port);
	struct weir_sk_key sk = {};
	struct weir_sk_val *sv;

	if (c) {
		*fe_addr = c->frontend[3];
		*fe_port = c->frontend_port;
		return true;
	}
	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.addr = addr;
	sk.port = port;
	sv = bpf_map_lookup_elem(&weir1_skrevnat, &sk);
	if (!sv)
		return false;
	*fe_addr = sv->addr;
	*fe_port = sv->port;
	return true;
}

/*
 * Show the frontend instead of the backend (recvmsg source, getpeername).
 * Always 1. Only a backend's port can be translated back: a server asking
 * for its client's address skips the lookup.
 */
static __always_inline int sock_reverse(struct bpf_sock_addr *ctx)
{
	__be32 addr;
	__be16 port;

	if (!port_backend((__be16)ctx->user_port))
		return 1;
	if (sock_frontend(ctx, ctx->user_ip4, (__be16)ctx->user_port, &addr, &port)) {
		ctx->user_ip4 = addr;
		ctx->user_port = (__u32)port;
	}
	return 1;
}

#endif
