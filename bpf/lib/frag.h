/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv4 fragments. tc ingress runs before the stack reassembles anything
 * (and a tc program cannot reassemble), so every fragment of a datagram to
 * a service, or of a fragmented reply, must be translated on its own. Only
 * the first fragment carries the ports that name the frontend and the
 * conntrack entry; it records them here under {saddr, daddr, IP id,
 * proto}, which every fragment of the datagram shares, and the later
 * fragments read them back (the idea of Cilium's ipv4_handle_fragmentation
 * and its fragment map). The entry is not deleted at the last fragment:
 * fragments may arrive out of order, and the LRU map recycles it.
 *
 * A later fragment that arrives before its first one (or after its entry
 * was evicted) cannot be matched: it is counted (WEIR_V_FRAG_UNMATCHED) and
 * passed on unchanged. Cilium drops it (DROP_FRAG_NOT_FOUND) because its
 * datapath also enforces network policy, and a fragment whose ports are
 * unknown cannot be checked against it. weir enforces no policy on such a
 * fragment (loadBalancerSourceRanges already dropped its first fragment),
 * and its tc programs see all of a node's traffic on its external devices,
 * most of which is no service's: dropping would break a fragmented datagram
 * that was reordered on its way to a node process, while saving nothing
 * when it was a service's (that datagram cannot be completed either way:
 * the stack holds the fragment until its reassembly timer expires).
 */
#ifndef WEIR_FRAG_H
#define WEIR_FRAG_H

#include "maps.h"

#define IP_MF 0x2000 /* more fragments follow */
#define IP_OFFSET 0x1fff /* fragment offset, in 8-byte units */

static __always_inline void frag_key(struct weir_frag_key *k, const struct iphdr *ip)
{
	k->saddr = ip->saddr;
	k->daddr = ip->daddr;
	k->id = ip->id;
	k->proto = ip->protocol;
	k->pad = 0;
}

/* First fragment: remember the datagram's ports. A failed update only costs the later fragments their match. */
static __always_inline void frag_remember(const struct iphdr *ip, __be16 sport, __be16 dport)
{
	struct weir_frag_key k;
	struct weir_frag_ports v = { .sport = sport, .dport = dport };

	frag_key(&k, ip);
	bpf_map_update_elem(&weir1_frag, &k, &v, BPF_ANY);
}

/* Later fragment: the ports its first fragment recorded; false if none was seen. */
static __always_inline bool frag_recall(const struct iphdr *ip, __be16 *sport, __be16 *dport)
{
	struct weir_frag_key k;
	struct weir_frag_ports *v;

	frag_key(&k, ip);
	v = bpf_map_lookup_elem(&weir1_frag, &k);
	if (!v)
		return false;
	*sport = v->sport;
	*dport = v->dport;
	return true;
}

#endif
