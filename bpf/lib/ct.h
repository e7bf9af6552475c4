/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Conntrack: every packet of a flow keeps the backend its first packet got.
 * Two entries per flow: FWD keyed as the client sends, REV keyed as the
 * backend replies (after NAT), so both directions are one hash lookup.
 * Entries live in an LRU map: under pressure the oldest flows go first.
 */
#ifndef WEIR_CT_H
#define WEIR_CT_H

#include "cfg.h"
#include "clock.h"
#include "maps.h"
#include "parse.h"

/* Idle lifetimes, seconds, where the agent's configuration gives none
 * (weir_config.ct_*_s = 0). TCP established like Cilium's default (6 h); a
 * closing TCP flow lingers briefly for the final ACKs; UDP like kube-proxy's
 * conntrack "stream" timeout order of magnitude. An expired entry counts as a
 * miss. The agent sets them with weir run --conntrack-* (kube-proxy's
 * conntrack.* timeouts). */
#define CT_DEFAULT_TCP_S (6 * 3600)
#define CT_DEFAULT_TCP_CLOSING_S 10
#define CT_DEFAULT_UDP_S 60
/* SCTP: an association sends HEARTBEATs (every 30 s by default) while idle,
 * so a live one refreshes its entry long before this; weir does not follow
 * SHUTDOWN/ABORT, so this is also how long a closed one lingers. */
#define CT_LIFETIME_SCTP (210ULL * NSEC_PER_SEC)
#define CT_REFRESH_NS NSEC_PER_SEC
/* The shortest lifetime the agent accepts. An entry younger than this is
 * alive without reading the configuration: a busy flow refreshes its entry
 * every CT_REFRESH_NS, so its packets skip the read nearly always. */
#define CT_LIFETIME_MIN NSEC_PER_SEC

static __always_inline void ct_key_of(struct weir_ct_key *k, const struct pkt *p, __u8 dir)
{
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->dir = dir;
	k->pad = 0;
}

/* The configured lifetime of an entry with these flags, seconds (0: weir's default). */
static __always_inline __u32 ct_configured_s(__u16 flags, __u8 proto)
{
	const struct weir_config *cfg = cfg_get();

	if (!cfg)
		return 0;
	if (proto == IPPROTO_UDP)
		return flags & WEIR_CT_F_REPLIED ? cfg->ct_udp_stream_s : cfg->ct_udp_s;
	return flags & WEIR_CT_F_CLOSING ? cfg->ct_tcp_close_wait_s : cfg->ct_tcp_established_s;
}

/* Has an entry (of either family) last seen at last_seen outlived its lifetime? */
static __always_inline bool ct_life_over(__u16 flags, __u8 proto, __u64 last_seen, __u64 now)
{
	__u64 age = weir_age(now, last_seen);
	__u64 life;

	if (age <= CT_LIFETIME_MIN)
		return false;
	if (proto == IPPROTO_SCTP)
		return age > CT_LIFETIME_SCTP;
	life = ct_configured_s(flags, proto);
	if (!life)
		life = proto == IPPROTO_UDP        ? CT_DEFAULT_UDP_S
		       : flags & WEIR_CT_F_CLOSING ? CT_DEFAULT_TCP_CLOSING_S
						   : CT_DEFAULT_TCP_S;
	return age > life * NSEC_PER_SEC;
}

/*
 * ct_life_over as a global function, for the IPv6 path: verified once, and
 * its configuration read stays out of the frames of the IPv6 functions,
 * whose stacks together must fit the 512 bytes a program has.
 */
__attribute__((noinline)) int ct_life_over_fn(__u32 flags, __u32 proto, __u64 last_seen, __u64 now)
{
	return ct_life_over((__u16)flags, (__u8)proto, last_seen, now);
}

static __always_inline bool ct_expired(const struct weir_ct_val *v, __u8 proto, __u64 now)
{
	return ct_life_over(v->flags, proto, v->last_seen, now);
}

