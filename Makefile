# Outpost — build, run and test. Every target installs what it needs itself.

GO        ?= go
BIN       := bin/outpost
TOOLS     := $(CURDIR)/.tools/bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X github.com/outpost-registry/outpost/internal/version.Version=$(VERSION) \
             -X github.com/outpost-registry/outpost/internal/version.Commit=$(COMMIT)
STATICCHECK_VERSION := v0.8.2
HELM_VERSION := v3.22.0
HELM := $(TOOLS)/helm

# make run: one node on 127.0.0.1:8080, data in ./data. Override with ARGS="--addr … --data …".
RUN_ARGS ?= --addr 127.0.0.1:8080 --data ./data

.PHONY: all build run test unit e2e lint fmt-check vet staticcheck bench fuzz tools test-deps clean image dist

all: build

# The legacy deflate helpers are a module of their own, built once per older klauspost/compress
# release they pin (cmd/outpost-legacy-deflate: go.mod, and another -modfile for each other
# release, "modfile:binary"); the node finds them beside its binary.
LEGACY         := cmd/outpost-legacy-deflate
LEGACY_MODS    := go.mod:outpost-legacy-deflate klauspost1.15.mod:outpost-legacy-deflate-klauspost1.15

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/outpost
	@set -e; for m in $(LEGACY_MODS); do echo "$(GO) build -modfile=$${m%%:*} -> bin/$${m#*:}"; \
		(cd $(LEGACY) && CGO_ENABLED=0 $(GO) build -modfile=$${m%%:*} -trimpath -ldflags '-s -w' -o $(CURDIR)/bin/$${m#*:} .); done

# make dist: static release binaries for the platforms edge devices run, with their sha256 sums:
# dist/outpost-linux-amd64, dist/outpost-linux-arm64, dist/outpost-linux-armv7, dist/sha256sums,
# and the legacy deflate helpers for each (install them beside outpost as outpost-legacy-deflate
# and outpost-legacy-deflate-klauspost1.15).
DIST_PLATFORMS := linux/amd64 linux/arm64 linux/arm/v7
dist:
	@rm -rf dist && mkdir -p dist
	@set -e; for p in $(DIST_PLATFORMS); do \
		os=$${p%%/*}; rest=$${p#*/}; arch=$${rest%%/*}; variant=""; \
		case "$$rest" in */*) variant=$${rest#*/};; esac; \
		out=dist/outpost-$$os-$$arch$$variant; \
		echo "$(GO) build $$p -> $$out"; \
		GOOS=$$os GOARCH=$$arch GOARM=$${variant#v} CGO_ENABLED=0 \
			$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$out ./cmd/outpost; \
		for m in $(LEGACY_MODS); do (cd $(LEGACY) && GOOS=$$os GOARCH=$$arch GOARM=$${variant#v} CGO_ENABLED=0 \
			$(GO) build -modfile=$${m%%:*} -trimpath -ldflags '-s -w' -o $(CURDIR)/dist/$${m#*:}-$$os-$$arch$$variant .); done; \
	done
	cd dist && sha256sum outpost-* > sha256sums && cat sha256sums

# make image: the container image (Dockerfile) as $(IMAGE), where a Docker engine runs. Set
# DOCKER_HOST for another engine; IMAGE_LICENSES for the org.opencontainers.image.licenses label.
IMAGE          ?= outpost:$(VERSION)
IMAGE_SOURCE   ?= https://github.com/outpost-registry/outpost
IMAGE_LICENSES ?= NOASSERTION
DOCKER         ?= docker
image:
	@command -v $(DOCKER) >/dev/null 2>&1 || { echo "make image: no '$(DOCKER)' command here: install a Docker engine (apt-get install docker.io) or set DOCKER=" >&2; exit 1; }
	@$(DOCKER) info >/dev/null 2>&1 || { echo "make image: no Docker engine answers$${DOCKER_HOST:+ at $$DOCKER_HOST} ($(DOCKER) info failed): start dockerd or set DOCKER_HOST" >&2; exit 1; }
	$(DOCKER) build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) \
		--build-arg SOURCE=$(IMAGE_SOURCE) --build-arg LICENSES=$(IMAGE_LICENSES) -t $(IMAGE) .

run: build
	./$(BIN) serve $(RUN_ARGS) $(ARGS)

# The whole test suite, as CI runs it: lint, unit tests (with the race detector), end-to-end tests
# of the real binary, helm lint. scripts/test.sh runs them in that order, and installs what the
# end-to-end tests need beside the steps that leave room for it.
test:
	@MAKE="$(MAKE)" bash scripts/test.sh

# Every step but the race detector's builds the way the release binary is built, with cgo off and
# -trimpath: vet, staticcheck, the binary, the codecs' and the end-to-end tests and the amd64
# cross-compile then share one compilation of the dependencies, which costs 80 s of a fresh
# machine's two cores each time. The race detector needs cgo, and compiles everything its own way.
RELEASE_FLAGS := CGO_ENABLED=0 GOFLAGS="$${GOFLAGS:-} -trimpath"

# The delta codecs spend minutes on real Go builds and layers, where the race detector costs five to
# ten times as much (exediff 267 s against 25, tardelta 113 s against 26): they run in full without
# it, and under it only the tests that drive their goroutines (CODEC_RACE_TESTS). Their callers'
# tests (delta, sync) run them under it too.
CODEC_PKGS       := ./internal/delta/exediff ./internal/delta/tardelta
CODEC_RACE_TESTS := ^(TestPredictParallel|TestDeterministic|TestEncodeWriteError)$$

# The tests run without go test's own vet checks: make lint vets every package and its tests
# already, and vetting the race build again costs a fresh machine 40 CPU-seconds.
GOTEST := $(GO) test -vet=off

# go test starts packages in the order it is given them. The slowest go first, so that they do not
# end the run on one core: in alphabetical order, sync (100 s) started after delta ended, and the
# race run took 386 s instead of 304.
SLOW_PKGS := ./internal/delta ./internal/sync ./internal/delta/recipe ./internal/delta/pflate

unit:
	$(GOTEST) -race -count=1 -timeout 10m $$($(GO) list $(SLOW_PKGS)) $$($(GO) list ./internal/... ./pkg/... ./cmd/... | grep -v -x -F "$$($(GO) list $(CODEC_PKGS) $(SLOW_PKGS))")
	$(RELEASE_FLAGS) $(GOTEST) -count=1 -timeout 10m $(CODEC_PKGS)
	$(GOTEST) -race -count=1 -timeout 10m -run '$(CODEC_RACE_TESTS)' $(CODEC_PKGS)
	@set -e; for m in $(LEGACY_MODS); do (cd $(LEGACY) && $(GOTEST) -race -count=1 -modfile=$${m%%:*} ./...); done

# End-to-end tests: e2e-binary runs the real binary and checks the deployment files (test/...),
# e2e-helm renders the chart with helm (test/deploy's TestHelm*), which make test builds meanwhile.
.PHONY: e2e-binary e2e-helm
e2e: test-deps e2e-binary e2e-helm

e2e-binary: build
	OUTPOST_E2E_BINARY=$(CURDIR)/$(BIN) $(RELEASE_FLAGS) $(GOTEST) -count=1 -timeout 12m -skip '^TestHelm' ./test/...

e2e-helm: $(HELM)
	HELM=$(HELM) $(RELEASE_FLAGS) $(GOTEST) -count=1 -timeout 5m -run '^TestHelm' ./test/deploy

# What the end-to-end tests run besides Go: nginx, from the distribution's packages, only when it is
# missing. Never fails: without it the nginx test skips and says why.
test-deps:
	@bash scripts/install-test-deps.sh

lint: fmt-check vet staticcheck

fmt-check:
	@out=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

vet:
	$(RELEASE_FLAGS) $(GO) vet ./...
	@set -e; for m in $(LEGACY_MODS); do (cd $(LEGACY) && $(RELEASE_FLAGS) $(GO) vet -modfile=$${m%%:*} ./...); done

staticcheck: $(TOOLS)/staticcheck
	$(RELEASE_FLAGS) $(TOOLS)/staticcheck ./...
	cd $(LEGACY) && $(RELEASE_FLAGS) $(TOOLS)/staticcheck ./...

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

tools: $(TOOLS)/staticcheck

# Helm, for the chart in deploy/helm/outpost: installed once into .tools/bin.
.PHONY: helm helm-test
helm: $(HELM)

# helm only renders and lints one chart: built without optimisation and with the release flags
# (sharing their standard library), it takes 190 CPU-seconds of a fresh machine instead of 260.
$(HELM):
	GOBIN=$(TOOLS) $(RELEASE_FLAGS) $(GO) install -gcflags=all='-N -l' -ldflags='-s -w' helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

# helm lint of the chart; `make e2e` runs test/deploy, which renders it with helm template and
# checks the wiring.
helm-test: $(HELM)
	$(HELM) lint --strict deploy/helm/outpost

# Benchmark, not part of `make test`: Outpost against a plain distribution registry built from the
# same distribution version (test/bench/tools/go.mod, a module of its own so that cmd/registry's
# cloud storage drivers stay out of go.mod). Pulls, manifest GETs and blob HEADs on loopback, a few
# minutes. BENCH_ARGS passes flags to test/bench, e.g. BENCH_ARGS="-rounds 3 -v".
DIST_BIN := bin/distribution-registry
bench: build
	cd test/bench/tools && CGO_ENABLED=0 $(GO) build -trimpath -o $(CURDIR)/$(DIST_BIN) github.com/distribution/distribution/v3/cmd/registry
	$(GO) run ./test/bench -outpost $(BIN) -distribution $(DIST_BIN) $(BENCH_ARGS)

# Sync benchmark (issue 3), not part of `make test`: a 256 MiB image synced over a simulated
# 4 MiB/s, 100 ms link that drops for 3 s every 20 s, by an Outpost child and by a distribution
# pull-through cache with a retrying client, and by an Outpost child killed -9 at 70%. Wall time
# and bytes over the link; about 10 minutes, bounded at 12. SYNCBENCH_ARGS passes flags to
# test/bench/syncbench, e.g. SYNCBENCH_ARGS="-scenarios outpost,kill -workdir /tmp/syncbench".
SYNCBENCH_DIST_BIN := bin/distribution-registry
.PHONY: bench-sync
bench-sync: build
	cd test/bench/tools && CGO_ENABLED=0 $(GO) build -trimpath -o $(CURDIR)/$(SYNCBENCH_DIST_BIN) github.com/distribution/distribution/v3/cmd/registry
	$(GO) run ./test/bench/syncbench -outpost $(BIN) -distribution $(SYNCBENCH_DIST_BIN) $(SYNCBENCH_ARGS)

# Short fuzzing runs of every parser (FUZZTIME per target).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/duration
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) ./internal/config
	$(GO) test -run '^$$' -fuzz '^FuzzMirrorRewrite$$' -fuzztime $(FUZZTIME) ./internal/registry
	$(GO) test -run '^$$' -fuzz '^FuzzSplitPaths$$' -fuzztime $(FUZZTIME) ./internal/registry
	$(GO) test -run '^$$' -fuzz '^FuzzCovers$$' -fuzztime $(FUZZTIME) ./internal/repopattern
	$(GO) test -run '^$$' -fuzz '^FuzzParseConnectionString$$' -fuzztime $(FUZZTIME) ./pkg/acrapi
	$(GO) test -run '^$$' -fuzz '^FuzzAuthenticate$$' -fuzztime $(FUZZTIME) ./internal/auth
	$(GO) test -run '^$$' -fuzz '^FuzzWalk$$' -fuzztime $(FUZZTIME) ./internal/delta/pflate
	$(GO) test -run '^$$' -fuzz '^FuzzGzipHeader$$' -fuzztime $(FUZZTIME) ./internal/delta/recipe
	$(GO) test -run '^$$' -fuzz '^FuzzZstdWalker$$' -fuzztime $(FUZZTIME) ./internal/delta/recipe
	$(GO) test -run '^$$' -fuzz '^FuzzParseRecipe$$' -fuzztime $(FUZZTIME) ./internal/delta/recipe
	$(GO) test -run '^$$' -fuzz '^FuzzDetect$$' -fuzztime $(FUZZTIME) ./internal/delta/recipe
	$(GO) test -run '^$$' -fuzz '^FuzzApply$$' -fuzztime $(FUZZTIME) ./internal/delta/tardelta
	$(GO) test -run '^$$' -fuzz '^FuzzApply$$' -fuzztime $(FUZZTIME) ./internal/delta/bsdiff
	$(GO) test -run '^$$' -fuzz '^FuzzApply$$' -fuzztime $(FUZZTIME) ./internal/delta/exediff
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeX86$$' -fuzztime $(FUZZTIME) ./internal/delta/exediff
	$(GO) test -run '^$$' -fuzz '^FuzzApplyCompressed$$' -fuzztime $(FUZZTIME) ./internal/delta/exediff
	$(GO) test -run '^$$' -fuzz '^FuzzDwarf$$' -fuzztime $(FUZZTIME) ./internal/delta/exediff
	$(GO) test -run '^$$' -fuzz '^FuzzRoundTrip$$' -fuzztime $(FUZZTIME) ./internal/delta/bsdiff

clean:
	rm -rf bin dist .tools

# Delta sync benchmark (issue 7), not part of `make test`: a debootstrap'ed Debian bookworm and
# its next security update, two releases of Outpost, two npm trees, compressed as Docker/BuildKit,
# crane and podman do, synced by an Outpost child with sync.delta false and true through a
# byte-counting loopback link; prints a Markdown table for docs/performance.md. Run as root
# (debootstrap). Images are built once into $TMPDIR/outpost-deltabench-cache. About 6 minutes
# (plus 2–4 the first time). DELTABENCH_ARGS passes flags, e.g. DELTABENCH_ARGS="-quick -out delta.md";
# -scenarios large-first,large-update (not in the default run) measures a 945 MiB-tar layer.
.PHONY: bench-delta
bench-delta: build
	$(GO) run ./test/bench/deltabench -outpost $(BIN) $(DELTABENCH_ARGS)
