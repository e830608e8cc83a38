package resultcache

import (
	"strings"
	"testing"
	"time"

	"github.com/shardproxy/shardproxy/parser"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string // "" for valid
	}{
		{"defaults", Config{}, ""},
		{"rules", Config{Rules: []Rule{{Name: "a", Tables: []string{"users", "public.orders"}, TTL: time.Second}, {Name: "b", Fingerprint: "ab", TTL: time.Minute}}}, ""},
		{"redis without addr", Config{Backend: "redis"}, "cache.redis.addr is required"},
		{"unknown backend", Config{Backend: "memcached"}, `cache.backend "memcached"`},
		{"max reply", Config{MaxReply: 1 << 20}, "cache.max_reply"},
		{"no name", Config{Rules: []Rule{{Tables: []string{"t"}, TTL: time.Second}}}, "name is required"},
		{"twice", Config{Rules: []Rule{{Name: "a", Tables: []string{"t"}, TTL: time.Second}, {Name: "a", Tables: []string{"u"}, TTL: time.Second}}}, "used twice"},
		{"both selectors", Config{Rules: []Rule{{Name: "a", Tables: []string{"t"}, Fingerprint: "x", TTL: time.Second}}}, "either fingerprint or tables"},
		{"no selector", Config{Rules: []Rule{{Name: "a", TTL: time.Second}}}, "either fingerprint or tables"},
		{"bad table", Config{Rules: []Rule{{Name: "a", Tables: []string{"a.b.c"}, TTL: time.Second}}}, "is not table or schema.table"},
		{"no ttl", Config{Rules: []Rule{{Name: "a", Tables: []string{"t"}}}}, "ttl must be positive"},
		{"refresh", Config{RefreshAhead: 1}, "refresh_ahead"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.WithDefaults().Validate()
			switch {
			case c.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	c := newCache(t, Config{Rules: []Rule{
		{Name: "fp", Fingerprint: fingerprint(t, "SELECT * FROM orders WHERE user_id = 1"), TTL: time.Second},
		{Name: "ref", Tables: []string{"users", "public.restaurants"}, TTL: time.Second},
	}})
	for sql, want := range map[string]string{
		"SELECT * FROM orders WHERE user_id = 42":                        "fp",
		"SELECT * FROM users WHERE id = 1":                               "ref",
		"SELECT * FROM users u JOIN public.restaurants r ON r.id = u.id": "ref",
		"SELECT * FROM users u JOIN orders o ON o.user_id = u.id":        "",
		"SELECT * FROM orders WHERE status = 'x'":                        "",
		"SELECT 1":                  "",
		"SELECT * FROM other.users": "",
	} {
		sts, err := parser.Parse(sql)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if r := c.Match(sts[0]); r != nil {
			got = r.Name
		}
		if got != want {
			t.Errorf("Match(%q) = %q, want %q", sql, got, want)
		}
	}
}

func fingerprint(t *testing.T, sql string) string {
	fp, err := parser.Fingerprint(sql)
	if err != nil {
		t.Fatal(err)
	}
	return fp
}
