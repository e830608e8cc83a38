// Package fanout combines the answers of several shards into the one answer
// a single Postgres would give. This version holds the pieces the proxy's
// scatter path uses: summing command tags and combining one row of plain
// aggregates (count, sum, min, max) per shard. Everything is pure: the proxy
// owns the connections and feeds values in.
package fanout
