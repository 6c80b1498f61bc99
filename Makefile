# firehose — the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := bin/firehose
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# Fuzz time per target in `make test` (short); `make fuzz` runs longer.
FUZZTIME ?= 5s

.PHONY: all build demo test helm unit vet fuzz faults campaign soak services testtools bench screenshots clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/firehose

services:
	scripts/services.sh ensure

# Ensure PostgreSQL and Redis, create the database, build, start the stack, send readings
# from a fleet of MQTT devices at QoS 1 and from HTTP clients, report for each what was
# acknowledged and what landed, stop cleanly (cmd/firehose/demo.go).
demo: services build
	scripts/services.sh createdb firehose
	$(BIN) demo

# Everything CI runs: formatting, vet, the whole test suite with the race detector
# (integration tests against the real PostgreSQL and Redis), and short fuzz runs.
test: services testtools vet
	$(GO) test -race -count=1 -timeout 15m ./...
	$(MAKE) helm
	scripts/fuzz.sh $(FUZZTIME)

# Best effort: Chromium (the simulator report test) and mosquitto-clients (the broker interop
# test), installed when absent and running as root on Debian; otherwise those tests skip.
testtools:
	scripts/testtools.sh ensure

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on: $$out"; exit 1; fi
	$(GO) vet ./...
	cd deploy/helm && $(GO) vet ./...

# The Helm chart (deploy/helm/firehose) rendered for a few value sets with Helm's Go SDK, every
# object decoded strictly into the Kubernetes API types, each process's flags, environment and
# configuration file checked against the binary (docs/helm.md). Its own Go module: Helm's and
# Kubernetes' dependencies stay out of firehose's go.mod.
helm:
	cd deploy/helm && $(GO) test -count=1 -timeout 10m ./...

# The pictures of the web console's pages in docs/ (docs/console.md), taken by its browser tests
# in Debian's headless Chromium: each test saves its page once it shows what the test asserts.
screenshots: services testtools
	FIREHOSE_SCREENSHOTS=$(CURDIR)/docs/img CI=true $(GO) test -count=1 -run 'InChromium' ./cmd/firehose

# Unit tests only: no services needed.
unit:
	$(GO) test -short -count=1 ./...

fuzz:
	scripts/fuzz.sh 60s

# The long form of the fault suite (faults/): kills, outages, backpressure, bad input,
# poison, auth, each under load; prints the table kept in RELIABILITY.md.
faults:
	scripts/faults.sh long

# The seeded fault campaign (faults/campaign_test.go, RELIABILITY.md "The campaign"):
# `make campaign SEED=N` replays one seed (a failure file names it); without SEED the long
# form, CAMPAIGN_SEEDS seeds (20) of CAMPAIGN_OPS operations (1,500), and its table.
# Every workload class runs by default; CAMPAIGN_CLASSES=a,b picks some.
campaign:
	SEED=$(SEED) CAMPAIGN_SEEDS=$(CAMPAIGN_SEEDS) CAMPAIGN_OPS=$(CAMPAIGN_OPS) CAMPAIGN_CLASSES=$(CAMPAIGN_CLASSES) \
	  CAMPAIGN_FAULTS=$(CAMPAIGN_FAULTS) scripts/campaign.sh

# The soak (faults/soak_test.go; not in make test): 2,000 MQTT devices with persistent
# sessions leaving and returning in waves, plus HTTP load, for 10 minutes, the memory of
# every process sampled each second; prints the row for RELIABILITY.md.
# SOAK_DURATION=1m for a short one; scripts/soak.sh lists the other knobs.
soak:
	scripts/soak.sh

# The standard load scenarios with firehose simulate against a fresh stack (its own Redis
# and database), 3 rounds each, with CPU per reading of every process (about 25 minutes);
# DURATION=10s ROUNDS=1 for a short one. Tables go to BENCHMARKS.md.
bench: build
	scripts/bench.sh

clean:
	rm -rf bin
