/* SPDX-License-Identifier: Apache-2.0 */
/*
 * weir_bpf: the whole surface between the TypeScript control plane and libbpf.
 *
 * Rules that keep the FFI boundary simple and ABI-safe:
 *  - only ints, C strings and opaque byte buffers cross it; no structs;
 *  - every function returns >= 0 on success and -errno on failure;
 *  - objects are referred to by small integer handles, maps and programs by fd;
 *  - anything done per map entry in bulk (dump, batch update/delete) loops in C,
 *    so a sync of ten thousand entries is one call, not ten thousand.
 */
#ifndef WEIR_BPF_SHIM_H
#define WEIR_BPF_SHIM_H

#include <stdint.h>

/* libbpf messages printed to stderr: 0 = none, 1 = warnings (default), 2 = +info, 3 = +debug. */
int weir_set_log_level(int level);
/* The last libbpf warning (e.g. the verifier log tail), copied into buf. */
int weir_last_log(char *buf, uint32_t size);

/*
 * Open and load a BPF object file. Maps declared with LIBBPF_PIN_BY_NAME are
 * pinned under pin_root, or reused if a compatible pin is already there: this
 * is how a restarted agent keeps conntrack and service state. sizes
 * ("name=N,name=N", may be empty) sets max_entries of the named maps first;
 * a reused pin must have the same size (the caller passes the pin's).
 * Returns an object handle.
 */
int weir_obj_load(const char *obj_path, const char *pin_root, const char *sizes);
/*
 * Like weir_obj_load, but the maps named in private_maps (comma-separated)
 * are created fresh and unpinned, LRU ones with at most lru_max entries:
 * `weir trace` runs the real program against the real service maps without
 * touching the live conntrack, affinity or counters. The shared maps take
 * the size of their pins, whatever the agent sized them to.
 */
int weir_obj_load_private(const char *obj_path, const char *pin_root, const char *private_maps, uint32_t lru_max);
int weir_obj_close(int obj);
/*
 * Run the iterator program prog_name of obj once over its target (in the
 * caller's network namespace) and read its output to the end, the first
 * out_len bytes into out. Returns the bytes it wrote, -EOPNOTSUPP if the
 * program was left unloaded (the kernel lacks what it needs), or -errno.
 */
int weir_iter_run(int obj, const char *prog_name, void *out, uint32_t out_len);
/* fd of a map / program inside a loaded object (owned by the object). */
int weir_obj_map_fd(int obj, const char *map_name);
int weir_obj_prog_fd(int obj, const char *prog_name);

/* Pinned objects: open (returns a new fd the caller closes), pin, unpin. */
int weir_pin_open(const char *path);
int weir_pin(int fd, const char *path);
int weir_close(int fd);

/*
 * Exclusive, advisory lock on a directory (the pin root): flock(2) with
 * LOCK_EX | LOCK_NB on an O_RDONLY | O_DIRECTORY | O_CLOEXEC descriptor.
 * Returns that descriptor, which holds the lock until it is closed or the
 * process exits (a SIGKILLed agent releases it too; O_CLOEXEC keeps child
 * processes from inheriting it), or -EWOULDBLOCK while another holds it.
 * flock works on bpffs, so agents in different containers that share the
 * host's /sys/fs/bpf exclude each other.
 */
int weir_dir_lock(const char *path);

/* A new unpinned map (for tests and benchmarks of the binding). Returns its fd. */
int weir_map_create(uint32_t type, uint32_t key_size, uint32_t value_size, uint32_t max_entries);

/* Map metadata: out[0..4] = type, key_size, value_size, max_entries, id. */
int weir_map_info(int fd, uint32_t *out);
int weir_num_possible_cpus(void);

/* Single-element operations. */
int weir_map_lookup(int fd, const void *key, void *value);
int weir_map_update(int fd, const void *key, const void *value, uint64_t flags);
int weir_map_delete(int fd, const void *key);

/*
 * Bulk operations over packed arrays of keys / values. Use the kernel's batch
 * ops where the map supports them and fall back to a loop in C otherwise
 * (for the elements a batch did not write, whatever made it fail). Return
 * count once every element is done, or the -errno of the first element that
 * could not be: never success with an element left unwritten.
 */
int weir_map_update_many(int fd, const void *keys, const void *values, uint32_t count, uint32_t key_size,
			 uint32_t value_size, uint64_t flags);
