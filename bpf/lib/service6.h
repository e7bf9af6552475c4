/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv6 frontends and replies: service.h's rules (kube-proxy's, listed
 * there) over the IPv6 maps. The settings that differ by family come from
 * weir1_cfg6 (masquerade and hairpin addresses, whether IPv6 cluster CIDRs
 * are known); masqueradeAll and drain from weir1_cfg, for both families.
 */
#ifndef WEIR_SERVICE6_H
#define WEIR_SERVICE6_H

#include "cfg.h"
#include "ct6.h"
#include "icmp6.h"
#include "lb6.h"
#include "nat6.h"
#include "reject6.h"
#include "service.h"

/* A local-traffic detector for IPv6: by device (the same for both families), or IPv6 cluster CIDRs. */
static __always_inline bool have_detector6(const struct weir_config *cfg, const struct weir_config6 *cfg6)
{
	return (cfg && (cfg->flags & WEIR_CFG_F_LOCAL_DEVICES)) || (cfg6 && (cfg6->flags & WEIR_CFG6_F_CLUSTER_CIDR));
}

/*
 * Is the sender a pod? As from_cluster: by the device it entered on
 * (ifindex; not kept in struct pkt6, whose size counts against the
 * programs' stack), else by IPv6 cluster CIDR.
 */
static __always_inline bool from_cluster6(const struct pkt6 *p, __u32 ifindex, const struct weir_config *cfg,
					  const struct weir_config6 *cfg6)
{
	if (cfg && (cfg->flags & WEIR_CFG_F_LOCAL_DEVICES))
		return local_device(ifindex);
	return cfg6 && (cfg6->flags & WEIR_CFG6_F_CLUSTER_CIDR) && cidr6_match(0, p->saddr);
}

/* As needs_masquerade. */
static __always_inline bool needs_masquerade6(const struct pkt6 *p, __u32 ifindex, const struct weir_svc_val *svc,
					      const struct weir_config *cfg, const struct weir_config6 *cfg6)
{
	if (!cfg6 || ip6_zero(cfg6->snat_addr))
		return false;
	if (svc->flags & SVC_F_EXTERNAL)
		return !(svc->flags & WEIR_SVC_F_ETP_LOCAL);
	if (cfg && (cfg->flags & WEIR_CFG_F_MASQUERADE_ALL))
		return true;
	return have_detector6(cfg, cfg6) && !from_cluster6(p, ifindex, cfg, cfg6);
}

/* handle_frontend6's answer when the frontend has no endpoints: its caller sends the REJECT. */
#define WEIR_REJECT6 (-2)

/*
 * Client -> IPv6 frontend (handle_frontend). The IPv6 handlers are BPF
 * subprograms rather than inlined: each gets a stack frame of its own (their
 * 128-bit keys do not fit the 512 bytes together), and the REJECT is built
 * by the caller, in a frame of its own too.
 */
static __attribute__((noinline)) int handle_frontend6(struct __sk_buff *skb, struct pkt6 *p, struct weir_svc6_key *key,
						      struct weir_svc_val *svc, enum origin origin)
{
	__u64 now = weir_now();
	struct weir_config6 *cfg6 = NULL;
	struct weir_ct6_val *ct;
	struct weir_backend6 *be = NULL;
	__be32 snat[4] = {};
	__be32 be_addr[4];
	__be16 snat_port = 0;
	__u16 ct_flags = 0;
	__be16 be_port;

	/* Only lo carries ::1 sources; from anywhere else they are forged. */
	if (origin != FROM_HOST && ip6_loopback(p->saddr))
		return WEIR_V_DROP_LOOPBACK_SOURCE;
	if ((svc->flags & WEIR_SVC_F_SRC_RANGES) && !cidr6_match(svc->rev_nat_id, p->saddr))
		return WEIR_V_DROP_SOURCE_RANGE;
	if ((svc->flags & WEIR_SVC_F_ETP_LOCAL) && origin != FROM_HOST &&
	    !from_cluster6(p, skb->ingress_ifindex, cfg_get(), (cfg6 = cfg6_get()))) {
		svc = lb6_frontend(key, p, WEIR_SCOPE_LOCAL);
		if (!svc)
			return WEIR_V_DROP_NO_LOCAL_ENDPOINTS;
	}

