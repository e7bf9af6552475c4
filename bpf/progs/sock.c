// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup socket hooks, attached to the agent's --cgroup-root: the service
 * path for processes in the node's network namespace. Entry points only;
 * the logic is in bpf/lib/sock.h (IPv4) and bpf/lib/sock6.h (IPv6), a TCP
 * socket's own record of its translation in bpf/lib/sockconn.h; the
 * iterator that destroys sockets left on a removed backend is in
 * bpf/lib/sockterm.h.
 */
#include "common.h"
#include "sock.h"
#include "sock6.h"
#include "sockterm.h"

SEC("cgroup/connect4")
int weir_sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock_forward(ctx, false);
}

SEC("cgroup/sendmsg4")
int weir_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_forward(ctx, true);
}

SEC("cgroup/recvmsg4")
int weir_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock_reverse(ctx);
}

SEC("cgroup/getpeername4")
int weir_sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock_reverse(ctx);
}

SEC("cgroup/connect6")
int weir_sock_connect6(struct bpf_sock_addr *ctx)
{
	return sock6_forward(ctx, false);
}

SEC("cgroup/sendmsg6")
int weir_sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_forward(ctx, true);
}

SEC("cgroup/recvmsg6")
int weir_sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_reverse(ctx);
}

SEC("cgroup/getpeername6")
int weir_sock_getpeername6(struct bpf_sock_addr *ctx)
{
	return sock6_reverse(ctx);
}

/* Run by the agent (BpfDatapath.terminateSockets), never attached. */
SEC("iter/udp")
int weir_sock_udp_stale(struct bpf_iter__udp *ctx)
{
	return sockterm_visit(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
