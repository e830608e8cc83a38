// Package reshard moves buckets between shards while the application
// writes: plan (the target map), start (schema onto the targets, then a
// publication with a satisfies_hash_partition row filter per move on the
// source and a subscription on the target: initial copy and catch-up by
// logical replication), status, cutover (writes to the sources held at
// every proxy, in-flight transactions drained, each subscription caught up
// to the source's WAL position, the new map published and acknowledged by
// every live proxy), verify (per-bucket counts and checksums, source
// against target), cleanup (streams dropped, moved rows deleted from the
// sources in batches) and abort. Its state lives in the metadata schema
// (package topology), so every step can be rerun after a crash.
package reshard