	ct = ct6_lookup(p, WEIR_CT_FWD, now);
	if (ct && ct->rev_nat_id == svc->rev_nat_id && !(tcp6_syn_only(p) && (ct->flags & WEIR_CT_F_CLOSING)) &&
	    lb_member(svc->rev_nat_id, ct->backend_id) >= 0) {
		be = lb6_backend(ct->backend_id);
		if (be && (ct->flags & WEIR_CT_F_SNAT)) {
			ip6_cp(snat, ct->nat_addr);
			snat_port = ct->nat_port;
		}
		ct_flags = ct->flags;
	}
	if (!be) {
		struct weir_config *cfg;
		struct ct6_new n = {};
		__u32 backend_id = 0;

		if (svc->count == 0) {
			if (svc->flags & WEIR_SVC_F_DROP_EMPTY)
				return WEIR_V_DROP_NO_LOCAL_ENDPOINTS;
			return WEIR_REJECT6;
		}
		if (!ct && p->proto == IPPROTO_TCP && !tcp6_syn_only(p))
			return WEIR_V_PASS_MIDFLOW;
		cfg = cfg_get();
		if (cfg && (cfg->flags & WEIR_CFG_F_DRAIN))
			return WEIR_V_PASS_DRAINING;
		if (!cfg6)
			cfg6 = cfg6_get();
		be = lb6_select(key, svc, p->saddr, &backend_id, now);
		if (!be)
			return WEIR_V_DROP_NO_BACKEND;
		ip6_cp(be_addr, be->addr);
		be_port = be->port;
		if (ip6_eq(be_addr, p->saddr)) {
			/* Hairpin: a pod reaching itself through its service. */
			if (cfg6)
				ip6_cp(snat, cfg6->hairpin_addr);
		} else if (origin == FROM_HOST || needs_masquerade6(p, skb->ingress_ifindex, svc, cfg, cfg6)) {
			if (cfg6)
				ip6_cp(snat, cfg6->snat_addr);
		}
		if (!ip6_zero(snat)) {
			snat_port = ct6_pick_snat_port(p->proto, snat, be_addr, be_port);
			if (!snat_port)
				return WEIR_V_DROP_NO_SNAT_PORT;
		}
		n.backend_id = backend_id;
		n.rev_nat_id = svc->rev_nat_id;
		ip6_cp(n.backend_addr, be_addr);
		n.backend_port = be_port;
		ip6_cp(n.snat_addr, snat);
		n.snat_port = snat_port;
		/* As IPv4: masqueraded and NodePort flows are forwarded by FIB redirect. */
		ct_flags = (!ip6_zero(snat) && !(cfg6 && ip6_eq(snat, cfg6->hairpin_addr))) ||
					   (svc->flags & WEIR_SVC_F_NODE_PORT)
				   ? WEIR_CT_F_REDIRECT
				   : 0;
		if (origin == FROM_HOST)
			ct_flags |= WEIR_CT_F_HOST;
		n.flags = ct_flags;
		ct6_create(p, &n, now);
	} else {
		ip6_cp(be_addr, be->addr);
		be_port = be->port;
	}
	if (!ip6_zero(snat) && nat6_rewrite(skb, p, true, snat, snat_port))
		return WEIR_V_DROP_NAT_FAILED;
	if (nat6_rewrite(skb, p, false, be_addr, be_port))
		return WEIR_V_DROP_NAT_FAILED;
	return ct_flags & WEIR_CT_F_REDIRECT ? WEIR_V_FORWARD_REDIRECT : WEIR_V_FORWARD;
}

/* Backend -> client (handle_reply). */
static __attribute__((noinline)) int handle_reply6(struct __sk_buff *skb, struct pkt6 *p)
{
	__u64 now = weir_now();
	struct weir_ct6_val *ct = ct6_lookup(p, WEIR_CT_REV, now);
	struct weir_revnat6 *rn;
	__be32 orig[4];
	__u32 id;

	if (!ct)
		return WEIR_PASS;
	id = ct->rev_nat_id;
	rn = bpf_map_lookup_elem(&weir1_revnat6, &id);
	if (!rn)
		return WEIR_V_DROP_REVNAT_MISSING;
	if (ct->flags & WEIR_CT_F_SNAT) {
		ip6_cp(orig, ct->nat_addr);
		if (nat6_rewrite(skb, p, false, orig, ct->nat_port))
			return WEIR_V_DROP_NAT_FAILED;
	}
	if (nat6_rewrite(skb, p, true, rn->addr, rn->port))
		return WEIR_V_DROP_NAT_FAILED;
	if (ct->flags & WEIR_CT_F_HOST)
		return WEIR_V_REVNAT_HOST;
	return ct->flags & WEIR_CT_F_REDIRECT ? WEIR_V_REVNAT_REDIRECT : WEIR_V_REVNAT;
}

/* host_reply for IPv6: a reply handed to lo passing weir_tc_host again. */
static __attribute__((noinline)) bool host_reply6(const struct pkt6 *p)
{
	struct weir_ct6_key k = { .sport = p->dport, .dport = p->sport, .proto = p->proto, .dir = WEIR_CT_FWD };
	struct weir_ct6_val *v;

	ip6_cp(k.saddr, p->daddr);
	ip6_cp(k.daddr, p->saddr);
	v = bpf_map_lookup_elem(&weir1_ct6, &k);
	return v && (v->flags & WEIR_CT_F_HOST);
}

/* Frontends first, then replies, then ICMPv6 errors about a flow (handle_packet). */
static __always_inline int handle_packet6(struct __sk_buff *skb, struct pkt6 *p, enum origin origin)
{
	struct weir_svc6_key key;
	struct weir_svc_val *svc;
	int v;

	if (p->proto == NEXTHDR_ICMP6) {
		v = handle_icmp6_error(skb, p->l4_off, origin == FROM_HOST);
		/* The FIB redirect routes by the error's new destination. */
		if ((v == WEIR_V_FORWARD_REDIRECT || v == WEIR_V_REVNAT_REDIRECT) &&
		    bpf_skb_load_bytes(skb, IP6_DST_OFF, p->daddr, sizeof(p->daddr)))
			return WEIR_V_DROP_NAT_FAILED;
		return v;
	}
	svc = port_frontend(p->dport) ? lb6_frontend(&key, p, WEIR_SCOPE_ALL) : NULL;
	if (svc && !(origin == FROM_HOST && host_reply6(p))) {
		v = handle_frontend6(skb, p, &key, svc, origin);
		if (v != WEIR_REJECT6)
			return v;
		/* One answer per datagram, to its first fragment (as reject() for IPv4). */
		return p->frag == PKT_FRAG_LATER ? WEIR_V_DROP_NO_ENDPOINTS : reject6(skb, p);
	}
	if (origin == FROM_HOST && bpf_ntohs(p->dport) < SNAT_PORT_MIN)
		return WEIR_PASS;
	if (!port_backend(p->sport))
		return WEIR_PASS;
	return handle_reply6(skb, p);
}

#endif
