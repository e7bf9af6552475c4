/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Where a connected TCP socket keeps its translation: in socket-local
 * storage. connect() writes it once; getpeername() reads it back. The
 * rev-NAT hash (skrevnat) would do, but it is an LRU map full of closed
 * sockets' entries, so each connect() evicted one: ~680 of the ~900 ns
 * connect4 took on a 2-vCPU VM. Storage on the socket needs no key, no
 * eviction, and goes with the socket. UDP keeps skrevnat: an unconnected
 * socket talks to many backends, and the stale-socket iterator reads it.
 *
 * bpf_sk_storage_get() in socket address hooks is probed by the loader
 * (weir_sk_storage, read-only data: on a kernel without it the verifier
 * never sees the call, and connect() writes skrevnat as before). The map
 * is pinned, so sockets connected before an agent restart keep theirs.
 */
#ifndef WEIR_SOCKCONN_H
#define WEIR_SOCKCONN_H

#include "common.h"

const volatile __u32 weir_sk_storage = 0;

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct weir_sk_conn);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_sksto SEC(".maps");

/* Does this socket keep its translation in its own storage? */
static __always_inline bool sk_conn_used(const struct bpf_sock_addr *ctx)
{
	return weir_sk_storage && ctx->protocol == IPPROTO_TCP && ctx->sk;
}

/* Remember a TCP socket's backend and frontend; false if it could not (the caller falls back to skrevnat). */
static __always_inline bool sk_conn_save(struct bpf_sock_addr *ctx, const __be32 backend[4], __be16 backend_port,
					 const __be32 frontend[4], __be16 frontend_port)
{
	struct weir_sk_conn *c;
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return false;
	c = bpf_sk_storage_get(&weir1_sksto, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!c)
		return false;
	__builtin_memcpy(c->backend, backend, 16);
	__builtin_memcpy(c->frontend, frontend, 16);
	c->backend_port = backend_port;
	c->frontend_port = frontend_port;
	c->pad = 0;
	return true;
}

/* The translation of a TCP socket now talking to addr:port, if it kept one. */
static __always_inline struct weir_sk_conn *sk_conn_find(struct bpf_sock_addr *ctx, const __be32 addr[4], __be16 port)
{
	struct weir_sk_conn *c;
	struct bpf_sock *sk;

	if (!weir_sk_storage || ctx->protocol != IPPROTO_TCP)
		return NULL;
	sk = ctx->sk;
	if (!sk)
		return NULL;
	c = bpf_sk_storage_get(&weir1_sksto, sk, 0, 0);
	if (!c || c->backend_port != port || c->backend[0] != addr[0] || c->backend[1] != addr[1] ||
	    c->backend[2] != addr[2] || c->backend[3] != addr[3])
		return NULL;
	return c;
}

#endif
