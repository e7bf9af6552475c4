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
DEBIAN_PKGS := clang llvm libbpf-dev libelf-dev zlib1g-dev bpftool iproute2 iptables \
	conntrack curl netcat-openbsd socat iperf3 util-linux procps gcc make

.PHONY: all deps bpf native ts test test-unit test-e2e demo bench clean

all: bpf native ts

deps:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=$$(for p in $(DEBIAN_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  fi; \
	else echo "make deps: not root, skipping apt-get"; fi
	# ffi-napi 4.0.3 does not compile against Node >= 20.12 headers without -fpermissive.
	CXXFLAGS=-fpermissive npm ci --no-audit --no-fund

bpf: $(BPF_OBJ)

$(BUILD)/bpf/%.o: bpf/progs/%.c $(BPF_HDR)
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

native: $(NATIVE_LIB)

$(NATIVE_LIB): native/weir_bpf.c native/weir_bpf.h
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -Wall -Werror -fPIC -shared -o $@ native/weir_bpf.c -lbpf -lelf -lz

ts:
	node_modules/.bin/tsc -p tsconfig.json

test: all
	node dist/test/run.js

demo: all
	node dist/test/box/demo.js

clean:
	rm -rf $(BUILD) dist
