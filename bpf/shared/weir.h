/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * weir: the one definition of every struct and constant that both the BPF
 * programs and the TypeScript control plane use.
 *
 * The TypeScript codecs (ts/datapath/codecs.ts) are not a second copy kept in
 * sync by hand: test/unit/codecs.test.ts reads the BTF of the compiled object
 * and fails if any field's name, offset or size differs from the codec.
 *
 * Byte order: fields typed __be16/__be32 are network order (as on the wire);
 * everything else is host order.
 */
#ifndef WEIR_SHARED_H
#define WEIR_SHARED_H

/*
 * Layout version. It is part of every map name, so an agent with a new
 * layout never adopts a pin written with an incompatible one: it creates new
 * maps beside the old pins, and `weir cleanup` removes the old ones.
 */
#define WEIR_LAYOUT 1

/* Map names (BPF object names are at most 15 characters). */
#define WEIR_MAP_SERVICES "weir1_svc"
#define WEIR_MAP_BACKENDS "weir1_be"
#define WEIR_MAP_REVNAT "weir1_revnat"
#define WEIR_MAP_CT "weir1_ct"
#define WEIR_MAP_AFFINITY "weir1_aff"
#define WEIR_MAP_MEMBER "weir1_member"
#define WEIR_MAP_VERDICTS "weir1_verdicts"
#define WEIR_MAP_CONFIG "weir1_cfg"
#define WEIR_MAP_CIDR "weir1_cidr"
#define WEIR_MAP_SK_REVNAT "weir1_skrevnat"
#define WEIR_MAP_IDS "weir1_ids"
#define WEIR_MAP_FRAG "weir1_frag"
#define WEIR_MAP_LOCAL_DEV "weir1_localdev"
#define WEIR_MAP_PORTS "weir1_ports"
#define WEIR_MAP_SK_CONN "weir1_sksto" /* socket programs only (sock.o) */

/* IPv6: one map per family where a struct holds an address (docs/ipv6.md,
 * "Map layout"); ids, membership and verdicts are shared. */
#define WEIR_MAP_SERVICES6 "weir1_svc6"
#define WEIR_MAP_BACKENDS6 "weir1_be6"
#define WEIR_MAP_REVNAT6 "weir1_revnat6"
#define WEIR_MAP_CT6 "weir1_ct6"
#define WEIR_MAP_AFFINITY6 "weir1_aff6"
#define WEIR_MAP_CIDR6 "weir1_cidr6"
#define WEIR_MAP_CONFIG6 "weir1_cfg6"
#define WEIR_MAP_FRAG6 "weir1_frag6"
#define WEIR_MAP_SK_REVNAT6 "weir1_skrevnat6"

/* Map sizes. Conntrack and affinity are LRU: when full, the oldest goes. */
/* Service and membership maps: one entry per frontend plus one per endpoint
 * of each frontend. The loader sizes both (`weir run --lb-map-entries`); this
 * is the default. Their bucket arrays are allocated and zeroed when the map is
 * created, empty or not: 16 MiB each at a million entries. */
#define WEIR_MAX_SERVICE_ENTRIES 262144
#define WEIR_MAX_BACKENDS 262144
#define WEIR_MAX_REVNAT 131072
/* The three maps that scale with traffic, not with services (ct, affinity,
 * socket rev-NAT) get their size from the loader (`weir run
 * --conntrack-min/--conntrack-max-per-core`, as kube-proxy sizes Linux
 * conntrack); these are the defaults an object loaded without it gets.
 * Preallocating an LRU map costs start-up time and kernel memory
 * (~100 bytes per entry) whether it fills or not. */
#define WEIR_MAX_CT 262144 /* two entries per flow: kube-proxy's minimum of 131072 flows */
#define WEIR_MAX_AFFINITY 65536
#define WEIR_MAX_CIDRS 65536
/* Room for verdict reasons: adding one must not change the pinned map's
 * shape (a restarted agent could not adopt it), so the size is fixed. */
#define WEIR_MAX_VERDICTS 64
#define WEIR_MAX_SK_REVNAT 65536
/* Datagrams in flight as fragments (Cilium's default too): an entry is
 * needed only from a datagram's first fragment to its last, a few ms. */
