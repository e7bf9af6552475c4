/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-CPU scratch space for the IPv6 path's global functions. A global
 * function is verified once per program, whatever state its callers reach
 * it in, which keeps the IPv6 path's share of the object's load time down;
 * but before Linux 5.12 it takes scalars only, so its 128-bit arguments
 * pass through here. Not pinned: it carries nothing from one packet to the
 * next (a tc program runs to completion on its CPU).
 */
#ifndef WEIR_SCRATCH6_H
#define WEIR_SCRATCH6_H

#include "common.h"

struct scratch6 {
	__be32 snat_addr[4]; /* ct6_snat_port: masquerade source */
	__be32 be_addr[4]; /* ct6_snat_port: backend */
	__be32 nat_addr[4]; /* nat6_set: the new address */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct scratch6);
	__uint(max_entries, 1);
} weir_scratch6 SEC(".maps");

static __always_inline struct scratch6 *scratch6_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&weir_scratch6, &zero);
}

#endif
