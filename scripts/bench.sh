#!/usr/bin/env bash
# End-to-end benchmark: pgbench -S directly, through shardproxy and through
# PgBouncer (when installed), interleaved. Extra flags go to pgbenchcmp
# (e.g. scripts/bench.sh -clients 8 -T 5).
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./scripts/pgbenchcmp "$@"