#define WEIR_MAX_FRAGS 8192
/* Pod-facing devices of one node (one per pod, or a bridge). */
#define WEIR_MAX_LOCAL_DEVS 16384
/* weir1_ports: a 65,536-bit map of frontend ports, then one of backend
 * ports, as u64 words (bit p of word p / 64 names port p). Bit 0 of word 0
 * (port 0, never a service's) says the agent has written the filter. */
#define WEIR_PORT_WORDS 1024
#define WEIR_PORTS_BACKEND WEIR_PORT_WORDS /* first word of the backend half */

/* weir_svc_key.scope: which endpoint set a frontend entry describes. */
#define WEIR_SCOPE_ALL 0 /* every usable endpoint of the service */
#define WEIR_SCOPE_LOCAL 1 /* only endpoints on this node (traffic policy Local) */

/* weir_svc_val.flags (master entry, slot 0). */
#define WEIR_SVC_F_CLUSTER_IP (1 << 0) /* frontend is a ClusterIP */
#define WEIR_SVC_F_NODE_PORT (1 << 1) /* frontend is node IP:NodePort */
#define WEIR_SVC_F_EXTERNAL_IP (1 << 2) /* frontend is a spec.externalIPs entry */
#define WEIR_SVC_F_LOAD_BALANCER (1 << 3) /* frontend is a status.loadBalancer IP */
#define WEIR_SVC_F_AFFINITY (1 << 4) /* sessionAffinity: ClientIP */
#define WEIR_SVC_F_ETP_LOCAL (1 << 5) /* externalTrafficPolicy: Local */
#define WEIR_SVC_F_ITP_LOCAL (1 << 6) /* internalTrafficPolicy: Local */
#define WEIR_SVC_F_SRC_RANGES (1 << 7) /* loadBalancerSourceRanges apply */
/* count 0 means DROP, not REJECT: a Local policy with no local endpoint while the service has others */
#define WEIR_SVC_F_DROP_EMPTY (1 << 8)
/* Shown, not acted on: topology hints narrowed the slots to this node's zone / to this node */
#define WEIR_SVC_F_TOPO_ZONE (1 << 9)
#define WEIR_SVC_F_TOPO_NODE (1 << 10)

/* member value: flags of a backend in a frontend's endpoint set. */
#define WEIR_MEMBER_F_ACTIVE (1 << 0) /* usable for new connections (in the slots) */

/* weir_backend.flags. */
#define WEIR_BE_F_LOCAL (1 << 0) /* endpoint runs on this node */
#define WEIR_BE_F_TERMINATING (1 << 1) /* endpoint is terminating (serving or not) */

/* weir_ct_key.dir. */
#define WEIR_CT_FWD 0 /* client -> frontend, as the client sent it */
#define WEIR_CT_REV 1 /* backend -> client, as the backend sends it (after NAT) */

/* weir_ct_val.flags. */
#define WEIR_CT_F_SNAT (1 << 0) /* the source was rewritten (hairpin / masquerade) */
#define WEIR_CT_F_CLOSING (1 << 1) /* a FIN or RST was seen */
/* NATed packets of this flow carry a local source address: forward them
 * with a FIB redirect, not through the input route */
#define WEIR_CT_F_REDIRECT (1 << 2)
/* the client is a node process on the loopback path (weir_tc_host): replies
 * are handed to loopback ingress, the only device that takes them */
#define WEIR_CT_F_HOST (1 << 3)
/* UDP: a reply was seen, so the flow is a "stream" (netfilter's ASSURED)
 * and lives by weir_config.ct_udp_stream_s instead of ct_udp_s */
#define WEIR_CT_F_REPLIED (1 << 4)

/*
 * Verdict reasons, the index of the per-CPU counter array. Every packet that
 * weir does not pass on unchanged ends in exactly one of these (and so does
 * an unmatched fragment, passed on unchanged but worth counting); the CLI and
 * the metrics endpoint print them by name (keep ts/datapath/verdicts.ts in
 * the same order: a unit test checks it against this list).
 */
