package coordinator

import (
	"strings"
	"testing"
	"time"

	"github.com/shardproxy/shardproxy/router"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		err  string // substring; empty means valid
	}{
		{"absent", Config{}, ""},
		{"dsn alone means fallback", Config{DSN: "postgres://u@h/db"}, ""},
		{"off with dsn", Config{DSN: "postgres://u@h/db", Mode: Off}, ""},
		{"fallback without dsn", Config{Mode: Fallback}, "needs a dsn"},
		{"unknown mode", Config{DSN: "postgres://u@h/db", Mode: "always"}, `mode "always"`},
		{"bad dsn", Config{DSN: "postgres://u@h:notaport/db"}, "dsn"},
		{"negative pool", Config{DSN: "postgres://u@h/db", PoolSize: -1}, "pool_size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.WithDefaults().Validate()
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one about %q", err, tc.err)
			}
		})
	}
	c := Config{DSN: "postgres://u@h/db"}.WithDefaults()
	if !c.Enabled() || c.Mode != Fallback || c.PoolSize != 4 || c.FetchSize != 10000 || !*c.RemoteEstimate {
		t.Fatalf("defaults: %+v", c)
	}
	if (Config{DSN: "postgres://u@h/db", Mode: Off}).WithDefaults().Enabled() || (Config{}).WithDefaults().Enabled() {
		t.Fatal("off or absent must not be enabled")
	}
}

func TestStringHidesPassword(t *testing.T) {
	s := Config{DSN: "postgres://u:secret@h:5433/db"}.WithDefaults().String()
	if strings.Contains(s, "secret") || !strings.Contains(s, "u@h:5433/db") || !strings.HasPrefix(s, "fallback") {
		t.Fatalf("String() = %q", s)
	}
}

func TestBound(t *testing.T) {
	at := time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		tb   router.Table
		t    time.Time
		want string
	}{
		{router.Table{}, at, "'2025-07-01 00:00:00+00'"},
		{router.Table{}, at.Add(1500 * time.Microsecond), "'2025-07-01 00:00:00.0015+00'"},
		{router.Table{KeyLocal: true}, at, "'2025-07-01 00:00:00'"},
		{router.Table{KeyLocal: true, KeyDate: true}, at, "'2025-07-01'"},
		{router.Table{}, time.Time{}, "MINVALUE"},
	} {
		if got := bound(tc.t, &tc.tb, "MINVALUE"); got != tc.want {
			t.Errorf("bound(%v, %+v) = %s, want %s", tc.t, tc.tb, got, tc.want)
		}
	}
}

func TestQuoting(t *testing.T) {
	if got := options([][2]string{{"password", "it's"}, {"dbname", `we"ird`}}); got != `"password" 'it''s', "dbname" 'we"ird'` {
		t.Errorf("options: %s", got)
	}
	if got := ident(partName("public", "orders", "s0", -1)); got != `"public.orders@s0"` {
		t.Errorf("partition name: %s", got)
	}
	if got := partName("public", "events", "s1", 2); got != "public.events@s1#2" {
		t.Errorf("range partition name: %s", got)
	}
}
