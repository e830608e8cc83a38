package parser

import (
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// SessionUse names what a statement leaves behind on its connection beyond
// the transaction, which transaction pooling cannot carry to the client's
// next backend.
type SessionUse uint8

const (
	// NoSessionUse: nothing outlives the transaction.
	NoSessionUse SessionUse = iota
	// AdvisoryLock: a session-level advisory lock (pg_advisory_lock...).
	AdvisoryLock
	// TempTable: CREATE TEMP TABLE/VIEW/SEQUENCE (lives until the
	// connection ends).
	TempTable
	// SetConfig: a set_config(name, value, is_local) call anywhere in the
	// statement whose is_local is not the constant true: it changes a
	// setting for the rest of the session, like SET.
	SetConfig
	// AdvisoryUnlock: pg_advisory_unlock, _shared or _all: may end the
	// session's last advisory lock.
	AdvisoryUnlock
)

var sessionLockFuncs = map[string]bool{
	"pg_advisory_lock": true, "pg_advisory_lock_shared": true,
	"pg_try_advisory_lock": true, "pg_try_advisory_lock_shared": true,
}

// sessionUse reports session-level state the statement creates; analyse
// stores it in Statement.Session.
func (s *Statement) sessionUse() SessionUse {
	if c := s.node.GetCreateStmt(); c != nil && c.Relation != nil && c.Relation.Relpersistence == "t" {
		return TempTable
	}
	if c := s.node.GetCreateTableAsStmt(); c != nil && c.Into != nil && c.Into.Rel != nil && c.Into.Rel.Relpersistence == "t" {
		return TempTable
	}
	if sel := s.node.GetSelectStmt(); sel != nil && sel.IntoClause != nil && sel.IntoClause.Rel != nil && sel.IntoClause.Rel.Relpersistence == "t" {
		return TempTable
	}
	if v := s.node.GetViewStmt(); v != nil && v.View != nil && v.View.Relpersistence == "t" {
		return TempTable
	}
	if q := s.node.GetCreateSeqStmt(); q != nil && q.Sequence != nil && q.Sequence.Relpersistence == "t" {
		return TempTable
	}
	use := NoSessionUse
	walk(s.node.ProtoReflect(), func(m protoreflect.Message) {
		if f, ok := m.Interface().(*pg.FuncCall); ok {
			ns := names(f.Funcname)
			switch fn := ns[len(ns)-1]; {
			case sessionLockFuncs[fn]:
				use = AdvisoryLock
			case fn == "set_config" && (use == NoSessionUse || use == AdvisoryUnlock) && !localSetConfig(f):
				use = SetConfig
			case advisoryUnlockFuncs[fn] && use == NoSessionUse:
				use = AdvisoryUnlock
			}
		}
	})
	return use
}

// localSetConfig reports whether a set_config call's is_local argument is
// the constant true: the change ends with the transaction.
func localSetConfig(f *pg.FuncCall) bool {
	if len(f.Args) != 3 {
		return false
	}
	c := f.Args[2].GetAConst()
	if c == nil {
		return false
	}
	if b := c.GetBoolval(); b != nil {
		return b.Boolval
	}
	if sv := c.GetSval(); sv != nil {
		switch strings.ToLower(sv.Sval) {
		case "t", "true", "on", "yes", "y", "1":
			return true
		}
	}
	return false
}

// SetValue returns the value of `SET name = value` as text (the first
// value for lists); ok is false for RESET and non-literal values.
func (s *Statement) SetValue() (string, bool) {
	v := s.node.GetVariableSetStmt()
	if v == nil || v.Kind != pg.VariableSetKind_VAR_SET_VALUE || len(v.Args) == 0 {
		return "", false
	}
	c := v.Args[0].GetAConst()
	if c == nil {
		return "", false
	}
	switch {
	case c.GetSval() != nil:
		return c.GetSval().Sval, true
	case c.GetIval() != nil:
		return itoa(int(c.GetIval().Ival)), true
	}
	return "", false
}

// Deallocate reports a DEALLOCATE [PREPARE] name | ALL statement: the
// statement's name, or all.
func (s *Statement) Deallocate() (name string, all, ok bool) {
	d := s.node.GetDeallocateStmt()
	if d == nil {
		return "", false, false
	}
	return d.Name, d.Isall || d.Name == "", true
}