/*
 * A flow lives while either direction saw a packet within its lifetime, as
 * one Linux conntrack entry refreshed by both directions does. Each
 * direction refreshes only its own entry (no second lookup per packet), so
 * an entry past its lifetime asks its peer before it counts as a miss.
 * Without this a UDP client that only sends would lose its reverse NAT
 * after 60 s (the backend's late answer arrives from the pod address and
 * the client drops it), and a flow kept busy by backend pushes alone would
 * jump to another backend on the client's next datagram. Costs lookups
 * only on the expired path.
 */

/* Is the REV entry of FWD entry v (keyed k, as the client sent) alive and still this flow's? */
static __always_inline bool ct_fwd_peer_alive(const struct weir_ct_key *k, const struct weir_ct_val *v, __u64 now)
{
	bool snat = v->flags & WEIR_CT_F_SNAT;
	__u32 id = v->backend_id;
	struct weir_backend *be = bpf_map_lookup_elem(&weir1_be, &id);
	struct weir_ct_key rk = {};
	struct weir_ct_val *r;

	if (!be)
		return false;
	rk.saddr = be->addr;
	rk.daddr = snat ? v->nat_addr : k->saddr;
	rk.sport = be->port;
	rk.dport = snat ? v->nat_port : k->sport;
	rk.proto = k->proto;
	rk.dir = WEIR_CT_REV;
	r = bpf_map_lookup_elem(&weir1_ct, &rk);
	return r && !ct_expired(r, k->proto, now) && r->rev_nat_id == v->rev_nat_id && r->nat_addr == k->saddr &&
	       r->nat_port == k->sport;
}

/* The FWD entry of REV entry v (keyed k, as the backend sends); NULL if its frontend or the entry is gone. */
static __always_inline struct weir_ct_val *ct_rev_peer(const struct weir_ct_key *k, const struct weir_ct_val *v)
{
	__u32 id = v->rev_nat_id;
	struct weir_revnat *rn = bpf_map_lookup_elem(&weir1_revnat, &id);
	struct weir_ct_key fk = {};

	if (!rn)
		return NULL;
	fk.saddr = v->nat_addr;
	fk.daddr = rn->addr;
	fk.sport = v->nat_port;
	fk.dport = rn->port;
	fk.proto = k->proto;
	fk.dir = WEIR_CT_FWD;
	return bpf_map_lookup_elem(&weir1_ct, &fk);
}

/* Is the FWD entry of REV entry v (keyed k, as the backend sends) alive and still on this backend? */
static __always_inline bool ct_rev_peer_alive(const struct weir_ct_key *k, const struct weir_ct_val *v, __u64 now)
{
	struct weir_ct_val *f = ct_rev_peer(k, v);
	struct weir_backend *be;
	__u32 id;

	if (!f || ct_expired(f, k->proto, now) || f->rev_nat_id != v->rev_nat_id)
		return false;
	/* After SNAT the REV key's destination is the flow's translated source. */
	if ((f->flags & WEIR_CT_F_SNAT) && (f->nat_addr != k->daddr || f->nat_port != k->dport))
		return false;
	id = f->backend_id;
	be = bpf_map_lookup_elem(&weir1_be, &id);
	return be && be->addr == k->saddr && be->port == k->sport;
}

static __always_inline bool ct_alive(const struct weir_ct_key *k, const struct weir_ct_val *v, __u64 now)
{
	if (!ct_expired(v, k->proto, now))
		return true;
	return k->dir == WEIR_CT_FWD ? ct_fwd_peer_alive(k, v, now) : ct_rev_peer_alive(k, v, now);
}

/* Found, alive entry for this packet in direction dir; refreshes last_seen. */
static __always_inline struct weir_ct_val *ct_lookup(const struct pkt *p, __u8 dir, __u64 now)
{
	struct weir_ct_key k;
	struct weir_ct_val *v;

	ct_key_of(&k, p, dir);
	v = bpf_map_lookup_elem(&weir1_ct, &k);
	if (!v || !ct_alive(&k, v, now))
		return NULL;
	/* Writes through the lookup pointer (no map update), and at most once a
	 * second: lifetimes are 10 s and more, and a busy flow would otherwise
	 * dirty the entry's cache line on every packet, on every CPU. */
	if (weir_age(now, v->last_seen) > CT_REFRESH_NS)
		v->last_seen = now;
	if (tcp_closing(p))
		v->flags |= WEIR_CT_F_CLOSING;
	/* A UDP flow's first reply makes it a stream (netfilter's ASSURED), in
	 * both entries, so each lives by the stream lifetime from now on. Once
	 * per flow: later replies find the flag set. */
	if (dir == WEIR_CT_REV && p->proto == IPPROTO_UDP && !(v->flags & WEIR_CT_F_REPLIED)) {
		struct weir_ct_val *f = ct_rev_peer(&k, v);

		v->flags |= WEIR_CT_F_REPLIED;
		if (f && f->rev_nat_id == v->rev_nat_id)
			f->flags |= WEIR_CT_F_REPLIED;
	}
	return v;
}

