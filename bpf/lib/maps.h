/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map, declared the same way. The variable name is the map name and
 * the pin name (LIBBPF_PIN_BY_NAME under the agent's --bpffs-root), so a
 * restarted agent re-adopts them. Key and value types carry BTF, which is
 * what lets `bpftool map dump` print named fields.
 *
 * The agent-written hashes use BPF_F_NO_PREALLOC: they are sized for the
 * largest cluster but usually hold a fraction of that, and preallocating a
 * million entries would pin ~100 MB of kernel memory on every node. The LRU
 * maps cannot opt out of preallocation (the kernel's LRU needs it).
 */
#ifndef WEIR_MAPS_H
#define WEIR_MAPS_H

#include "common.h"

/* services: {frontend, scope, slot} -> master entry (slot 0) or backend slot. Agent writes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct weir_svc_key);
	__type(value, struct weir_svc_val);
	__uint(max_entries, WEIR_MAX_SERVICE_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_svc SEC(".maps");

/* backends: backend id -> endpoint address. Agent writes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct weir_backend);
	__uint(max_entries, WEIR_MAX_BACKENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_be SEC(".maps");

/* revnat: rev_nat id -> frontend address a reply must come from. Agent writes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct weir_revnat);
	__uint(max_entries, WEIR_MAX_REVNAT);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_revnat SEC(".maps");

/* ct: flow tuple + direction -> NAT state. BPF writes; the agent only reads. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct weir_ct_key);
	__type(value, struct weir_ct_val);
	__uint(max_entries, WEIR_MAX_CT);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_ct SEC(".maps");

/* affinity: {client, frontend} -> backend for sessionAffinity ClientIP. BPF writes. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct weir_aff_key);
	__type(value, struct weir_aff_val);
	__uint(max_entries, WEIR_MAX_AFFINITY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_aff SEC(".maps");

/* member: {frontend, backend} -> WEIR_MEMBER_F_* while the backend serves the frontend. Agent writes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct weir_member_key);
	__type(value, __u32);
	__uint(max_entries, WEIR_MAX_SERVICE_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_member SEC(".maps");

/* verdicts: enum weir_verdict -> packets, per CPU. BPF writes; CLI and metrics read. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, WEIR_MAX_VERDICTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_verdicts SEC(".maps");

/* cidr: {owner, addr/prefix} -> 1. Owner 0: cluster CIDRs; n: source ranges of frontend n. Agent writes. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct weir_cidr_key);
	__type(value, __u32);
	__uint(max_entries, WEIR_MAX_CIDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_cidr SEC(".maps");

/* skrevnat: {socket cookie, backend} -> frontend a node process addressed. Socket programs write. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct weir_sk_key);
	__type(value, struct weir_sk_val);
	__uint(max_entries, WEIR_MAX_SK_REVNAT);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_skrevnat SEC(".maps");

/* config: 0 -> agent settings the programs need. Agent writes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct weir_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_cfg SEC(".maps");

/* ids: 0 -> the agent's id high-water marks (never read by the programs). Agent writes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct weir_ids);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_ids SEC(".maps");

/* ports: word -> 64 bits of the frontend or backend port bitmap (weir.h, ports.h). Agent writes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2 * WEIR_PORT_WORDS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_ports SEC(".maps");

/* frag: {saddr, daddr, IP id, proto} -> ports of the datagram, from its first fragment. tc programs write. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct weir_frag_key);
	__type(value, struct weir_frag_ports);
	__uint(max_entries, WEIR_MAX_FRAGS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_frag SEC(".maps");

/* localdev: ifindex -> 1 for devices whose senders are this node's pods
 * (detectLocalMode InterfaceNamePrefix / BridgeInterface). Agent writes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, WEIR_MAX_LOCAL_DEVS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_localdev SEC(".maps");

/*
 * IPv6 (docs/ipv6.md, "Map layout"): the maps whose structs hold an address
 * have an IPv6 twin, sized like the IPv4 one (the loader sizes ct6 and aff6
 * with ct and aff). weir1_member, weir1_verdicts and weir1_ids serve both.
 */

/* svc6: {IPv6 frontend, scope, slot} -> master entry (slot 0) or backend slot. Agent writes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct weir_svc6_key);
	__type(value, struct weir_svc_val);
	__uint(max_entries, WEIR_MAX_SERVICE_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_svc6 SEC(".maps");

/* be6: backend id -> IPv6 endpoint. Agent writes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct weir_backend6);
	__uint(max_entries, WEIR_MAX_BACKENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_be6 SEC(".maps");

/* revnat6: rev_nat id -> IPv6 frontend a reply must come from. Agent writes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct weir_revnat6);
	__uint(max_entries, WEIR_MAX_REVNAT);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_revnat6 SEC(".maps");

/* ct6: IPv6 flow tuple + direction -> NAT state. BPF writes; the agent only reads. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct weir_ct6_key);
	__type(value, struct weir_ct6_val);
	__uint(max_entries, WEIR_MAX_CT);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_ct6 SEC(".maps");

/* aff6: {IPv6 client, frontend} -> backend for sessionAffinity ClientIP. BPF writes. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct weir_aff6_key);
	__type(value, struct weir_aff_val);
	__uint(max_entries, WEIR_MAX_AFFINITY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_aff6 SEC(".maps");

/* cidr6: {owner, IPv6 address/prefix} -> 1, as weir1_cidr. Agent writes. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct weir_cidr6_key);
	__type(value, __u32);
	__uint(max_entries, WEIR_MAX_CIDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_cidr6 SEC(".maps");

/* frag6: {saddr, daddr, fragment id, proto} -> ports of the IPv6 datagram, from its first fragment. tc programs write.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct weir_frag6_key);
	__type(value, struct weir_frag_ports);
	__uint(max_entries, WEIR_MAX_FRAGS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_frag6 SEC(".maps");

/* skrevnat6: {socket cookie, IPv6 backend} -> frontend a node process addressed. Socket programs write. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct weir_sk6_key);
	__type(value, struct weir_sk6_val);
	__uint(max_entries, WEIR_MAX_SK_REVNAT);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_skrevnat6 SEC(".maps");

/* cfg6: 0 -> the IPv6 settings (masquerade and hairpin addresses). Agent writes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct weir_config6);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weir1_cfg6 SEC(".maps");

#endif
