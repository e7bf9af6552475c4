// SPDX-License-Identifier: Apache-2.0
/* weir_bpf: libbpf shim for the TypeScript control plane. See weir_bpf.h. */
#include "weir_bpf.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <pthread.h>
#include <sys/file.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#define MAX_OBJS 16

static struct bpf_object *objs[MAX_OBJS];
static int log_level = 1;
static char last_log[4096];
/*
 * > 0 while this thread makes a libbpf call whose failure is expected and
 * handled: its warnings (a netlink request's error text from the kernel)
 * are kept in last_log but not printed.
 */
static __thread int quiet;

static int print_fn(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	va_list copy;

	va_copy(copy, ap);
	/* Keep the latest warning: the verifier's verdict ends up here. */
	if (level == LIBBPF_WARN)
		vsnprintf(last_log, sizeof(last_log), fmt, copy);
	va_end(copy);
	if ((int)level < log_level && !quiet)
		return vfprintf(stderr, fmt, ap);
	return 0;
}

int weir_set_log_level(int level)
{
	log_level = level;
	libbpf_set_print(print_fn);
	return 0;
}

int weir_last_log(char *buf, uint32_t size)
{
	if (!size)
		return -EINVAL;
	snprintf(buf, size, "%s", last_log);
	return (int)strlen(buf);
}

static struct bpf_object *obj_get(int obj)
{
	return obj >= 0 && obj < MAX_OBJS ? objs[obj] : NULL;
}

static bool in_list(const char *csv, const char *name)
{
	size_t n = strlen(name);
	const char *p = csv;

	while (p && *p) {
		if (!strncmp(p, name, n) && (p[n] == ',' || p[n] == '\0'))
			return true;
		p = strchr(p, ',');
		if (p)
			p++;
	}
	return false;
}

static int obj_load(const char *obj_path, const char *pin_root, const char *sizes, const char *private_maps,
		    uint32_t lru_max);

/*
 * Set a `const volatile __u32` global of an object before it loads. The
 * verifier reads frozen read-only data as constants and never visits the
 * branches they rule out, so this is how a program uses a helper only where
 * the kernel has it. Found through the object's BTF (the .rodata datasec);
 * an object without the variable is left alone.
 */
static int set_rodata_u32(struct bpf_object *obj, const char *name, uint32_t value)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, ".rodata");
	struct btf *btf = bpf_object__btf(obj);
	const struct btf_var_secinfo *vi;
	const struct btf_type *sec;
	const char *init;
	size_t size = 0;
	int id, i;

	if (!map || !btf)
		return 0;
	init = bpf_map__initial_value(map, &size);
	id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
	if (!init || id < 0)
		return 0;
	if (size > 4096)
		return -E2BIG; /* a few flags live here, copied on the stack */
	sec = btf__type_by_id(btf, id);
	vi = btf_var_secinfos(sec);
	for (i = 0; i < btf_vlen(sec); i++, vi++) {
		const struct btf_type *var = btf__type_by_id(btf, vi->type);

		if (strcmp(btf__name_by_offset(btf, var->name_off), name))
			continue;
		char data[size];

		if (vi->size != sizeof(value) || vi->offset + sizeof(value) > size)
			return -EINVAL;
		memcpy(data, init, size);
		memcpy(data + vi->offset, &value, sizeof(value));
		return bpf_map__set_initial_value(map, data, size);
	}
	return 0;
}

/* bpf_ktime_get_coarse_ns() is 5.11+: probed once (a tiny program load). */
static uint32_t have_coarse_clock(void)
{
	static int probed = -1;

	if (probed < 0)
		probed = libbpf_probe_bpf_helper(BPF_PROG_TYPE_SCHED_CLS, BPF_FUNC_ktime_get_coarse_ns, NULL) == 1;
	return (uint32_t)probed;
}

