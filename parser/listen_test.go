package parser

import (
	"strings"
	"testing"
)

func TestListenStatements(t *testing.T) {
	cases := []struct {
		sql     string
		op      ListenOp
		channel string
	}{
		{"LISTEN orders", Listen, "orders"},
		{`listen "Mixed Case"`, Listen, "Mixed Case"},
		{"LISTEN Upper", Listen, "upper"},
		{"UNLISTEN orders", Unlisten, "orders"},
		{"UNLISTEN *", UnlistenAll, ""},
		{"LISTEN " + strings.Repeat("c", 70), Listen, strings.Repeat("c", 63)}, // NAMEDATALEN, as Postgres truncates
	}
	for _, c := range cases {
		t.Run(c.sql, func(t *testing.T) {
			st := mustParseOne(t, c.sql)
			op, ch, ok := st.Listen()
			if !ok || op != c.op || ch != c.channel {
				t.Errorf("Listen() = %v %q %v, want %v %q", op, ch, ok, c.op, c.channel)
			}
			if st.Kind != Unsupported {
				t.Errorf("Kind = %v: only the proxy may answer it", st.Kind)
			}
		})
	}
}

func TestNotifyClass(t *testing.T) {
	cases := []struct {
		sql               string
		notifies, writes  bool
		kind              Kind
		portable, listens bool
	}{
		{"NOTIFY orders", true, true, Update, false, false},
		{"NOTIFY orders, 'payload'", true, true, Update, false, false},
		{"SELECT pg_notify('orders', 'x')", true, true, Select, false, false},
		{"SELECT pg_catalog.pg_notify('orders', $1)", true, true, Select, false, false},
		{"SELECT 1 FROM pg_notify('orders', 'x') AS n", true, true, Select, false, false},
		{"SELECT nextval('s')", false, false, Select, false, false},
		{"SELECT 1", false, false, Select, true, false},
	}
	for _, c := range cases {
		t.Run(c.sql, func(t *testing.T) {
			st := mustParseOne(t, c.sql)
			if st.Notifies() != c.notifies || st.Writes != c.writes || st.Kind != c.kind || st.Portable() != c.portable {
				t.Errorf("Notifies %v Writes %v Kind %v Portable %v; want %v %v %v %v",
					st.Notifies(), st.Writes, st.Kind, st.Portable(), c.notifies, c.writes, c.kind, c.portable)
			}
			if _, _, ok := st.Listen(); ok != c.listens {
				t.Errorf("Listen ok = %v", ok)
			}
		})
	}
}
