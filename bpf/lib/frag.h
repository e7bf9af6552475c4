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
 * fragments may arrive out of order, and the LRU map recycles it. It is
 * trusted for FRAG_LIFETIME only, as the stack keeps a datagram's fragments
 * no longer: the IP id of a busy pair of hosts wraps, and a later fragment
 * of a new datagram must not take an old one's ports.
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

#include "clock.h"
#include "maps.h"
#include "parse.h"

#define FRAG_LIFETIME (30ULL * NSEC_PER_SEC) /* Linux's ipfrag_time default */

static __always_inline void frag_key(struct weir_frag_key *k, const struct pkt *p)
{
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->id = p->ip_id;
	k->proto = p->proto;
	k->pad = 0;
}

/*
 * First fragment: remember the datagram's ports (a failed update only costs
 * the later fragments their match). Later fragment: take the ports its
 * first fragment recorded; false when there is none to trust. Whole
 * packets: nothing to do.
 */
static __always_inline bool frag_track(struct pkt *p)
{
	struct weir_frag_key k;
	struct weir_frag_ports *v;
	__u64 now;

	if (p->frag == PKT_WHOLE)
		return true;
	frag_key(&k, p);
	now = weir_now();
	if (p->frag == PKT_FRAG_FIRST) {
		struct weir_frag_ports n = { .first_seen = now, .sport = p->sport, .dport = p->dport };

		bpf_map_update_elem(&weir1_frag, &k, &n, BPF_ANY);
		return true;
	}
	v = bpf_map_lookup_elem(&weir1_frag, &k);
	if (!v || weir_age(now, v->first_seen) > FRAG_LIFETIME)
		return false;
	p->sport = v->sport;
	p->dport = v->dport;
	return true;
}

#endif
