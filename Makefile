# pullgate: `make help` lists the targets. Nothing here rewrites tracked files except `update-golden`.
SHELL := /usr/bin/env bash
# The Go that builds, tests and lints: go1.26.8's standard library has 12 known vulnerabilities
# (net/http, crypto/tls, crypto/x509, html/template) fixed in later releases. The go command
# fetches this release from the module proxy on first use (76 MB, seconds); go.mod still says
# go 1.26, the language version the code is written for.
export GOTOOLCHAIN := go1.27.3
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN := bin/webhook
TOOLS := $(or $(PULLGATE_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pullgate)/tools

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the static webhook binary into bin/webhook.
	GO="$(GO)" ./hack/build.sh $(BIN) $(VERSION)

.PHONY: run
run: build ## Offline demo: mutate the example pod with the example policy against a local registry.
	$(GO) run ./hack/demo $(BIN)

.PHONY: test
# pkg/resolve's tests run Distribution v3 as a real pull-through mirror (built once, cached).
test: export PULLGATE_REGISTRY_V3 = $(shell ./hack/registry-v3.sh)
test: deps ## Unit, integration and chart tests (race detector on), both modules.
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	cd test && $(GO) vet ./... && $(GO) test -race -count=1 ./...

.PHONY: deps
deps: ## Install the Debian packages the tests run as real servers (docker-registry), if missing.
	./hack/deps.sh test

.PHONY: e2e
e2e: build ## End-to-end suite on a real kube-apiserver + etcd and real registries.
	./hack/e2e.sh

.PHONY: node-bench
node-bench: build ## Pod start on a real node (needs root): remote vs pullgate + mirror cold/warm vs pre-pulled (ARGS=-smoke, -size 1GiB, -bandwidth 100, -rtt 30ms).
	./hack/node-bench.sh $(ARGS)

.PHONY: audit-bench
audit-bench: build ## Reports at scale on the API-server bed: 10,000 pods, 300 images; audit and controller scans timed, RSS, report sizes, registry lookups (ARGS=-pods 1000 -images 50).
	cd test && $(GO) run ./auditbench $(ARGS)

.PHONY: bench
bench: ## Go benchmarks with allocation figures.
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/... ./internal/... ./cmd/...

.PHONY: loadtest
loadtest: build ## Load test over HTTPS against a local registry, with the floor (ARGS=-smoke for a short run).
	./hack/loadtest.sh $(ARGS)

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME seconds each (default 60).
	./hack/fuzz.sh $(or $(FUZZTIME),60)

.PHONY: lint
lint: ## gofmt, go vet, golangci-lint, govulncheck (tools installed into ~/.cache/pullgate/tools).
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt needed: $$out"; exit 1; }
	$(GO) vet ./...
	cd test && $(GO) vet ./...
	./hack/lint.sh

.PHONY: helm-lint
helm-lint: ## helm lint + helm template with default and example values.
	./hack/helm-lint.sh

.PHONY: image
image: ## Assemble the OCI image without Docker (IMAGE=host/repo:tag to push).
	./hack/image.sh

.PHONY: update-golden
update-golden: ## Regenerate golden patch files.
	$(GO) test ./pkg/mutate/... -update
