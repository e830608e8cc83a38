// Package partman keeps range-partitioned tables ahead of their data on
// every shard, in the spirit of pg_partman but anchored on the clock rather
// than on the newest row.
//
// For each configured table it reads the partitions that exist (with their
// actual bounds, from pg_get_expr(relpartbound)), plans what to create,
// detach or drop with the pure function PlanTable, and applies the plan on
// every shard in parallel. A failing shard fails only itself.
//
// Safety rules, each one a lesson from pg_partman's issue tracker:
//   - premake is counted from now (UTC), not from max(data);
//   - a partition is created as a standalone table (CREATE TABLE ... LIKE
//     parent) and then attached, so queries on other months keep running
//     (ATTACH takes SHARE UPDATE EXCLUSIVE on the parent, CREATE ... PARTITION
//     OF takes ACCESS EXCLUSIVE);
//   - every DDL transaction sets lock_timeout and is retried a few times, so
//     maintenance never queues for long behind a long transaction;
//   - bounds are written as literals with an explicit +00 offset and read
//     back with their offset, so the session TimeZone never shifts them;
//   - idempotency compares actual bounds, not names: a table with the
//     expected name but other bounds is reported, never silently skipped;
//   - a session advisory lock per table lets two concurrent runs coexist:
//     the loser reports the lock and succeeds;
//   - a shard in recovery (a read replica) is skipped;
//   - rows already in the DEFAULT partition for a period about to be
//     created are moved into the new partition in the same transaction,
//     before ATTACH (see docs/partman.md).
//
// partman imports router for the shard list and pgx for Postgres; it never
// imports proxy, and it does not export metrics itself: Runner.Run returns a
// Report that the caller (cmd/partman or the proxy's loop) prints or exports.
package partman
