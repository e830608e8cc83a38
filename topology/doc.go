// Package topology keeps the bucket map in Postgres, versioned, in the
// shardproxy_meta schema of a metadata database: every proxy loads it at
// start, watches it (LISTEN/NOTIFY on shardproxy_topology plus polling),
// switches its router to a new version atomically and writes the version
// it serves in a heartbeat row (shardproxy_meta.proxies). A cutover
// (package reshard) sets a fence that holds writes to the moving shards,
// publishes the next version and waits until every live proxy serves it.
//
// Without a metadata section the proxy routes by the config's map alone.
package topology
