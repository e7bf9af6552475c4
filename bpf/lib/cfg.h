/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Agent settings and address classes the programs decide on. */
#ifndef WEIR_CFG_H
#define WEIR_CFG_H

#include "maps.h"

static __always_inline struct weir_config *cfg_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&weir1_cfg, &zero);
}

/* Is addr inside one of owner's CIDRs (owner 0: the cluster CIDRs)? */
static __always_inline bool cidr_match(__u32 owner, __be32 addr)
{
	struct weir_cidr_key k = { .prefixlen = 64, .owner = owner, .addr = addr };

	return bpf_map_lookup_elem(&weir1_cidr, &k) != NULL;
}

static __always_inline struct weir_config6 *cfg6_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&weir1_cfg6, &zero);
}

/* Is the IPv6 addr inside one of owner's CIDRs (owner 0: the IPv6 cluster CIDRs)? */
static __always_inline bool cidr6_match(__u32 owner, const __be32 *addr)
{
	struct weir_cidr6_key k = { .prefixlen = 160, .owner = owner };

	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&weir1_cidr6, &k) != NULL;
}

#endif
