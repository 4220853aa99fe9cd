/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kbp map ABI: every key and value that crosses the kernel/user boundary.
 *
 * This is the only definition. The BPF programs include it, the native addon
 * includes it (and exports sizes and offsets from it), and the TypeScript codecs
 * are tested against those exported sizes and offsets. Change a struct here and
 * bump KBP_ABI_VERSION together with the "_vN" suffix of the map names, so a
 * new agent never reinterprets maps pinned by an old one. A new map (with
 * structs of its own) starts at "_v1" and leaves the version as it is: no pin
 * is reinterpreted, and an older agent refuses the unknown pin (migrate.ts).
 *
 * Byte order: addresses and ports are network order (as on the wire, so the
 * datapath compares them without swapping); every other integer is host order.
 * Padding is explicit and must be zero in keys.
 */
#ifndef KBP_ABI_H
#define KBP_ABI_H

#include <linux/types.h>

#define KBP_ABI_VERSION 2

/* Map names (BPF_OBJ_NAME_LEN: at most 15 characters). The BPF side declares
 * its maps with exactly these identifiers; the addon test checks the object. */
#define KBP_MAP_SERVICES  "kbp_svc_v1"
#define KBP_MAP_BACKENDS  "kbp_backend_v2"
#define KBP_MAP_REVNAT    "kbp_revnat_v1"
#define KBP_MAP_CT        "kbp_ct4_v2"
#define KBP_MAP_STATS     "kbp_stats_v2"
#define KBP_MAP_AFFINITY  "kbp_affinity_v1"
#define KBP_MAP_SNAT      "kbp_snat4_v1"
#define KBP_MAP_CONFIG    "kbp_config_v1"
#define KBP_MAP_SRC_RANGES "kbp_srcrange_v1"
#define KBP_MAP_SOCK_REVNAT "kbp_sockrev_v1"
#define KBP_MAP_HOST_NS   "kbp_hostns_v1"

/* Default capacities; the agent may resize before load (bpf_map__set_max_entries). */
#define KBP_SERVICES_MAX  (1u << 20) /* frontends x (1 + slots) + VIP markers */
#define KBP_BACKENDS_MAX  (1u << 18)
#define KBP_REVNAT_MAX    (1u << 18)
#define KBP_CT_MAX        (1u << 19)
#define KBP_AFFINITY_MAX  (1u << 18)
#define KBP_SNAT_MAX      (1u << 18)
#define KBP_SRC_RANGES_MAX (1u << 16)
#define KBP_SOCK_REVNAT_MAX (1u << 16)

/* tc filter identity: kbp owns this handle/priority on every hook it attaches. */
#define KBP_TC_HANDLE     0x6b62 /* "kb" */
#define KBP_TC_PRIORITY   1

/* ---- services: frontend (and its backend slots) -> service entry / backend id ---- */

/* Frontend scope. External: every frontend (ClusterIP/NodePort/LB/externalIP)
 * with the backends its traffic policy gives new flows. Internal: for external
 * frontends of externalTrafficPolicy=Local Services (flag
 * KBP_SVC_F_INTERNAL_SCOPE), the same frontend with the cluster-wide backends,
 * used by pods on this node (kube-proxy short-circuits pod traffic to external
 * destinations to the Service's cluster endpoints). */
#define KBP_SCOPE_EXTERNAL 0
#define KBP_SCOPE_INTERNAL 1

struct kbp_svc_key {
	__be32 vip;   /* frontend address, network order */
	__be16 port;  /* frontend port, network order; 0 in a VIP marker */
	__u8   proto; /* IPPROTO_TCP / IPPROTO_UDP; 0 in a VIP marker */
	__u8   scope; /* KBP_SCOPE_* */
	__u16  slot;  /* 0 = service entry, 1..count = backend slots; host order */
	__u16  pad;   /* zero */
};

/* Service entry flags (slot 0 only). */
#define KBP_SVC_F_CLUSTER_IP    (1u << 0)
#define KBP_SVC_F_NODE_PORT     (1u << 1)
#define KBP_SVC_F_EXTERNAL_IP   (1u << 2)
#define KBP_SVC_F_LOAD_BALANCER (1u << 3)
#define KBP_SVC_F_AFFINITY      (1u << 4) /* sessionAffinity: ClientIP */
#define KBP_SVC_F_VIP_MARKER    (1u << 5) /* {vip, 0, 0}: the address is a known
                                           * frontend; unknown ports are dropped */
