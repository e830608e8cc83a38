package router

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/shardproxy/shardproxy/parser"
)

// Unsupported is a statement the router refuses (SQLSTATE 0A000).
type Unsupported struct {
	Msg  string
	Hint string
	// hard refusals stand even when a hint names the shard: the statement
	// would put rows where they do not belong.
	hard bool
}

func (e *Unsupported) Error() string { return e.Msg }

func refuse(hint, format string, args ...any) *Unsupported {
	return &Unsupported{Msg: fmt.Sprintf(format, args...), Hint: hint}
}

func refuseHard(hint, format string, args ...any) *Unsupported {
	u := refuse(hint, format, args...)
	u.hard = true
	return u
}

// Params gives bind parameter values (text format) by 1-based number.
type Params interface {
	Text(n int) (value string, null bool, ok bool)
}

// RouteOptions carry session state that changes routing.
type RouteOptions struct {
	// Shard is the session's `SET shardproxy.shard` value. When not empty,
	// and the statement has no hint comment of its own, the statement is
	// routed as if it carried /* shard: <Shard> */.
	Shard string
}

// Router routes statements over a Topology. Safe for concurrent use.
type Router struct {
	topo    *Topology
	rr      atomic.Uint32
	all     []int
	singles [][]int
	names   []string
	// keyPos is each sharded table's shard key position in its column
	// order (table name -> 0-based; -1 where the shards disagree).
	keyPos atomic.Pointer[map[string]int]
	// placing is the bucket map in force (buckets.go); never nil.
	placing atomic.Pointer[placement]
	// servers: one shard per distinct server (cluster.go); nil: all.
	servers atomic.Pointer[[]int]
}

// SetColumnOrder gives the router each sharded table's column names in
// order, as the shards define them (nil for a table whose shards
// disagree), so that an INSERT without a column list can find its shard
// key. Safe to call while routing.
func (r *Router) SetColumnOrder(cols map[string][]string) {
	pos := map[string]int{}
	for name, c := range cols {
		t := r.topo.Tables[name]
		if t == nil || t.Key == "" {
			continue
		}
		pos[t.Name] = -1
		for i, col := range c {
			if col == t.Key {
				pos[t.Name] = i
			}
		}
	}
	r.keyPos.Store(&pos)
}

// keyPosition returns t's shard key position, if the shards agree on it.
func (r *Router) keyPosition(t *Table) (int, bool) {
	m := r.keyPos.Load()
	if m == nil {
		return 0, false
	}
	p, ok := (*m)[t.Name]
	return p, ok && p >= 0
}

// New returns a Router over topo.
func New(topo *Topology) *Router {
	r := &Router{topo: topo}
	for i, s := range topo.Shards {
		r.all = append(r.all, i)
		r.singles = append(r.singles, []int{i})
		r.names = append(r.names, s.Name)
	}
	r.placing.Store(r.newPlacement(topo.BucketMap))
	return r
}

// Topology returns the router's topology.
func (r *Router) Topology() *Topology { return r.topo }

// Lookup finds a table's placement by schema-qualified or plain name.
func (t *Topology) Lookup(tb parser.Table) *Table {
	if tb.Schema != "" {
		if x, ok := t.Tables[tb.Schema+"."+tb.Name]; ok {
			return x
		}
		if tb.Schema != "public" {
			return nil
		}
	}
	return t.Tables[tb.Name]
}

// Route plans st with bound parameters (nil before Bind: parameters are
// then unknown and widen the route). Transaction control, SET and SHOW go
// to any one shard: they are the protocol layer's business.
func (r *Router) Route(st *parser.Statement, params Params) (*Plan, error) {
	return r.RouteWith(st, params, RouteOptions{})
}

// RouteWith is Route with session options. A hint comment in the statement
// wins over opt.Shard. Under a shard hint the statement runs as sent on
// that shard, except where that would misplace rows: an INSERT whose rows
// belong elsewhere, an UPDATE of the shard key, and unsupported statement
// kinds are still refused.
func (r *Router) RouteWith(st *parser.Statement, params Params, opt RouteOptions) (*Plan, error) {
	// Plans are memoised per bucket map: a new map compiles afresh.
	c := st.Memo(r.placing.Load(), func() any { return r.compile(st) }).(*compiled)
	if c.hint == nil && opt.Shard == "" {
		p, err := c.route(r, params)
		if pl := r.placing.Load(); err == nil && pl.hider != nil {
			return r.hide(pl, st, p) // stale.go
		}
		return p, err
	}
	return r.forced(st, c, params, opt)
}

