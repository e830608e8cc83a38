// Package replication holds end-to-end tests of shards with streaming
// replicas: real primaries and replicas started with localpg
// (pg_basebackup -R), reads balanced over the replicas, lag, stopped
// replicas, read-your-writes and failover to a promoted replica. Under
// CI=true nothing here skips.
package replication