/* Deleting a key that is already gone is not an error. */
int weir_map_delete_many(int fd, const void *keys, uint32_t count, uint32_t key_size);
/*
 * Ordered background writes. weir_writer_submit queues one weir_map_update_many
 * (del = 0) or weir_map_delete_many (del = 1) for a thread of this library
 * and returns at once; the caller keeps keys and values alive and unchanged
 * until weir_writer_drain returns. Jobs run one at a time in submission
 * order, so a batch written after another is never visible before it. After
 * a job fails, later ones are skipped (a later write may depend on it).
 * weir_writer_drain waits for the queue to empty and returns 0 or the first
 * failure's -errno since the previous drain.
 */
int weir_writer_submit(int fd, const void *keys, const void *values, uint32_t count, uint32_t key_size,
		       uint32_t value_size, int del);
int weir_writer_drain(void);
/* Number of entries (batched lookups where the kernel has them, else a key walk). */
int weir_map_count(int fd, uint32_t key_size, uint32_t value_size);
/*
 * Copy up to max entries into packed keys/values arrays (batched lookups
 * where the kernel has them). Returns the count; max means the buffers may
 * have been too small: retry larger.
 */
int weir_map_dump(int fd, void *keys, void *values, uint32_t max, uint32_t key_size, uint32_t value_size);

/*
 * One step of a walk over a map: up to max entries into keys/values, from
 * where the previous step of this walk ended. walk is the caller's
 * WEIR_WALK_SIZE bytes, zeroed before the first step; *done is set to 1
 * once the map has ended (the entries of that step included). Batched
 * lookups where the kernel has them (max must hold a hash bucket: 4096 is
 * plenty), else a key walk. A map changed during a walk may show a changed
 * entry in either state, or not at all; the caller accounts for its own
 * writes. Returns the number of entries read.
 */
#define WEIR_WALK_SIZE 1024
int weir_map_walk(int fd, void *walk, void *keys, void *values, uint32_t max, uint32_t key_size, uint32_t value_size,
		  uint32_t *done);

/*
 * tc (clsact) attach at ingress (ingress = 1) or egress (0) of ifindex, with
 * a fixed handle and priority so a restarted agent replaces its own filter
 * atomically instead of stacking a second one.
 */
int weir_tc_attach(int ifindex, int prog_fd, int ingress, uint32_t handle, uint32_t priority);
int weir_tc_detach(int ifindex, int ingress, uint32_t handle, uint32_t priority);
/* Returns the id of the program attached there, or -ENOENT. */
int weir_tc_query(int ifindex, int ingress, uint32_t handle, uint32_t priority);

/*
 * Attach a socket program to a cgroup through a BPF link pinned at pin_path.
 * If that pin exists the link is updated to prog_fd in place (atomic, no
 * second attachment); removing the pin detaches. Returns 1 if it created
 * the link, 0 if it updated an existing one.
 */
int weir_cgroup_link(const char *cgroup_path, int prog_fd, int attach_type, const char *pin_path);

/* Interface index in the caller's network namespace (0 > result: -ENODEV). */
int weir_ifindex(const char *name);

/*
 * The cookie of the caller's network namespace (SO_NETNS_COOKIE, 5.14+),
 * the value bpf_get_netns_cookie() gives a socket hook for a socket there.
 * Written to *out; 0 > result: -errno.
 */
int weir_netns_cookie(uint64_t *out);
/*
 * Every interface of the caller's network namespace, as "ifindex master
 * name\n" lines in buf (one netlink dump, whatever their state and
 * addresses; master: the bridge or bond a device is enslaved to, 0 for none).
 * Returns the bytes written, or -ENOSPC when buf is too short.
 * The device watcher polls this: a child process (`ip link`) would fork the
 * agent, and forking a large process stalls it (page tables copied, then
 * every page it writes faults once more).
 */
int weir_links(char *buf, uint32_t len);

/*
 * Run a program once on a crafted packet (BPF_PROG_TEST_RUN).
 * out[0] = retval, out[1] = data_out length, out[2] = duration (ns).
 */
int weir_prog_test_run(int prog_fd, const void *data_in, uint32_t size_in, void *data_out, uint32_t size_out,
		       uint32_t repeat, uint32_t *out);

#endif