// compiled is the parameter-independent part of routing one statement,
// memoised on the statement.
type compiled struct {
	static *Plan        // the plan, when it needs no parameters
	err    *Unsupported // a refusal that needs no parameters
	any    bool         // any one shard, round robin
	// reference is set with any for reads of reference tables only.
	reference bool
	write     bool
	eval      func(params Params) (*Plan, error)
	// hint is the statement's own hint comment, resolved.
	hint *hintRoute
	// insertTo is set for an INSERT into a sharded table: under a shard
	// hint its rows must still belong to the hinted shard.
	insertTo *Table
	// keySet is an UPDATE's SET of the shard key (guardKey).
	keySet *keyAssign
	// dynamic plans depend on more than the parameters (the column order
	// read from the shards): never evaluated once and kept.
	dynamic bool
}

func (c *compiled) route(r *Router, params Params) (*Plan, error) {
	switch {
	case c.err != nil:
		return nil, c.err
	case c.static != nil:
		p := *c.static
		return &p, nil
	case c.any:
		serving := r.serving()
		i := serving[int(r.rr.Add(1)-1)%len(serving)]
		why := "no table: any shard"
		if c.reference {
			why = "reference table read: any shard"
		}
		return &Plan{Shards: r.singles[i], Any: true, Write: c.write, Reason: why, names: r.names}, nil
	}
	p, err := c.eval(params)
	if err != nil {
		return nil, err
	}
	p.names = r.names
	return p, nil
}

func (r *Router) compile(st *parser.Statement) *compiled {
	c := r.compileRoute(st)
	c.hint = r.hintOf(st)
	if c.static == nil && c.err == nil && !c.any && c.eval != nil && !c.dynamic && !usesParams(st) {
		// Constant-only: evaluate once.
		p, err := c.eval(nil)
		var u *Unsupported
		switch {
		case err == nil:
			p.names = r.names
			c.static = p
		case errors.As(err, &u):
			c.err = u
		}
	}
	return c
}

// usesParams reports whether the statement (or the one it explains) has
// $n parameters.
func usesParams(st *parser.Statement) bool {
	if st.Kind == parser.Explain && st.Inner != nil {
		return usesParams(st.Inner)
	}
	return st.HasParams()
}

func (r *Router) fixed(shards []int, write bool, reason string) *compiled {
	return &compiled{static: &Plan{Shards: shards, Write: write, Reason: reason, names: r.names}, write: write}
}

func (r *Router) compileRoute(st *parser.Statement) *compiled {
	switch {
	case st.Cluster:
		return r.compileCluster()
	case st.OnDefault:
		return r.compileOnDefault(st)
	}
	if c := r.compileCreateFrom(st); c != nil {
		return c
	}
	switch st.Kind {
	case parser.Unsupported:
		return &compiled{err: refuseHard("Run it on a shard directly; see docs/routing.md.",
			"%s is not supported through shardproxy", st.What)}
	case parser.Transaction, parser.Set, parser.Show:
		return &compiled{any: true}
	case parser.DDL:
		for _, t := range st.Tables {
			if tb := r.topo.Lookup(parser.Table{Schema: t.Schema, Name: t.Name}); tb != nil && tb.Strategy != Reference && st.CreatesFromQuery() {
				return &compiled{err: refuseHard("Create views and tables from queries on one shard with a /* shard: name */ comment, or query the sharded tables directly.",
					"a view or CREATE TABLE AS over sharded table %s is not supported: it would hold one shard's rows only", tb.Name)}
			}
		}
		return r.fixed(r.all, true, "DDL: every shard")
	case parser.Explain:
		inner := st.Inner.Memo(r.placing.Load(), func() any { return r.compile(st.Inner) }).(*compiled)
		return &compiled{write: st.Writes, eval: func(params Params) (*Plan, error) {
			p, err := inner.route(r, params)
			if err != nil {
				return nil, err
			}
			if p.SQL != nil {
				return nil, refuse("EXPLAIN each row's INSERT on its own.", "EXPLAIN of a multi-shard INSERT is not supported")
			}
			return &Plan{Shards: p.Shards, Write: st.Writes, NoRows: p.NoRows, Reason: "EXPLAIN: " + p.Reason}, nil
		}}
	}
	a := st.Analyse(r.keyOf)
	return r.compileQuery(st, a)
}

func (r *Router) keyOf(t parser.Table) string {
	if tb := r.topo.Lookup(t); tb != nil {
		return tb.Key
	}
	return ""
}

// occ is a table occurrence resolved against the topology.
type occ struct {
	parser.Occurrence
	i int
	t *Table // nil: not configured
}

