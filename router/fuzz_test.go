package router

import (
	"errors"
	"strings"
	"testing"

	"github.com/shardproxy/shardproxy/parser"
)

// fuzzTables are FROM clauses the relaxation property is checked over.
var fuzzTables = []string{
	"orders",
	"orders o JOIN users u ON u.id = o.user_id",
	"users u LEFT JOIN orders o ON o.user_id = u.id",
	"events",
	"carts",
	"orders o JOIN restaurants r ON r.id = o.restaurant_id",
	"(SELECT * FROM orders WHERE total > 0) o",
	"users u LEFT JOIN (SELECT * FROM orders) o ON o.user_id = u.id",
}

// FuzzRoute checks that routing never panics, and that relaxing a filter
// never loses shards: the rows of WHERE (a) are rows of WHERE (a) OR (b),
// and the rows of WHERE (a) AND (b) are rows of WHERE (a).
func FuzzRoute(f *testing.F) {
	seeds := [][2]string{
		{"user_id = 1", "user_id = 2"},
		{"o.user_id = 1", "u.id = 9"},
		{"user_id IN (1, 2, 3)", "status = 'x'"},
		{"user_id = ANY('{1,2}')", "user_id = 5"},
		{"user_id = 1 AND user_id = 2", "user_id = 3"},
		{"u.id = 5", "o.user_id = 5"},
		{"created_at >= '2025-02-01+00' AND created_at < '2025-03-01+00'", "created_at > '2026-01-01'"},
		{"created_at BETWEEN '2025-01-01' AND '2025-02-01'", "kind = 'x'"},
		{"created_at = '2025-06-30 20:00'", "created_at < '2024-01-01+00'"},
		{"session_id = 'abc'", "session_id IN ('d', 'e')"},
		{"NOT (user_id = 1)", "user_id = 1"},
		{"user_id IN (SELECT id FROM users WHERE id = 5)", "user_id = 7"},
		{"user_id = $1", "user_id = 3"},
		{"user_id = NULL", "user_id = 4"},
		{"r.id = 3 AND o.user_id = 4", "o.user_id = 8"},
	}
	for i, s := range seeds {
		f.Add(s[0], s[1], uint8(i), "42")
	}
	r := New(goldenTopology(f))
	f.Fuzz(func(t *testing.T, a, b string, table uint8, param string) {
		if strings.ContainsAny(a+b, ";") {
			return
		}
		from := fuzzTables[int(table)%len(fuzzTables)]
		params := textParams{&param}
		route := func(where string) (*Plan, bool) {
			sts, err := parser.Parse("SELECT * FROM " + from + " WHERE " + where)
			if err != nil || len(sts) != 1 {
				return nil, false
			}
			p, err := r.Route(sts[0], params)
			if err != nil {
				var u *Unsupported
				if !errors.As(err, &u) {
					t.Fatalf("%s: non-refusal error %v", where, err)
				}
				return nil, false
			}
			return p, true
		}
		pa, okA := route("(" + a + ")")
		por, okOr := route("(" + a + ") OR (" + b + ")")
		pand, okAnd := route("(" + a + ") AND (" + b + ")")
		if okA && okOr && !pa.NoRows && !subset(pa.Shards, por.Shards) {
			t.Fatalf("FROM %s: WHERE (%s) -> %v but OR (%s) -> %v (%s)", from, a, pa.Shards, b, por.Shards, por.Reason)
		}
		if okA && okAnd && !pand.NoRows && !subset(pand.Shards, pa.Shards) {
			t.Fatalf("FROM %s: WHERE (%s) -> %v but AND (%s) -> %v (%s)", from, a, pa.Shards, b, pand.Shards, pand.Reason)
		}
		// Arbitrary text must not panic either.
		if sts, err := parser.Parse(a); err == nil {
			for _, st := range sts {
				r.Route(st, params)
				r.RouteWith(st, nil, RouteOptions{Shard: "s1"})
			}
		}
	})
}

func subset(a, b []int) bool {
	for _, x := range a {
		found := false
		for _, y := range b {
			found = found || x == y
		}
		if !found {
			return false
		}
	}
	return true
}
