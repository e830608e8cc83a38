package router

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shardproxy/shardproxy/parser"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ with the current output")

// goldenTopology is the topology of the golden cases: the delivery app's
// tables plus a text-keyed table, a date-keyed range table and a
// schema-qualified one.
func goldenTopology(t testing.TB) *Topology {
	t.Helper()
	cfg := &Config{
		Shards: []ShardConfig{{Name: "s0", DSN: "x"}, {Name: "s1", DSN: "x"}, {Name: "s2", DSN: "x"}, {Name: "s3", DSN: "x"}},
		Tables: map[string]TableConfig{
			"users":            {Strategy: Hash, Key: "id"},
			"orders":           {Strategy: Hash, Key: "user_id"},
			"order_items":      {Strategy: Hash, Key: "user_id"},
			"restaurants":      {Strategy: Reference},
			"cities":           {Strategy: Reference},
			"carts":            {Strategy: Hash, Key: "session_id", KeyType: "text"},
			"billing.invoices": {Strategy: Hash, Key: "user_id"},
			"events": {Strategy: Range, Key: "created_at", Ranges: []RangeConfig{
				{To: "2025-01-01", Shard: "s0"}, {From: "2025-01-01", To: "2025-07-01", Shard: "s1"},
				{From: "2025-07-01", To: "2026-01-01", Shard: "s2"}, {From: "2026-01-01", Shard: "s3"}}},
			"daily": {Strategy: Range, Key: "day", KeyType: "date", Ranges: []RangeConfig{
				{To: "2025-01-01", Shard: "s0"}, {From: "2025-01-01", To: "2025-07-01", Shard: "s1"},
				{From: "2025-07-01", To: "2026-01-01", Shard: "s2"}, {From: "2026-01-01", Shard: "s3"}}},
		},
		DefaultShard: "s1",
	}
	topo, err := NewTopology(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

// textParams are bind parameters in text format; nil entries are NULL.
type textParams []*string

func (p textParams) Text(n int) (string, bool, bool) {
	if n < 1 || n > len(p) {
		return "", false, false
	}
	if p[n-1] == nil {
		return "", true, true
	}
	return *p[n-1], false, true
}

// goldenCase is one block of a golden file:
//
//	route [session=s2] [params=v1|v2|NULL]   (params last: values may hold spaces)
//	SQL, one or more lines
//	----
//	expected output
type goldenCase struct {
	line    int
	header  string
	sql     string
	params  textParams
	session string
	want    string
}

func readGolden(t *testing.T, path string) (cases []goldenCase, comments map[int][]string) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	comments = map[int][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	for i := 0; i < len(lines); {
		l := lines[i]
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			comments[len(cases)] = append(comments[len(cases)], l)
			i++
			continue
		}
		if !strings.HasPrefix(l, "route") {
			t.Fatalf("%s:%d: want a route directive, got %q", path, i+1, l)
		}
		c := goldenCase{line: i + 1, header: l}
		head := l
		if k := strings.Index(l, " params="); k >= 0 {
			// params run to the end of the line: values may hold spaces.
			for _, p := range strings.Split(l[k+len(" params="):], "|") {
				if p == "NULL" {
					c.params = append(c.params, nil)
				} else {
					p := p
					c.params = append(c.params, &p)
				}
			}
			head = l[:k]
		}
		for _, arg := range strings.Fields(head)[1:] {
			k, v, _ := strings.Cut(arg, "=")
			switch k {
			case "session":
				c.session = v
			default:
				t.Fatalf("%s:%d: unknown argument %q", path, i+1, arg)
			}
		}
		i++
		var sql []string
		for ; i < len(lines) && lines[i] != "----"; i++ {
			sql = append(sql, lines[i])
		}
		i++
		var want []string
		for ; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			want = append(want, lines[i])
		}
		c.sql, c.want = strings.Join(sql, "\n"), strings.Join(want, "\n")
		cases = append(cases, c)
	}
	return cases, comments
}

// routeText renders the routing of each statement of sql.
func routeText(r *Router, sql string, params Params, session string) string {
	sts, err := parser.Parse(sql)
	if err != nil {
		return "error: " + err.Error()
	}
	var out []string
	for _, st := range sts {
		p, err := r.RouteWith(st, params, RouteOptions{Shard: session})
		var u *Unsupported
		switch {
		case errors.As(err, &u):
			out = append(out, "refused 0A000: "+u.Msg+"\nhint: "+u.Hint)
		case err != nil:
			out = append(out, "error: "+err.Error())
		default:
			out = append(out, p.String())
		}
	}
	return strings.Join(out, "\n--\n")
}

func TestGolden(t *testing.T) {
	topo := goldenTopology(t)
	files, _ := filepath.Glob("testdata/*.route")
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	total := 0
	for _, path := range files {
		cases, comments := readGolden(t, path)
		total += len(cases)
		var b strings.Builder
		for i, c := range cases {
			for _, l := range comments[i] {
				b.WriteString(l + "\n")
			}
			// A fresh router per case: round-robin picks do not depend on
			// the order of cases.
			got := routeText(goldenRouter(topo), c.sql, c.params, c.session)
			if !*update && got != c.want {
				t.Errorf("%s:%d: %s\n got:\n%s\nwant:\n%s", path, c.line, c.sql, got, c.want)
			}
			fmt.Fprintf(&b, "%s\n%s\n----\n%s\n", c.header, c.sql, got)
		}
		for _, l := range comments[len(cases)] {
			b.WriteString(l + "\n")
		}
		if *update {
			if err := os.WriteFile(path, []byte(strings.TrimRight(b.String(), "\n")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%d golden statements", total)
}

// goldenRouter is a router over topo that knows the column order of the
// oracle test's tables (integration/oracle_test.go creates them so), as a
// proxy reads it from its shards.
func goldenRouter(topo *Topology) *Router {
	r := New(topo)
	r.SetColumnOrder(map[string][]string{
		"users":       {"id", "name", "email", "city", "created_at"},
		"orders":      {"id", "user_id", "restaurant_id", "total", "status", "created_at", "note"},
		"order_items": {"id", "order_id", "user_id", "name", "quantity", "price"},
		"carts":       {"session_id", "item"},
		"events":      {"id", "user_id", "kind", "payload", "created_at"},
		"daily":       {"day", "n"},
	})
	return r
}