func (r *Router) compileQuery(st *parser.Statement, a *parser.Analysis) *compiled {
	if a.Opaque == "MERGE" {
		return r.compileOnDefault(st) // MERGE inside WITH: like MERGE (cluster.go)
	}
	if a.Opaque != "" {
		return &compiled{err: refuseHard("Run it on a shard directly; see docs/routing.md.",
			"%s is not supported through shardproxy", a.Opaque)}
	}
	var sharded, reference, unknown []occ
	for i, o := range a.Occurrences {
		x := occ{Occurrence: o, i: i, t: r.topo.Lookup(o.Table)}
		switch {
		case x.t == nil:
			unknown = append(unknown, x)
		case x.t.Strategy == Reference:
			reference = append(reference, x)
		default:
			sharded = append(sharded, x)
		}
	}
	for _, o := range reference {
		if o.Modify == 0 {
			continue
		}
		hint := "Write reference tables with a plain INSERT, UPDATE or DELETE that reads only reference tables and constants."
		switch {
		case o.Scope != 0:
			return &compiled{err: refuseHard(hint, "a write to reference table %s inside WITH or a subquery is not supported", o.t.Name)}
		case len(sharded) > 0:
			return &compiled{err: refuseHard(hint, "a write to reference table %s that reads sharded table %s is not supported", o.t.Name, sharded[0].t.Name)}
		case len(unknown) > 0:
			return &compiled{err: refuseHard(hint, "a write to reference table %s that reads table %s (not in the config) is not supported", o.t.Name, unknown[0].Table.Name)}
		}
		c := r.fixed(r.all, true, fmt.Sprintf("write to reference table %s: every shard", o.t.Name))
		c.static.Replicated = true
		return c
	}
	for _, o := range unknown {
		if q, ok := r.topo.schemaOnly[o.Table.Name]; ok && o.Table.Schema == "" {
			return &compiled{err: refuse(fmt.Sprintf("Qualify the name: %s.", q),
				"table %s is not in the config, but %s is: which one it names depends on search_path", o.Table.Name, q)}
		}
	}
	if len(unknown) > 0 {
		if len(sharded) > 0 {
			return &compiled{err: refuse("Add the table to the config, or run the query on its shard with a /* shard: name */ comment.",
				"table %s is not in the config (it lives on the default shard) and cannot be combined with sharded table %s",
				unknown[0].Table.Name, sharded[0].t.Name)}
		}
		return r.fixed([]int{r.topo.Default}, st.Writes,
			fmt.Sprintf("table %s not in config: default shard %s", unknown[0].Table.Name, r.names[r.topo.Default]))
	}
	if len(sharded) == 0 {
		switch {
		case a.Into:
			return r.fixed([]int{r.topo.Default}, true, "SELECT INTO: default shard")
		case !st.Portable():
			// A function that may read or write data (a sequence, a SQL
			// function reading a table): one fixed shard, where the
			// objects not in the config live, never any shard in turn.
			return r.fixed([]int{r.topo.Default}, st.Writes, fmt.Sprintf("calls a function that may read data: default shard %s", r.names[r.topo.Default]))
		case st.Writes && len(reference) > 0:
			// SELECT ... FOR UPDATE: lock one copy, always the same one.
			return r.fixed([]int{r.topo.Default}, true, "locking read of reference tables: default shard")
		case len(reference) > 0:
			return &compiled{any: true, reference: true}
		}
		return &compiled{any: true, write: st.Writes}
	}
	if a.Into {
		return &compiled{err: refuseHard("Use INSERT INTO a configured table ... SELECT, or run it on one shard with a /* shard: name */ comment.",
			"SELECT INTO from sharded table %s is not supported: the new table would hold one shard's rows only", sharded[0].t.Name)}
	}
	var keySet *keyAssign
	for _, k := range a.Assigned {
		o := a.Occurrences[k.Occ]
		t := r.topo.Lookup(o.Table)
		if t == nil || t.Strategy == Reference || k.Column != t.Key {
			continue
		}
		// What ORMs send on save and upsert: the key set to a value of the
		// row's own shard, or to EXCLUDED's (the shard the insert went to).
		if asg, ok := st.AssignmentOf(t.Key); ok && o.Scope == 0 {
			switch {
			case o.Modify == parser.Insert && asg.Excluded:
				continue
			case o.Modify == parser.Update && asg.Known && keySet == nil:
				keySet = &keyAssign{t: t, v: asg.Value}
				continue
			}
		}
		if o.Modify == parser.Insert {
			return &compiled{err: refuseHard("Leave the shard key out of ON CONFLICT DO UPDATE SET; to move a row, delete it and insert it with the new key.",
				"ON CONFLICT DO UPDATE of shard key column %s.%s is not supported: the row would stay on the wrong shard", t.Name, t.Key)}
		}
		return &compiled{err: refuseHard("Delete the row and insert it with the new key.",
			"UPDATE of shard key column %s.%s is not supported: the row would stay on the wrong shard", t.Name, t.Key)}
	}
	for _, o := range sharded {
		if o.Modify == parser.Insert && o.Scope != 0 {
			return &compiled{err: refuse("Run the INSERT as a statement of its own.",
				"INSERT into sharded table %s inside WITH or a subquery is not supported", o.t.Name)}
		}
	}
	if st.Kind == parser.Insert {
		return r.compileInsert(st, a, sharded)
	}
	g := r.groups(a, sharded)
	var sh parser.Shape
	isSelect := st.Kind == parser.Select
	var byKey, windowKey bool
	if isSelect {
		sh, _ = st.Shape()
		byKey = groupedByKey(a, g)
		windowKey = windowsByKey(a, g)
	}
	write := st.Writes
	var m *merger
	if isSelect {
		m = &merger{st: st, sh: sh, byKey: byKey, windowKey: windowKey, isKey: keyColumn(a, g, sharded), collate: st.HasCollate(), columns: st.ColumnNames()}
	}
	return &compiled{write: write, keySet: keySet, eval: func(params Params) (*Plan, error) {
		set, why, err := r.place(a, g, params)
		if err != nil {
			return nil, err
		}
		p := r.plan(set, why, write)
		if keySet != nil {
			if err := r.guardKey(p, keySet, params); err != nil {
				return nil, err
			}
		}
		if len(p.Shards) > 1 && isSelect {
			if err := m.plan(p, params); err != nil {
				return nil, err
			}
		}
		return p, nil
	}}
}

