# oncesync — every entry point of the project.
#
#   make demo            the whole pipeline end to end on the emulators (DUPLICATES=1: every message twice, 2 s apart)
#   make test            unit, emulator and end-to-end tests, plus the offline terraform checks
#   make chaos           the chaos/property suite (CHAOS_CHECKS=N, CHAOS_SEED=S, CHAOS_RUN=regexp, CHAOS_FLAGS=...)
#   make proof           the protocol's model checked with spin, and two deliveries' interleavings on the real code
#   make interleavings   every class of interleavings of two deliveries for every fault (INTERLEAVINGS=bounded: one preemption; every: no reduction)
#   make fuzz            every go test -fuzz target for FUZZTIME each (default 20s); their seed corpora run in make test too
#   make bench           the benchmark; writes docs/bench/REPORT.md
#   make source-files    rewrite the functions' zip list (terraform/source-files.json) from go list -deps
#   make ci              what .ci/run runs: test, fuzz, then chaos with the seed of the commit

GO        ?= go
BIN       := bin/oncesync
OPS       := bin/oncesync-ops
EMU       := $(BIN) emulators --
PKGS       = $(shell $(GO) list ./... | grep -v -e /harness/chaos -e /harness/proof)
RECORDS   ?= 20000
DUPLICATES ?=
CHAOS_CHECKS ?= 0
CHAOS_SEED   ?= 0
CHAOS_RUN    ?= ^TestChaos|^TestMutant|^TestIncident|^TestInterleavings|^TestModelTrails
INTERLEAVINGS ?= all
CHAOS_FLAGS  ?=
FUZZTIME     ?= 20s

.PHONY: setup build demo test lint chaos proof interleavings fuzz bench ci source-files

setup:
	@bash harness/scripts/setup.sh

build:
	$(GO) build -o $(BIN) ./harness/cmd/oncesync
	$(GO) build -o $(OPS) ./shared/ops/cmd/oncesync-ops

demo: setup build
	$(BIN) demo --records $(RECORDS) $(if $(DUPLICATES),--duplicates)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	terraform fmt -check -recursive terraform

test: setup build lint
	$(EMU) $(GO) test -count=1 -timeout 30m $(PKGS)
	$(PROOF)

# The key protocol's model (harness/proof/keys.pml) checked exhaustively with spin, and each mutated
# model refuted; prints the state counts. make proof also runs CI's set of interleavings of two
# deliveries on the real code and the replay of a model trail (harness/chaos; make chaos runs them too).
PROOF = $(GO) test -count=1 -timeout 20m -v ./harness/proof
proof: setup build
	$(PROOF)
	$(EMU) $(GO) test -count=1 -timeout 60m -run '^TestInterleavings|^TestModelTrails' -v ./harness/chaos

# Every class of interleavings of two deliveries, for every crash point and lease expiry (hours;
# INTERLEAVINGS=bounded: with one preemption, about 17 minutes).
interleavings: setup build
	$(EMU) $(GO) test -count=1 -timeout 24h -run '^TestInterleavings$$' -v ./harness/chaos -chaos.interleavings=$(INTERLEAVINGS)

chaos: setup build
	$(EMU) $(GO) test -count=1 -timeout 80m -run '$(CHAOS_RUN)' ./harness/chaos \
		-chaos.checks=$(CHAOS_CHECKS) -chaos.seed=$(CHAOS_SEED) -v $(CHAOS_FLAGS)

# Every Fuzz function of every package, found in the sources (a new target needs no entry here).
# A failing input is written to the package's testdata/fuzz/<Target>/: fix it, and commit it.
# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline exceeded" when
# -fuzztime ends while a starved worker is mid-input (golang/go#75804, fixed in Go 1.27): with no
# failing input written, that is not a finding, and the target passes; anything else fails.
fuzz:
	@set -e; out=$$(mktemp); trap 'rm -f $$out' EXIT; \
	for f in $$(grep -rl --include='*_test.go' '^func Fuzz' functions shared harness); do \
		for fn in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "fuzz ./$$(dirname $$f) $$fn for $(FUZZTIME)"; \
			if $(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) ./$$(dirname $$f) >$$out 2>&1; then cat $$out; else \
				cat $$out; \
				if grep -q 'context deadline exceeded' $$out && ! grep -q 'Failing input written' $$out && \
					[ "$$(grep -c -- '--- FAIL' $$out)" = 1 ]; then \
					echo "fuzz: $$fn stopped at the fuzztime deadline with no failing input (golang/go#75804): not a finding"; \
				else exit 1; fi; \
			fi; \
		done; \
	done

# The functions' zip lists exactly what `go list -deps .` builds (terraform/source-files.json); a
# change to what the functions import rewrites it here, and the drift test fails until it does.
source-files:
	$(GO) test -count=1 -run '^TestSourceFilesAreWhatTheFunctionsBuild$$' ./terraform -update-source-files

bench: setup build
	$(BIN) bench --out docs/bench

# CI's chaos seed comes from the commit (see .ci/run): the same commit always runs the same cases.
COMMIT_SEED = $(shell printf %d 0x$$(git rev-parse --short=15 HEAD))

ci: test fuzz
	$(MAKE) chaos CHAOS_SEED=$(COMMIT_SEED)
