# shardproxy: see README.md.
GO      ?= go
PKGS    := ./...
export CGO_ENABLED := 1

.PHONY: all build test stress stress-reshard demo bench bench-coord lint deps clean compat

all: build

build:
	$(GO) build -o bin/shardproxy ./cmd/shardproxy
	@if [ -d cmd/partman ] && ls cmd/partman/*.go >/dev/null 2>&1; then $(GO) build -o bin/partman ./cmd/partman; fi

# deps installs what a fresh Debian machine lacks: PostgreSQL server binaries,
# and the client libraries the integration tests drive (psycopg, JDBC, node-postgres).
deps:
	@scripts/deps.sh

test: deps
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 30m $(PKGS)
	# every benchmark of these packages once, so that none rots unseen
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x ./proxy/ ./router/... ./parser/... ./fanout/...

# stress runs the long randomized suites: 3000 two-phase-commit crash points
# and 1000 differential transaction scripts per protocol.
stress: deps
	SHARDPROXY_CRASH_POINTS=3000 SHARDPROXY_TX_SCRIPTS=1000 $(GO) test -count=1 -timeout 120m \
		-run 'TestTwoPhaseCrashRecovery|TestTransactionScriptsMatchPostgres' -v ./integration/
	$(MAKE) stress-reshard

# stress-reshard: 2 -> 4 shards with 200k rows under load, then the tool
# stopped at every crash point of start, cutover and cleanup and resumed
# (docs/resharding.md).
# The measurement at scale (docs/benchmarks.md, "4 x 1M rows"):
# SHARDPROXY_RESHARD_ROWS=4000000 SHARDPROXY_RESHARD_RATE=500 go test -count=1 \
#   -timeout 60m -run 'TestReshardTwoToFour$' -v ./reshard/
# (ROWS >= 100k loads by COPY through the proxy; RATE paces the inserts per
# second, updates at a tenth, logs the slots' lag and skips the abort run.)
stress-reshard: deps
	SHARDPROXY_RESHARD_ROWS=200000 $(GO) test -count=1 -timeout 30m -run 'TestReshardTwoToFour' -v ./reshard/
	SHARDPROXY_RESHARD_CRASH=all SHARDPROXY_RESHARD_ROWS=20000 $(GO) test -tags stress -count=1 -timeout 30m -run 'TestReshardCrashResume' -v ./reshard/

# make demo TLS=1: TLS required from clients and used to the shards.
demo: build
	@scripts/deps.sh --server-only
	./bin/shardproxy demo $(if $(REPLICAS),-replicas) $(if $(TLS),-tls)

bench: build
	@scripts/deps.sh --server-only
	$(GO) test -run '^$$' -bench . -benchmem ./router/... ./parser/... ./fanout/... ./resultcache/...
	scripts/bench.sh
	$(GO) run ./scripts/mergebench -coord=false
	$(GO) run ./scripts/twopcbench
	$(GO) run ./scripts/copybench
	$(GO) run ./scripts/pgbenchcmp -replicas 2 -modes simple,extended -clients 8 -T 5 -rounds 1 -tls=false
	# pgbench -S over TLS: proxy CPU per transaction with and without client TLS (docs/benchmarks.md)
	$(GO) run ./scripts/pgbenchcmp -modes simple,prepared -clients 8 -T 5 -rounds 1
	$(GO) run ./scripts/failoverbench
	@command -v redis-server >/dev/null 2>&1 || scripts/deps.sh
	$(GO) run ./scripts/cachebench -client pgbench

# bench-coord: the coordinator's reads (non-key join, percentile, global
# window, grouped subquery) through the proxy vs one plain Postgres holding
# all 4 x 1M rows (docs/benchmarks.md; 10-15 minutes on a loaded machine).
bench-coord: build
	@scripts/deps.sh --server-only
	$(GO) run ./scripts/mergebench -match '^(join|percentile|global|grouped)' -stream=false

# compat runs PostgreSQL 15's own regression suite (pg_regress, the
# `make installcheck` schedule) through shardproxy: sp1 = one shard, sp4 =
# four shards, no sharded tables. Not part of `make test` (several minutes,
# as root). COMPAT="sp1 sp4 pgb-tx pgb-session direct" adds the baselines
# (PgBouncer targets need `apt-get install pgbouncer`). Score and failure
# classes: $(COMPAT_RESULTS)/summary.md; see docs/compatibility.md.
COMPAT         ?= sp1 sp4
COMPAT_RESULTS ?= /tmp/pgregress/results
compat:
	RESULTS=$(COMPAT_RESULTS) SHARDPROXY_SRC=$(CURDIR) scripts/pgregress/run.sh $(COMPAT)
	@cat $(COMPAT_RESULTS)/summary.md

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

clean:
	rm -rf bin .demo