// keyColumn returns whether a column reference of the top level names the
// shard key of a sharded table there (not on the nullable side of an
// outer join).
func keyColumn(a *parser.Analysis, g *grouping, sharded []occ) func(ref []string) bool {
	return func(ref []string) bool {
		if len(ref) == 0 || len(ref) > 2 {
			return false
		}
		col := ref[len(ref)-1]
		for _, o := range sharded {
			if o.Scope != 0 || o.Nullable || o.t == nil || o.t.Key != col || !o.TopLevel {
				continue
			}
			if len(ref) == 1 || ref[0] == o.Ref {
				return true
			}
		}
		return false
	}
}

// groupedByKey reports whether the statement's GROUP BY (or DISTINCT)
// includes the shard key of its one co-located component, from a table
// that is not on the nullable side of an outer join: every group (distinct
// row) then comes from one shard, and the shards' answers concatenate.
func groupedByKey(a *parser.Analysis, g *grouping) bool {
	top := a.Scopes[0]
	if !oneComponent(a, g) {
		return false
	}
	sh := struct{ group, distinct bool }{len(top.GroupBy) > 0 || top.Grouped, len(top.Distinct) > 0}
	if sh.group && !keyIn(g, top.GroupBy) {
		return false
	}
	if sh.distinct && !keyIn(g, top.Distinct) {
		return false
	}
	return sh.group || sh.distinct
}

// windowsByKey reports whether every window function of the statement's
// top level partitions by the shard key of its one co-located component:
// each partition then lives on one shard, and the shards' answers
// concatenate.
func windowsByKey(a *parser.Analysis, g *grouping) bool {
	top := a.Scopes[0]
	if !oneComponent(a, g) || len(top.Windows) == 0 {
		return false
	}
	for _, w := range top.Windows {
		if !keyIn(g, w) {
			return false
		}
	}
	return true
}

// oneComponent: the top level's rows come from one co-located component
// rooted there, with nothing pinned elsewhere.
func oneComponent(a *parser.Analysis, g *grouping) bool {
	top := a.Scopes[0]
	return !top.SetOp && !top.GroupingSets && len(g.result) == 1 && len(g.pinned) == 0 && g.result[0].root == 0
}

// keyIn reports whether cols include the shard key of a member of the
// result component at the top level, not on the nullable side of an
// outer join.
func keyIn(g *grouping, cols []parser.ColumnKey) bool {
	for _, m := range g.result[0].members {
		if m.Home != 0 || m.Nullable {
			continue
		}
		for _, c := range cols {
			if c.Occ == m.i && c.Column == m.t.Key {
				return true
			}
		}
	}
	return false
}

// plan turns a shard set into a plan; an empty set (no row can match)
// runs on one shard.
func (r *Router) plan(set shardSet, why string, write bool) *Plan {
	p := &Plan{Write: write, Reason: why, names: r.names}
	switch {
	case set == nil:
		p.Shards = r.serving()
	case len(set) == 0:
		p.Shards, p.NoRows = r.singles[0], true
	default:
		p.Shards = set
	}
	return p
}