/* bpf_sk_storage_get() in socket address hooks: probed once (bpf/lib/sockconn.h). */
static uint32_t have_sk_storage(void)
{
	static int probed = -1;

	if (probed < 0)
		probed = libbpf_probe_bpf_helper(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_sk_storage_get, NULL) == 1;
	return (uint32_t)probed;
}

/* bpf_set_retval() in socket hooks is 5.18+: probed once. */
static uint32_t have_sock_retval(void)
{
	static int probed = -1;

	if (probed < 0)
		probed = libbpf_probe_bpf_helper(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_set_retval, NULL) == 1;
	return (uint32_t)probed;
}

int weir_obj_load(const char *obj_path, const char *pin_root, const char *sizes)
{
	return obj_load(obj_path, pin_root, sizes, NULL, 0);
}

int weir_obj_load_private(const char *obj_path, const char *pin_root, const char *private_maps, uint32_t lru_max)
{
	return obj_load(obj_path, pin_root, NULL, private_maps, lru_max);
}

/* "name=N,name=N": max_entries for the named maps, before the object loads. */
static int apply_sizes(struct bpf_object *obj, const char *sizes)
{
	const char *p = sizes;

	while (p && *p) {
		const char *eq = strchr(p, '=');
		struct bpf_map *map;
		char name[64], *end;
		unsigned long n;
		int err;

		if (!eq || eq == p || (size_t)(eq - p) >= sizeof(name))
			return -EINVAL;
		memcpy(name, p, eq - p);
		name[eq - p] = '\0';
		errno = 0;
		n = strtoul(eq + 1, &end, 10);
		if (errno || end == eq + 1 || (*end && *end != ',') || !n || n > UINT32_MAX)
			return -EINVAL;
		map = bpf_object__find_map_by_name(obj, name);
		if (!map)
			return -ENOENT;
		err = bpf_map__set_max_entries(map, (uint32_t)n);
		if (err)
			return err;
		p = *end ? end + 1 : end;
	}
	return 0;
}

/*
 * max_entries of every map with a pin there, from the pin: libbpf reuses a
 * pin only when the definition matches, size included, and the agent that
 * pinned them sized them (--lb-map-entries, the conntrack flags) without
 * leaving a note of it anywhere else.
 */
static int adopt_pinned_sizes(struct bpf_object *obj)
{
	struct bpf_map *map;

	bpf_object__for_each_map(map, obj) {
		const char *pin = bpf_map__pin_path(map);
		struct bpf_map_info info;
		uint32_t len = sizeof(info);
		int fd, err;

		if (!pin)
			continue;
		fd = bpf_obj_get(pin);
		if (fd < 0) {
			if (errno == ENOENT)
				continue; /* created and pinned at the object's size */
			return -errno;
		}
		memset(&info, 0, sizeof(info));
		err = bpf_obj_get_info_by_fd(fd, &info, &len) ? -errno : 0;
		close(fd);
		if (!err)
			err = bpf_map__set_max_entries(map, info.max_entries);
		if (err)
			return err;
	}
	return 0;
}

/* The bpf_sock_destroy kfunc (6.5+), which the socket iterator calls: probed once in the kernel's BTF. */
static bool have_sock_destroy(void)
{
	static int probed = -1;

	if (probed < 0) {
		struct btf *vmlinux = btf__load_vmlinux_btf();

		probed = vmlinux && btf__find_by_name_kind(vmlinux, "bpf_sock_destroy", BTF_KIND_FUNC) > 0;
		btf__free(vmlinux);
	}
	return probed;
}

/* An iterator that needs a kfunc the kernel lacks is left out, not the whole object. */
static void skip_unsupported_progs(struct bpf_object *obj)
{
	struct bpf_program *prog;

	bpf_object__for_each_program(prog, obj) {
		if (!strncmp(bpf_program__section_name(prog), "iter/", 5) && !have_sock_destroy())
			bpf_program__set_autoload(prog, false);
	}
}

