package router

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/shardproxy/shardproxy/parser"
)

func mustParse(t testing.TB, sql string) *parser.Statement {
	t.Helper()
	sts, err := parser.Parse(sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return sts[0]
}

// TestPlacementAgreesWithHash checks routed shards against the hash
// function directly, for literals, parameters, arrays and INSERT rows.
func TestPlacementAgreesWithHash(t *testing.T) {
	r := New(goldenTopology(t))
	n := len(r.topo.Shards)
	for _, id := range []int64{0, 1, -1, 42, 1 << 31, -(1 << 40), 9223372036854775807, -9223372036854775808} {
		want := []int{PartitionOf(HashInt(id), n)}
		s := strconv.FormatInt(id, 10)
		for _, q := range []struct {
			sql    string
			params textParams
		}{
			{"SELECT * FROM orders WHERE user_id = " + s, nil},
			{"SELECT * FROM orders WHERE user_id = '" + s + "'", nil},
			{"SELECT * FROM orders WHERE user_id = $1", textParams{&s}},
			{"SELECT * FROM orders WHERE user_id = ANY($1)", textParams{strp("{" + s + "}")}},
			{"INSERT INTO orders (id, user_id) VALUES (1, " + s + ")", nil},
			{"SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = " + s, nil},
		} {
			p, err := r.Route(mustParse(t, q.sql), q.params)
			if err != nil {
				t.Fatalf("%s: %v", q.sql, err)
			}
			if !reflect.DeepEqual(p.Shards, want) {
				t.Errorf("%s %v: shards %v, want %v", q.sql, q.params, p.Shards, want)
			}
		}
	}
	for _, key := range []string{"", "abc", "abc ", "ünïcödé", strings.Repeat("x", 100)} {
		want := []int{PartitionOf(HashText(key), n)}
		p, err := r.Route(mustParse(t, "SELECT * FROM carts WHERE session_id = $1"), textParams{&key})
		if err != nil || !reflect.DeepEqual(p.Shards, want) {
			t.Errorf("text key %q: %v %v, want %v", key, p, err, want)
		}
	}
}

// TestSplitInsertRowsLandOnTheirShard checks every row of a split INSERT
// against the hash of its key.
func TestSplitInsertRowsLandOnTheirShard(t *testing.T) {
	r := New(goldenTopology(t))
	var rows []string
	for i := 0; i < 40; i++ {
		rows = append(rows, "("+strconv.Itoa(i)+", "+strconv.Itoa(i*7919)+")")
	}
	p, err := r.Route(mustParse(t, "INSERT INTO orders (id, user_id) VALUES "+strings.Join(rows, ", ")+" RETURNING id"), nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for i, sql := range p.SQL {
		keys, err := mustParse(t, sql).InsertKeys("user_id")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(sql, "RETURNING id") {
			t.Errorf("RETURNING lost: %s", sql)
		}
		for _, k := range keys {
			v, _ := strconv.ParseInt(k.Text, 10, 64)
			if got := PartitionOf(HashInt(v), 4); got != p.Shards[i] {
				t.Errorf("row with key %d sent to shard %d, belongs on %d", v, p.Shards[i], got)
			}
			seen++
		}
	}
	if seen != 40 {
		t.Fatalf("%d rows in the split statements, want 40", seen)
	}
}

func TestRouteWith(t *testing.T) {
	r := New(goldenTopology(t))
	cases := []struct {
		sql, session string
		shards       []int
		refuse       string
	}{
		{"SELECT * FROM orders ORDER BY id", "s2", []int{2}, ""},
		{"SELECT * FROM orders ORDER BY id", "", []int{0, 1, 2, 3}, ""},
		{"SELECT id FROM orders ORDER BY total + 1", "s2", []int{2}, ""},
		{"SELECT * FROM orders ORDER BY total + 1", "", nil, "SELECT *"},
		{"/* shard: s1 */ SELECT * FROM orders ORDER BY id", "s2", []int{1}, ""},
		{"SELECT 1", "nope", nil, "unknown shard"},
		{"UPDATE orders SET user_id = user_id + 1", "s2", nil, "shard key"},
		{"LISTEN x", "s2", nil, "LISTEN"},
		{"INSERT INTO orders (id, user_id) VALUES (1, 42)", "s2", []int{2}, ""},
		{"INSERT INTO orders (id, user_id) VALUES (1, 42)", "s3", nil, "belong on s2"},
	}
	for _, c := range cases {
		p, err := r.RouteWith(mustParse(t, c.sql), nil, RouteOptions{Shard: c.session})
		if c.refuse != "" {
			var u *Unsupported
			if !errors.As(err, &u) || !strings.Contains(u.Msg, c.refuse) || u.Hint == "" {
				t.Errorf("%s [%s]: %v %v, want refusal %q", c.sql, c.session, p, err, c.refuse)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(p.Shards, c.shards) {
			t.Errorf("%s [%s]: %v %v, want %v", c.sql, c.session, p, err, c.shards)
		}
	}
}

func TestPlanString(t *testing.T) {
	r := New(goldenTopology(t))
	p, err := r.Route(mustParse(t, "INSERT INTO orders (id, user_id) VALUES (1, 1), (2, 2)"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "shards: s0, s2\nreason: INSERT into orders split over 2 shards\nwrite: true\n" +
		"sql s0: INSERT INTO orders (id, user_id) VALUES (1, 1)\nsql s2: INSERT INTO orders (id, user_id) VALUES (2, 2)"
	if got := p.String(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// TestRouteConcurrent routes shared statements from many goroutines (run
// with -race): the memoised analysis must be safe to share.
func TestRouteConcurrent(t *testing.T) {
	r := New(goldenTopology(t))
	c := parser.NewCache(16)
	sqls := []string{
		"SELECT * FROM orders WHERE user_id = $1",
		"SELECT count(*) FROM orders o JOIN users u ON u.id = o.user_id WHERE u.id = ANY($1)",
		"INSERT INTO orders (id, user_id) VALUES (1, $1), (2, 7)",
		"SELECT 1",
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				sts, err := c.Parse(sqls[(i+g)%len(sqls)])
				if err != nil {
					t.Error(err)
					return
				}
				v := strconv.Itoa(i)
				if strings.Contains(sts[0].SQL, "ANY") {
					v = "{" + v + "}"
				}
				p, err := r.Route(sts[0], textParams{&v})
				if err != nil || len(p.Shards) == 0 {
					t.Errorf("%s: %v %v", sts[0].SQL, p, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
}
