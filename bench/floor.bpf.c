// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The wire benchmark's floor (bench/wire.ts, variant tc-floor): a tc
 * program that passes every packet at once. Attached at ingress and egress
 * of both pods' devices, it measures what running any tc program there
 * costs a connection, before any dataplane does its work.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

__attribute__((section("tc"), used)) int tc_floor(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char LICENSE[] __attribute__((section("license"), used)) = "Dual BSD/GPL";
