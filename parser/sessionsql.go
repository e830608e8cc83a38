package parser

import (
	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Session SQL: the statements whose effect lives on the connection
// (cursors, SQL prepared statements, DISCARD, temporary objects, advisory
// unlocks), read from the parse tree for the proxy's reservations.

// CursorOp says what a cursor statement does.
type CursorOp uint8

const (
	DeclareCursor CursorOp = iota + 1 // DECLARE name CURSOR FOR query
	FetchCursor                       // FETCH or MOVE
	CloseCursor                       // CLOSE name | ALL
)

// Cursor describes a DECLARE, FETCH, MOVE or CLOSE statement.
type Cursor struct {
	Op   CursorOp
	Name string
	// All: CLOSE ALL.
	All bool
	// Hold: DECLARE ... WITH HOLD; Scroll: DECLARE ... SCROLL.
	Hold, Scroll bool
	// Move: MOVE rather than FETCH. Backward: the fetch may go backward
	// (BACKWARD, PRIOR, FIRST, LAST, ABSOLUTE, RELATIVE, a negative count).
	Move, Backward bool
	// Query is the cursor's query, for DECLARE; QuerySQL its text on its
	// own (deparsed), "" when it cannot be rendered.
	Query    *Statement
	QuerySQL string
	// Binary: DECLARE ... BINARY. Count is how many rows a forward FETCH
	// or MOVE reads, -1 for ALL.
	Binary bool
	Count  int64
}

// Cursor option bits of DeclareCursorStmt.Options (Postgres's parsenodes.h).
const (
	cursorOptBinary = 0x0001
	cursorOptScroll = 0x0002
	cursorOptHold   = 0x0020
)

// fetchAll is FETCH ALL's count (Postgres's FETCH_ALL, LONG_MAX).
const fetchAll = 1<<63 - 1

type innerKey struct{}

// inner analyses a query nested in s (a cursor's or a prepared
// statement's), once per statement.
func (s *Statement) inner(n *pg.Node) *Statement {
	return s.Memo(innerKey{}, func() any {
		in := analyse(s.SQL, n)
		in.version, in.memo = s.version, &memoBox{}
		return in
	}).(*Statement)
}

// Cursor reports a cursor statement.
func (s *Statement) Cursor() (Cursor, bool) {
	if s.node == nil {
		return Cursor{}, false
	}
	switch x := s.node.Node.(type) {
	case *pg.Node_DeclareCursorStmt:
		d := x.DeclareCursorStmt
		q, _ := pg.Deparse(&pg.ParseResult{Version: s.version, Stmts: []*pg.RawStmt{{Stmt: d.Query}}})
		return Cursor{Op: DeclareCursor, Name: d.Portalname, Hold: d.Options&cursorOptHold != 0,
			Scroll: d.Options&cursorOptScroll != 0, Binary: d.Options&cursorOptBinary != 0,
			Query: s.inner(d.Query), QuerySQL: q}, true
	case *pg.Node_FetchStmt:
		f := x.FetchStmt
		back := f.HowMany < 0
		switch f.Direction {
		case pg.FetchDirection_FETCH_BACKWARD, pg.FetchDirection_FETCH_ABSOLUTE, pg.FetchDirection_FETCH_RELATIVE:
			back = true
		}
		count := f.HowMany
		if count == fetchAll {
			count = -1
		}
		return Cursor{Op: FetchCursor, Name: f.Portalname, Move: f.Ismove, Backward: back, Count: count}, true
	case *pg.Node_ClosePortalStmt:
		c := x.ClosePortalStmt
		return Cursor{Op: CloseCursor, Name: c.Portalname, All: c.Portalname == ""}, true
	}
	return Cursor{}, false
}

// Prepare reports a SQL PREPARE statement: its name and its statement.
func (s *Statement) Prepare() (name string, query *Statement, ok bool) {
	if s.node == nil {
		return "", nil, false
	}
	p := s.node.GetPrepareStmt()
	if p == nil || p.Query == nil {
		return "", nil, false
	}
	return p.Name, s.inner(p.Query), true
}

// Execute reports a SQL EXECUTE statement's prepared statement name.
func (s *Statement) Execute() (name string, ok bool) {
	if s.node == nil {
		return "", false
	}
	e := s.node.GetExecuteStmt()
	if e == nil {
		return "", false
	}
	return e.Name, true
}

// DiscardWhat is what a DISCARD statement drops.
type DiscardWhat uint8

const (
	DiscardAll DiscardWhat = iota + 1
	DiscardPlans
	DiscardSequences
	DiscardTemp
)

// Discard reports a DISCARD statement.
func (s *Statement) Discard() (DiscardWhat, bool) {
	if s.node == nil {
		return 0, false
	}
	d := s.node.GetDiscardStmt()
	if d == nil {
		return 0, false
	}
	switch d.Target {
	case pg.DiscardMode_DISCARD_ALL:
		return DiscardAll, true
	case pg.DiscardMode_DISCARD_PLANS:
		return DiscardPlans, true
	case pg.DiscardMode_DISCARD_SEQUENCES:
		return DiscardSequences, true
	}
	return DiscardTemp, true
}

// TempRelation returns the relation a CREATE TEMP TABLE/VIEW/SEQUENCE (or
// CREATE TEMP TABLE AS, SELECT INTO TEMP) creates.
func (s *Statement) TempRelation() (Table, bool) {
	if s.node == nil {
		return Table{}, false
	}
	var rv *pg.RangeVar
	switch x := s.node.Node.(type) {
	case *pg.Node_CreateStmt:
		rv = x.CreateStmt.Relation
	case *pg.Node_CreateTableAsStmt:
		if x.CreateTableAsStmt.Into != nil {
			rv = x.CreateTableAsStmt.Into.Rel
		}
	case *pg.Node_SelectStmt:
		if x.SelectStmt.IntoClause != nil {
			rv = x.SelectStmt.IntoClause.Rel
		}
	case *pg.Node_ViewStmt:
		rv = x.ViewStmt.View
	case *pg.Node_CreateSeqStmt:
		rv = x.CreateSeqStmt.Sequence
	}
	if rv == nil || rv.Relpersistence != "t" {
		return Table{}, false
	}
	return Table{Schema: rv.Schemaname, Name: rv.Relname}, true
}

var advisoryUnlockFuncs = map[string]bool{
	"pg_advisory_unlock": true, "pg_advisory_unlock_shared": true, "pg_advisory_unlock_all": true,
}

// UnlocksAdvisory reports a statement calling pg_advisory_unlock,
// pg_advisory_unlock_shared or pg_advisory_unlock_all anywhere.
func (s *Statement) UnlocksAdvisory() bool {
	if s.node == nil {
		return false
	}
	found := false
	walk(s.node.ProtoReflect(), func(m protoreflect.Message) {
		if f, ok := m.Interface().(*pg.FuncCall); ok && !found {
			ns := names(f.Funcname)
			found = advisoryUnlockFuncs[ns[len(ns)-1]]
		}
	})
	return found
}

// TempDropsAtCommit reports CREATE TEMP TABLE ... ON COMMIT DROP (also
// with AS): the table ends with the transaction.
func (s *Statement) TempDropsAtCommit() bool {
	if s.node == nil {
		return false
	}
	if c := s.node.GetCreateStmt(); c != nil {
		return c.Oncommit == pg.OnCommitAction_ONCOMMIT_DROP
	}
	if c := s.node.GetCreateTableAsStmt(); c != nil && c.Into != nil {
		return c.Into.OnCommit == pg.OnCommitAction_ONCOMMIT_DROP
	}
	return false
}
