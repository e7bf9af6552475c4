/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * A filter in front of the two hash lookups every packet would otherwise
 * pay: the frontend lookup (is the destination a service?) and the
 * reply-direction conntrack lookup (is this a backend answering a NATed
 * client?). Most of a node's packets are neither, and each of those
 * lookups lands on a cold bucket of a large table: a new connection's
 * packets carry a new port in the key, so every one is a cache miss. A
 * frontend's packets go to a frontend port; a reply comes from a backend's
 * port (its targetPort), so one bit per port, in an array the verifier
 * turns into a load, rules most packets out.
 *
 * The agent marks a port before it writes a frontend or backend that uses
 * it, and clears none while its pins live: conntrack keeps flows to
 * backends that left, and their replies must still be found. A bit set in
 * error costs a lookup, never a wrong answer. Until the agent has written
 * the filter (bit 0 of word 0), every port may match.
 */
#ifndef WEIR_PORTS_H
#define WEIR_PORTS_H

#include "maps.h"

static __always_inline bool port_marked(__u32 half, __be16 port)
{
	__u32 key = 0;
	__u16 p = bpf_ntohs(port);
	__u64 *w = bpf_map_lookup_elem(&weir1_ports, &key);

	if (!w || !(*w & 1))
		return true;
	key = half + (p >> 6);
	w = bpf_map_lookup_elem(&weir1_ports, &key);
	return w && ((*w >> (p & 63)) & 1);
}

/* Might a packet to this port be for a frontend? */
static __always_inline bool port_frontend(__be16 dport)
{
	return port_marked(0, dport);
}

/* Might a packet from this port be a backend's reply? */
static __always_inline bool port_backend(__be16 sport)
{
	return port_marked(WEIR_PORTS_BACKEND, sport);
}

#endif