static int obj_load(const char *obj_path, const char *pin_root, const char *sizes, const char *private_maps,
		    uint32_t lru_max)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_root);
	struct bpf_object *obj;
	int slot, err;

	for (slot = 0; slot < MAX_OBJS && objs[slot]; slot++)
		;
	if (slot == MAX_OBJS)
		return -EMFILE;
	libbpf_set_print(print_fn);
	last_log[0] = '\0';
	obj = bpf_object__open_file(obj_path, &opts);
	if (!obj)
		return -errno;
	err = apply_sizes(obj, sizes);
	if (err) {
		bpf_object__close(obj);
		return err;
	}
	if (private_maps) {
		struct bpf_map *map;

		bpf_object__for_each_map(map, obj) {
			if (!in_list(private_maps, bpf_map__name(map)))
				continue;
			err = bpf_map__set_pin_path(map, NULL);
			if (!err && lru_max && bpf_map__type(map) == BPF_MAP_TYPE_LRU_HASH)
				err = bpf_map__set_max_entries(map, lru_max);
			if (err) {
				bpf_object__close(obj);
				return err;
			}
		}
		/* The maps left shared are the pinned ones, whatever their size. */
		err = adopt_pinned_sizes(obj);
		if (err) {
			bpf_object__close(obj);
			return err;
		}
	}
	err = set_rodata_u32(obj, "weir_coarse_clock", have_coarse_clock());
	if (!err)
		err = set_rodata_u32(obj, "weir_sock_retval", have_sock_retval());
	if (!err)
		err = set_rodata_u32(obj, "weir_sk_storage", have_sk_storage());
	skip_unsupported_progs(obj);
	if (!err)
		err = bpf_object__load(obj);
	if (err) {
		bpf_object__close(obj);
		return err;
	}
	objs[slot] = obj;
	return slot;
}

int weir_obj_close(int obj)
{
	struct bpf_object *o = obj_get(obj);

	if (!o)
		return -EBADF;
	bpf_object__close(o);
	objs[obj] = NULL;
	return 0;
}

int weir_iter_run(int obj, const char *prog_name, void *out, uint32_t out_len)
{
	struct bpf_object *o = obj_get(obj);
	struct bpf_program *prog;
	struct bpf_link *link;
	char buf[4096];
	int fd, total = 0;
	ssize_t n;

	if (!o)
		return -EBADF;
	prog = bpf_object__find_program_by_name(o, prog_name);
	if (!prog)
		return -ENOENT;
	if (bpf_program__fd(prog) < 0)
		return -EOPNOTSUPP; /* not loaded: the kernel lacks what it needs */
	link = bpf_program__attach_iter(prog, NULL);
	if (!link)
		return -errno;
	fd = bpf_iter_create(bpf_link__fd(link));
	if (fd < 0) {
		int err = -errno;

		bpf_link__destroy(link);
		return err;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		if ((uint32_t)total < out_len)
			memcpy((char *)out + total, buf,
			       (size_t)n < out_len - (uint32_t)total ? (size_t)n : out_len - (uint32_t)total);
		total += (int)n;
	}
	if (n < 0)
		total = -errno;
	close(fd);
	bpf_link__destroy(link);
	return total;
}

int weir_obj_map_fd(int obj, const char *map_name)
{
	struct bpf_object *o = obj_get(obj);
	struct bpf_map *map;

	if (!o)
		return -EBADF;
	map = bpf_object__find_map_by_name(o, map_name);
	return map ? bpf_map__fd(map) : -ENOENT;
}

int weir_obj_prog_fd(int obj, const char *prog_name)
{
	struct bpf_object *o = obj_get(obj);
	struct bpf_program *prog;

	if (!o)
		return -EBADF;
	prog = bpf_object__find_program_by_name(o, prog_name);
	return prog ? bpf_program__fd(prog) : -ENOENT;
}

