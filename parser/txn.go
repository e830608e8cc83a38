package parser

import (
	pg "github.com/pganalyze/pg_query_go/v6"
)

// SavepointOp says what a savepoint statement (TxOp Savepoint) does.
type SavepointOp uint8

const (
	SavepointSet        SavepointOp = iota + 1 // SAVEPOINT name
	SavepointRelease                           // RELEASE [SAVEPOINT] name
	SavepointRollbackTo                        // ROLLBACK TO [SAVEPOINT] name
)

// Savepoint returns what a savepoint statement does and the savepoint's
// name (folded as Postgres folds it); ok is false for other statements.
func (s *Statement) Savepoint() (op SavepointOp, name string, ok bool) {
	t := s.node.GetTransactionStmt()
	if t == nil {
		return 0, "", false
	}
	switch t.Kind {
	case pg.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		op = SavepointSet
	case pg.TransactionStmtKind_TRANS_STMT_RELEASE:
		op = SavepointRelease
	case pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		op = SavepointRollbackTo
	default:
		return 0, "", false
	}
	return op, t.SavepointName, true
}

// Chain reports whether COMMIT or ROLLBACK says AND CHAIN (a new
// transaction with the same characteristics starts at once).
func (s *Statement) Chain() bool {
	t := s.node.GetTransactionStmt()
	return t != nil && t.Chain
}

// NoTransactionBlock reports whether Postgres refuses to run the statement
// inside a transaction block (CREATE INDEX CONCURRENTLY, VACUUM, ALTER
// SYSTEM...): on several shards it cannot be atomic and runs shard by shard.
func (s *Statement) NoTransactionBlock() bool {
	if s.node == nil {
		return false
	}
	switch x := s.node.Node.(type) {
	case *pg.Node_IndexStmt:
		return x.IndexStmt.Concurrent
	case *pg.Node_DropStmt:
		return x.DropStmt.Concurrent
	case *pg.Node_ReindexStmt:
		for _, o := range x.ReindexStmt.Params {
			if d := o.GetDefElem(); d != nil && d.Defname == "concurrently" {
				return true
			}
		}
		return x.ReindexStmt.Kind == pg.ReindexObjectType_REINDEX_OBJECT_SYSTEM ||
			x.ReindexStmt.Kind == pg.ReindexObjectType_REINDEX_OBJECT_DATABASE
	case *pg.Node_VacuumStmt:
		return x.VacuumStmt.IsVacuumcmd
	case *pg.Node_ClusterStmt:
		return x.ClusterStmt.Relation == nil
	case *pg.Node_CreatedbStmt, *pg.Node_DropdbStmt, *pg.Node_AlterSystemStmt,
		*pg.Node_CreateTableSpaceStmt, *pg.Node_DropTableSpaceStmt,
		*pg.Node_CreateSubscriptionStmt, *pg.Node_DropSubscriptionStmt:
		return true
	case *pg.Node_AlterSubscriptionStmt:
		return false
	}
	return false
}

// BeginTag is the command tag Postgres answers a BEGIN-kind statement
// with: START TRANSACTION for START TRANSACTION, else BEGIN.
func (s *Statement) BeginTag() string {
	if t := s.node.GetTransactionStmt(); t != nil && t.Kind == pg.TransactionStmtKind_TRANS_STMT_START {
		return "START TRANSACTION"
	}
	return "BEGIN"
}

// KeyAssignment is what an UPDATE ... SET or INSERT ... ON CONFLICT DO
// UPDATE SET gives a column.
type KeyAssignment struct {
	// Excluded: ON CONFLICT ... SET column = EXCLUDED.column, which keeps
	// the inserted row's value (the row the insert was routed by).
	Excluded bool
	// Value is the constant or parameter assigned, when Known.
	Value Value
	Known bool
}

// AssignmentOf returns what the statement's top-level UPDATE ... SET or ON
// CONFLICT DO UPDATE SET assigns to column; ok is false when it assigns
// nothing to it there.
func (s *Statement) AssignmentOf(column string) (a KeyAssignment, ok bool) {
	var targets []*pg.Node
	if u := s.node.GetUpdateStmt(); u != nil {
		targets = u.TargetList
	} else if ins := s.node.GetInsertStmt(); ins != nil && ins.OnConflictClause != nil {
		targets = ins.OnConflictClause.TargetList
	}
	for _, t := range targets {
		rt := t.GetResTarget()
		if rt == nil || rt.Name != column {
			continue
		}
		ok = true
		a = KeyAssignment{}
		if len(rt.Indirection) > 0 {
			continue
		}
		if cr := rt.Val.GetColumnRef(); cr != nil && len(cr.Fields) == 2 &&
			strVal(cr.Fields[0]) == "excluded" && strVal(cr.Fields[1]) == column {
			a.Excluded = true
			continue
		}
		if v, known := valueOf(rt.Val); known {
			a.Value, a.Known = v, true
		}
	}
	return a, ok
}

// ReturnsRows reports whether a write returns rows (RETURNING). Other
// statements: true for reads, false for DDL and the rest.
func (s *Statement) ReturnsRows() bool {
	if s.node == nil {
		return false
	}
	switch x := s.node.Node.(type) {
	case *pg.Node_InsertStmt:
		return len(x.InsertStmt.ReturningList) > 0
	case *pg.Node_UpdateStmt:
		return len(x.UpdateStmt.ReturningList) > 0
	case *pg.Node_DeleteStmt:
		return len(x.DeleteStmt.ReturningList) > 0
	case *pg.Node_MergeStmt:
		return false
	}
	return s.Kind == Select || s.Kind == Show || s.Kind == Explain
}

// HasTxOptions reports whether BEGIN/START TRANSACTION names transaction
// modes (isolation level, READ ONLY, DEFERRABLE).
func (s *Statement) HasTxOptions() bool {
	t := s.node.GetTransactionStmt()
	return t != nil && len(t.Options) > 0
}
