package parser

import (
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// TxMode is what a statement says about transaction characteristics. Each
// field is 0 when the statement does not set it, +1 or -1 when it does.
type TxMode struct {
	// ReadOnly: +1 READ ONLY, -1 READ WRITE.
	ReadOnly int8
	// Serializable: +1 ISOLATION LEVEL SERIALIZABLE, -1 another level.
	Serializable int8
}

// TxModeScope says which transactions a statement's modes apply to.
type TxModeScope uint8

const (
	// ScopeNone: the statement sets no transaction characteristic.
	ScopeNone TxModeScope = iota
	// ScopeTransaction: the transaction it begins or runs in (BEGIN/START
	// TRANSACTION with modes, SET TRANSACTION, SET [LOCAL]
	// transaction_read_only / transaction_isolation).
	ScopeTransaction
	// ScopeSession: the session's later transactions (SET SESSION
	// CHARACTERISTICS AS TRANSACTION, SET default_transaction_read_only /
	// default_transaction_isolation, and their RESET).
	ScopeSession
)

// TxMode reports the transaction characteristics the statement sets and
// their scope. A RESET of a session default reports ScopeSession with the
// fields at -1 (Postgres's defaults: read write, read committed), as does
// RESET ALL.
func (s *Statement) TxMode() (TxMode, TxModeScope) {
	if s.node == nil {
		return TxMode{}, ScopeNone
	}
	if t := s.node.GetTransactionStmt(); t != nil {
		if t.Kind != pg.TransactionStmtKind_TRANS_STMT_BEGIN && t.Kind != pg.TransactionStmtKind_TRANS_STMT_START {
			return TxMode{}, ScopeNone
		}
		m := txModeOf(t.Options)
		if m == (TxMode{}) {
			return m, ScopeNone
		}
		return m, ScopeTransaction
	}
	v := s.node.GetVariableSetStmt()
	if v == nil {
		return TxMode{}, ScopeNone
	}
	name := strings.ToLower(v.Name)
	switch v.Kind {
	case pg.VariableSetKind_VAR_RESET_ALL:
		return TxMode{ReadOnly: -1, Serializable: -1}, ScopeSession
	case pg.VariableSetKind_VAR_SET_MULTI:
		m := txModeOf(v.Args)
		switch {
		case m == (TxMode{}):
			return m, ScopeNone
		case name == "transaction":
			return m, ScopeTransaction
		case name == "session characteristics":
			return m, ScopeSession
		}
		return TxMode{}, ScopeNone
	}
	var m TxMode
	var scope TxModeScope
	switch name {
	case "transaction_read_only", "transaction_isolation":
		scope = ScopeTransaction
	case "default_transaction_read_only", "default_transaction_isolation":
		scope = ScopeSession
	default:
		return TxMode{}, ScopeNone
	}
	reset := v.Kind != pg.VariableSetKind_VAR_SET_VALUE
	val, ok := s.SetValue()
	if !reset && !ok {
		return TxMode{}, ScopeNone
	}
	if strings.HasSuffix(name, "read_only") {
		m.ReadOnly = -1
		if !reset && truthy(val) {
			m.ReadOnly = 1
		}
	} else {
		m.Serializable = -1
		if !reset && strings.EqualFold(val, "serializable") {
			m.Serializable = 1
		}
	}
	if reset && scope == ScopeTransaction {
		return TxMode{}, ScopeNone // RESET transaction_read_only: no change
	}
	return m, scope
}

// txModeOf reads BEGIN's or SET TRANSACTION's mode list.
func txModeOf(opts []*pg.Node) TxMode {
	var m TxMode
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil || d.Arg == nil {
			continue
		}
		c := d.Arg.GetAConst()
		if c == nil {
			continue
		}
		switch d.Defname {
		case "transaction_read_only":
			m.ReadOnly = -1
			if iv := c.GetIval(); iv != nil && iv.Ival != 0 {
				m.ReadOnly = 1
			}
		case "transaction_isolation":
			m.Serializable = -1
			if sv := c.GetSval(); sv != nil && strings.EqualFold(sv.Sval, "serializable") {
				m.Serializable = 1
			}
		}
	}
	return m
}

// truthy reads a boolean setting's value as Postgres does.
func truthy(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "t", "tr", "tru", "true", "on", "y", "ye", "yes", "1":
		return true
	}
	return false
}