int weir_pin_open(const char *path)
{
	int fd = bpf_obj_get(path);

	return fd < 0 ? -errno : fd;
}

int weir_pin(int fd, const char *path)
{
	return bpf_obj_pin(fd, path) ? -errno : 0;
}

int weir_close(int fd)
{
	return close(fd) ? -errno : 0;
}

int weir_dir_lock(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int err;

	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		err = errno;
		close(fd);
		return -err;
	}
	return fd;
}

int weir_map_create(uint32_t type, uint32_t key_size, uint32_t value_size, uint32_t max_entries)
{
	/* The kernel creates LPM tries only without preallocation. */
	LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = type == BPF_MAP_TYPE_LPM_TRIE ? BPF_F_NO_PREALLOC : 0);
	int fd = bpf_map_create(type, "weir_scratch", key_size, value_size, max_entries, &opts);

	return fd < 0 ? -errno : fd;
}

int weir_map_info(int fd, uint32_t *out)
{
	struct bpf_map_info info;
	uint32_t len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -errno;
	out[0] = info.type;
	out[1] = info.key_size;
	out[2] = info.value_size;
	out[3] = info.max_entries;
	out[4] = info.id;
	return 0;
}

int weir_num_possible_cpus(void)
{
	return libbpf_num_possible_cpus();
}

int weir_map_lookup(int fd, const void *key, void *value)
{
	return bpf_map_lookup_elem(fd, key, value) ? -errno : 0;
}

int weir_map_update(int fd, const void *key, const void *value, uint64_t flags)
{
	return bpf_map_update_elem(fd, key, value, flags) ? -errno : 0;
}

int weir_map_delete(int fd, const void *key)
{
	return bpf_map_delete_elem(fd, key) ? -errno : 0;
}

int weir_map_update_many(int fd, const void *keys, const void *values, uint32_t count, uint32_t key_size,
			 uint32_t value_size, uint64_t flags)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = flags);
	const char *k = keys, *v = values;
	uint32_t done = count, i;

	if (!count)
		return 0;
	/* One syscall for the lot where the kernel supports batches (hash, array,
	 * LRU since 5.6). */
	if (!bpf_map_update_batch(fd, keys, values, &done, &opts) && done == count)
		return (int)count;
	/*
	 * Once the kernel's batch loop has started, `done` is the number of
	 * elements it wrote before the one that failed. A batch rejected before
	 * that loop leaves `done` at its input, count, with nothing written:
	 * elem_flags other than BPF_F_LOCK (-EINVAL: batches take no
	 * BPF_NOEXIST or BPF_EXIST), a map type without batch ops (devmap,
	 * sockmap: -ENOTSUPP), a map opened read-only (-EPERM).
	 */
	if (done >= count)
		done = 0;
	/* Per-element in C for the rest: keeps the FFI call count at one and
	 * reports the first failing element's errno. */
	for (i = done; i < count; i++)
		if (bpf_map_update_elem(fd, k + (size_t)i * key_size, v + (size_t)i * value_size, flags))
			return -errno;
	return (int)count;
}

int weir_map_delete_many(int fd, const void *keys, uint32_t count, uint32_t key_size)
{
	const char *k = keys;
	uint32_t i;

	/* The kernel's delete batch stops at the first missing key; removal of
	 * something already gone is success here, so loop. */
	for (i = 0; i < count; i++)
		if (bpf_map_delete_elem(fd, k + (size_t)i * key_size) && errno != ENOENT)
			return -errno;
	return (int)count;
}

/* --- ordered background writes (see weir_bpf.h) ------------------------- */

struct write_job {
	int fd;
	const void *keys;
	const void *values;
	uint32_t count, key_size, value_size;
	int del;
};

/* A ring of jobs; head runs next, tail is the next free place. Everything is
 * under one mutex, and one condition variable is broadcast on any change:
 * contention is a handful of batches per sync. */
