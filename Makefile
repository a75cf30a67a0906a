# natstx: build, demo, test, lint. Everything it needs comes from go.mod and
# the Go module proxy. `make test PKGS=./cmd/natstx` tests one package.
GO            ?= go
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TEST_TIMEOUT  ?= 20m
BIN           := bin/natstx

.PHONY: build demo test lint fuzz bench clean

build:
	$(GO) build -o $(BIN) ./cmd/natstx
	@echo "built $(BIN); run it as ./$(BIN), or 'go install ./cmd/natstx' to have natstx on PATH ($$($(GO) env GOPATH)/bin)"

demo: build
	./$(BIN) demo

# The test suite CI runs: vet and lint, the JavaScript SDK's tests, every
# Go benchmark once (bench-smoke), then every test with the race
# detector (fuzz seed corpora run as plain tests), through gotestsum (pinned
# by go.mod's tool directive): one line per test as it ends, prefixed with its
# package, so a long run shows where it is; a failed test's output in full;
# then the counts tests report for the record (the fault tests'
# transactions, committed, aborted, in doubt and violations, the security
# acceptance test's attempts and refusals), which that format would hide
# with the rest of a passing test's output: they append them to
# $NATSTX_TEST_COUNTS (report.Counts, package integration/report); and,
# last, the one-line summary "N passed, N failed, N skipped" (failed counts
# failed tests and packages that did not build or run).
TEST_FORMAT ?= testname
TEST_COUNTS ?= $(or $(TMPDIR),/tmp)/natstx-test-counts.$(shell id -u)
test: lint test-js bench-smoke
	@rm -f $(TEST_COUNTS)
	NATSTX_TEST_COUNTS=$(TEST_COUNTS) $(GO) tool gotestsum --format $(TEST_FORMAT) --format-hide-empty-pkg \
	  --post-run-command 'sh -c "cat $(TEST_COUNTS) 2>/dev/null; rm -f $(TEST_COUNTS); echo $$((TESTS_TOTAL - TESTS_FAILED - TESTS_SKIPPED)) passed, $$((TESTS_FAILED + TESTS_ERRORS)) failed, $$TESTS_SKIPPED skipped"' \
	  -- -race -count=1 -timeout $(TEST_TIMEOUT) $(or $(PKGS),./...)

# The JavaScript participant SDK (participants/js): its npm packages from the
# committed package-lock.json, then its own tests (node's test runner, against
# a natstx binary built from this tree). Node.js 20 or later.
NPM ?= npm
.PHONY: test-js
test-js:
	$(NPM) ci --prefix participants/js --no-audit --no-fund
	$(NPM) test --prefix participants/js

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Fuzz the wire decoders for a while (FUZZTIME each).
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./messages -run '^$$' -fuzz FuzzDecodeCommand -fuzztime $(FUZZTIME)
	$(GO) test ./messages -run '^$$' -fuzz FuzzDecodeReply -fuzztime $(FUZZTIME)
	$(GO) test ./messages -run '^$$' -fuzz FuzzDecodeBatch -fuzztime $(FUZZTIME)

# Every Go benchmark once, as a test that they still run (a benchmark that
# hangs or fails is caught here, not when its figures are next needed).
.PHONY: bench-smoke
bench-smoke:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 5m ./...

# Go benchmarks of the engine end to end over embedded NATS.
bench:
	$(GO) test ./orchestrator -run '^$$' -bench . -benchtime 5s

clean:
	rm -rf bin

# Deterministic simulation of the engine and the participant SDK, their own
# code (docs/SIMULATION.md): SEEDS seeds from FIRST, TX transactions each;
# prints the totals. Replay one seed with the command a failure prints. About
# 1.3 ms of one core per transaction: 10,000,000 take hours (SIM_TIMEOUT).
SEEDS ?= 2000
FIRST ?= 1
TX    ?= 200
SIM_TIMEOUT ?= 24h
.PHONY: sim
sim:
	$(GO) test ./orchestrator/dst -run 'TestSimulation$$' -count=1 -v -timeout $(SIM_TIMEOUT) \
	  -dst.seeds=$(SEEDS) -dst.first=$(FIRST) -dst.tx=$(TX)

# Chaos soak on real processes (integration/chaos_test.go): NATS, two
# coordinators and four service processes killed, paused, slowed down and
# made flaky on a seeded schedule for CHAOS_DURATION, then audited. CHAOS_SEED
# replays a schedule (empty: a new one, printed).
CHAOS_DURATION ?= 5m
CHAOS_SEED     ?=
.PHONY: chaos
chaos:
	NATSTX_CHAOS_DURATION=$(CHAOS_DURATION) NATSTX_CHAOS_SEED=$(CHAOS_SEED) \
	  $(GO) test ./integration -run 'TestChaos$$' -count=1 -v -timeout 180m
