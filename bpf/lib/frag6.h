/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv6 fragments, as frag.h does for IPv4 (its comment has the why): the
 * first fragment records the datagram's ports under {saddr, daddr,
 * fragment id, proto}, later fragments read them back and are translated
 * alike (only their addresses change: IPv6 has no header checksum, and the
 * L4 checksum, in the first fragment, is updated there for the whole
 * datagram). A later fragment with no trusted record is counted as
 * frag_unmatched and passed on unchanged.
 *
 * IPv6 routers never fragment: a fragmented datagram was split by its
 * sender, e.g. a backend's UDP answer (DNS with EDNS) larger than the path
 * MTU, whose fragments must all be reverse-NATed for the client to
 * reassemble it.
 */
#ifndef WEIR_FRAG6_H
#define WEIR_FRAG6_H

#include "frag.h"
#include "parse6.h"

static __always_inline bool frag6_track(struct pkt6 *p)
{
	struct weir_frag6_key k = { .id = p->frag_id, .proto = p->proto };
	struct weir_frag_ports *v;
	__u64 now;

	if (p->frag == PKT_WHOLE)
		return true;
	ip6_cp(k.saddr, p->saddr);
	ip6_cp(k.daddr, p->daddr);
	now = weir_now();
	if (p->frag == PKT_FRAG_FIRST) {
		struct weir_frag_ports n = { .first_seen = now, .sport = p->sport, .dport = p->dport };

		bpf_map_update_elem(&weir1_frag6, &k, &n, BPF_ANY);
		return true;
	}
	v = bpf_map_lookup_elem(&weir1_frag6, &k);
	if (!v || weir_age(now, v->first_seen) > FRAG_LIFETIME)
		return false;
	p->sport = v->sport;
	p->dport = v->dport;
	return true;
}

#endif