#define WRITER_CAP 256
static struct write_job writer_ring[WRITER_CAP];
static unsigned writer_head, writer_tail;
static int writer_err;
static bool writer_running;
static pthread_mutex_t writer_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t writer_cv = PTHREAD_COND_INITIALIZER;

static void *writer_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&writer_mu);
	for (;;) {
		while (writer_head == writer_tail)
			pthread_cond_wait(&writer_cv, &writer_mu);
		struct write_job j = writer_ring[writer_head % WRITER_CAP];
		bool skip = writer_err != 0;
		int rc = 0;

		pthread_mutex_unlock(&writer_mu);
		if (!skip)
			rc = j.del ? weir_map_delete_many(j.fd, j.keys, j.count, j.key_size)
				   : weir_map_update_many(j.fd, j.keys, j.values, j.count, j.key_size, j.value_size, 0);
		pthread_mutex_lock(&writer_mu);
		if (rc < 0 && !writer_err)
			writer_err = rc;
		/* Advanced only once done: drain() waits for the write, not the dequeue. */
		writer_head++;
		pthread_cond_broadcast(&writer_cv);
	}
	return NULL;
}

int weir_writer_submit(int fd, const void *keys, const void *values, uint32_t count, uint32_t key_size,
		       uint32_t value_size, int del)
{
	int rc = 0;

	if (!count)
		return 0;
	pthread_mutex_lock(&writer_mu);
	if (!writer_running) {
		pthread_t t;
		pthread_attr_t attr;

		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		rc = -pthread_create(&t, &attr, writer_main, NULL);
		pthread_attr_destroy(&attr);
		if (rc)
			goto out;
		writer_running = true;
	}
	while (writer_tail - writer_head == WRITER_CAP)
		pthread_cond_wait(&writer_cv, &writer_mu);
	writer_ring[writer_tail % WRITER_CAP] = (struct write_job){
		.fd = fd,
		.keys = keys,
		.values = values,
		.count = count,
		.key_size = key_size,
		.value_size = value_size,
		.del = del,
	};
	writer_tail++;
	pthread_cond_broadcast(&writer_cv);
out:
	pthread_mutex_unlock(&writer_mu);
	return rc;
}

int weir_writer_drain(void)
{
	int rc;

	pthread_mutex_lock(&writer_mu);
	while (writer_head != writer_tail)
		pthread_cond_wait(&writer_cv, &writer_mu);
	rc = writer_err;
	writer_err = 0;
	pthread_mutex_unlock(&writer_mu);
	return rc;
}

#ifndef ENOTSUPP
#define ENOTSUPP 524 /* the kernel's "operation not supported", not in libc's errno.h */
#endif

/* A batch-lookup error that means the map has none (LPM trie; kernels before 5.6). */
static bool batch_unsupported(int err)
{
	return err == EINVAL || err == ENOTSUPP || err == EOPNOTSUPP || err == ENOSYS;
}

/*
 * A walk over a map with BPF_MAP_LOOKUP_BATCH (5.6+): one syscall per up to
 * a buffer's worth of entries, where walking the keys costs two per entry (a
 * 320k-entry service map is a million syscalls). The position is the
 * kernel's opaque token: a bucket index for hash maps, a key for arrays.
 */
struct batch_walk {
	uint64_t in[32], out[32];
	bool started;
};

/*
 * Read up to *count entries into k/v, continuing the walk; *count is set to
 * the number read. Returns 0 when there may be more, 1 at the end of the
 * map, -EOPNOTSUPP when the map has no batch lookups (known on the first
 * call only), else -errno (-ENOSPC: a whole bucket did not fit).
 */
static int batch_next(int fd, struct batch_walk *w, void *k, void *v, uint32_t *count)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	int err = bpf_map_lookup_batch(fd, w->started ? w->in : NULL, w->out, k, v, count, &opts);
	int e = err ? errno : 0;

	if (!err) {
		memcpy(w->in, w->out, sizeof(w->in));
		w->started = true;
		return 0;
	}
	if (e == ENOENT)
		return 1;
	if (!w->started && *count == 0 && batch_unsupported(e))
		return -EOPNOTSUPP;
	return -e;
}

