/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The clock behind conntrack and session-affinity timestamps. */
#ifndef WEIR_CLOCK_H
#define WEIR_CLOCK_H

#include "common.h"

/*
 * Set by the loader (native/weir_bpf.c) when the kernel has
 * bpf_ktime_get_coarse_ns() (5.11+). Read-only data the verifier treats as
 * a constant: on 5.10 the coarse branch is never visited, so the unknown
 * helper is never seen. (A CO-RE check would do the same but makes libbpf
 * parse the kernel's BTF on every load: ~150 ms of agent start-up.)
 */
const volatile __u32 weir_coarse_clock = 0;

/*
 * These timestamps only measure idle lifetimes of seconds to hours, so the
 * coarse monotonic clock (tick resolution) is enough, and reading it is a
 * load where bpf_ktime_get_ns() reads the clock source: on a KVM guest that
 * is ~30 ns of an established packet's ~100.
 */
static __always_inline __u64 weir_now(void)
{
	if (weir_coarse_clock)
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
