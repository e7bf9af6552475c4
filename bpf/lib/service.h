/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What happens to a packet for a frontend, and to a reply of a NATed flow.
 * Each handler returns a verdict (verdict.h) or WEIR_PASS.
 */
#ifndef WEIR_SERVICE_H
#define WEIR_SERVICE_H

#include "ct.h"
#include "lb.h"
#include "nat.h"
#include "reject.h"
#include "verdict.h"

static __always_inline __be32 hairpin_addr(void)
{
	__u32 zero = 0;
	struct weir_config *cfg = bpf_map_lookup_elem(&weir1_cfg, &zero);

	return cfg ? cfg->hairpin_addr : 0;
}

/*
 * Client -> frontend. Conntrack first (a flow keeps its backend, even one
 * that is now terminating or not ready), then a new choice. A flow whose
 * backend is no longer an endpoint of this frontend chooses again: that is
 * what unsticks a UDP client that keeps sending on one socket after its
 * backend was removed (the classic stale-conntrack blackhole).
 */
static __always_inline int handle_frontend(struct __sk_buff *skb, struct pkt *p, struct weir_svc_key *key,
					   struct weir_svc_val *svc)
{
	__u64 now = bpf_ktime_get_ns();
	struct weir_ct_val *ct = ct_lookup(p, WEIR_CT_FWD, now);
	struct weir_backend *be = NULL;
	__u32 backend_id = 0;
	__be32 snat = 0;
	__be32 be_addr;
	__be16 be_port;

	if (ct && ct->rev_nat_id == svc->rev_nat_id && !(tcp_syn_only(p) && (ct->flags & WEIR_CT_F_CLOSING)) &&
	    lb_member(svc->rev_nat_id, ct->backend_id) >= 0) {
		be = lb_backend(ct->backend_id);
		if (be && (ct->flags & WEIR_CT_F_SNAT))
			snat = ct->nat_addr;
	}
	if (!be) {
		struct ct_new n;

		if (svc->count == 0)
			return reject(skb, p);
		be = lb_select(key, svc, p->saddr, &backend_id, now);
		if (!be)
			return WEIR_V_DROP_NO_BACKEND;
		/* Hairpin: a pod reaching itself through its service. Without a
		 * different source the pod would see its own address as sender and
		 * drop the packet (martian), as with kube-proxy's hairpin masquerade. */
		if (be->addr == p->saddr)
			snat = hairpin_addr();
		n.backend_id = backend_id;
		n.rev_nat_id = svc->rev_nat_id;
		n.backend_addr = be->addr;
		n.backend_port = be->port;
		n.snat_addr = snat;
		ct_create(p, &n, now);
	}
	be_addr = be->addr;
	be_port = be->port;
	if (snat && nat_rewrite(skb, p, true, snat, p->sport))
		return WEIR_V_DROP_NAT_FAILED;
	if (nat_rewrite(skb, p, false, be_addr, be_port))
		return WEIR_V_DROP_NAT_FAILED;
	return WEIR_V_FORWARD;
}

/* Backend -> client: restore the frontend as source (and the client as destination after SNAT). */
static __always_inline int handle_reply(struct __sk_buff *skb, struct pkt *p)
{
	struct weir_ct_val *ct = ct_lookup(p, WEIR_CT_REV, bpf_ktime_get_ns());
	struct weir_revnat *rn;
	__be32 orig_addr;
	__be16 orig_port;
	__u32 id;

	if (!ct)
		return WEIR_PASS;
	id = ct->rev_nat_id;
	rn = bpf_map_lookup_elem(&weir1_revnat, &id);
	if (!rn)
		return WEIR_PASS; /* the service is gone: nothing to restore */
	if (ct->flags & WEIR_CT_F_SNAT) {
		orig_addr = ct->nat_addr;
		orig_port = ct->nat_port;
		if (nat_rewrite(skb, p, false, orig_addr, orig_port))
			return WEIR_V_DROP_NAT_FAILED;
	}
	if (nat_rewrite(skb, p, true, rn->addr, rn->port))
		return WEIR_V_DROP_NAT_FAILED;
	return WEIR_V_REVNAT;
}

#endif
