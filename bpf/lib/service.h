/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What happens to a packet for a frontend, and to a reply of a NATed flow,
 * with kube-proxy's rules (pkg/proxy/iptables) as the reference:
 *
 *  - external frontends (NodePort, LoadBalancer IP, externalIP) with
 *    externalTrafficPolicy Cluster are masqueraded to the node IP, so
 *    replies come back through this node (KUBE-EXT -> KUBE-MARK-MASQ);
 *  - with externalTrafficPolicy Local, clients from outside the cluster get
 *    this node's endpoints only and keep their source address; pods (when
 *    the cluster CIDRs tell them apart) and, through the socket hooks, node
 *    processes short-circuit to every endpoint (the KUBE-EXT "pod traffic"
 *    and "route LOCAL traffic" rules);
 *  - ClusterIP traffic is masqueraded when it comes from outside the
 *    cluster CIDRs (when those are known) or with masqueradeAll, which
 *    applies to ClusterIP traffic only;
 *  - loadBalancerSourceRanges filter LoadBalancer IPs only; blocked -> DROP;
 *  - no endpoints at all -> REJECT; endpoints, but none local under a Local
 *    policy -> DROP.
 *
 * Each handler returns a verdict (verdict.h) or WEIR_PASS.
 */
#ifndef WEIR_SERVICE_H
#define WEIR_SERVICE_H

#include "cfg.h"
#include "ct.h"
#include "icmp.h"
#include "lb.h"
#include "nat.h"
#include "ports.h"
#include "reject.h"
#include "verdict.h"

/* Where a packet entered this node. */
enum origin {
	FROM_POD, /* a pod-facing device: the sender is a pod on this node */
	FROM_EXTERNAL, /* an external device: outside clients and other nodes */
	FROM_HOST, /* lo: a node process, with a local (often 127/8) source */
};

#define SVC_F_EXTERNAL (WEIR_SVC_F_NODE_PORT | WEIR_SVC_F_EXTERNAL_IP | WEIR_SVC_F_LOAD_BALANCER)

/* Is there a local-traffic detector (kube-proxy's detectLocalMode)? */
static __always_inline bool have_detector(const struct weir_config *cfg)
{
	return cfg && (cfg->flags & (WEIR_CFG_F_CLUSTER_CIDR | WEIR_CFG_F_LOCAL_DEVICES));
}

/*
 * Is the sender a pod (kube-proxy's "local traffic detector")? By device
 * (InterfaceNamePrefix, BridgeInterface): it entered on one of this node's
 * pod devices. By source (ClusterCIDR, or NodeCIDR with this node's pod
 * CIDRs as owner 0): it is inside them. Without a detector, as with
 * kube-proxy, pods are treated like any other client: an eTP=Local frontend
 * gives them this node's endpoints only.
 */
static __always_inline bool from_cluster(const struct pkt *p, const struct weir_config *cfg)
{
	if (!have_detector(cfg))
		return false;
	if (cfg->flags & WEIR_CFG_F_LOCAL_DEVICES)
		return local_device(p->ifindex);
	return cidr_match(0, p->saddr);
}

/*
 * kube-proxy masquerades external frontends by their traffic policy alone
 * (eTP=Cluster always, eTP=Local never for the traffic that reaches this
 * point), and ClusterIP traffic with masqueradeAll or from off-cluster
 * sources. masqueradeAll does not reach external frontends: its rule
 * matches the ClusterIP as destination.
 */
static __always_inline bool needs_masquerade(const struct pkt *p, const struct weir_svc_val *svc,
					     const struct weir_config *cfg)
{
	if (!cfg || !cfg->snat_addr)
		return false;
	if (svc->flags & SVC_F_EXTERNAL)
		return !(svc->flags & WEIR_SVC_F_ETP_LOCAL);
	if (cfg->flags & WEIR_CFG_F_MASQUERADE_ALL)
		return true;
	/* ClusterIP: only off-cluster sources, and only when we can tell. */
	return have_detector(cfg) && !from_cluster(p, cfg);
}

/*
 * Client -> frontend. Conntrack first (a flow keeps its backend, even one
 * that is now terminating or not ready), then a new choice. A flow whose
 * backend is no longer an endpoint of this frontend chooses again: that is
 * what unsticks a UDP client that keeps sending on one socket after its
 * backend was removed (the classic stale-conntrack blackhole).
 */
