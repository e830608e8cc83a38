package router

import (
	"fmt"
	"testing"

	"github.com/shardproxy/shardproxy/parser"
)

// BenchmarkParseRouteMiss is the simple-protocol worst case: every query
// text is new (pgbench -S -M simple), so it is parsed and routed each time.
func BenchmarkParseRouteMiss(b *testing.B) {
	r := testRouter(&testing.T{})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		sts, err := parser.Parse(fmt.Sprintf("SELECT abalance FROM orders WHERE user_id = %d", i))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := r.Route(sts[0], nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseOnly(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := parser.Parse(fmt.Sprintf("SELECT abalance FROM orders WHERE user_id = %d", i)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRouteCached(b *testing.B) {
	r := testRouter(&testing.T{})
	sts, _ := parser.Parse("SELECT abalance FROM orders WHERE user_id = 42")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := r.Route(sts[0], nil); err != nil {
			b.Fatal(err)
		}
	}
}
