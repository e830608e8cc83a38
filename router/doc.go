// Package router owns the topology (shards, tables and how their rows are
// placed) and turns an analysed statement into a Plan: which shards run it,
// with what SQL, and what merge the answer needs. It refuses, with an
// *Unsupported error (SQLSTATE 0A000), every statement it cannot answer
// exactly as one Postgres would, and never routes to fewer shards than the
// rows can be on. Routing is pure: no I/O, no logging, safe for concurrent
// use.
//
// The parameter-independent part of routing a statement (its analysis, the
// co-located components of its sharded tables and their key restrictions)
// is compiled once per statement and Router and memoised on the statement;
// Route then only evaluates bound parameters. The rules are in
// docs/routing.md; router/testdata/*.route are the golden cases.
package router
