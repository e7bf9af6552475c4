/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv6 conntrack: ct.h's entries, lifetimes and peer-liveness rule over
 * weir1_ct6 (two entries per flow, FWD as the client sends, REV as the
 * backend replies after NAT).
 */
#ifndef WEIR_CT6_H
#define WEIR_CT6_H

#include "ct.h"
#include "parse6.h"
#include "scratch6.h"

static __always_inline void ct6_key_of(struct weir_ct6_key *k, const struct pkt6 *p, __u8 dir)
{
	ip6_cp(k->saddr, p->saddr);
	ip6_cp(k->daddr, p->daddr);
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->dir = dir;
	k->pad = 0;
}

static __always_inline bool ct6_expired(const struct weir_ct6_val *v, __u8 proto, __u64 now)
{
	__u64 life = proto == IPPROTO_UDP             ? CT_LIFETIME_UDP
		     : proto == IPPROTO_SCTP          ? CT_LIFETIME_SCTP
		     : (v->flags & WEIR_CT_F_CLOSING) ? CT_LIFETIME_TCP_CLOSING
						      : CT_LIFETIME_TCP;
	return weir_age(now, v->last_seen) > life;
}

/* Is the REV entry of FWD entry v (keyed k) alive and still this flow's? (ct_fwd_peer_alive) */
static __always_inline bool ct6_fwd_peer_alive(const struct weir_ct6_key *k, const struct weir_ct6_val *v, __u64 now)
{
	bool snat = v->flags & WEIR_CT_F_SNAT;
	__u32 id = v->backend_id;
	struct weir_backend6 *be = bpf_map_lookup_elem(&weir1_be6, &id);
	struct weir_ct6_key rk = {};
	struct weir_ct6_val *r;

	if (!be)
		return false;
	ip6_cp(rk.saddr, be->addr);
	ip6_cp(rk.daddr, snat ? v->nat_addr : k->saddr);
	rk.sport = be->port;
	rk.dport = snat ? v->nat_port : k->sport;
	rk.proto = k->proto;
	rk.dir = WEIR_CT_REV;
	r = bpf_map_lookup_elem(&weir1_ct6, &rk);
	return r && !ct6_expired(r, k->proto, now) && r->rev_nat_id == v->rev_nat_id && ip6_eq(r->nat_addr, k->saddr) &&
	       r->nat_port == k->sport;
}

/* Is the FWD entry of REV entry v (keyed k) alive and still on this backend? (ct_rev_peer_alive) */
static __always_inline bool ct6_rev_peer_alive(const struct weir_ct6_key *k, const struct weir_ct6_val *v, __u64 now)
{
	__u32 id = v->rev_nat_id;
	struct weir_revnat6 *rn = bpf_map_lookup_elem(&weir1_revnat6, &id);
	struct weir_ct6_key fk = {};
	struct weir_backend6 *be;
	struct weir_ct6_val *f;

	if (!rn)
		return false;
	ip6_cp(fk.saddr, v->nat_addr);
	ip6_cp(fk.daddr, rn->addr);
	fk.sport = v->nat_port;
	fk.dport = rn->port;
	fk.proto = k->proto;
	fk.dir = WEIR_CT_FWD;
	f = bpf_map_lookup_elem(&weir1_ct6, &fk);
	if (!f || ct6_expired(f, k->proto, now) || f->rev_nat_id != v->rev_nat_id)
		return false;
	if ((f->flags & WEIR_CT_F_SNAT) && (!ip6_eq(f->nat_addr, k->daddr) || f->nat_port != k->dport))
		return false;
	id = f->backend_id;
	be = bpf_map_lookup_elem(&weir1_be6, &id);
	return be && ip6_eq(be->addr, k->saddr) && be->port == k->sport;
}

static __always_inline bool ct6_alive(const struct weir_ct6_key *k, const struct weir_ct6_val *v, __u64 now)
{
	if (!ct6_expired(v, k->proto, now))
		return true;
	return k->dir == WEIR_CT_FWD ? ct6_fwd_peer_alive(k, v, now) : ct6_rev_peer_alive(k, v, now);
}

/* Found, alive entry keyed k; refreshes last_seen (at most once a second, as ct_lookup). */
static __always_inline struct weir_ct6_val *ct6_lookup_key(const struct weir_ct6_key *k, __u64 now)
{
	struct weir_ct6_val *v = bpf_map_lookup_elem(&weir1_ct6, k);

	if (!v || !ct6_alive(k, v, now))
		return NULL;
	if (weir_age(now, v->last_seen) > CT_REFRESH_NS)
		v->last_seen = now;
	return v;
}

