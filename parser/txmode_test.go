package parser

import "testing"

func TestTxMode(t *testing.T) {
	cases := []struct {
		sql   string
		ro    int8
		ser   int8
		scope TxModeScope
	}{
		{"BEGIN READ ONLY", 1, 0, ScopeTransaction},
		{"start transaction read only, isolation level repeatable read", 1, -1, ScopeTransaction},
		{"BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", 1, 1, ScopeTransaction},
		{"BEGIN READ WRITE", -1, 0, ScopeTransaction},
		{"BEGIN", 0, 0, ScopeNone},
		{"BEGIN DEFERRABLE", 0, 0, ScopeNone},
		{"COMMIT", 0, 0, ScopeNone},
		{"SET TRANSACTION READ ONLY", 1, 0, ScopeTransaction},
		{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", 0, 1, ScopeTransaction},
		{"SET LOCAL transaction_read_only = on", 1, 0, ScopeTransaction},
		{"SET transaction_read_only TO false", -1, 0, ScopeTransaction},
		{"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", 1, 0, ScopeSession},
		{"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", -1, 0, ScopeSession},
		{"SET default_transaction_read_only = on", 1, 0, ScopeSession},
		{"set default_transaction_read_only to 'true'", 1, 0, ScopeSession},
		{"SET default_transaction_read_only = 1", 1, 0, ScopeSession},
		{"SET default_transaction_read_only = off", -1, 0, ScopeSession},
		{"RESET default_transaction_read_only", -1, 0, ScopeSession},
		{"SET default_transaction_read_only TO DEFAULT", -1, 0, ScopeSession},
		{"SET default_transaction_isolation = 'serializable'", 0, 1, ScopeSession},
		{"RESET ALL", -1, -1, ScopeSession},
		{"SET search_path = a", 0, 0, ScopeNone},
		{"SELECT 1", 0, 0, ScopeNone},
	}
	for _, c := range cases {
		t.Run(c.sql, func(t *testing.T) {
			sts, err := Parse(c.sql)
			if err != nil {
				t.Fatal(err)
			}
			m, scope := sts[0].TxMode()
			if m.ReadOnly != c.ro || m.Serializable != c.ser || scope != c.scope {
				t.Fatalf("got %+v %v, want ro %d ser %d scope %v", m, scope, c.ro, c.ser, c.scope)
			}
		})
	}
}
