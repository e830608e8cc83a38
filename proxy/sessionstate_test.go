package proxy

import (
	"testing"

	"github.com/shardproxy/shardproxy/parser"
)

func mustStmt(t *testing.T, sql string) *parser.Statement {
	t.Helper()
	sts, err := parser.Parse(sql)
	if err != nil || len(sts) != 1 {
		t.Fatalf("parse %q: %v", sql, err)
	}
	return sts[0]
}

// TestSessionSettingsBookkeeping: what a client's SET/RESET leave in the
// replay, in order, with RESET ALL keeping role and session authorization
// (Postgres's RESET ALL does not touch them) and RESET returning to the
// startup value.
func TestSessionSettingsBookkeeping(t *testing.T) {
	s := &session{}
	s.state.startup = []setting{{name: "datestyle", sql: "SET \"datestyle\" TO 'SQL, DMY'"}}
	apply := func(sql string) {
		st := mustStmt(t, sql)
		s.noteSet(st)
		name, _ := st.SetName()
		s.setStatement(st, name)
	}
	apply("SET search_path TO x")
	apply("SET ROLE lowpriv")
	apply("SET work_mem = '8MB'")
	apply("SET search_path TO y")
	want := "SET \"datestyle\" TO 'SQL, DMY';\nSET ROLE lowpriv;\nSET work_mem = '8MB';\nSET search_path TO y"
	if got := s.replayQuery(); got != want {
		t.Fatalf("replay:\n%s\nwant:\n%s", got, want)
	}
	if !s.state.role {
		t.Fatal("SET ROLE did not mark the session's role as touched")
	}
	apply("RESET ALL")
	want = "SET \"datestyle\" TO 'SQL, DMY';\nSET ROLE lowpriv"
	if got := s.replayQuery(); got != want {
		t.Fatalf("after RESET ALL:\n%s\nwant:\n%s", got, want)
	}
	if got := s.resetFallback("datestyle"); got != ";\nSET \"datestyle\" TO 'SQL, DMY'" {
		t.Fatalf("RESET datestyle fallback %q", got)
	}
	if got := s.resetFallback("timezone"); got != "" {
		t.Fatalf("RESET timezone fallback %q", got)
	}
	apply("RESET ROLE")
	if got := s.replayQuery(); got != "SET \"datestyle\" TO 'SQL, DMY'" {
		t.Fatalf("after RESET ROLE: %q", got)
	}
	if got := s.resetSQL(&backend{}); got != resetRoleSQL {
		t.Fatalf("reset after a role change: %q", got)
	}
	if got := (&session{}).resetSQL(&backend{}); got != "RESET ALL" {
		t.Fatalf("plain reset: %q", got)
	}
}
