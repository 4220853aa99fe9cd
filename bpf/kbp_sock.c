// SPDX-License-Identifier: GPL-2.0
/*
 * Host services: cgroup sock_addr hooks for the node's own network namespace
 * (bpf/lib/sock.h), attached by the agent to a cgroup v2 directory
 * (--host-services-cgroup, the root in production).
 *  - connect4: TCP connect and UDP connect to a ClusterIP go to a backend;
 *  - sendmsg4: unconnected UDP datagrams to a ClusterIP go to a backend;
 *  - recvmsg4: their replies appear to come from the ClusterIP;
 *  - getpeername4: connected sockets name the ClusterIP as their peer.
 * Sockets of other namespaces (pods) pass untouched.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/sock.h"

SEC("cgroup/connect4")
int kbp_sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_forward(ctx);
}

SEC("cgroup/sendmsg4")
int kbp_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_forward(ctx);
}

SEC("cgroup/recvmsg4")
int kbp_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_reverse(ctx, IPPROTO_UDP);
}

SEC("cgroup/getpeername4")
int kbp_sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock4_reverse(ctx, ctx->protocol);
}

char _license[] SEC("license") = "GPL";
