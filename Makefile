# Outpost — build, run and test. Every target installs what it needs itself.

GO        ?= go
BIN       := bin/outpost
TOOLS     := $(CURDIR)/.tools/bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X github.com/outpost-registry/outpost/internal/version.Version=$(VERSION) \
             -X github.com/outpost-registry/outpost/internal/version.Commit=$(COMMIT)
STATICCHECK_VERSION := v0.8.2

# make run: one node on 127.0.0.1:8080, data in ./data. Override with ARGS="--addr … --data …".
RUN_ARGS ?= --addr 127.0.0.1:8080 --data ./data

.PHONY: all build run test unit e2e lint fmt-check vet staticcheck bench fuzz tools clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/outpost

run: build
	./$(BIN) serve $(RUN_ARGS) $(ARGS)

# The whole test suite, as CI runs it: lint, unit tests (with the race detector), end-to-end tests
# of the real binary.
test: lint unit e2e

unit:
	$(GO) test -race -count=1 -timeout 10m ./internal/... ./pkg/... ./cmd/...

e2e: build
	OUTPOST_E2E_BINARY=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 12m ./test/...

lint: fmt-check vet staticcheck

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck: $(TOOLS)/staticcheck
	$(TOOLS)/staticcheck ./...

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

tools: $(TOOLS)/staticcheck

# Short fuzzing runs of every parser (FUZZTIME per target).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/duration
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) ./internal/config

clean:
	rm -rf bin dist .tools
