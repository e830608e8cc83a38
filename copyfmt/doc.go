// Package copyfmt reads the data stream of COPY ... FROM STDIN (text, CSV
// and binary formats) as Postgres 15 does, one row at a time, without caring
// where the client's CopyData messages begin and end: a quoted CSV field
// with newlines, an escaped delimiter or a row of several megabytes split
// across messages comes out as one row. For each row it finds the raw bytes
// to forward and the value of one column (the shard key), so the proxy can
// send every row to the shard that key selects. It checks what it reads
// (column counts, quoting, the end-of-copy marker, binary framing) and
// reports errors with Postgres's SQLSTATE and message; everything else
// (column types, constraints) is left to the shards.
//
// It imports nothing of the project: pure, no I/O, no logging.
package copyfmt
