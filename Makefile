# The two commands of the README: `make demo` and `make test`. Both install
# what they need first (Debian packages via apt-get, Go modules).
GO ?= go
PKGS_DEBIAN := keepalived haproxy wrk chromium clang llvm libbpf-dev nftables conntrack frr tshark tcpdump arping iproute2 iputils-ping prometheus
# Fuzz budgets count executions, not seconds: with a duration, Go 1.26's
# fuzz coordinator can report "context deadline exceeded" at the deadline
# without any failing input (go.dev/issue/75804, fixed in Go 1.27).
FUZZTIME ?= 100000x

.PHONY: all build man deps k8s-tools demo test vet fuzz reliability reliability-short bench-failover bench-proxy bench-maglev bench-xdp bench-dsr bench-bgp bench-kube bench-lbsvc generate generated-check

all: build man

# What vigil version prints: the tag (or commit) described, the commit, and
# the build date (SOURCE_DATE_EPOCH's when set, for reproducible builds).
# Outside a git checkout the first two stay empty and vigil version falls
# back to the Go build info.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
BUILD_DATE ?= $(shell date -u $(if $(SOURCE_DATE_EPOCH),-d @$(SOURCE_DATE_EPOCH)) +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -X main.buildVersion=$(VERSION) -X main.buildCommit=$(COMMIT) -X main.buildDate=$(BUILD_DATE)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/vigil ./cmd/vigil

# man writes the man pages (section 8) of vigil and every command into
# bin/man, generated from the command tree (cobra/doc); not committed.
man: build
	./bin/vigil man bin/man

# deps installs the real peers the tests run against, when missing.
deps:
	@missing=""; for p in $(PKGS_DEBIAN); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(GO) mod download

# k8s-tools builds the test kube-apiserver and etcd from Go modules (tools/k8s,
# a module of its own), ~6 min the first time, then cached by go.sum hash.
k8s-tools:
	GO=$(GO) tools/k8s/build.sh

demo: build
	./bin/vigil demo

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

# fuzz runs every fuzz target briefly; the seed corpora also run in `go test`.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzUnmarshal$$' -fuzztime $(FUZZTIME) ./internal/vrrp
	$(GO) test -run '^$$' -fuzz '^FuzzParseFrame$$' -fuzztime $(FUZZTIME) ./internal/garp
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/config
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/proxyproto
	$(GO) test -run '^$$' -fuzz '^FuzzKeepalived$$' -fuzztime $(FUZZTIME) ./internal/importer
	$(GO) test -run '^$$' -fuzz '^FuzzHAProxy$$' -fuzztime $(FUZZTIME) ./internal/importer
	$(GO) test -run '^$$' -fuzz '^FuzzCurlScript$$' -fuzztime $(FUZZTIME) ./internal/importer
	$(GO) test -run '^$$' -fuzz '^FuzzMetalLB$$' -fuzztime $(FUZZTIME) ./internal/importer
	$(GO) test -run '^$$' -fuzz '^FuzzParseGenlAnswer$$' -fuzztime $(FUZZTIME) ./internal/xdp
	$(GO) test -run '^$$' -fuzz '^FuzzUnmarshal$$' -fuzztime $(FUZZTIME) ./internal/bfd

# Fuzzing first, so the test run's summary closes the output.
# VIGIL_REQUIRE_K8S turns a missing API server into a failure, not a skip;
# VIGIL_REQUIRE_TOOLS the same for promtool (Debian package prometheus).
test: deps k8s-tools vet generated-check fuzz
	VIGIL_REQUIRE_K8S=1 VIGIL_REQUIRE_TOOLS=1 $(GO) test -race -count=1 -timeout 45m ./...

# reliability runs the fault, abuse and bad-input suite in namespace labs
# (VRRP wire abuse, a flood of our VRID at rising rates, split brains,
# crash loops, reloads under load, every fuzz target for FUZZ_EXECS
# executions) and rewrites its table in docs/reliability.md. Not part of
# `make test`: the labs take ~5 minutes, 10 M executions of the slowest
# fuzz targets (~2,000/s on 2 cores) hours; FUZZ_EXECS=100000 keeps the
# whole run near 10 minutes. reliability-short is the same with small
# counts (~3 minutes), for CI.
FUZZ_EXECS ?= 10000000
reliability: deps
	$(GO) run ./bench/reliability -fuzz-execs $(FUZZ_EXECS) -out docs/reliability.md

reliability-short: deps
	$(GO) run ./bench/reliability -short -out docs/reliability.md

# bench-failover measures vigil against keepalived and rewrites its table in docs/benchmarks.md.
bench-failover: deps
	$(GO) run ./bench/failover -rounds 20 -out docs/benchmarks.md

# bench-proxy measures vigil's L4 balancer against HAProxy and rewrites its table in docs/benchmarks.md.
bench-proxy: deps
	$(GO) run ./bench/proxy -out docs/benchmarks.md

# bench-maglev times the Maglev table build against the paper's algorithm and rewrites its table in docs/benchmarks.md.
bench-maglev:
	$(GO) test -count=1 -run '^TestBenchTable$$' ./internal/maglev -bench-table $(CURDIR)/docs/benchmarks.md

# bench-xdp times the XDP program per packet against a MAC-swap baseline and rewrites its table in docs/benchmarks.md.
bench-xdp:
	$(GO) test -count=1 -run '^TestBenchTable$$' ./internal/xdp -bench-table $(CURDIR)/docs/benchmarks.md

# bench-kube times a Node added / deleted until its backend is in / out of vigil's rotation, through a real kube-apiserver, and rewrites its table in docs/benchmarks.md.
bench-kube: k8s-tools
	$(GO) run ./bench/kube -rounds 20 -out docs/benchmarks.md

# bench-lbsvc times LoadBalancer Services through a real kube-apiserver and three vigil nodes: created until in status and answered, a node's vigil killed until its addresses answer elsewhere, and 1,000 Services (time, memory, ARP at rest); rewrites its table in docs/benchmarks.md.
bench-lbsvc: k8s-tools
	$(GO) run ./bench/lbsvc -rounds 50 -out docs/benchmarks.md

# generate rebuilds the bpf2go pairs (Go bindings and object, needs clang):
# the daemon's internal/xdp/dsr_bpfel.{go,o} and the lab's
# internal/xdp/xdplab/lab_bpfel.{go,o} (tests and bench drivers only).
generate:
	cd internal/xdp && $(GO) generate ./...

# generated-check regenerates them and fails if the committed ones differ,
# or if a generated pair is not committed at all (git diff misses those).
generated-check: generate
	git diff --exit-code -- internal/xdp
	@untracked="$$(git ls-files --others --exclude-standard -- ':(glob)internal/xdp/**/*_bpfel.*')"; \
	if [ -n "$$untracked" ]; then echo "generated but not committed:"; echo "$$untracked"; exit 1; fi

# bench-dsr measures packets per second through the XDP DSR balancer against nftables DNAT and rewrites its table in docs/benchmarks.md.
bench-dsr: deps
	$(GO) run ./bench/dsr -out docs/benchmarks.md

# bench-bgp times BGP withdrawal and return against FRR over 20 rounds, and a node's cable cut until the router drops it with BFD (FRR's bfdd) and without (hold time), and rewrites its table in docs/benchmarks.md.
bench-bgp: deps
	$(GO) test -count=1 -run '^TestBGPBenchTable$$' ./internal/e2e -bgp-bench-table $(CURDIR)/docs/benchmarks.md