// component is a set of co-located sharded occurrences: rows that take
// part in the statement together always live on one shard.
type component struct {
	members []occ
	// root is the outermost scope holding members; restrict are its
	// members, whose filters restrict every row of the component.
	root     int
	restrict []occ
	preds    []parser.Pred // the restriction of each restrict member's key
	result   bool          // root is a result scope
	// why[j] names restrict member j's restriction; single[j][i] is the
	// reason when it selects shard i alone (built once: routing a cached
	// statement should not allocate strings).
	why    []string
	single [][]string
	none   string
}

// grouping is the parameter-independent analysis of the sharded
// occurrences of a SELECT, UPDATE or DELETE.
type grouping struct {
	// result are components rooted in a result scope, at most one per
	// result scope: their restrictions union into the target shards.
	result []*component
	// pinned must each restrict to one shard (or none): the same shard,
	// and the whole statement runs there.
	pinned []*component
	// bare is a result scope without sharded tables: its rows would repeat
	// on every shard, so the statement must stay on one.
	bare bool
}

func (r *Router) groups(a *parser.Analysis, sharded []occ) *grouping {
	idx := map[int]int{} // occurrence -> position in sharded
	for i, o := range sharded {
		idx[o.i] = i
	}
	parent := make([]int, len(sharded))
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	for _, l := range a.Links {
		x, ok1 := idx[l.A.Occ]
		y, ok2 := idx[l.B.Occ]
		if !ok1 || !ok2 {
			continue
		}
		tx, ty := sharded[x].t, sharded[y].t
		if l.A.Column != tx.Key || l.B.Column != ty.Key || !r.colocated(tx, ty) {
			continue
		}
		parent[find(x)] = find(y)
	}
	comps := map[int]*component{}
	var order []*component
	depth := func(s int) int {
		d := 0
		for ; a.Scopes[s].Parent >= 0; s = a.Scopes[s].Parent {
			d++
		}
		return d
	}
	for i, o := range sharded {
		c := comps[find(i)]
		if c == nil {
			c = &component{root: o.Home}
			comps[find(i)] = c
			order = append(order, c)
		}
		c.members = append(c.members, o)
		if depth(o.Home) < depth(c.root) {
			c.root = o.Home
		}
	}
	g := &grouping{}
	perScope := map[int]int{}
	for _, c := range order {
		for _, m := range c.members {
			if m.Home == c.root {
				c.restrict = append(c.restrict, m)
				c.preds = append(c.preds, a.Restriction(m.i, m.t.Key))
			}
		}
		c.result = a.Scopes[c.root].Result
		if c.result {
			perScope[c.root]++
		}
		prefix := ""
		if len(c.members) > 1 {
			prefix = "co-located join, "
		}
		for _, m := range c.restrict {
			w := prefix + m.t.Name + " by " + m.t.Key
			c.why = append(c.why, w)
			one := make([]string, len(r.names))
			for i, n := range r.names {
				one[i] = w + ": " + n
			}
			c.single = append(c.single, one)
		}
		c.none = fmt.Sprintf("%s%s: no usable %s predicate", prefix, c.restrict[0].t.Name, c.restrict[0].t.Key)
	}
	for _, c := range order {
		if c.result && perScope[c.root] == 1 {
			g.result = append(g.result, c)
		} else {
			g.pinned = append(g.pinned, c)
		}
	}
	for s, sc := range a.Scopes {
		if sc.Result && !sc.SetOp && perScope[s] == 0 {
			g.bare = true
		}
	}
	return g
}

// colocated reports whether equal keys of two tables are on one shard.
func (r *Router) colocated(a, b *Table) bool {
	if a.Strategy != b.Strategy {
		return false
	}
	switch a.Strategy {
	case Hash:
		return a.KeyText == b.KeyText
	case Range:
		ar, br := r.rangesOf(a), r.rangesOf(b)
		if a.KeyLocal != b.KeyLocal || len(ar) != len(br) {
			return false
		}
		for i := range ar {
			x, y := ar[i], br[i]
			if !x.From.Equal(y.From) || !x.To.Equal(y.To) || x.Shard != y.Shard {
				return false
			}
		}
		return true
	}
	return false
}

// restriction evaluates a component: the intersection of what the filters
// of its root members say about their keys.
func (r *Router) restriction(c *component, params Params) (shardSet, string) {
	s, j := r.restrictionOf(c, params)
	if j < 0 {
		return nil, c.none
	}
	return s, c.why[j]
}

// restrictionOf returns the component's shard set and the first member
// that restricted it (-1: none did).
func (r *Router) restrictionOf(c *component, params Params) (shardSet, int) {
	var acc shardSet
	first := -1
	for i, m := range c.restrict {
		s := r.restrict(m.t, c.preds[i], params)
		if s == nil {
			continue
		}
		if first < 0 {
			acc, first = s, i
		} else {
			acc = intersect(acc, s)
		}
	}
	return acc, first
}

