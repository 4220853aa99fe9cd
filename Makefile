# kube-bpf-proxy build. `make demo` and `make test` work on a fresh Debian machine:
# the deps target installs the Debian and npm packages the project needs.
SHELL := /bin/bash
.DEFAULT_GOAL := build

NODE_PREFIX := $(shell node -p "require('path').resolve(process.execPath, '../..')")
CLANG ?= clang
ARCH_INC := /usr/include/$(shell uname -m)-linux-gnu
BPF_CFLAGS := -O2 -g -target bpf -Wall -Werror -Ibpf/include -Ibpf/lib -I$(ARCH_INC)
BPF_SRCS := $(wildcard bpf/*.c)
BPF_OBJS := $(patsubst bpf/%.c,build/bpf/%.bpf.o,$(BPF_SRCS))
BPF_HDRS := $(wildcard bpf/include/kbp/*.h bpf/lib/*.h)
ADDON := build/addon/Release/kbp_native.node
ADDON_SRCS := addon/CMakeLists.txt $(wildcard addon/src/*)
TS_SRCS := $(shell find src -name '*.ts' 2>/dev/null)

.PHONY: build deps bpf addon ts check test demo clean

build: deps bpf addon ts

# Debian packages (only when missing) and npm packages (only when the lock changed).
deps: .cache/deps.stamp node_modules/.package-lock.json
.cache/deps.stamp: scripts/install-deps.sh
	bash scripts/install-deps.sh
	@mkdir -p .cache && touch $@
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

bpf: $(BPF_OBJS)
build/bpf/%.bpf.o: bpf/%.c $(BPF_HDRS)
	@mkdir -p build/bpf
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# cmake-js reads Node's headers from npm's nodedir setting; point it at this
# machine's install so nothing is downloaded.
addon: $(ADDON)
$(ADDON): $(ADDON_SRCS) $(BPF_HDRS) node_modules/.package-lock.json
	npm_config_nodedir=$(NODE_PREFIX) node_modules/.bin/cmake-js compile --directory addon --out build/addon --log-level warn

ts: dist/.stamp
dist/.stamp: $(TS_SRCS) tsconfig.json node_modules/.package-lock.json
	npx tsc -p tsconfig.json
	@touch $@

# Type-check tests as well as sources.
check: deps
	npx tsc -p tsconfig.check.json

test: build check k8s-bins kustomize kbp-versions
	npx tap

# The reliability suite (test/reliability, docs/reliability.md) at full size:
# 1M fuzz packets, 30 s API server outage, 60 s endpoint churn, ... `make test`
# runs the same files shortened.
.PHONY: soak
soak: build check k8s-bins
	KBP_SOAK=1 npx tap --timeout=3600 test/reliability/*.test.ts

# The previous datapath release (ABI v1, commit 9f7111a) that test/upgrade
# upgrades from: built from git history into ~/.cache/kbp/versions once
# (scripts/kbp-version.sh, a few minutes), then reused.
.PHONY: kbp-versions
kbp-versions: deps
	@bash scripts/kbp-version.sh 9f7111a464b663286863af6787cd6c287bde20da >/dev/null

# The real control plane (tools/k8s, src/testbed/apiserver.ts). k8s-bins builds
# kube-apiserver, kube-proxy and etcd into ~/.cache/kbp once (a cold build takes
# many minutes); without Go it only warns, and the tests that need them skip.
.PHONY: k8s-bins cluster-up cluster-down
k8s-bins:
	@bash scripts/k8s-bins.sh >/dev/null || { rc=$$?; [ $$rc -eq 3 ] && echo "k8s-bins: no Go, not built; API server tests will skip"; [ $$rc -eq 3 ]; }

# kustomize (v5, from the Go module proxy into ~/.cache/kbp, ~2 min once):
# test/deploy renders deploy/ with it.
.PHONY: kustomize
kustomize:
	@bash scripts/kustomize.sh >/dev/null || { rc=$$?; [ $$rc -eq 3 ] && echo "kustomize: no Go, not built; deploy tests will skip"; [ $$rc -eq 3 ]; }

# etcd + kube-apiserver on loopback in the background; writes .cache/kubeconfig.
cluster-up: deps ts
	bash scripts/k8s-bins.sh >/dev/null
	node dist/testbed/cluster.js up

cluster-down: ts
	node dist/testbed/cluster.js down

demo: build
	node dist/testbed/demo.js

# kbp side by side with kube-proxy iptables and direct-to-pod (src/bench/compare):
# the full run writes docs/benchmarks/; bench-quick is the CI-sized one (N=100).
.PHONY: bench bench-quick
bench: build k8s-bins
	node bin/kbp.js bench compare
bench-quick: build k8s-bins
	node bin/kbp.js bench compare --quick

clean:
	rm -rf build dist .cache/deps.stamp
