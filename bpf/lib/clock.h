/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The clock behind conntrack and session-affinity timestamps. */
#ifndef WEIR_CLOCK_H
#define WEIR_CLOCK_H

#include "common.h"
#include <bpf/bpf_core_read.h>

/*
 * These timestamps only measure idle lifetimes of seconds to hours, so the
 * coarse monotonic clock (tick resolution) is enough, and reading it is a
 * load where bpf_ktime_get_ns() reads the clock source: on a KVM guest that
 * is ~30 ns of an established packet's ~100. The coarse helper is 5.11+; on
 * 5.10 libbpf resolves this check to false at load time (CO-RE against the
 * kernel's BTF) and the verifier never sees the call.
 */
static __always_inline __u64 weir_now(void)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_ktime_get_coarse_ns))
		return bpf_ktime_get_coarse_ns();
	return bpf_ktime_get_ns();
}

/*
 * now - then, or 0 when then is later: user space (weir trace, tests)
 * stamps entries with the fine clock, which can be a tick ahead of the
 * coarse one; such an entry is fresh, not 2^64 ns old.
 */
static __always_inline __u64 weir_age(__u64 now, __u64 then)
{
	return now > then ? now - then : 0;
}

#endif
