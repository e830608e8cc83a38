// Package coordinator owns the coordinator database: one ordinary Postgres
// database where every table of the cluster is visible through
// postgres_fdw, so that Postgres itself can plan and run the reads the
// proxy's streaming merge cannot answer exactly.
//
// Because the router's hash is Postgres's own hash partitioning, a hash
// sharded table is a partitioned table PARTITION BY HASH (key) whose
// partition MODULUS N REMAINDER i is a foreign table on shard i; a range
// sharded table is PARTITION BY RANGE (key) with one foreign partition per
// configured interval; reference tables and tables not in the config are
// one foreign table on the default shard. Column definitions come from the
// default shard's catalog (IMPORT FOREIGN SCHEMA into a staging schema,
// then CREATE TABLE ... (LIKE staged)).
//
// Provision builds or rebuilds all of it in one transaction that holds a
// transaction-level advisory lock, so several proxies sharing one
// coordinator serialise and each leaves a complete picture. The objects it
// owns carry the comment "shardproxy coordinator" (tables) or the name
// prefix shardproxy_ (foreign servers, schemas); everything else in the
// database is left alone, and a table of the same name that is not the
// proxy's is an error, never dropped.
package coordinator
