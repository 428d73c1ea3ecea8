# embedded-ta: every task has a target here.
SHELL := /bin/bash
GO    ?= go
BIN   := $(CURDIR)/bin
OTELCOL := $(BIN)/otelcol-embedded-ta
export KUBEBUILDER_ASSETS ?= $(BIN)
# Tests of the real control plane and of real processes take minutes, not seconds.
TEST_TIMEOUT ?= 30m

SOURCES := $(shell find . -name '*.go' -not -path './build/*' -not -path './tools/*') go.mod go.sum

IMAGE ?= ghcr.io/embedded-ta/otelcol-embedded-ta:0.1.0

# Fuzz targets, as package:function; `make fuzz` runs each for FUZZTIME,
# `make test` for 10s each.
FUZZ_TARGETS := internal/allocatorapi:FuzzServeHTTP internal/allocatorapi:FuzzRelayedAnswer extension/targetallocatorextension:FuzzConfig
FUZZTIME ?= 2m

.PHONY: all build test unit chromium e2e faults bench fuzz demo otelcol kube lint generate image clean loadtest migrate

all: build

build: migrate
	$(GO) build ./...

## migrate: bin/otelcol-embedded-ta-migrate, an OpenTelemetryCollector that
## uses the operator's Target Allocator made into one with embedded-ta
## (docs/migration.md); its default -image is IMAGE
migrate:
	$(GO) build -ldflags '-X main.defaultImage=$(IMAGE)' -o $(BIN)/otelcol-embedded-ta-migrate ./cmd/otelcol-embedded-ta-migrate

## otelcol: the ocb-built distribution, bin/otelcol-embedded-ta
otelcol: $(OTELCOL)
$(OTELCOL): builder-config.yaml $(SOURCES) $(BIN)/builder
	mkdir -p build
	$(BIN)/builder --config builder-config.yaml
	cp build/otelcol-embedded-ta/otelcol-embedded-ta $@

$(BIN)/builder:
	GOBIN=$(BIN) $(GO) install go.opentelemetry.io/collector/cmd/builder@v0.165.0

## kube: the local test control plane (kube-apiserver built from the Go
## module proxy, etcd from Debian), cached in bin/
kube: $(BIN)/kube-apiserver $(BIN)/kubectl $(BIN)/etcd
$(BIN)/kube-apiserver $(BIN)/kubectl: tools/kube/go.mod tools/kube/go.sum
	cd tools/kube && $(GO) build -ldflags='-s -w' -o $@ k8s.io/kubernetes/cmd/$(notdir $@)
$(BIN)/etcd:
	command -v etcd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server; }
	mkdir -p $(BIN) && ln -sf "$$(command -v etcd)" $@

## chromium: Debian's chromium, for the status page's browser test
## (internal/status, TestPageInChromium), installed when missing; bin/chromium
chromium: $(BIN)/chromium
$(BIN)/chromium:
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	mkdir -p $(BIN) && ln -sf "$$(command -v chromium)" $@

$(BIN)/mdatagen: tools/mdatagen/go.mod tools/mdatagen/go.sum
	cd tools/mdatagen && $(GO) build -o $@ go.opentelemetry.io/collector/cmd/mdatagen

## generate: mdatagen output of every component
generate: $(BIN)/mdatagen
	PATH=$(BIN):$$PATH $(GO) generate ./...

## test: vet, format, unit and control-plane tests, then the end-to-end suite
test: kube otelcol lint unit e2e faults
	$(MAKE) fuzz FUZZTIME=10s

# EMBEDDED_TA_CHROMIUM makes the browser test fail, not skip, without a Chromium.
unit: kube chromium
	EMBEDDED_TA_CHROMIUM=$(BIN)/chromium $(GO) test -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -v /e2e)

e2e: kube otelcol
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v -skip '^TestFault' ./e2e/...

## faults: the fault suite (real processes), with a table of measured windows
faults: kube otelcol
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v -run '^TestFault' ./e2e/...

fuzz:
	@for target in $(FUZZ_TARGETS); do \
		pkg=$${target%%:*}; fn=$${target##*:}; \
		echo "fuzz $$fn in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) ./$$pkg || exit 1; \
	done

## bench: every benchmark (BENCH=<regexp> for some), run in the packages that
## have one only: no other package's TestMain (the control plane, the
## distribution) runs, so a fresh clone needs nothing built first
BENCH ?= .
BENCH_PACKAGES = $(sort $(dir $(shell grep -rl --include='*_test.go' --exclude-dir=build --exclude-dir=tools '^func Benchmark' .)))
bench:
	$(GO) test -run='^$$' -bench='$(BENCH)' -benchmem $(BENCH_PACKAGES)

## loadtest: a leader at scale, measured (not part of make test; see
## docs/performance.md): TARGETS, MEMBERS, JOBS, STEADY, LOADTEST_FLAGS
TARGETS ?= 100000
MEMBERS ?= 100
JOBS    ?= 1
STEADY  ?= 20s
LOADTEST_FLAGS ?=
loadtest:
	$(GO) build -o $(BIN)/loadtest ./cmd/loadtest
	$(BIN)/loadtest -targets=$(TARGETS) -members=$(MEMBERS) -jobs=$(JOBS) -steady=$(STEADY) $(LOADTEST_FLAGS)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt: files above need formatting'; exit 1; }
	$(GO) vet ./...

## demo: three members against a local control plane (the README says what it
## shows); Ctrl-C stops everything. It needs kube-apiserver, etcd and the
## distribution, not kubectl
demo: $(BIN)/kube-apiserver $(BIN)/etcd otelcol
	$(GO) run ./cmd/demo

## image: the container image, where a Docker engine runs
image: otelcol
	@docker info >/dev/null 2>&1 || { echo 'make image: no Docker engine here; the Dockerfile is checked by make e2e (TestImage)'; exit 1; }
	docker build -t $(IMAGE) .

clean:
	rm -rf build $(BIN)