enum weir_verdict {
	WEIR_V_FORWARD = 0, /* NATed toward a backend */
	WEIR_V_REVNAT, /* reply NATed back to the frontend */
	WEIR_V_FORWARD_REDIRECT, /* NATed toward a backend, sent with a FIB redirect */
	WEIR_V_REVNAT_REDIRECT, /* reply NATed, sent with a FIB redirect */
	WEIR_V_REJECT_NO_ENDPOINTS, /* service has no usable endpoint: RST / ICMP sent back */
	WEIR_V_DROP_NO_ENDPOINTS, /* no usable endpoint and no reply due (e.g. an incoming RST) */
	WEIR_V_DROP_NAT_FAILED, /* a helper failed while rewriting the packet */
	WEIR_V_DROP_REJECT_FAILED, /* could not build the RST / ICMP reply */
	WEIR_V_DROP_NO_BACKEND, /* a slot or backend vanished mid-update */
	WEIR_V_DROP_NO_LOCAL_ENDPOINTS, /* traffic policy Local and no endpoint on this node */
	WEIR_V_DROP_SOURCE_RANGE, /* source outside the LoadBalancer's loadBalancerSourceRanges */
	WEIR_V_DROP_NO_SNAT_PORT, /* masquerade needed and no free source port found */
	WEIR_V_DROP_REVNAT_MISSING, /* reply of a NATed flow whose rev_nat id has no revnat entry */
	/* a later IPv4 fragment whose first fragment was not seen (out of
	 * order, or its entry evicted): ports unknown, passed on unchanged */
	WEIR_V_FRAG_UNMATCHED,
	WEIR_V_REVNAT_HOST, /* reply NATed back to a node process, handed to loopback ingress */
	/* a 127/8 source on a pod or external device: a martian the stack would
	 * drop, and a flow from it would get its replies handed to lo */
	WEIR_V_DROP_LOOPBACK_SOURCE,
	/* a TCP segment, not a SYN, of a connection weir did not see open (one
	 * another proxy NATed before weir started, e.g. kube-proxy's): passed on
	 * unchanged, for the stack's conntrack to keep on its backend */
	WEIR_V_PASS_MIDFLOW,
	/* a new flow while weir hands over (weir cleanup --drain): passed on
	 * unchanged, for the other proxy's rules */
	WEIR_V_PASS_DRAINING,
	/* tc egress: an ICMP error this node generated about a packet of a NATed
	 * flow it forwarded (fragmentation needed / packet too big, TTL
	 * exceeded, unreachable), translated to quote the packet as its sender
	 * sent it, and sent on to the same destination */
	WEIR_V_ICMP_LOCAL,
	/* as WEIR_V_ICMP_LOCAL, for an error about a reply: addressed to the
	 * frontend, now to the backend, sent by FIB redirect */
	WEIR_V_ICMP_LOCAL_REDIRECT,
	WEIR_V__MAX,
};

/* The verdict map counts both families: an IPv6 packet's verdict v is
 * counted at index v + WEIR_V_IPV6 (the map keeps WEIR_MAX_VERDICTS slots,
 * so a pin made before IPv6 is adopted unchanged). */
#define WEIR_V_IPV6 32

/* services: frontend (and slot) -> master entry or backend slot. Written by the agent. */
struct weir_svc_key {
	__be32 addr; /* frontend IPv4 address */
	__be16 port; /* frontend port */
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP or IPPROTO_SCTP */
	__u8 scope; /* WEIR_SCOPE_* */
	__u16 slot; /* 0: master entry; 1..count: backend slot */
	__u16 pad; /* zero */
};

struct weir_svc_val {
	__u32 backend_id; /* slot > 0: key into backends; slot 0: zero */
	__u16 count; /* slot 0: number of backend slots; 0 means reject */
	__u16 flags; /* slot 0: WEIR_SVC_F_* */
	__u32 rev_nat_id; /* slot 0: key into revnat, names this frontend */
	__u32 affinity_timeout; /* slot 0: ClientIP affinity timeout, seconds */
};

/* backends: backend id -> endpoint address. Written by the agent. */
struct weir_backend {
	__be32 addr; /* endpoint (pod) IPv4 address */
	__be16 port; /* endpoint port (the resolved targetPort) */
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP or IPPROTO_SCTP */
	__u8 flags; /* WEIR_BE_F_* */
};