/*
 * Read up to max entries. Returns the number read, max when the buffers
 * filled before the map ended (the caller retries with more room), -errno,
 * or -EOPNOTSUPP when the map has no batch lookups.
 */
static int lookup_batch(int fd, char *k, char *v, uint32_t max, uint32_t key_size, uint32_t value_size)
{
	struct batch_walk w = { .started = false };
	uint32_t n = 0;

	if (key_size > sizeof(w.in))
		return -EOPNOTSUPP;
	while (n < max) {
		uint32_t count = max - n;
		int rc = batch_next(fd, &w, k + (size_t)n * key_size, v + (size_t)n * value_size, &count);

		n += count;
		if (rc == 1)
			return (int)n; /* the end of the map */
		if (rc == -ENOSPC)
			return (int)max;
		if (rc < 0)
			return rc;
	}
	return (int)max;
}

/* Count with batched lookups into a scratch chunk; -EOPNOTSUPP without them. */
static int count_batch(int fd, uint32_t key_size, uint32_t value_size)
{
	enum { CHUNK = 4096 };
	struct batch_walk w = { .started = false };
	char *keys = NULL, *values = NULL;
	int n = 0, rc;

	if (key_size > sizeof(w.in))
		return -EOPNOTSUPP;
	keys = malloc((size_t)CHUNK * key_size);
	values = malloc((size_t)CHUNK * value_size);
	if (!keys || !values) {
		rc = -ENOMEM;
		goto out;
	}
	do {
		uint32_t count = CHUNK;

		rc = batch_next(fd, &w, keys, values, &count);
		n += (int)count;
	} while (rc == 0);
	if (rc == 1)
		rc = n;
out:
	free(keys);
	free(values);
	return rc;
}

int weir_map_count(int fd, uint32_t key_size, uint32_t value_size)
{
	char a[256], b[256];
	char *cur = a, *next = b, *tmp;
	const void *prev = NULL;
	int n = count_batch(fd, key_size, value_size);

	if (n != -EOPNOTSUPP)
		return n;
	/* No batch lookups for this map: walk the keys. */
	n = 0;
	if (key_size > sizeof(a))
		return -EINVAL;
	while (!bpf_map_get_next_key(fd, prev, next)) {
		n++;
		tmp = cur;
		cur = next;
		next = tmp;
		prev = cur;
	}
	return errno == ENOENT ? n : -errno;
}

/* The state behind weir_map_walk's opaque buffer. */
struct map_walk {
	struct batch_walk batch;
	bool keywalk; /* the map has no batch lookups: walk its keys */
	bool done;
	char prev[256]; /* key walk: the last key read */
};

_Static_assert(sizeof(struct map_walk) <= WEIR_WALK_SIZE, "WEIR_WALK_SIZE too small");

int weir_map_walk(int fd, void *walk, void *keys, void *values, uint32_t max, uint32_t key_size, uint32_t value_size,
		  uint32_t *done)
{
	struct map_walk *w = walk;
	char *k = keys, *v = values;
	uint32_t n = 0;

	*done = 0;
	if (key_size > sizeof(w->prev) || key_size > sizeof(w->batch.in))
		return -EINVAL;
	if (w->done) {
		*done = 1;
		return 0;
	}
	if (!w->keywalk) {
		uint32_t count = max;
		int rc = batch_next(fd, &w->batch, k, v, &count);

		if (rc == -EOPNOTSUPP) {
			w->keywalk = true;
		} else if (rc < 0) {
			return rc;
		} else {
			w->done = rc == 1;
			*done = w->done;
			return (int)count;
		}
	}
	while (n < max) {
		char *key = k + (size_t)n * key_size;

		if (bpf_map_get_next_key(fd, w->batch.started ? w->prev : NULL, key)) {
			if (errno != ENOENT)
				return -errno;
			w->done = true;
			break;
		}
		memcpy(w->prev, key, key_size);
		w->batch.started = true;
		/* An entry deleted between next_key and lookup is skipped, not an error. */
		if (bpf_map_lookup_elem(fd, key, v + (size_t)n * value_size)) {
			if (errno != ENOENT)
				return -errno;
			continue;
		}
		n++;
	}
	*done = w->done;
	return (int)n;
}

