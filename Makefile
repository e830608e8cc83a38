# shardproxy: see README.md.
GO      ?= go
PKGS    := ./...
export CGO_ENABLED := 1

.PHONY: all build test demo bench lint deps clean

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

# make demo TLS=1: TLS required from clients and used to the shards.
demo: build
	@scripts/deps.sh --server-only
	./bin/shardproxy demo $(if $(TLS),-tls)

bench: build
	@scripts/deps.sh --server-only
	$(GO) test -run '^$$' -bench . -benchmem ./router/... ./parser/... ./fanout/...
	scripts/bench.sh
	$(GO) run ./scripts/mergebench

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

clean:
	rm -rf bin .demo
