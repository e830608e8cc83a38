// Package parser analyses SQL with the real PostgreSQL parser (pg_query_go)
// and exports the proxy's own view of a statement: its kind, the tables it
// names, routing hints from comments, the rows of an INSERT, the shape of a
// SELECT, and AST rewrites deparsed back to SQL. It knows SQL, not shards,
// and it is the only package that imports pg_query_go.
//
// Analyse resolves a statement into query levels (Scope: the statement,
// set-operation branches, subqueries, CTE bodies), table occurrences, the
// equalities that link occurrences (join conditions, correlations, IN
// subqueries), and the filter of each level, from which Restriction reads
// what is known about one column. Names resolve as Postgres resolves them:
// CTE names shadow tables where they are visible, qualified names find the
// nearest level with that FROM item, and unqualified names only the shard
// keys the caller names (the one column a table is known to have).
//
// Statements are immutable and shared through Cache, a bounded LRU keyed by
// query text. Consumers keep derived data with a statement through Memo,
// so that a cache hit is not analysed again.
package parser