static __always_inline int handle_frontend(struct __sk_buff *skb, struct pkt *p, struct weir_svc_key *key,
					   struct weir_svc_val *svc, enum origin origin, __u64 now)
{
	struct weir_config *cfg = NULL;
	struct weir_ct_val *ct;
	struct weir_backend *be = NULL;
	__u32 backend_id = 0;
	__be32 snat = 0;
	__be16 snat_port = 0;
	__u16 ct_flags = 0;
	__be32 be_addr;
	__be16 be_port;

	/* Only lo carries 127/8 sources; from anywhere else they are forged. */
	if (origin != FROM_HOST && (bpf_ntohl(p->saddr) >> 24) == 127)
		return WEIR_V_DROP_LOOPBACK_SOURCE;
	if ((svc->flags & WEIR_SVC_F_SRC_RANGES) && !cidr_match(svc->rev_nat_id, p->saddr))
		return WEIR_V_DROP_SOURCE_RANGE;
	if ((svc->flags & WEIR_SVC_F_ETP_LOCAL) && origin != FROM_HOST && !from_cluster(p, (cfg = cfg_get()))) {
		svc = lb_frontend(key, p, WEIR_SCOPE_LOCAL);
		if (!svc)
			return WEIR_V_DROP_NO_LOCAL_ENDPOINTS;
	}

	ct = ct_lookup(p, WEIR_CT_FWD, now);
	if (ct && ct->rev_nat_id == svc->rev_nat_id && !(tcp_syn_only(p) && (ct->flags & WEIR_CT_F_CLOSING)) &&
	    lb_member(svc->rev_nat_id, ct->backend_id) >= 0) {
		be = lb_backend(ct->backend_id);
		if (be && (ct->flags & WEIR_CT_F_SNAT)) {
			snat = ct->nat_addr;
			snat_port = ct->nat_port;
		}
		ct_flags = ct->flags;
	}
	if (!be) {
		struct ct_new n;

		if (svc->count == 0) {
			if (svc->flags & WEIR_SVC_F_DROP_EMPTY)
				return WEIR_V_DROP_NO_LOCAL_ENDPOINTS;
			return reject(skb, p);
		}
		/* A TCP segment that is no SYN, of a connection weir never saw open,
		 * belongs to a connection another proxy (kube-proxy, before a
		 * migration) NATed: the stack's conntrack holds its backend, and a
		 * backend chosen here would move it to another pod mid-stream. */
		if (!ct && p->proto == IPPROTO_TCP && !tcp_syn_only(p))
			return WEIR_V_PASS_MIDFLOW;
		if (!cfg)
			cfg = cfg_get(); /* only new flows need the settings */
		/* Handing over (weir cleanup --drain): new flows are the other proxy's. */
		if (cfg && (cfg->flags & WEIR_CFG_F_DRAIN))
			return WEIR_V_PASS_DRAINING;
		be = lb_select(key, svc, p->saddr, &backend_id, now);
		if (!be)
			return WEIR_V_DROP_NO_BACKEND;
		be_addr = be->addr;
		be_port = be->port;
		if (be_addr == p->saddr) {
			/* Hairpin: a pod reaching itself through its service. With its
			 * own address as sender the pod would drop the packet as a
			 * martian; kube-proxy masquerades here too. */
			snat = cfg ? cfg->hairpin_addr : 0;
		} else if (origin == FROM_HOST || needs_masquerade(p, svc, cfg)) {
			/* A node process's local source (127.0.0.1, an LB IP on lo) is
			 * no address a backend can answer: kube-proxy masquerades
			 * src-type LOCAL traffic for the same reason. */
			snat = cfg ? cfg->snat_addr : 0;
		}
		if (snat) {
			snat_port = ct_snat_port(p, snat, be_addr, be_port, now);
			if (!snat_port)
				return WEIR_V_DROP_NO_SNAT_PORT;
		}
		n.backend_id = backend_id;
		n.rev_nat_id = svc->rev_nat_id;
		n.backend_addr = be_addr;
		n.backend_port = be_port;
		n.snat_addr = snat;
		n.snat_port = snat_port;
		/* Masquerade puts the node's address in the source, and a NodePort's
		 * replies leave with the node's address: both would be martians on
		 * the input route, so those flows are forwarded by FIB redirect. */
		ct_flags = (snat && snat != (cfg ? cfg->hairpin_addr : 0)) || (svc->flags & WEIR_SVC_F_NODE_PORT)
				   ? WEIR_CT_F_REDIRECT
				   : 0;
		if (origin == FROM_HOST)
			ct_flags |= WEIR_CT_F_HOST;
		n.flags = ct_flags;
		ct_create(p, &n, now);
	} else {
		be_addr = be->addr;
		be_port = be->port;
	}
	if (snat && nat_rewrite(skb, p, true, snat, snat_port))
		return WEIR_V_DROP_NAT_FAILED;
	if (nat_rewrite(skb, p, false, be_addr, be_port))
		return WEIR_V_DROP_NAT_FAILED;
	return ct_flags & WEIR_CT_F_REDIRECT ? WEIR_V_FORWARD_REDIRECT : WEIR_V_FORWARD;
}