#define KBP_SVC_F_REJECT        (1u << 6) /* count is 0 because the Service port has no
                                           * endpoints at all: new flows are answered with
                                           * ICMP port unreachable (kube-proxy's REJECT).
                                           * An empty frontend without it drops (a Local
                                           * traffic policy left no endpoint on this node). */
#define KBP_SVC_F_SOURCE_RANGES (1u << 7) /* loadBalancerSourceRanges: only clients inside one of
                                           * the frontend's kbp_srcrange_v1 prefixes start flows */
#define KBP_SVC_F_MASQUERADE    (1u << 8) /* externalTrafficPolicy Cluster: every new flow is
                                           * masqueraded to this node (pods' too, local backend
                                           * or not), as kube-proxy's KUBE-EXT chain marks them;
                                           * without it only node-facing flows to backends on
                                           * other nodes are (eTP Local keeps client addresses) */
#define KBP_SVC_F_INTERNAL_SCOPE (1u << 9) /* externalTrafficPolicy Local: new flows from pods
                                           * (pod-facing program) use the frontend's
                                           * KBP_SCOPE_INTERNAL entry and its slots instead */

struct kbp_svc_value {
	__u32 backend_id;       /* slot > 0: backend id; 0 in the service entry */
	__u32 svc_id;           /* frontend id (revnat key, kept in conntrack); same in every slot */
	__u16 count;            /* service entry: active backends, in slots 1..count */
	__u16 flags;            /* service entry: KBP_SVC_F_* */
	__u32 affinity_timeout; /* service entry: ClientIP affinity in seconds, 0 = none */
};

/* ---- backends: backend id -> endpoint ---- */

#define KBP_BACKEND_ACTIVE      0
#define KBP_BACKEND_TERMINATING 1 /* kept for established flows, never chosen for new ones */

#define KBP_BACKEND_F_LOCAL (1u << 0) /* the endpoint runs on this node */

struct kbp_backend_key {
	__u32 id;     /* backend id, never 0 */
};

struct kbp_backend {
	__be32 ip;     /* endpoint address, network order */
	__be16 port;   /* endpoint (target) port, network order */
	__u8   proto;  /* IPPROTO_* */
	__u8   state;  /* KBP_BACKEND_* */
	__u8   flags;  /* KBP_BACKEND_F_* */
	__u8   pad[3]; /* zero */
};

/* ---- revnat: frontend id -> frontend, to rewrite replies ---- */

struct kbp_revnat_key {
	__u32 svc_id; /* frontend id */
};

struct kbp_revnat {
	__be32 vip;   /* frontend address, network order */
	__be16 port;  /* frontend port, network order */
	__u16  pad;   /* zero */
};

/* ---- conntrack: tuple as the packet carries it -> translation ---- */

#define KBP_CT_FORWARD 0 /* client -> frontend, before DNAT */
#define KBP_CT_REPLY   1 /* backend -> client, before reverse NAT */

struct kbp_ct_key {
	__be32 saddr; /* network order */
	__be32 daddr; /* network order */
	__be16 sport; /* network order */
	__be16 dport; /* network order */
	__u8   proto; /* IPPROTO_* */
	__u8   dir;   /* KBP_CT_FORWARD / KBP_CT_REPLY */
	__u16  pad;   /* zero */
};

#define KBP_CT_F_SEEN_REPLY (1u << 0) /* a reply was reverse-translated */
#define KBP_CT_F_CLOSING    (1u << 1) /* FIN or RST seen */
#define KBP_CT_F_SNAT       (1u << 2) /* the client is masqueraded to nat_addr:nat_port */
#define KBP_CT_F_HAIRPIN    (1u << 3) /* FORWARD: the client is its own backend; its source
                                       * is rewritten to nat_addr (KBP_HAIRPIN_ADDR), port kept
                                       * (unless KBP_CT_F_PORT_REMAP) */
#define KBP_CT_F_PORT_REMAP (1u << 4) /* the flow's reply tuple was held by another live flow
                                       * (the same client address and port reaching the same
                                       * backend through another frontend), so the client's
                                       * port is rewritten, as netfilter's NAT does on such a
                                       * clash. FORWARD: source rewritten to nat_addr (the
                                       * client, or KBP_HAIRPIN_ADDR) : nat_port; REPLY (keyed
                                       * by that port): client_port is the client's own */

struct kbp_ct_value {
	__u64  created_ns;   /* CLOCK_MONOTONIC_COARSE at creation (bpf_ktime_get_coarse_ns: tick resolution, a fraction of the cost) */
	__u64  last_seen_ns; /* refreshed at most once per KBP_CT_REFRESH_NS */
	__u32  backend_id;   /* the backend, never the slot: slots move, backends do not */
	__u32  svc_id;       /* frontend id, key of revnat */
	__be32 nat_addr;     /* FORWARD with KBP_CT_F_SNAT: node address the client is masqueraded to;
	                      * with KBP_CT_F_HAIRPIN or _PORT_REMAP: the source the backend sees;
	                      * REPLY: the frontend address the client used (tells this flow's
	                      * reply entry from another flow's with the same tuple) */
	__be16 nat_port;     /* FORWARD with KBP_CT_F_SNAT or _PORT_REMAP: the source port the
	                      * backend sees; REPLY: the frontend port */
	__u16  flags;        /* KBP_CT_F_* */
	__u8   tcp_flags;    /* OR of TCP flags seen in this direction */
	__u8   pad;          /* zero */
	__be16 client_port;  /* REPLY with KBP_CT_F_PORT_REMAP: the client's own port; else zero */
	__u8   pad2[4];      /* zero */
};

#define KBP_CT_REFRESH_NS 1000000000ull

/* Hairpin: a pod that reaches a frontend and gets itself as backend sees the
 * packet come from this link-local address (host order here), so its reply
 * leaves the pod and passes the datapath, which turns it back into a packet
 * from the frontend to the pod. Pods route it by their default route. */
#define KBP_HAIRPIN_ADDR 0xa9fe2a01u /* 169.254.42.1 */

/* Idle lifetimes: an entry not seen for longer is treated as absent (the flow
 * is balanced anew) and may be garbage-collected. A SYN on the tuple of a
 * closing TCP flow also starts a new flow (the client reused its port). */
#define KBP_CT_LIFETIME_TCP_NS     (6ull * 3600 * 1000000000ull) /* established TCP */
#define KBP_CT_LIFETIME_CLOSING_NS (30ull * 1000000000ull)       /* TCP after FIN or RST */
#define KBP_CT_LIFETIME_OTHER_NS   (60ull * 1000000000ull)       /* UDP */

/* ---- affinity: sessionAffinity ClientIP, (client, frontend) -> backend ---- */

/* kube-proxy (iptables `recent`) refreshes the timer on every new connection of
 * the client, not per packet; so does the datapath. */
struct kbp_affinity_key {
	__be32 client; /* client address, network order */
	__u32  svc_id; /* frontend id */
};

struct kbp_affinity_value {
	__u64 last_used_ns; /* CLOCK_MONOTONIC_COARSE of the client's last new flow */
	__u32 backend_id;   /* the backend the client sticks to */
	__u16 slot;         /* its slot when chosen: the entry holds only while that
	                     * slot of the frontend still names this backend, so a
	                     * backend that left the frontend (but lives on in
	                     * another) is never reused */
	__u16 pad;          /* zero */
};

/* ---- snat: masqueraded flows, keyed by the reply the backend sends ---- */

/* A NodePort/LoadBalancer/externalIP flow whose backend runs on another node
 * (externalTrafficPolicy: Cluster) leaves with the client masqueraded to this
 * node's address and a port from KBP_SNAT_PORT_MIN..MAX, so the backend's reply
 * comes back through this node. The range lies above Linux's default ephemeral
 * ports (32768-60999) so the node's own sockets do not collide with it. */
#define KBP_SNAT_PORT_MIN 61000
#define KBP_SNAT_PORT_MAX 65535
#define KBP_SNAT_TRIES    8 /* random ports tried before the flow is dropped */

struct kbp_snat_key {
	__be32 saddr; /* backend address, network order */
	__be32 daddr; /* node address the client is masqueraded to */
	__be16 sport; /* backend port, network order */
	__be16 dport; /* SNAT port, network order */
	__u8   proto; /* IPPROTO_* */
	__u8   pad[3];/* zero */
};

struct kbp_snat_value {
	__u64  created_ns;  /* CLOCK_MONOTONIC_COARSE */
	__be32 client_addr; /* the client's own address, network order */
	__be16 client_port; /* the client's own port, network order */
	__u16  pad;         /* zero */
	__u32  svc_id;      /* frontend id: replies leave from its revnat address */
	__u32  pad2;        /* zero */
};

/* ---- source ranges: loadBalancerSourceRanges per frontend (LPM trie) ---- */

/* The prefix covers svc_id in full, then the range: prefixlen = 32 + the
 * range's length. A client may start a flow to a frontend flagged
 * KBP_SVC_F_SOURCE_RANGES only if {64, svc_id, client} matches an entry. */
struct kbp_src_range_key {
	__u32  prefixlen; /* LPM prefix length in bits: 32 + the range's */
	__u32  svc_id;    /* frontend id, host order */
	__be32 addr;      /* range address, network order, host bits zero */
};

struct kbp_src_range {
	__u32 flags; /* reserved, zero: an entry's presence allows the range */
};

/* ---- config: one entry the agent writes before attaching to node devices ---- */

/* kbp_config flags. */
#define KBP_CONFIG_F_XDP_TX (1u << 0) /* --nodeport-acceleration xdp-tx: the XDP program sends
                                       * a translated packet whose route leaves through the
                                       * uplink it arrived on straight back out (XDP_TX) */

struct kbp_config {
	__be32 node_ip; /* this node's address: SNAT source for LoadBalancer/externalIP flows */
	__u32  flags;   /* KBP_CONFIG_F_* */
};

/* ---- host services: socket-level balancing for the node's own network namespace ---- */

/* The cgroup sock_addr programs (bpf/kbp_sock.c) translate ClusterIP
 * frontends at connect()/sendmsg() for sockets of the node's own network
 * namespace only: the one whose cookie (SO_NETNS_COOKIE, bpf_get_netns_cookie)
 * the agent writes here before it attaches them. 0 = not written: they leave
 * every socket alone. Pods keep going through tc. */
struct kbp_host_ns {
	__u64 netns_cookie; /* the node namespace's cookie, host order; 0 = none */
	__u32 flags;        /* reserved, zero */
	__u32 pad;          /* zero */
};

/* Socket reverse NAT: a socket the connect/sendmsg program pointed at a backend
 * instead of a frontend, so that recvmsg (UDP reply source) and getpeername
 * give the application the frontend back. The socket cookie tells sockets
 * apart (never reused while the machine runs); the backend address tells the
 * frontends of one unconnected UDP socket apart. */
struct kbp_sock_rev_key {
	__u64  cookie;  /* bpf_get_socket_cookie, host order */
	__be32 addr;    /* backend address, network order */
	__be16 port;    /* backend port, network order */
	__u8   proto;   /* IPPROTO_TCP / IPPROTO_UDP */
	__u8   pad;     /* zero */
};

struct kbp_sock_rev {
	__be32 vip;    /* frontend address the application used, network order */
	__be16 port;   /* frontend port, network order */
	__u16  pad;    /* zero */
	__u32  svc_id; /* frontend id at translation time (revnat key) */
};

/* ---- stats: per-CPU counters, index = KBP_STAT_* ---- */

enum kbp_stat {
	KBP_STAT_NEW_FLOW = 0,        /* new service flow: backend chosen, DNAT */
	KBP_STAT_ESTABLISHED,         /* service flow following conntrack, DNAT */
	KBP_STAT_REVNAT,              /* reply rewritten back to the frontend */
	KBP_STAT_PASS,                /* not service traffic, passed untouched */
	KBP_STAT_DROP_NO_BACKEND,     /* frontend has no active backend */
	KBP_STAT_DROP_UNKNOWN_PORT,   /* known VIP, port/protocol not served */
	KBP_STAT_DROP_CT_INSERT,      /* conntrack insert failed: fail closed */
	KBP_STAT_DROP_BACKEND_MISSING,/* slot points at an absent backend (sync in flight) */
	KBP_STAT_DROP_REWRITE,        /* packet rewrite helper failed */
	KBP_STAT_DROP_FRAGMENT,       /* IPv4 fragment to a frontend (not reassembled) */
	KBP_STAT_DROP_MALFORMED,      /* truncated header towards a frontend */
	KBP_STAT_SNAT,                /* new flow masqueraded to the node (remote backend) */
	KBP_STAT_DROP_SNAT_PORTS,     /* no free SNAT port after KBP_SNAT_TRIES */
	KBP_STAT_DROP_NO_CONFIG,      /* SNAT needed but the agent has written no config */
	KBP_STAT_DROP_CT_CLASH,       /* the flow's reply (or SNAT) tuple belongs to another live
	                               * flow; for a new flow: and KBP_SNAT_TRIES random ports to
	                               * remap the client to were all held as well */
	KBP_STAT_REJECT,              /* frontend without endpoints (KBP_SVC_F_REJECT): answered with
	                               * ICMP port unreachable, sent back out of the ingress device */
	KBP_STAT_ICMP_REVNAT,         /* ICMP error about a translated flow translated back
	                               * (outer and quoted headers) for the client */
	KBP_STAT_HAIRPIN,             /* new flow whose client is its own backend: source rewritten
	                               * to KBP_HAIRPIN_ADDR */
	KBP_STAT_DROP_SOURCE_RANGE,   /* new flow to a load balancer IP from outside its
	                               * loadBalancerSourceRanges */
	KBP_STAT_XDP_FORWARD,         /* service flow translated by the XDP program on an uplink
	                               * (--nodeport-acceleration xdp), counted besides its outcome
	                               * (NEW_FLOW, SNAT, ESTABLISHED); tc then passes it untouched */
	KBP_STAT_SOCK_XLATE,          /* host socket (bpf/kbp_sock.c): connect or sendmsg to a
	                               * ClusterIP pointed at a backend; bytes are 0 */
	KBP_STAT_SOCK_REJECT,         /* host socket: ClusterIP without a usable backend,
	                               * connect/sendmsg refused (ECONNREFUSED) */
	KBP_STAT_XDP_TX,              /* packet translated in XDP sent straight back out of its
	                               * uplink (KBP_CONFIG_F_XDP_TX), besides xdp_forward */
	KBP_STAT_PORT_REMAP,          /* new flow whose reply tuple another live flow held: DNAT
	                               * and the client's port rewritten (KBP_CT_F_PORT_REMAP) */
	KBP_STAT_MAX,
};

/* The stats map has room to add reasons without changing its shape. */
#define KBP_STAT_SLOTS 64

struct kbp_stat_value {
	__u64 packets;
	__u64 bytes;
};

/* ---- layout checks: the addon exports the same figures to the TypeScript test ---- */

#ifdef __cplusplus
#define KBP_STATIC_ASSERT static_assert
#else
#define KBP_STATIC_ASSERT _Static_assert
#endif

KBP_STATIC_ASSERT(sizeof(struct kbp_svc_key) == 12, "kbp_svc_key size");
KBP_STATIC_ASSERT(sizeof(struct kbp_svc_value) == 16, "kbp_svc_value size");
KBP_STATIC_ASSERT(sizeof(struct kbp_backend_key) == 4, "kbp_backend_key size");
KBP_STATIC_ASSERT(sizeof(struct kbp_backend) == 12, "kbp_backend size");
KBP_STATIC_ASSERT(sizeof(struct kbp_revnat_key) == 4, "kbp_revnat_key size");
KBP_STATIC_ASSERT(sizeof(struct kbp_revnat) == 8, "kbp_revnat size");
KBP_STATIC_ASSERT(sizeof(struct kbp_ct_key) == 16, "kbp_ct_key size");
KBP_STATIC_ASSERT(sizeof(struct kbp_ct_value) == 40, "kbp_ct_value size");
KBP_STATIC_ASSERT(sizeof(struct kbp_stat_value) == 16, "kbp_stat_value size");
KBP_STATIC_ASSERT(sizeof(struct kbp_affinity_key) == 8, "kbp_affinity_key size");
KBP_STATIC_ASSERT(sizeof(struct kbp_affinity_value) == 16, "kbp_affinity_value size");
KBP_STATIC_ASSERT(sizeof(struct kbp_snat_key) == 16, "kbp_snat_key size");
KBP_STATIC_ASSERT(sizeof(struct kbp_snat_value) == 24, "kbp_snat_value size");
KBP_STATIC_ASSERT(sizeof(struct kbp_config) == 8, "kbp_config size");
KBP_STATIC_ASSERT(sizeof(struct kbp_src_range_key) == 12, "kbp_src_range_key size");
KBP_STATIC_ASSERT(sizeof(struct kbp_src_range) == 4, "kbp_src_range size");
KBP_STATIC_ASSERT(sizeof(struct kbp_host_ns) == 16, "kbp_host_ns size");
KBP_STATIC_ASSERT(sizeof(struct kbp_sock_rev_key) == 16, "kbp_sock_rev_key size");
KBP_STATIC_ASSERT(sizeof(struct kbp_sock_rev) == 12, "kbp_sock_rev size");
KBP_STATIC_ASSERT(KBP_STAT_MAX <= KBP_STAT_SLOTS, "stat reasons fit the stats map");

#endif /* KBP_ABI_H */