static __attribute__((noinline)) struct weir_ct6_val *ct6_lookup(const struct pkt6 *p, __u8 dir, __u64 now)
{
	struct weir_ct6_key k;
	struct weir_ct6_val *v;

	ct6_key_of(&k, p, dir);
	v = ct6_lookup_key(&k, now);
	if (v && tcp6_closing(p))
		v->flags |= WEIR_CT_F_CLOSING;
	return v;
}

struct ct6_new {
	__be32 backend_addr[4];
	__be32 snat_addr[4]; /* all zero: source not rewritten */
	__u32 backend_id;
	__u32 rev_nat_id;
	__be16 backend_port;
	__be16 snat_port;
	__u16 flags; /* extra WEIR_CT_F_* (REDIRECT, HOST) */
};

/*
 * A free masquerade source port toward the backend (ct_snat_port), from
 * snat_addr to be_addr as the scratch holds them; 0: none. A global
 * function: verified once, not once for each way a new flow reaches it
 * (its loop of conntrack lookups made up a good part of the IPv6 path's
 * verification).
 */
__attribute__((noinline)) int ct6_snat_port(__u32 proto, __u32 be_port)
{
	struct scratch6 *sc = scratch6_get();
	struct weir_ct6_key k = { .sport = (__be16)be_port, .proto = (__u8)proto, .dir = WEIR_CT_REV };
	struct weir_svc6_key fe = { .proto = (__u8)proto, .scope = WEIR_SCOPE_ALL };
	__u64 now = weir_now();
	struct weir_ct6_val *v;
	__be16 port = bpf_htons(SNAT_PORT_MIN + bpf_get_prandom_u32() % SNAT_PORT_SPAN);

	if (!sc)
		return 0;
	ip6_cp(k.saddr, sc->be_addr);
	ip6_cp(k.daddr, sc->snat_addr);
	ip6_cp(fe.addr, sc->snat_addr);
	for (int i = 0; i < SNAT_PORT_TRIES; i++) {
		k.dport = port;
		fe.port = port;
		v = bpf_map_lookup_elem(&weir1_ct6, &k);
		if ((!v || !ct6_alive(&k, v, now)) && !bpf_map_lookup_elem(&weir1_svc6, &fe))
			return port;
		port = bpf_htons(SNAT_PORT_MIN + bpf_get_prandom_u32() % SNAT_PORT_SPAN);
	}
	return 0;
}

/* ct6_snat_port with its addresses passed through the scratch. */
static __always_inline __be16 ct6_pick_snat_port(__u8 proto, const __be32 *snat_addr, const __be32 *be_addr,
						 __be16 be_port)
{
	__u32 zero = 0;
	struct scratch6 *sc = bpf_map_lookup_elem(&weir_scratch6, &zero);

	if (!sc)
		return 0;
	ip6_cp(sc->snat_addr, snat_addr);
	ip6_cp(sc->be_addr, be_addr);
	return (__be16)ct6_snat_port(proto, be_port);
}

/* Record a new flow (p is the packet as the client sent it). A subprogram: its key and value get a stack frame of their
 * own. */
static __attribute__((noinline)) void ct6_create(const struct pkt6 *p, const struct ct6_new *n, __u64 now)
{
	bool snat = !ip6_zero(n->snat_addr);
	struct weir_ct6_key k;
	struct weir_ct6_val v = {
		.last_seen = now,
		.backend_id = n->backend_id,
		.rev_nat_id = n->rev_nat_id,
		.nat_port = snat ? n->snat_port : 0,
		.flags = (snat ? WEIR_CT_F_SNAT : 0) | n->flags,
	};

	ip6_cp(v.nat_addr, n->snat_addr);
	ct6_key_of(&k, p, WEIR_CT_FWD);
	bpf_map_update_elem(&weir1_ct6, &k, &v, BPF_ANY);

	ip6_cp(k.saddr, n->backend_addr);
	ip6_cp(k.daddr, snat ? n->snat_addr : p->saddr);
	k.sport = n->backend_port;
	k.dport = snat ? n->snat_port : p->sport;
	k.dir = WEIR_CT_REV;
	v.backend_id = 0;
	ip6_cp(v.nat_addr, p->saddr);
	v.nat_port = p->sport;
	bpf_map_update_elem(&weir1_ct6, &k, &v, BPF_ANY);
}

#endif
