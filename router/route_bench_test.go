package router

import (
	"strconv"
	"testing"

	"github.com/shardproxy/shardproxy/parser"
)

const (
	benchShort = "SELECT id, status, total FROM orders WHERE user_id = $1"
	benchLong  = `SELECT o.id, o.status, o.total, o.created_at, u.name, u.email, r.name AS restaurant,
       (SELECT count(*) FROM order_items i WHERE i.user_id = o.user_id AND i.order_id = o.id) AS items,
       (SELECT sum(i.price * i.quantity) FROM order_items i WHERE i.user_id = o.user_id AND i.order_id = o.id) AS amount
  FROM orders o
  JOIN users u ON u.id = o.user_id
  LEFT JOIN restaurants r ON r.id = o.restaurant_id
 WHERE o.user_id = $1
   AND o.status IN ('new', 'paid', 'cooking', 'delivering')
   AND o.created_at >= $2 AND o.created_at < $3
   AND EXISTS (SELECT 1 FROM order_items i WHERE i.user_id = o.user_id AND i.price > 0)
   AND (o.total > 10 OR r.rating >= 4.5 OR u.city = 'Lisbon')
 ORDER BY o.created_at DESC
 LIMIT 50`
)

var benchParams = textParams{strp("42"), strp("2025-01-01 00:00:00+00"), strp("2025-02-01 00:00:00+00")}

func strp(s string) *string { return &s }

// BenchmarkRoute measures parse+analyse+route. hit: the statement comes
// from the parse cache and its routing analysis is memoised on it. miss:
// every iteration parses and analyses from scratch.
func BenchmarkRoute(b *testing.B) {
	r := New(goldenTopology(b))
	for _, q := range []struct{ name, sql string }{{"short", benchShort}, {"long", benchLong}} {
		b.Run("hit/"+q.name, func(b *testing.B) {
			c := parser.NewCache(1024)
			if _, err := c.Parse(q.sql); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				sts, err := c.Parse(q.sql)
				if err != nil {
					b.Fatal(err)
				}
				p, err := r.Route(sts[0], benchParams)
				if err != nil || !p.Single() {
					b.Fatal(p, err)
				}
			}
		})
		b.Run("miss/"+q.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				sts, err := parser.Parse(q.sql)
				if err != nil {
					b.Fatal(err)
				}
				p, err := r.Route(sts[0], benchParams)
				if err != nil || !p.Single() {
					b.Fatal(p, err)
				}
			}
		})
	}
	b.Run("hit/constant", func(b *testing.B) {
		sql := "SELECT * FROM orders WHERE user_id = 42"
		c := parser.NewCache(1024)
		c.Parse(sql)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			sts, _ := c.Parse(sql)
			if _, err := r.Route(sts[0], nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cache/evicting", func(b *testing.B) {
		// A working set ten times the cache: mostly misses.
		c := parser.NewCache(100)
		sqls := make([]string, 1000)
		for i := range sqls {
			sqls[i] = "SELECT * FROM orders WHERE user_id = " + strconv.Itoa(i)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			sts, _ := c.Parse(sqls[i%len(sqls)])
			if _, err := r.Route(sts[0], nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