struct ct_new {
	__u32 backend_id;
	__u32 rev_nat_id;
	__be32 backend_addr;
	__be16 backend_port;
	__be16 snat_port; /* source port after SNAT */
	__be32 snat_addr; /* 0: source not rewritten */
	__u16 flags; /* extra WEIR_CT_F_* (REDIRECT) */
};

/*
 * Masquerade source ports come from above Linux's default ephemeral range
 * (32768-60999), so they never equal a port a node process may be using
 * toward the same backend: such a socket's replies would otherwise match
 * the masqueraded flow's reply entry and be steered to its client.
 */
#define SNAT_PORT_MIN 61000
#define SNAT_PORT_SPAN 4536 /* 61000-65535 */
#define SNAT_PORT_TRIES 8

/*
 * A source port for a flow masqueraded to snat_addr: a random free one in
 * the SNAT range (like MASQUERADE --random-fully). 0: none free.
 * A port that is also a frontend on snat_addr (a NodePort) is never used:
 * replies to it must not look like new connections to that frontend, which
 * is what lets the programs look up frontends before replies.
 */
static __always_inline __be16 ct_snat_port(const struct pkt *p, __be32 snat_addr, __be32 be_addr, __be16 be_port,
					   __u64 now)
{
	struct weir_ct_key k = {
		.saddr = be_addr, .daddr = snat_addr, .sport = be_port, .proto = p->proto, .dir = WEIR_CT_REV
	};
	struct weir_ct_val *v;
	__be16 port = bpf_htons(SNAT_PORT_MIN + bpf_get_prandom_u32() % SNAT_PORT_SPAN);

	struct weir_svc_key fe = { .addr = snat_addr, .proto = p->proto, .scope = WEIR_SCOPE_ALL };

	for (int i = 0; i < SNAT_PORT_TRIES; i++) {
		k.dport = port;
		fe.port = port;
		v = bpf_map_lookup_elem(&weir1_ct, &k);
		if ((!v || !ct_alive(&k, v, now)) && !bpf_map_lookup_elem(&weir1_svc, &fe))
			return port;
		port = bpf_htons(SNAT_PORT_MIN + bpf_get_prandom_u32() % SNAT_PORT_SPAN);
	}
	return 0;
}

/* Record a new flow (p is the packet as the client sent it). */
static __always_inline void ct_create(const struct pkt *p, const struct ct_new *n, __u64 now)
{
	__u16 flags = (n->snat_addr ? WEIR_CT_F_SNAT : 0) | n->flags;
	struct weir_ct_key k;
	struct weir_ct_val v = {
		.last_seen = now,
		.backend_id = n->backend_id,
		.rev_nat_id = n->rev_nat_id,
		.nat_addr = n->snat_addr,
		.nat_port = n->snat_addr ? n->snat_port : 0,
		.flags = flags,
	};

	ct_key_of(&k, p, WEIR_CT_FWD);
	bpf_map_update_elem(&weir1_ct, &k, &v, BPF_ANY);

	k.saddr = n->backend_addr;
	k.daddr = n->snat_addr ? n->snat_addr : p->saddr;
	k.sport = n->backend_port;
	k.dport = n->snat_addr ? n->snat_port : p->sport;
	k.dir = WEIR_CT_REV;
	v.backend_id = 0;
	v.nat_addr = p->saddr;
	v.nat_port = p->sport;
	bpf_map_update_elem(&weir1_ct, &k, &v, BPF_ANY);
}

#endif
