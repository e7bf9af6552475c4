// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc ingress of pod-facing devices: packets arriving here come from pods.
 * Parse, dispatch (frontend or reply of a NATed flow), and leave through the
 * single exit that counts the verdict. The logic lives in bpf/lib/.
 */
#include "common.h"
#include "parse.h"
#include "service.h"
#include "verdict.h"

SEC("tc")
int weir_tc_ingress(struct __sk_buff *skb)
{
	struct weir_svc_key key;
	struct weir_svc_val *svc;
	struct pkt p;

	if (!parse_packet(skb, &p))
		return TC_ACT_OK;
	svc = lb_frontend(&key, &p, WEIR_SCOPE_ALL);
	if (svc)
		return verdict_exit(handle_frontend(skb, &p, &key, svc));
	return verdict_exit(handle_reply(skb, &p));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
