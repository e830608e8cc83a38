// Package parser analyses SQL with the real PostgreSQL parser (pg_query_go)
// and exports the proxy's own view of a statement: its kind, the tables it
// names, predicates on given columns, the rows of an INSERT, the shape of a
// SELECT, and AST rewrites deparsed back to SQL. It knows SQL, not shards,
// and it is the only package that imports pg_query_go.
package parser