const hintJoin = "Join sharded tables on their shard keys (e.g. orders.user_id = users.id), or restrict every subquery over a sharded table to the same single shard key value."

// place computes the target shards of a SELECT, UPDATE or DELETE.
func (r *Router) place(a *parser.Analysis, g *grouping, params Params) (shardSet, string, error) {
	if len(g.result) == 1 && len(g.pinned) == 0 {
		// The common case: one co-located component.
		c := g.result[0]
		s, j := r.restrictionOf(c, params)
		switch {
		case j < 0:
			if g.bare {
				break
			}
			return nil, c.none + ": every shard", nil
		case len(s) == 1:
			return s, c.single[j][s[0]], nil
		case !g.bare && len(s) > 1:
			return s, c.why[j] + ": " + r.describe(s), nil
		}
	}
	var target shardSet = shardSet{}
	var whys []string
	for _, c := range g.result {
		s, why := r.restriction(c, params)
		whys = append(whys, why)
		if s == nil {
			target = nil
			continue
		}
		if target != nil {
			target = union(target, s)
		}
	}
	if len(g.result) > 1 {
		whys = []string{fmt.Sprintf("%d set-operation branches", len(g.result))}
	}
	pin := -1
	var pinWhy []string
	var pinName string
	for _, c := range g.pinned {
		s, why := r.restriction(c, params)
		switch {
		case s == nil || len(s) > 1:
			return nil, "", r.refusePinned(c, s)
		case len(s) == 0:
			continue // this part matches no row anywhere
		case pin >= 0 && s[0] != pin:
			return nil, "", refuse(hintJoin, "%s on %s and %s on %s are not joined on their shard keys",
				pinName, r.names[pin], c.members[0].t.Name, r.names[s[0]])
		}
		pin, pinName = s[0], c.members[0].t.Name
		pinWhy = append(pinWhy, why)
	}
	if len(g.pinned) > 0 {
		switch {
		case pin < 0 && len(g.result) == 0:
			return shardSet{}, "no row can match", nil
		case pin < 0:
			// Every pinned part matches nothing: the rest decides.
		case target == nil || (len(target) > 0 && (len(target) > 1 || target[0] != pin)):
			return nil, "", refuse(hintJoin, "%s is read on %s only but the query runs on %s; they are not joined on their shard keys",
				pinName, r.names[pin], r.describe(target))
		default:
			if len(g.result) > 0 {
				pinWhy = append(whys, pinWhy...)
			}
			return shardSet{pin}, fmt.Sprintf("%s: %s", strings.Join(pinWhy, ", "), r.names[pin]), nil
		}
	}
	if g.bare && (target == nil || len(target) > 1) {
		return nil, "", refuse(hintJoin, "a query level without sharded tables next to %s would repeat its rows on every shard (%s)",
			r.firstName(g), r.describe(target))
	}
	switch {
	case target == nil:
		return nil, r.why(whys) + ": every shard", nil
	case len(target) == 0:
		return target, r.why(whys) + ": contradiction, no row can match", nil
	}
	return target, r.why(whys) + ": " + r.describe(target), nil
}

func (r *Router) firstName(g *grouping) string {
	if len(g.result) > 0 {
		return g.result[0].members[0].t.Name
	}
	return g.pinned[0].members[0].t.Name
}

func (r *Router) why(whys []string) string {
	return strings.Join(whys, "; ")
}

func (r *Router) refusePinned(c *component, s shardSet) error {
	m := c.members[0]
	if c.result {
		return refuse(hintJoin, "a join between %s and another sharded table not on their shard keys is not supported across shards", m.t.Name)
	}
	return refuse(hintJoin, "a subquery over sharded table %s that is not restricted to one shard (%s) and not joined on its shard key is not supported",
		m.t.Name, r.describe(s))
}

func (r *Router) describe(s shardSet) string {
	if s == nil {
		return "every shard"
	}
	names := make([]string, len(s))
	for i, x := range s {
		names[i] = r.names[x]
	}
	return strings.Join(names, ",")
}