/* revnat: rev_nat id -> the frontend a reply must appear to come from. Written by the agent. */
struct weir_revnat {
	__be32 addr; /* frontend IPv4 address */
	__be16 port; /* frontend port */
	__u16 pad; /* zero */
};

/* ct: flow tuple -> NAT state. Written by the BPF programs only. */
struct weir_ct_key {
	__be32 saddr; /* source address of this direction */
	__be32 daddr; /* destination address of this direction */
	__be16 sport; /* source port */
	__be16 dport; /* destination port */
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP or IPPROTO_SCTP */
	__u8 dir; /* WEIR_CT_FWD or WEIR_CT_REV */
	__u16 pad; /* zero */
};

struct weir_ct_val {
	__u64 last_seen; /* weir_now() (CLOCK_MONOTONIC, coarse) of the last packet, ns */
	__u32 backend_id; /* FWD: chosen backend */
	__u32 rev_nat_id; /* frontend the flow was sent to */
	__be32 nat_addr; /* FWD: source used after SNAT; REV: original client address */
	__be16 nat_port; /* FWD: source port after SNAT; REV: original client port */
	__u16 flags; /* WEIR_CT_F_* */
};

/* affinity: (client, frontend) -> backend for sessionAffinity ClientIP. Written by the BPF programs. */
struct weir_aff_key {
	__be32 client; /* client IPv4 address */
	__u32 rev_nat_id; /* frontend */
};

struct weir_aff_val {
	__u64 last_used; /* weir_now() of the last new flow that used it, ns */
	__u32 backend_id; /* backend chosen for this client */
	__u32 pad; /* zero */
};

/*
 * member: {frontend, backend} -> WEIR_MEMBER_F_* while the backend is an
 * endpoint of the frontend's service port, in any state. Backends are shared
 * between services, so "the backend still exists" does not mean "it still
 * serves this frontend": conntrack and affinity hits check this. Written by
 * the agent.
 */
struct weir_member_key {
	__u32 rev_nat_id; /* frontend */
	__u32 backend_id; /* backend */
};

/* weir_config.flags. */
#define WEIR_CFG_F_MASQUERADE_ALL (1 << 0) /* kube-proxy masqueradeAll: SNAT every service flow */
#define WEIR_CFG_F_CLUSTER_CIDR (1 << 1) /* cluster CIDRs are known (owner 0 in the cidr map) */
#define WEIR_CFG_F_DRAIN (1 << 2) /* handing over to another proxy: only flows weir tracks are NATed */
/* kube-proxy's detectLocalMode InterfaceNamePrefix / BridgeInterface: a
 * packet is from a pod when it entered on a device in the localdev map
 * (the cidr map's owner 0 is not consulted) */
#define WEIR_CFG_F_LOCAL_DEVICES (1 << 3)
/* the socket hooks translate for sockets in the node's network namespace
 * only (Cilium's bpf-lb-sock-hostns-only): pods keep the service address
 * and their packets meet the tc programs, as a service mesh needs */
#define WEIR_CFG_F_SOCK_HOSTNS_ONLY (1 << 4)

/* config: a single entry (key 0). Written by the agent. */
struct weir_config {
	__be32 hairpin_addr; /* source used when a pod reaches itself through a service */
	__be32 snat_addr; /* node IP used to masquerade; 0 = none known */
	__u32 flags; /* WEIR_CFG_F_* */
	__u32 pad; /* zero */
	/* Conntrack idle lifetimes, seconds (kube-proxy's conntrack.* timeouts);
	 * 0: weir's default (bpf/lib/ct.h), as an agent that predates them writes */
	__u32 ct_tcp_established_s; /* an established TCP flow */
	__u32 ct_tcp_close_wait_s; /* a TCP flow that saw a FIN or RST */
	__u32 ct_udp_s; /* a UDP flow without replies */
	__u32 ct_udp_stream_s; /* a UDP flow that saw replies (WEIR_CT_F_REPLIED) */
	/* the node's network namespace cookie (bpf_get_netns_cookie): a socket
	 * hook tells node processes from pods by it; 0: unknown, every socket
	 * is treated as the node's */
	__u64 host_netns;
};

