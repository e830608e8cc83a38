// Package mongo applies the sharding layout of the config file to a MongoDB
// sharded cluster, through a mongos: the database, each collection's shard
// key, the indexes to keep, and zones that mirror the Postgres date ranges.
//
// The work is split so that the decisions are pure and tested apart from
// the wire:
//
//   - Config (the `mongo:` section) is resolved against the router topology
//     into a Layout; zones may be copied from a router range table.
//   - Read asks the cluster what exists (hello, config.databases,
//     config.collections, listCollections, listIndexes, listShards,
//     config.tags). It changes nothing.
//   - NewPlan compares the Layout with that State and returns the commands
//     still needed, what already matches, and conflicts. It does no I/O.
//   - Apply runs a Plan's commands in order. It runs none of them when the
//     plan has conflicts, and it stops at the first conflict the server
//     reports (codes 23, 85, 86, 178), so a conflict never leaves half a layout.
//
// Everything is idempotent: a second run on a cluster that already matches
// sends only reads. A collection sharded on another key, or an index whose
// name or key is taken by a different spec, is reported, never changed:
// resharding and index rebuilds are for an operator to decide.
//
// Command is the `partman mongo plan|apply` command line.
package mongo