int weir_map_dump(int fd, void *keys, void *values, uint32_t max, uint32_t key_size, uint32_t value_size)
{
	char *k = keys, *v = values;
	uint32_t n = 0;
	const void *prev = NULL;
	int rc = lookup_batch(fd, k, v, max, key_size, value_size);

	if (rc != -EOPNOTSUPP)
		return rc;
	while (n < max) {
		char *key = k + (size_t)n * key_size;

		if (bpf_map_get_next_key(fd, prev, key)) {
			if (errno == ENOENT)
				break;
			return -errno;
		}
		/* An entry deleted between next_key and lookup is skipped, not an error. */
		if (bpf_map_lookup_elem(fd, key, v + (size_t)n * value_size)) {
			if (errno != ENOENT)
				return -errno;
			prev = key;
			continue;
		}
		prev = key;
		n++;
	}
	return (int)n;
}

static void tc_hook_init(struct bpf_tc_hook *hook, int ifindex, int ingress)
{
	memset(hook, 0, sizeof(*hook));
	hook->sz = sizeof(*hook);
	hook->ifindex = ifindex;
	hook->attach_point = ingress ? BPF_TC_INGRESS : BPF_TC_EGRESS;
}

int weir_tc_attach(int ifindex, int prog_fd, int ingress, uint32_t handle, uint32_t priority)
{
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = priority, .prog_fd = prog_fd,
		    .flags = BPF_TC_F_REPLACE);
	struct bpf_tc_hook hook;
	int err;

	tc_hook_init(&hook, ifindex, ingress);
	/*
	 * clsact first, where there is none yet. libbpf creates it with
	 * NLM_F_EXCL, so on a device that has one (every device a restarted
	 * agent re-attaches to) the kernel refuses with -EEXIST and "Exclusivity
	 * flag on, cannot modify", which libbpf prints: expected, so not shown.
	 */
	last_log[0] = '\0';
	quiet++;
	err = bpf_tc_hook_create(&hook);
	quiet--;
	if (err && err != -EEXIST) {
		if (log_level > LIBBPF_WARN)
			fputs(last_log, stderr);
		return err;
	}
	/* BPF_TC_F_REPLACE: our filter (same handle and priority) already there
	 * gets the new program in place, one request, never a moment without it. */
	return bpf_tc_attach(&hook, &opts);
}

int weir_tc_detach(int ifindex, int ingress, uint32_t handle, uint32_t priority)
{
	/* libbpf 1.1 rejects detach unless prog_fd, prog_id and flags are zero. */
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = priority);
	struct bpf_tc_hook hook;

	tc_hook_init(&hook, ifindex, ingress);
	return bpf_tc_detach(&hook, &opts);
}

int weir_tc_query(int ifindex, int ingress, uint32_t handle, uint32_t priority)
{
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = handle, .priority = priority);
	struct bpf_tc_hook hook;
	int err;

	tc_hook_init(&hook, ifindex, ingress);
	err = bpf_tc_query(&hook, &opts);
	return err ? err : (int)opts.prog_id;
}