/*
 * cidr: longest-prefix match of {owner, address}. The prefix covers the
 * owner first (always all 32 bits) and then prefixlen - 32 bits of the
 * address. Owner 0 holds the cluster CIDRs; owner n holds the
 * loadBalancerSourceRanges of the frontend with rev_nat id n. Written by the agent.
 */
struct weir_cidr_key {
	__u32 prefixlen; /* 32 + CIDR bits */
	__u32 owner; /* 0 or a rev_nat id */
	__be32 addr; /* CIDR base address */
};

/*
 * skrevnat: what a node process's socket was connected to before the socket
 * hook rewrote it, so recvmsg/getpeername show the service address again.
 * Written by the socket programs.
 */
struct weir_sk_key {
	__u64 cookie; /* socket cookie */
	__be32 addr; /* backend address the socket talks to */
	__be16 port; /* backend port */
	__u16 pad; /* zero */
};

struct weir_sk_val {
	__be32 addr; /* frontend address the application used */
	__be16 port; /* frontend port */
	__u16 pad; /* zero */
	__u32 rev_nat_id; /* frontend */
};

/*
 * A connected TCP socket's translation, kept in the socket's own storage
 * (weir1_sksto, bpf/lib/sockconn.h) rather than in skrevnat: freed with the
 * socket, so no entry of a closed socket has to be evicted to make room.
 * Addresses as 16 bytes: IPv4 in the last four, the rest zero.
 */
struct weir_sk_conn {
	__be32 backend[4]; /* the backend the socket was pointed at */
	__be32 frontend[4]; /* the service address the application used */
	__be16 backend_port;
	__be16 frontend_port;
	__u32 pad; /* zero */
};

/*
 * ids: a single entry (key 0), the agent's high-water marks. Ids below them
 * may still be named by conntrack, affinity or socket rev-NAT entries, so an
 * agent never hands them out again, across restarts too. Written by the agent.
 */
struct weir_ids {
	__u32 next_rev_nat_id; /* every rev_nat id handed out is below this */
	__u32 next_backend_id; /* every backend id handed out is below this */
};

/*
 * frag: the ports of a fragmented datagram, remembered from its first
 * fragment, so its later fragments (which carry no L4 header) find the same
 * frontend or conntrack entry and are translated alike. Keyed as the
 * fragments arrive (before NAT). Written by the tc programs.
 */
struct weir_frag_key {
	__be32 saddr; /* source address */
	__be32 daddr; /* destination address */
	__be16 id; /* IPv4 identification: one datagram of this pair */
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP or IPPROTO_SCTP */
	__u8 pad; /* zero */
};

struct weir_frag_ports {
	__u64 first_seen; /* weir_now() when the first fragment passed, ns */
	__be16 sport; /* source port of the datagram */
	__be16 dport; /* destination port of the datagram */
	__u32 pad; /* zero */
};

/*
 * IPv6. Separate maps with their own structs (docs/ipv6.md, "Map layout"):
 * the IPv4 structs above stay as they are, so an upgraded agent adopts the
 * IPv4 pins with every flow in them. rev_nat ids and backend ids come from
 * one id space for both families (weir_ids), so weir1_member and the values
 * weir_svc_val and weir_aff_val serve both. Addresses are 16 bytes in
 * network order, as on the wire.
 */

/* svc6: as weir_svc_key, for an IPv6 frontend; value struct weir_svc_val. Written by the agent. */
struct weir_svc6_key {
	__be32 addr[4]; /* frontend IPv6 address */
	__be16 port; /* frontend port */
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP or IPPROTO_SCTP */
	__u8 scope; /* WEIR_SCOPE_* */
	__u16 slot; /* 0: master entry; 1..count: backend slot */
	__u16 pad; /* zero */
};

/* be6: backend id -> IPv6 endpoint. Written by the agent. */
struct weir_backend6 {
	__be32 addr[4]; /* endpoint (pod) IPv6 address */
	__be16 port; /* endpoint port (the resolved targetPort) */
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP or IPPROTO_SCTP */
	__u8 flags; /* WEIR_BE_F_* */
};