/* Backend -> client: restore the frontend as source (and the client as destination after SNAT). */
static __always_inline int handle_reply(struct __sk_buff *skb, struct pkt *p, __u64 now)
{
	struct weir_ct_val *ct = ct_lookup(p, WEIR_CT_REV, now);
	struct weir_revnat *rn;
	__be32 orig_addr;
	__be16 orig_port;
	__u32 id;

	if (!ct)
		return WEIR_PASS;
	id = ct->rev_nat_id;
	rn = bpf_map_lookup_elem(&weir1_revnat, &id);
	/*
	 * The flow is ours but its frontend is unknown (the entry was deleted,
	 * or is missing for a moment while a writer replaces it). Passed on, the
	 * reply would reach the client from the backend's address, which its
	 * socket does not know: a TCP client answers with a RST that kills the
	 * backend's side of a flow that might have recovered, a UDP client
	 * drops it or, unconnected, takes it for another peer's. Dropped, the
	 * backend retransmits, and the drop is counted under its own name.
	 */
	if (!rn)
		return WEIR_V_DROP_REVNAT_MISSING;
	if (ct->flags & WEIR_CT_F_SNAT) {
		orig_addr = ct->nat_addr;
		orig_port = ct->nat_port;
		if (nat_rewrite(skb, p, false, orig_addr, orig_port))
			return WEIR_V_DROP_NAT_FAILED;
	}
	if (nat_rewrite(skb, p, true, rn->addr, rn->port))
		return WEIR_V_DROP_NAT_FAILED;
	if (ct->flags & WEIR_CT_F_HOST)
		return WEIR_V_REVNAT_HOST;
	return ct->flags & WEIR_CT_F_REDIRECT ? WEIR_V_REVNAT_REDIRECT : WEIR_V_REVNAT;
}

/*
 * A reply handed to lo (WEIR_V_REVNAT_HOST) passes weir_tc_host once more,
 * now from the service address to the client. If the client's port happens
 * to be a frontend port on that address, it must not be taken for a new
 * connection: its flow's forward entry, seen from the client, says so.
 */
static __always_inline bool host_reply(const struct pkt *p)
{
	struct weir_ct_key k = {
		.saddr = p->daddr,
		.daddr = p->saddr,
		.sport = p->dport,
		.dport = p->sport,
		.proto = p->proto,
		.dir = WEIR_CT_FWD,
	};
	struct weir_ct_val *v = bpf_map_lookup_elem(&weir1_ct, &k);

	return v && (v->flags & WEIR_CT_F_HOST);
}

/*
 * ICMP errors about a flow (icmp.h) apart; then frontends first, replies
 * only for packets that are not for a frontend (each lookup only where the
 * port filter, ports.h, says it may find something):
 * the common forward packet pays one conntrack lookup, not two. Safe because
 * masquerade never picks a source port that is a frontend on the masquerade
 * address (ct_snat_port), so a reply can never look like a new connection.
 */
static __always_inline int handle_packet(struct __sk_buff *skb, struct pkt *p, enum origin origin)
{
	__u64 now = weir_now();
	struct weir_svc_key key;
	struct weir_svc_val *svc;

	if (p->proto == IPPROTO_ICMP)
		return handle_icmp(skb, p, origin == FROM_HOST);
	svc = port_frontend(p->dport) ? lb_frontend(&key, p, WEIR_SCOPE_ALL) : NULL;
	if (svc && !(origin == FROM_HOST && host_reply(p)))
		return handle_frontend(skb, p, &key, svc, origin, now);
	/* On lo, the only replies weir translates are those of masqueraded
	 * flows, addressed to a masquerade port: the rest of the node's
	 * loopback traffic pays one service lookup and no conntrack lookup. */
	if (origin == FROM_HOST && bpf_ntohs(p->dport) < SNAT_PORT_MIN)
		return WEIR_PASS;
	if (!port_backend(p->sport))
		return WEIR_PASS;
	return handle_reply(skb, p, now);
}

#endif
