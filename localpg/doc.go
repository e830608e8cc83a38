// Package localpg starts and stops real, throwaway PostgreSQL clusters on
// loopback ports with initdb and pg_ctl. It is the one harness behind the
// integration tests, the benchmarks and `shardproxy demo`. A set can also
// hold streaming replicas of its clusters (Set.StartReplica, with
// pg_basebackup -R), which tests promote (Cluster.Promote), stop and kill.
//
// When the process runs as root (as CI does) the clusters run as the
// "postgres" OS user through runuser, in data directories that user owns,
// because Postgres refuses to start as root.
package localpg
