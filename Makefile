# pgjet — see README.md.
GO      ?= go
BIN     ?= bin
PKGS    := ./...

.PHONY: all build test unit demo bench soak fuzz vet deps clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/pgjet-capture ./cmd/pgjet-apply ./cmd/pgjet

# deps checks (and on Debian installs) what the tests need besides Go
# modules: the Postgres 15 server binaries and its client tools.
deps:
	@./.ci/deps

vet:
	$(GO) vet $(PKGS)

# test runs every test, including the fuzz corpora of the decoders and the
# end-to-end tests against real Postgres and NATS. It takes well under 25
# minutes on 2 cores; the timeout only stops a hung run, with room for a
# machine busy with other work.
test: deps vet
	$(GO) test -count=1 -timeout 40m $(PKGS)

# unit runs, in seconds, every test that needs no server: all packages but
# the end-to-end tests and deploy/local, less the few tests of other
# packages that start Postgres or NATS (UNIT_SKIP). deploy/local refuses to
# start a server under PGJET_TEST_NO_SERVERS, so a new such test fails here
# with a line saying to add it to UNIT_SKIP.
UNIT_PKGS = $(shell $(GO) list ./... | grep -v -e /cmd/e2e$$ -e /deploy/local$$)
UNIT_SKIP = ^(TestPolicy_Decisions|TestMigrate|TestApplied_Read|TestSeekLSN|TestSeekTime|TestEnsureStream|TestTail_PasswordNotShown|TestLastOwnMessageFromZero)$$
unit:
	PGJET_TEST_NO_SERVERS=1 $(GO) test -count=1 -timeout 5m -skip '$(UNIT_SKIP)' $(UNIT_PKGS)

# demo runs the whole multi-region pipeline on this machine for a minute.
demo: build
	$(BIN)/pgjet demo --duration 60s

# bench drains the same pgbench backlog through native logical replication
# and through pgjet, and prints both times and the ratio.
bench: deps build
	$(BIN)/pgjet bench

# soak runs the torture test (cmd/e2e/torture_test.go) for DURATION: a
# seeded random workload with faults, checked against the primary at
# quiescent points. make test runs three minutes of it. Replay a failed run
# with SEED=<the seed it printed>. It also kills KILLS nodes of a three-node
# NATS cluster in turn under load (cmd/e2e/cluster_test.go); make test kills
# three, one of each role.
DURATION ?= 30m
SEED     ?=
KILLS    ?= 10
soak: deps
	PGJET_CLUSTER_KILLS=$(KILLS) $(GO) test -count=1 -timeout 0 -v -run 'TestCluster_KillNode$$' ./cmd/e2e/
	PGJET_TORTURE_DURATION=$(DURATION) PGJET_TORTURE_SEED=$(SEED) $(GO) test -count=1 -timeout 0 -v -run 'TestTorture$$' ./cmd/e2e/

fuzz:
	$(GO) test -run XXX -fuzz FuzzDecode -fuzztime 60s ./stream/
	$(GO) test -run XXX -fuzz '^FuzzRedact$$' -fuzztime 60s ./schema/pgerr/
	$(GO) test -run XXX -fuzz FuzzRedactURL -fuzztime 60s ./stream/

clean:
	rm -rf $(BIN)
