/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Load balancing for IPv6 frontends: lb.h's slots, affinity and membership
 * rules over weir1_svc6/weir1_be6/weir1_aff6. Membership (weir1_member) is
 * shared: rev_nat and backend ids are one id space for both families.
 */
#ifndef WEIR_LB6_H
#define WEIR_LB6_H

#include "lb.h"
#include "parse6.h"

static __always_inline struct weir_svc_val *lb6_frontend(struct weir_svc6_key *key, const struct pkt6 *p, __u8 scope)
{
	ip6_cp(key->addr, p->daddr);
	key->port = p->dport;
	key->proto = p->proto;
	key->scope = scope;
	key->slot = 0;
	key->pad = 0;
	return bpf_map_lookup_elem(&weir1_svc6, key);
}

static __always_inline struct weir_backend6 *lb6_backend(__u32 id)
{
	return bpf_map_lookup_elem(&weir1_be6, &id);
}

/* Backend from a random slot; NULL if the slot or backend is missing. */
static __always_inline struct weir_backend6 *lb6_random(struct weir_svc6_key *key, const struct weir_svc_val *svc,
							__u32 *backend_id)
{
	struct weir_svc_val *slot;

	key->slot = 1 + bpf_get_prandom_u32() % svc->count;
	slot = bpf_map_lookup_elem(&weir1_svc6, key);
	key->slot = 0;
	if (!slot)
		return NULL;
	*backend_id = slot->backend_id;
	return lb6_backend(slot->backend_id);
}

/* sessionAffinity ClientIP, as lb_affinity. */
static __always_inline struct weir_backend6 *lb6_affinity(struct weir_svc6_key *key, const struct weir_svc_val *svc,
							  const __be32 *client, __u32 *backend_id, __u64 now)
{
	struct weir_aff6_key ak = { .rev_nat_id = svc->rev_nat_id };
	struct weir_aff_val av = {};
	struct weir_aff_val *cur;
	struct weir_backend6 *be;

	ip6_cp(ak.client, client);
	cur = bpf_map_lookup_elem(&weir1_aff6, &ak);
	if (cur && weir_age(now, cur->last_used) <= (__u64)svc->affinity_timeout * NSEC_PER_SEC) {
		int m = lb_member(svc->rev_nat_id, cur->backend_id);

		if (m >= 0 && (m & WEIR_MEMBER_F_ACTIVE)) {
			be = lb6_backend(cur->backend_id);
			if (be) {
				*backend_id = cur->backend_id;
				cur->last_used = now;
				return be;
			}
		}
	}
	be = lb6_random(key, svc, backend_id);
	if (!be)
		return NULL;
	av.last_used = now;
	av.backend_id = *backend_id;
	bpf_map_update_elem(&weir1_aff6, &ak, &av, BPF_ANY);
	return be;
}

static __always_inline struct weir_backend6 *lb6_select(struct weir_svc6_key *key, const struct weir_svc_val *svc,
							const __be32 *client, __u32 *backend_id, __u64 now)
{
	if (svc->flags & WEIR_SVC_F_AFFINITY)
		return lb6_affinity(key, svc, client, backend_id, now);
	return lb6_random(key, svc, backend_id);
}

#endif