int weir_cgroup_link(const char *cgroup_path, int prog_fd, int attach_type, const char *pin_path)
{
	int link, cg, err;

	link = bpf_obj_get(pin_path);
	if (link >= 0) {
		err = bpf_link_update(link, prog_fd, NULL) ? -errno : 0;
		close(link);
		return err;
	}
	cg = open(cgroup_path, O_RDONLY | O_DIRECTORY);
	if (cg < 0)
		return -errno;
	link = bpf_link_create(prog_fd, cg, attach_type, NULL);
	err = link < 0 ? -errno : 0;
	close(cg);
	if (err)
		return err;
	err = bpf_obj_pin(link, pin_path) ? -errno : 1;
	close(link); /* the pin keeps the link (and the attachment) alive */
	return err;
}

int weir_ifindex(const char *name)
{
	unsigned int idx = if_nametoindex(name);

	return idx ? (int)idx : -ENODEV;
}

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

int weir_netns_cookie(uint64_t *out)
{
	socklen_t len = sizeof(*out);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int rc = 0;

	if (fd < 0)
		fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, out, &len))
		rc = -errno;
	close(fd);
	return rc;
}

/* One RTM_GETLINK dump rather than if_nameindex(3), which does not tell a
 * device's master: detectLocalMode BridgeInterface needs the bridge's ports. */
int weir_links(char *buf, uint32_t len)
{
	struct {
		struct nlmsghdr nh;
		struct ifinfomsg ifi;
	} req = { .nh = { .nlmsg_len = sizeof(req),
			  .nlmsg_type = RTM_GETLINK,
			  .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
			  .nlmsg_seq = 1 },
		  .ifi = { .ifi_family = AF_UNSPEC } };
	char rx[32768];
	uint32_t off = 0;
	int fd, err = 0;
	bool done = false;

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return -errno;
	if (send(fd, &req, sizeof(req), 0) < 0) {
		err = -errno;
		goto out;
	}
	while (!done && !err) {
		ssize_t n = recv(fd, rx, sizeof(rx), 0);
		struct nlmsghdr *nh;

		if (n < 0) {
			err = errno == EINTR ? 0 : -errno;
			continue;
		}
		for (nh = (struct nlmsghdr *)rx; NLMSG_OK(nh, (uint32_t)n); nh = NLMSG_NEXT(nh, n)) {
			struct ifinfomsg *ifi = NLMSG_DATA(nh);
			int alen = (int)IFLA_PAYLOAD(nh), w;
			const char *name = NULL;
			uint32_t master = 0;
			struct rtattr *a;

			if (nh->nlmsg_type == NLMSG_DONE) {
				done = true;
				break;
			}
			if (nh->nlmsg_type == NLMSG_ERROR) {
				struct nlmsgerr *e = NLMSG_DATA(nh);

				err = e->error ? e->error : -EIO;
				break;
			}
			if (nh->nlmsg_type != RTM_NEWLINK)
				continue;
			for (a = IFLA_RTA(ifi); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
				if (a->rta_type == IFLA_IFNAME)
					name = RTA_DATA(a);
				else if (a->rta_type == IFLA_MASTER && RTA_PAYLOAD(a) >= sizeof(uint32_t))
					memcpy(&master, RTA_DATA(a), sizeof(master));
			}
			if (!name)
				continue;
			w = snprintf(buf + off, len - off, "%d %u %s\n", ifi->ifi_index, master, name);
			if (w < 0 || (uint32_t)w >= len - off) {
				err = -ENOSPC;
				break;
			}
			off += w;
		}
	}
out:
	close(fd);
	return err ? err : (int)off;
}

int weir_prog_test_run(int prog_fd, const void *data_in, uint32_t size_in, void *data_out, uint32_t size_out,
		       uint32_t repeat, uint32_t *out)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = data_in, .data_size_in = size_in, .data_out = data_out,
		    .data_size_out = size_out, .repeat = repeat);

	if (bpf_prog_test_run_opts(prog_fd, &opts))
		return -errno;
	out[0] = opts.retval;
	out[1] = opts.data_size_out;
	out[2] = opts.duration;
	return 0;
}
