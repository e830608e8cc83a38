package parser

import (
	"errors"
	"strconv"
	"strings"
	"sync/atomic"

	pg "github.com/pganalyze/pg_query_go/v6"
	pgerr "github.com/pganalyze/pg_query_go/v6/parser"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Kind classifies a statement for routing and the protocol layer.
type Kind uint8

const (
	Select      Kind = iota + 1 // SELECT, VALUES, TABLE: reads
	Insert                      // INSERT
	Update                      // UPDATE
	Delete                      // DELETE
	DDL                         // schema changes and maintenance: every shard
	Transaction                 // BEGIN, COMMIT, ROLLBACK, SAVEPOINT...
	Set                         // SET, RESET
	Show                        // SHOW
	Explain                     // EXPLAIN (of Inner)
	Unsupported                 // statements the proxy refuses (LISTEN, COPY, cursors, PREPARE...)
)

var kindNames = [...]string{"", "select", "insert", "update", "delete", "ddl", "transaction", "set", "show", "explain", "unsupported"}

func (k Kind) String() string { return kindNames[k] }

// TxOp says what a Transaction statement does.
type TxOp uint8

const (
	Begin TxOp = iota + 1
	Commit
	Rollback
	Savepoint // SAVEPOINT, RELEASE, ROLLBACK TO: inside a transaction only
	TwoPhase  // PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED
)

// Table is a table named by a statement. Names are as Postgres folds them:
// lower case unless quoted.
type Table struct {
	Schema string
	Name   string
}

// Statement is one analysed SQL statement. It is immutable once returned and
// safe to share between sessions (the parse cache does).
type Statement struct {
	SQL  string
	Kind Kind
	Tx   TxOp
	// Tables are the distinct tables named anywhere in the statement
	// (subqueries and CTE bodies included, CTE names excluded).
	Tables []Table
	// Inner is the explained statement, for Kind == Explain.
	Inner *Statement
	// What names the statement for refusals of Kind Unsupported (e.g. "LISTEN").
	What string
	// Writes is true for INSERT/UPDATE/DELETE, data-modifying CTEs,
	// SELECT ... FOR UPDATE and SELECT INTO.
	Writes bool
	// SideEffects is true for a SELECT calling a built-in function that
	// changes state (nextval, setval, advisory locks, pg_notify,
	// set_config, large objects): it cannot run on a read-only replica.
	// Functions defined by users are not looked into.
	SideEffects bool
	// Session is the connection-level state the statement leaves behind.
	Session SessionUse
	// Hints are the routing hints found in the statement's comments
	// (`/* shard: s2 */`, `-- user_id: 42`), in order.
	Hints []Hint
	// Cluster: a statement on roles, databases or tablespaces, which
	// belong to the server: it runs once per distinct server (cluster.go).
	Cluster bool
	// OnDefault: DO, CALL, MERGE: the default shard (cluster.go).
	OnDefault bool

	node    *pg.Node
	version int32
	params  bool
	// impure: the statement calls a function that may read or write data
	// (Portable).
	impure bool
	// memo is shared by copies of the statement (WithSQL): they have the
	// same tree, so the same derived data.
	memo *memoBox
}

type memoBox struct {
	p atomic.Pointer[[]memoEntry]
	// shared caches Shareable (shareable.go): 0 not yet known.
	shared atomic.Uint32
}

// Hint is a `key: value` comment: `/* shard: s2 */` or `/* user_id: 42 */`.
// Key is lower case; Value has surrounding quotes removed.
type Hint struct {
	Key, Value string
}

type memoEntry struct{ key, val any }

// memoSlots bounds the entries one statement keeps: one per router in
// practice, a few while a reloaded topology replaces an old one.
const memoSlots = 4

// Memo returns the value an earlier call stored under key, or calls build
// and stores its result. It lets consumers (the router) keep derived,
// immutable data with the statement, so that a statement from the parse
// cache is analysed once. Safe for concurrent use; build may run more than
// once when callers race, and only one result is kept.
func (s *Statement) Memo(key any, build func() any) any {
	if s.memo == nil {
		return build() // a statement not made by Parse: nothing to keep it in
	}
	old := s.memo.p.Load()
	if old != nil {
		for _, e := range *old {
			if e.key == key {
				return e.val
			}
		}
	}
	v := build()
	for {
		var next []memoEntry
		if old != nil {
			for _, e := range *old {
				if e.key == key {
					return e.val // another caller won the race
				}
			}
			next = append(next, *old...)
		}
		if len(next) >= memoSlots {
			next = next[1:]
		}
		next = append(next, memoEntry{key, v})
		if s.memo.p.CompareAndSwap(old, &next) {
			return v
		}
		old = s.memo.p.Load()
	}
}

// SyntaxError is a parse error from the Postgres grammar.
type SyntaxError struct {
	Message string
	// Position is the 1-based character position of the error, 0 if unknown.
	Position int
}

func (e *SyntaxError) Error() string { return e.Message }

// ErrEmpty means the query string holds no statement.
var ErrEmpty = errors.New("empty query")

// Parse analyses a query string, which may hold several statements.
func Parse(sql string) ([]*Statement, error) {
	tree, err := pg.Parse(sql)
	if err != nil {
		var pe *pgerr.Error
		if errors.As(err, &pe) {
			return nil, &SyntaxError{Message: pe.Message, Position: pe.Cursorpos}
		}
		return nil, &SyntaxError{Message: err.Error()}
	}
	if len(tree.Stmts) == 0 {
		return nil, ErrEmpty
	}
	var comments []comment
	if strings.Contains(sql, "/*") || strings.Contains(sql, "--") {
		comments = scanComments(sql)
	}
	out := make([]*Statement, 0, len(tree.Stmts))
	for _, raw := range tree.Stmts {
		text := sql
		start, end := int(raw.StmtLocation), len(sql)
		if raw.StmtLen > 0 {
			end = start + int(raw.StmtLen)
		}
		if len(tree.Stmts) > 1 {
			text = strings.TrimSpace(sql[start:end])
		}
		st := analyse(text, raw.Stmt)
		for x := st; x != nil; x = x.Inner {
			x.version = tree.Version
			x.memo = &memoBox{}
		}
		for _, c := range comments {
			if c.start >= start && c.start < end {
				if h, ok := parseHint(c.text); ok {
					st.Hints = append(st.Hints, h)
				}
			}
		}
		out = append(out, st)
	}
	return out, nil
}

type comment struct {
	start int
	text  string
}

// scanComments finds comments with Postgres's own lexer, so that comment
// markers inside string literals and dollar quotes do not count.
func scanComments(sql string) []comment {
	res, err := pg.Scan(sql)
	if err != nil {
		return nil
	}
	var out []comment
	for _, t := range res.Tokens {
		if t.Token != pg.Token_C_COMMENT && t.Token != pg.Token_SQL_COMMENT {
			continue
		}
		if t.Start < 0 || int(t.End) > len(sql) || t.Start >= t.End {
			continue
		}
		out = append(out, comment{start: int(t.Start), text: sql[t.Start:t.End]})
	}
	return out
}

// parseHint reads `/* key: value */` or `-- key: value`. The key is an
// identifier; anything else is an ordinary comment.
func parseHint(c string) (Hint, bool) {
	switch {
	case strings.HasPrefix(c, "/*"):
		c = strings.TrimSuffix(strings.TrimPrefix(c, "/*"), "*/")
	case strings.HasPrefix(c, "--"):
		c = strings.TrimPrefix(c, "--")
	default:
		return Hint{}, false
	}
	k, v, ok := strings.Cut(c, ":")
	if !ok {
		return Hint{}, false
	}
	k = strings.ToLower(strings.TrimSpace(k))
	v = strings.TrimSpace(v)
	if k == "" || v == "" || strings.ContainsAny(v, "\n\r") {
		return Hint{}, false
	}
	for i := 0; i < len(k); i++ {
		ch := k[i]
		if !(ch == '_' || ch >= 'a' && ch <= 'z' || i > 0 && ch >= '0' && ch <= '9') {
			return Hint{}, false
		}
	}
	if len(v) >= 2 && (v[0] == '\'' || v[0] == '"') && v[len(v)-1] == v[0] {
		v = v[1 : len(v)-1]
	}
	return Hint{Key: k, Value: v}, true
}

func analyse(sql string, n *pg.Node) *Statement {
	s := &Statement{SQL: sql, node: n}
	switch x := n.Node.(type) {
	case *pg.Node_SelectStmt:
		s.Kind = Select
		sel := x.SelectStmt
		s.Writes = len(sel.LockingClause) > 0 || sel.IntoClause != nil
	case *pg.Node_InsertStmt:
		s.Kind, s.Writes = Insert, true
	case *pg.Node_UpdateStmt:
		s.Kind, s.Writes = Update, true
	case *pg.Node_DeleteStmt:
		s.Kind, s.Writes = Delete, true
	case *pg.Node_TransactionStmt:
		s.Kind = Transaction
		switch x.TransactionStmt.Kind {
		case pg.TransactionStmtKind_TRANS_STMT_BEGIN, pg.TransactionStmtKind_TRANS_STMT_START:
			s.Tx = Begin
		case pg.TransactionStmtKind_TRANS_STMT_COMMIT:
			s.Tx = Commit
		case pg.TransactionStmtKind_TRANS_STMT_ROLLBACK:
			s.Tx = Rollback
		case pg.TransactionStmtKind_TRANS_STMT_SAVEPOINT, pg.TransactionStmtKind_TRANS_STMT_RELEASE,
			pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
			s.Tx = Savepoint
		default:
			s.Tx = TwoPhase
		}
	case *pg.Node_VariableSetStmt:
		s.Kind = Set
	case *pg.Node_VariableShowStmt:
		s.Kind = Show
	case *pg.Node_ExplainStmt:
		s.Kind = Explain
		q := x.ExplainStmt.Query
		if d := q.GetDeclareCursorStmt(); d != nil {
			q = d.Query // EXPLAIN DECLARE: the plan of the cursor's query, routed like it
		}
		s.Inner = analyse(sql, q)
		for _, o := range x.ExplainStmt.Options {
			if d := o.GetDefElem(); d != nil && d.Defname == "analyze" {
				s.Writes = s.Inner.Writes
			}
		}
	case *pg.Node_ListenStmt, *pg.Node_UnlistenStmt, *pg.Node_NotifyStmt:
		s.Kind, s.What = Unsupported, "LISTEN/UNLISTEN" // the proxy answers them (listen.go); NOTIFY: classifyNotify
	case *pg.Node_CopyStmt:
		// The simple protocol's COPY is the proxy's (Statement.Copy);
		// what reaches the router is COPY anywhere else.
		s.Kind, s.What = Unsupported, "COPY in the extended protocol or in a multi-statement query string"
	case *pg.Node_DeclareCursorStmt, *pg.Node_FetchStmt, *pg.Node_ClosePortalStmt:
		s.Kind, s.What = Unsupported, "cursors"
	case *pg.Node_DeallocateStmt:
		s.Kind, s.What = Unsupported, "DEALLOCATE" // the proxy answers it (Deallocate)
	case *pg.Node_PrepareStmt, *pg.Node_ExecuteStmt:
		s.Kind, s.What = Unsupported, "SQL PREPARE/EXECUTE"
	case *pg.Node_DoStmt:
		s.Kind, s.What = Unsupported, "DO blocks"
	case *pg.Node_CallStmt:
		s.Kind, s.What = Unsupported, "CALL"
	case *pg.Node_LockStmt:
		s.Kind, s.What = Unsupported, "LOCK"
	case *pg.Node_DiscardStmt:
		s.Kind, s.What = Unsupported, "DISCARD"
	case *pg.Node_MergeStmt:
		s.Kind, s.What = Unsupported, "MERGE"
	case *pg.Node_CreatedbStmt, *pg.Node_DropdbStmt, *pg.Node_AlterDatabaseStmt, *pg.Node_AlterDatabaseSetStmt,
		*pg.Node_CreateRoleStmt, *pg.Node_AlterRoleStmt, *pg.Node_DropRoleStmt, *pg.Node_AlterSystemStmt,
		*pg.Node_CreateTableSpaceStmt, *pg.Node_DropTableSpaceStmt, *pg.Node_LoadStmt, *pg.Node_CheckPointStmt:
		s.Kind, s.What = Unsupported, "cluster-wide commands"
	default:
		s.Kind, s.Writes = DDL, true
	}
	if s.Kind != Transaction && s.Kind != Set && s.Kind != Show {
		var modifies bool
		s.Tables, modifies, s.params = collectTables(n)
		if s.Kind == Select && modifies {
			s.Writes = true
		}
		s.Session = s.sessionUse()
		if s.Kind == Select && !s.Writes {
			s.SideEffects = s.sideEffects()
		}
		s.impure = !s.portableCalls()
	}
	s.reclassify(n)
	s.classifyNotify() // listen.go
	return s
}

// collectTables walks the whole tree for RangeVars, leaving out names that
// refer to CTEs of the statement, and reports data-modifying CTEs.
func collectTables(n *pg.Node) (tables []Table, modifyingCTE, params bool) {
	ctes := map[string]bool{}
	seen := map[Table]bool{}
	walk(n.ProtoReflect(), func(m protoreflect.Message) {
		switch v := m.Interface().(type) {
		case *pg.CommonTableExpr:
			ctes[v.Ctename] = true
			if v.Ctequery != nil {
				switch v.Ctequery.Node.(type) {
				case *pg.Node_InsertStmt, *pg.Node_UpdateStmt, *pg.Node_DeleteStmt, *pg.Node_MergeStmt:
					modifyingCTE = true
				}
			}
		case *pg.RangeVar:
			t := Table{Schema: v.Schemaname, Name: v.Relname}
			if !seen[t] {
				seen[t] = true
				tables = append(tables, t)
			}
		case *pg.ParamRef:
			params = true
		}
	})
	kept := tables[:0]
	for _, t := range tables {
		if t.Schema == "" && ctes[t.Name] {
			continue
		}
		kept = append(kept, t)
	}
	return kept, modifyingCTE, params
}

// HasParams reports whether the statement has $n parameters.
func (s *Statement) HasParams() bool { return s.params }

// walk calls fn on m and every message below it.
func walk(m protoreflect.Message, fn func(protoreflect.Message)) {
	if !m.IsValid() {
		return
	}
	fn(m)
	rangeFields(m, func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				walk(l.Get(i).Message(), fn)
			}
		case fd.Message() != nil && !fd.IsMap():
			walk(v.Message(), fn)
		}
		return true
	})
}