func (r *Router) compileInsert(st *parser.Statement, a *parser.Analysis, sharded []occ) *compiled {
	var tgt occ
	var rest []occ
	for _, o := range sharded {
		if o.Modify == parser.Insert && o.Scope == 0 {
			tgt = o
		} else {
			rest = append(rest, o)
		}
	}
	t := tgt.t
	var g *grouping
	if len(rest) > 0 {
		g = r.groups(a, rest)
		// Every part of the source must stay on the row's shard.
		g.pinned = append(g.pinned, g.result...)
		g.result = nil
	}
	keys, err := st.InsertKeys(t.Key)
	noColumns := errors.Is(err, parser.ErrNoColumnList)
	if noColumns {
		// The table's own column order says where the key is; it is read
		// from the shards (SetColumnOrder), so it is looked up each time.
		keys, err = nil, nil
		if _, verr := st.InsertKeysAt(0); errors.Is(verr, parser.ErrNotValues) {
			return &compiled{err: refuse("Name the columns: INSERT INTO "+t.Name+" (...) SELECT ...",
				"INSERT ... SELECT or DEFAULT VALUES into sharded table %s needs a column list to find shard key %s", t.Name, t.Key)}
		}
	}
	switch {
	case errors.Is(err, parser.ErrNotValues):
		return r.compileInsertSelect(a, t, g)
	case err != nil:
		return &compiled{err: refuse("Name the columns and give constant rows with VALUES.", "INSERT into %s: %v", t.Name, err)}
	}
	c := &compiled{write: true, insertTo: t, dynamic: noColumns}
	c.eval = func(params Params) (*Plan, error) {
		keys := keys
		if noColumns {
			pos, known := r.keyPosition(t)
			if !known {
				return nil, refuse("Name the columns: INSERT INTO "+t.Name+" (...) VALUES (...).",
					"INSERT into sharded table %s without a column list: the position of shard key %s is not known (the shards' definitions of %s differ or could not be read)", t.Name, t.Key, t.Name)
			}
			var err error
			if keys, err = st.InsertKeysAt(pos); err != nil {
				return nil, refuse("Name the columns and give constant rows with VALUES.", "INSERT into %s: %v", t.Name, err)
			}
		}
		rowShard := make([]int, len(keys))
		for i, k := range keys {
			s, ok := r.shardOfValue(t, k, params)
			if !ok {
				hint := fmt.Sprintf("Give %s a constant or a parameter in every row.", t.Key)
				if t.Strategy == Range {
					hint = fmt.Sprintf("Give %s a constant or a parameter with an explicit UTC offset (e.g. '2025-03-01 10:00:00+00') in every row, inside a configured range; a time without an offset depends on the session TimeZone.", t.Key)
				}
				return nil, refuse(hint,
					"row %d of INSERT into %s has no shard key value the proxy can place on one shard (column %s)", i+1, t.Name, t.Key)
			}
			rowShard[i] = s
		}
		groups := map[int][]int{}
		for i, s := range rowShard {
			groups[s] = append(groups[s], i)
		}
		shards := make([]int, 0, len(groups))
		for s := range groups {
			shards = append(shards, s)
		}
		sort.Ints(shards)
		if g != nil {
			if len(shards) != 1 {
				return nil, refuse("Insert the rows one shard at a time.",
					"a multi-shard INSERT into %s with a subquery over a sharded table is not supported", t.Name)
			}
			s, _, err := r.place(a, g, params)
			var u *Unsupported
			if errors.As(err, &u) {
				return nil, refuse(hintJoin, "INSERT into %s with a subquery: %s", t.Name, u.Msg)
			} else if err != nil {
				return nil, err
			}
			if len(s) == 1 && s[0] != shards[0] {
				return nil, refuse(hintJoin, "the row of INSERT into %s belongs on %s but its subquery reads %s",
					t.Name, r.names[shards[0]], r.names[s[0]])
			}
		}
		p := &Plan{Shards: shards, Write: true}
		if len(shards) == 1 {
			p.Shards = r.singles[shards[0]]
			p.Reason = fmt.Sprintf("INSERT into %s: %s", t.Name, r.names[shards[0]])
			return p, nil
		}
		gs := make([][]int, len(shards))
		for i, s := range shards {
			gs[i] = groups[s]
		}
		sqls, err := st.SplitInsert(gs)
		if err != nil {
			return nil, err
		}
		p.SQL = sqls
		p.Reason = fmt.Sprintf("INSERT into %s split over %d shards", t.Name, len(shards))
		return p, nil
	}
	return c
}

