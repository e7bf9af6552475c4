# weir build. `make` builds everything; `make deps` installs what a fresh
# Debian machine lacks. See README.md.

SHELL := /bin/bash
ARCH := $(shell uname -m)
CLANG ?= clang
BUILD := build
BPF_SRC := $(wildcard bpf/progs/*.c)
BPF_OBJ := $(patsubst bpf/progs/%.c,$(BUILD)/bpf/%.o,$(BPF_SRC))
BPF_HDR := $(wildcard bpf/shared/*.h bpf/lib/*.h bpf/include/*.h)
BPF_CFLAGS := -O2 -g -target bpf -Wall -Werror -Wno-unused-function \
	-D__TARGET_ARCH_$(subst x86_64,x86,$(ARCH)) \
	-Ibpf/include -Ibpf/shared -Ibpf/lib -I/usr/include/$(ARCH)-linux-gnu
NATIVE_LIB := $(BUILD)/native/libweirbpf.so
# Not part of weir: the wire benchmark's do-nothing tc program (bench/floor.bpf.c).
BENCH_BPF_OBJ := $(BUILD)/bench/floor.o
DEBIAN_PKGS := clang llvm libbpf-dev libelf-dev zlib1g-dev bpftool iproute2 iptables nftables \
	conntrack curl netcat-openbsd socat iperf3 util-linux procps gcc make clang-format python3

# tsc needs node_modules; everything that runs needs the system packages.
.PHONY: all deps system-deps bpf native ts lint format test test-unit test-e2e demo bench bench-deps soak clean bpffs install

all: deps bpf native ts

# Everything a fresh Debian machine lacks. Idempotent and quick when done:
# `make test` and `make demo` run it first, so each is one command on a new box.
deps: system-deps node_modules/.weir-stamp

# SKIP_SYSTEM_DEPS=1: the caller provides the toolchain (the image build does).
system-deps:
	@[ -n "$(SKIP_SYSTEM_DEPS)" ] && exit 0; \
	missing=$$(for p in $(DEBIAN_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: missing $$missing and not root" >&2; exit 1; fi; \
	  echo "installing:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# ffi-napi 4.0.3 does not compile against Node >= 20.12 headers without -fpermissive.
node_modules/.weir-stamp: package.json package-lock.json
	CXXFLAGS=-fpermissive npm ci --no-audit --no-fund
	@touch $@

bpf: $(BPF_OBJ)

$(BUILD)/bpf/%.o: bpf/progs/%.c $(BPF_HDR) | system-deps
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BENCH_BPF_OBJ): bench/floor.bpf.c | system-deps
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

native: $(NATIVE_LIB)

$(NATIVE_LIB): native/weir_bpf.c native/weir_bpf.h | system-deps
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -Wall -Werror -fPIC -shared -o $@ native/weir_bpf.c -lbpf -lelf -lz -lpthread

ts: node_modules/.weir-stamp
	node_modules/.bin/tsc -p tsconfig.json

C_SRC := $(wildcard bpf/progs/*.c bpf/lib/*.h bpf/shared/*.h native/*.c native/*.h bench/*.bpf.c)

# Type-checked ESLint, Prettier and clang-format, checking only; `make format` rewrites.
lint: deps
	node_modules/.bin/eslint ts test bench
	node_modules/.bin/prettier --check --log-level warn "ts/**/*.ts" "test/**/*.ts" "bench/**/*.ts"
	clang-format --dry-run --Werror $(C_SRC)

format: deps
	node_modules/.bin/prettier --write --log-level warn "ts/**/*.ts" "test/**/*.ts" "bench/**/*.ts"
	clang-format -i $(C_SRC)

# Pinned maps need a bpf filesystem; a fresh machine may not have one mounted.
bpffs:
	@grep -qs ' /sys/fs/bpf bpf ' /proc/mounts || mount -t bpf bpf /sys/fs/bpf

# Unit suites need no root; binding and cluster-in-a-box suites need root.
test: all lint bpffs bench-deps $(BENCH_BPF_OBJ)
	node dist/test/run.js

test-unit: deps ts
	node dist/test/run.js unit

test-e2e: all bpffs
	node dist/test/run.js e2e

demo: all bpffs
	node dist/test/box/demo.js

# The generative test (test/soak/soak.ts) for seeds SEED .. SEED+SEEDS-1,
# STEPS steps each, against an agent in MODE (bpf, nftables or iptables); a
# failure prints its seed and steps, and this replays it.
SEED ?= 1
STEPS ?= 200
SEEDS ?= 1
MODE ?= bpf
soak: all bpffs
	SEED=$(SEED) STEPS=$(STEPS) SEEDS=$(SEEDS) MODE=$(MODE) node dist/test/soak/main.js

# Benchmarks (not tests): writes bench/results.json, BENCHMARKS.md, bench/latency.svg.
# BENCH_ARGS=--quick for a smoke run under two minutes.
bench: all bpffs bench-deps $(BENCH_BPF_OBJ)
	node dist/bench/run.js $(BENCH_ARGS)

# What the benchmarks add (`make test` runs them once, quick): wrk and nginx
# for bench/wire.ts. The benchmark starts nginx in its own namespaces; a
# policy-rc.d keeps the package from starting a system nginx on the host
# while it installs.
BENCH_PKGS := wrk nginx
bench-deps: system-deps
	@[ -n "$(SKIP_SYSTEM_DEPS)" ] && exit 0; \
	missing=$$(for p in $(BENCH_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make bench-deps: missing $$missing and not root" >&2; exit 1; fi; \
	  made=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made=1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; rc=$$?; \
	  [ -n "$$made" ] && rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi

# `make install [PREFIX=/usr/local]`: puts `weir` on the PATH as a two-line
# script that runs this checkout's dist/ts/cli/main.js with the node found
# now. A wrapper rather than a copy: the agent finds its BPF objects, its
# libbpf shim and node_modules next to dist/, so the checkout stays the one
# install, and `make` after a pull updates what `weir` runs. Node by absolute
# path, since sudo's PATH often lacks it. Builds nothing: run `make` first.
PREFIX ?= /usr/local
NODE ?= $(shell command -v node)
install:
	@for f in dist/ts/cli/main.js $(BPF_OBJ) $(NATIVE_LIB); do \
	  [ -e "$$f" ] || { echo "make install: $$f is missing; run make first" >&2; exit 1; }; done
	@[ -n "$(NODE)" ] || { echo "make install: no node on the PATH (or pass NODE=...)" >&2; exit 1; }
	install -d "$(DESTDIR)$(PREFIX)/bin"
	printf '#!/bin/sh\nexec "%s" "%s" "$$@"\n' "$(NODE)" "$(CURDIR)/dist/ts/cli/main.js" > "$(DESTDIR)$(PREFIX)/bin/weir"
	chmod 755 "$(DESTDIR)$(PREFIX)/bin/weir"

clean:
	rm -rf $(BUILD) dist