// containsNode reports whether any message in the tree satisfies pred,
// not looking inside subqueries (a subquery's aggregates and window
// functions are its own).
func containsNode(n protoreflect.Message, pred func(protoreflect.Message) bool) bool {
	found := false
	visit(n, func(m protoreflect.Message) bool {
		if found {
			return false
		}
		if pred(m) {
			found = true
			return false
		}
		return !isSubLink(m)
	})
	return found
}

// Normalize returns the statement with literals replaced by $n, for logs.
func Normalize(sql string) (string, error) { return pg.Normalize(sql) }

// Fingerprint names the shape of a query (pg_query's fingerprint).
func Fingerprint(sql string) (string, error) { return pg.Fingerprint(sql) }

func strVal(n *pg.Node) string {
	if s := n.GetString_(); s != nil {
		return s.Sval
	}
	return ""
}

func names(ns []*pg.Node) []string {
	out := make([]string, 0, len(ns))
	for _, n := range ns {
		out = append(out, strVal(n))
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

// SetName returns the lower-case parameter a SET/RESET names ("all" for
// RESET ALL) and whether it is SET LOCAL.
func (s *Statement) SetName() (name string, local bool) {
	v := s.node.GetVariableSetStmt()
	if v == nil {
		return "", false
	}
	if v.Kind == pg.VariableSetKind_VAR_RESET_ALL {
		return "all", v.IsLocal
	}
	return strings.ToLower(v.Name), v.IsLocal
}

// IsReset reports whether a SET statement is RESET (or SET ... TO DEFAULT).
func (s *Statement) IsReset() bool {
	v := s.node.GetVariableSetStmt()
	return v != nil && (v.Kind == pg.VariableSetKind_VAR_RESET || v.Kind == pg.VariableSetKind_VAR_RESET_ALL ||
		v.Kind == pg.VariableSetKind_VAR_SET_DEFAULT)
}

// rangeFields calls fn on m's populated fields in declaration order (the
// order of the SQL text's parts, mostly), unlike Message.Range, whose order
// is unspecified and changes between runs: what is found first (the first
// configured table a message names) must not.
func rangeFields(m protoreflect.Message, fn func(protoreflect.FieldDescriptor, protoreflect.Value) bool) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		if !fn(fd, m.Get(fd)) {
			return
		}
	}
}