// compileInsertSelect allows INSERT ... SELECT when it provably stays on one
// shard: the key it inserts is a constant, or the key of a source table
// restricted to one shard, and every sharded source stays on that shard.
func (r *Router) compileInsertSelect(a *parser.Analysis, t *Table, g *grouping) *compiled {
	hint := "Restrict the SELECT to one shard key value and insert that key, or insert the rows with VALUES."
	v, isVal, src, ok := a.InsertSelectKey(t.Key)
	if !ok {
		return &compiled{err: refuse(hint, "INSERT ... SELECT into sharded table %s is only supported when it provably stays on one shard (key %s must be a constant or a source table's shard key)", t.Name, t.Key)}
	}
	var from *occ
	if !isVal {
		for _, k := range src {
			o := a.Occurrences[k.Occ]
			st := r.topo.Lookup(o.Table)
			if st != nil && st.Strategy != Reference && k.Column == st.Key && r.colocated(st, t) {
				from = &occ{Occurrence: o, i: k.Occ, t: st}
				break
			}
		}
		if from == nil {
			return &compiled{err: refuse(hint, "INSERT ... SELECT into sharded table %s copies %s from a column that is not a co-located shard key", t.Name, t.Key)}
		}
	}
	return &compiled{write: true, insertTo: t, eval: func(params Params) (*Plan, error) {
		var dest shardSet
		if isVal {
			s, ok := r.shardOfValue(t, v, params)
			if !ok {
				return nil, refuse(hint, "INSERT ... SELECT into %s has no shard key value the proxy can evaluate (column %s)", t.Name, t.Key)
			}
			dest = shardSet{s}
		} else {
			dest = r.restrict(from.t, a.Restriction(from.i, from.t.Key), params)
			if dest == nil || len(dest) > 1 {
				return nil, refuse(hint, "INSERT ... SELECT into %s reads %s from %s on %s, not one shard", t.Name, t.Key, from.t.Name, r.describe(dest))
			}
			if len(dest) == 0 {
				dest = shardSet{0} // the SELECT returns no row
			}
		}
		if g != nil {
			s, _, err := r.place(a, g, params)
			var u *Unsupported
			if errors.As(err, &u) {
				return nil, refuse(hint, "INSERT ... SELECT into %s is only supported when it provably stays on one shard: %s", t.Name, u.Msg)
			} else if err != nil {
				return nil, err
			}
			if len(s) == 1 && s[0] != dest[0] {
				return nil, refuse(hint, "INSERT ... SELECT into %s writes on %s but reads %s", t.Name, r.names[dest[0]], r.names[s[0]])
			}
		}
		return &Plan{Shards: r.singles[dest[0]], Write: true,
			Reason: fmt.Sprintf("INSERT ... SELECT into %s: %s", t.Name, r.names[dest[0]])}, nil
	}}
}

// shardOfValue places one key value; ok is false when it cannot be evaluated.
func (r *Router) shardOfValue(t *Table, v parser.Value, params Params) (int, bool) {
	if v.Array {
		return 0, false
	}
	set, ok := r.valueShards(t, v, params)
	if !ok || len(set) != 1 {
		return 0, false
	}
	return set[0], true
}

// limitValue reads a LIMIT count (a literal or a bound parameter). A
// negative count passes through: every shard raises Postgres's own error.
func limitValue(v parser.Value, params Params) (int64, bool) {
	v = literal(v, params)
	text, null, ok := valueText(v, params)
	if !ok || null || (v.Kind != parser.IntLit && v.Kind != parser.StringLit && v.Kind != parser.ParamVal) {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(text), 10, 64)
	return n, err == nil
}

// keyAssign is an UPDATE's SET of its table's shard key to a constant or
// parameter.
type keyAssign struct {
	t *Table
	v parser.Value
}

// guardKey lets an UPDATE set the shard key: rows already on the new
// value's shard stay where they belong (the ORM save pattern, which writes
// the key with its unchanged value); on every other shard of the plan the
// statement must change no row, which the proxy checks (KeyGuard) and
// fails the statement otherwise, rolling it back everywhere.
func (r *Router) guardKey(p *Plan, k *keyAssign, params Params) error {
	target, ok := r.shardOfValue(k.t, k.v, params)
	if !ok {
		return refuseHard("Set the shard key to a constant or a parameter, or delete the row and insert it with the new key.",
			"UPDATE of shard key column %s.%s to a value the proxy cannot place on one shard is not supported", k.t.Name, k.t.Key)
	}
	for _, s := range p.Shards {
		if s != target {
			p.KeyGuard = append(p.KeyGuard, s)
		}
	}
	if len(p.KeyGuard) > 0 {
		p.Reason += fmt.Sprintf("; rows set to another shard's key move to shard %s", r.names[target])
		value, null := k.v.Text, k.v.Null
		ok := true
		if k.v.Kind == parser.ParamVal {
			if params == nil {
				ok = false
			} else {
				value, null, ok = params.Text(k.v.Param)
			}
		}
		if ok && !null {
			p.KeyMove = &KeyMove{Table: k.t.Name, Key: k.t.Key, Value: value, Target: target}
		}
	}
	return nil
}

// KeyMove says how the rows of an UPDATE that set the shard key to another
// shard's value move there: deleted where they were, inserted on Target,
// in the statement's transaction.
type KeyMove struct {
	Table, Key string // as configured (lower case; Table may be schema.name)
	Value      string // the new key value, as text
	Target     int
}