/* revnat6: rev_nat id -> the IPv6 frontend a reply must come from. Written by the agent. */
struct weir_revnat6 {
	__be32 addr[4]; /* frontend IPv6 address */
	__be16 port; /* frontend port */
	__u16 pad; /* zero */
};

/* ct6: IPv6 flow tuple -> NAT state, as weir_ct_key/weir_ct_val. Written by the BPF programs only. */
struct weir_ct6_key {
	__be32 saddr[4]; /* source address of this direction */
	__be32 daddr[4]; /* destination address of this direction */
	__be16 sport; /* source port */
	__be16 dport; /* destination port */
	__u8 proto; /* IPPROTO_TCP, IPPROTO_UDP or IPPROTO_SCTP */
	__u8 dir; /* WEIR_CT_FWD or WEIR_CT_REV */
	__u16 pad; /* zero */
};

struct weir_ct6_val {
	__u64 last_seen; /* weir_now() of the last packet, ns */
	__u32 backend_id; /* FWD: chosen backend */
	__u32 rev_nat_id; /* frontend the flow was sent to */
	__be32 nat_addr[4]; /* FWD: source used after SNAT; REV: original client address */
	__be16 nat_port; /* FWD: source port after SNAT; REV: original client port */
	__u16 flags; /* WEIR_CT_F_* */
	__u32 pad; /* zero */
};

/* aff6: (IPv6 client, frontend) -> backend; value struct weir_aff_val. Written by the BPF programs. */
struct weir_aff6_key {
	__be32 client[4]; /* client IPv6 address */
	__u32 rev_nat_id; /* frontend */
};

/* cidr6: as weir_cidr_key, IPv6: prefixlen is 32 + CIDR bits (at most 160). Written by the agent. */
struct weir_cidr6_key {
	__u32 prefixlen; /* 32 + CIDR bits */
	__u32 owner; /* 0 or a rev_nat id */
	__be32 addr[4]; /* CIDR base address */
};

/*
 * frag6: the ports of a fragmented IPv6 datagram, from its first fragment,
 * as weir_frag_key for IPv4 (the identification is 32 bits, in the fragment
 * header); value struct weir_frag_ports. Written by the tc programs.
 */
struct weir_frag6_key {
	__be32 saddr[4]; /* source address */
	__be32 daddr[4]; /* destination address */
	__be32 id; /* fragment header identification: one datagram of this pair */
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad; /* zero */
	__u16 pad2; /* zero */
};

/*
 * sockterm: a socket the agent asks the weir_sock_udp_stale iterator to
 * destroy, by socket cookie: a connected UDP socket the socket hooks
 * pointed at a backend that has since left its service. Destroyed only if
 * it is still connected to that backend. Written by the agent, emptied
 * after each run; not pinned.
 */
struct weir_sockterm {
	__be32 addr[4]; /* the backend: IPv4 in addr[0], the rest zero */
	__be16 port; /* backend port */
	__u16 family; /* 4 or 6 */
};

/* skrevnat6: as weir_sk_key/weir_sk_val, for a node process's IPv6 socket. Written by the socket programs. */
struct weir_sk6_key {
	__u64 cookie; /* socket cookie */
	__be32 addr[4]; /* backend address the socket talks to */
	__be16 port; /* backend port */
	__u16 pad; /* zero */
	__u32 pad2; /* zero */
};

struct weir_sk6_val {
	__be32 addr[4]; /* frontend address the application used */
	__be16 port; /* frontend port */
	__u16 pad; /* zero */
	__u32 rev_nat_id; /* frontend */
};

/* weir_config6.flags. (masqueradeAll and drain are in weir_config, for both families.) */
#define WEIR_CFG6_F_CLUSTER_CIDR (1 << 0) /* IPv6 cluster CIDRs are known (owner 0 in cidr6) */

/* cfg6: a single entry (key 0), the IPv6 settings. Written by the agent. */
struct weir_config6 {
	__be32 snat_addr[4]; /* node IPv6 address used to masquerade; all zero = none known */
	__be32 hairpin_addr[4]; /* source used when a pod reaches itself through a service */
	__u32 flags; /* WEIR_CFG6_F_* */
	__u32 pad; /* zero */
};

#endif /* WEIR_SHARED_H */
