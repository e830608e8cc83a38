package parser

import (
	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// LISTEN, UNLISTEN and NOTIFY.
//
// LISTEN and UNLISTEN are the proxy's: it keeps its own listener
// connection, so they stay of Kind Unsupported for any path that does not
// answer them (Statement.Listen). NOTIFY and pg_notify run on the default
// shard like any statement that changes state; they are writes, so a
// transaction that notifies commits on that shard with the rest of its
// writes (Postgres refuses to PREPARE a transaction that notified, so one
// that also writes elsewhere fails at COMMIT rather than notifying alone).

// ListenOp says what a LISTEN or UNLISTEN statement does.
type ListenOp uint8

const (
	Listen      ListenOp = iota + 1 // LISTEN channel
	Unlisten                        // UNLISTEN channel
	UnlistenAll                     // UNLISTEN *
)

// Listen returns what a LISTEN or UNLISTEN statement does and its channel
// (as Postgres folds the identifier; "" for UNLISTEN *).
func (s *Statement) Listen() (ListenOp, string, bool) {
	if s.node == nil {
		return 0, "", false
	}
	switch x := s.node.Node.(type) {
	case *pg.Node_ListenStmt:
		return Listen, x.ListenStmt.Conditionname, true
	case *pg.Node_UnlistenStmt:
		if x.UnlistenStmt.Conditionname == "" {
			return UnlistenAll, "", true
		}
		return Unlisten, x.UnlistenStmt.Conditionname, true
	}
	return 0, "", false
}

// Notifies reports whether the statement is NOTIFY or calls pg_notify.
// Functions and triggers defined by users are not looked into.
func (s *Statement) Notifies() bool {
	if s.node == nil {
		return false
	}
	if s.node.GetNotifyStmt() != nil {
		return true
	}
	found := false
	walk(s.node.ProtoReflect(), func(m protoreflect.Message) {
		if f, ok := m.Interface().(*pg.FuncCall); ok && !found {
			ns := names(f.Funcname)
			found = ns[len(ns)-1] == "pg_notify"
		}
	})
	return found
}

// classifyNotify runs after analyse's switch: NOTIFY goes to the default
// shard as a write (it names no table and is not portable), and a
// statement calling pg_notify is a write too.
func (s *Statement) classifyNotify() {
	if s.node == nil {
		return
	}
	switch {
	case s.node.GetNotifyStmt() != nil:
		s.Kind, s.What, s.Writes, s.impure = Update, "", true, true
	case s.Kind == Select && s.SideEffects && s.Notifies():
		s.Writes = true
	}
}
