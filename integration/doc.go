// Package integration holds end-to-end tests: real Postgres shards started
// with localpg, shardproxy served in-process, and real clients (psql, pgx,
// pgbench) talking to it. Under CI=true nothing here skips.
package integration
