/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Load balancing: frontend lookup and backend choice.
 *
 * Map shape (DESIGN.md §2): slot 0 of a frontend is its master entry with
 * the slot count; slots 1..count name backend ids. A uniformly random slot
 * is kube-proxy's `statistic --mode random` cascade in one lookup. The agent
 * writes slots before the count that exposes them and lowers the count
 * before removing slots, so any slot below count exists — a missing one is
 * counted as a drop, never silently misrouted.
 */
#ifndef WEIR_LB_H
#define WEIR_LB_H

#include "clock.h"
#include "maps.h"
#include "parse.h"

static __always_inline struct weir_svc_val *lb_frontend(struct weir_svc_key *key, const struct pkt *p, __u8 scope)
{
	key->addr = p->daddr;
	key->port = p->dport;
	key->proto = p->proto;
	key->scope = scope;
	key->slot = 0;
	key->pad = 0;
	return bpf_map_lookup_elem(&weir1_svc, key);
}

static __always_inline struct weir_backend *lb_backend(__u32 id)
{
	return bpf_map_lookup_elem(&weir1_be, &id);
}

/* WEIR_MEMBER_F_* of backend id for frontend rev_nat_id, or -1 if it is not an endpoint of it. */
static __always_inline int lb_member(__u32 rev_nat_id, __u32 backend_id)
{
	struct weir_member_key mk = { .rev_nat_id = rev_nat_id, .backend_id = backend_id };
	__u32 *flags = bpf_map_lookup_elem(&weir1_member, &mk);

	return flags ? (int)*flags : -1;
}

/* Backend from a random slot; NULL if the slot or backend is missing. */
static __always_inline struct weir_backend *lb_random(struct weir_svc_key *key, const struct weir_svc_val *svc,
						      __u32 *backend_id)
{
	struct weir_svc_val *slot;

	key->slot = 1 + bpf_get_prandom_u32() % svc->count;
	slot = bpf_map_lookup_elem(&weir1_svc, key);
	key->slot = 0;
	if (!slot)
		return NULL;
	*backend_id = slot->backend_id;
	return lb_backend(slot->backend_id);
}

/*
 * sessionAffinity ClientIP: reuse the client's backend while it is still
 * active for the frontend (member map) and the last new flow is younger than the
 * timeout — kube-proxy's `recent --rcheck --seconds T --reap`. Every new flow
 * refreshes the entry, as kube-proxy's `--set` does.
 */
static __always_inline struct weir_backend *lb_affinity(struct weir_svc_key *key, const struct weir_svc_val *svc,
							__be32 client, __u32 *backend_id, __u64 now)
{
	struct weir_aff_key ak = { .client = client, .rev_nat_id = svc->rev_nat_id };
	struct weir_aff_val av = {};
	struct weir_aff_val *cur;
	struct weir_backend *be;

	cur = bpf_map_lookup_elem(&weir1_aff, &ak);
	if (cur && weir_age(now, cur->last_used) <= (__u64)svc->affinity_timeout * NSEC_PER_SEC) {
		int m = lb_member(svc->rev_nat_id, cur->backend_id);

		if (m >= 0 && (m & WEIR_MEMBER_F_ACTIVE)) {
			be = lb_backend(cur->backend_id);
			if (be) {
				*backend_id = cur->backend_id;
				cur->last_used = now;
				return be;
			}
		}
	}
	be = lb_random(key, svc, backend_id);
	if (!be)
		return NULL;
	av.last_used = now;
	av.backend_id = *backend_id;
	bpf_map_update_elem(&weir1_aff, &ak, &av, BPF_ANY);
	return be;
}

static __always_inline struct weir_backend *lb_select(struct weir_svc_key *key, const struct weir_svc_val *svc,
						      __be32 client, __u32 *backend_id, __u64 now)
{
	if (svc->flags & WEIR_SVC_F_AFFINITY)
		return lb_affinity(key, svc, client, backend_id, now);
	return lb_random(key, svc, backend_id);
}

#endif
