// Package router owns the topology (shards, tables and how their rows are
// placed) and turns an analysed statement into a Plan: which shards run it,
// with what SQL, and what merge the answer needs. It refuses, with an
// *Unsupported error, every statement it cannot answer exactly as one
// Postgres would. Routing is pure: no I/O, safe for concurrent use.
package router
