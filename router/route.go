package router

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/shardproxy/shardproxy/parser"
)

// Plan says where a statement runs and how its answers combine.
type Plan struct {
	// Shards are the target shard indexes, ascending.
	Shards []int
	// SQL holds per-shard statements aligned with Shards when the statement
	// was rewritten (a split INSERT); nil means every shard runs it as sent.
	SQL []string
	// Aggs, when set, means each shard returns one row of these aggregates
	// and the answer is their combination.
	Aggs []parser.Agg
	// Write is true when the statement changes data or schema.
	Write bool
	// Reason explains the decision, for SHOW ROUTE and logs.
	Reason string
}

// Single reports whether the plan runs on exactly one shard.
func (p *Plan) Single() bool { return len(p.Shards) == 1 }

// Unsupported is a statement the router refuses (SQLSTATE 0A000).
type Unsupported struct {
	Msg  string
	Hint string
}

func (e *Unsupported) Error() string { return e.Msg }

func refuse(hint, format string, args ...any) error {
	return &Unsupported{Msg: fmt.Sprintf(format, args...), Hint: hint}
}

// Params gives bind parameter values (text format) by 1-based number.
type Params interface {
	Text(n int) (value string, null bool, ok bool)
}

// Router routes statements over a Topology. Safe for concurrent use.
type Router struct {
	topo *Topology
	rr   atomic.Uint32
	all  []int
}

// New returns a Router over topo.
func New(topo *Topology) *Router {
	r := &Router{topo: topo}
	for i := range topo.Shards {
		r.all = append(r.all, i)
	}
	return r
}

// Topology returns the router's topology.
func (r *Router) Topology() *Topology { return r.topo }

func (r *Router) any() []int {
	return []int{int(r.rr.Add(1)-1) % len(r.topo.Shards)}
}

// occ is a table occurrence resolved against the topology.
type occ struct {
	parser.Occurrence
	t *Table // nil: not configured
}

// Route plans st. Transaction control, SET and SHOW are the protocol
// layer's business; Route sends them to any one shard.
func (r *Router) Route(st *parser.Statement, params Params) (*Plan, error) {
	switch st.Kind {
	case parser.Unsupported:
		return nil, refuse("Run it on a shard directly; see docs/routing.md.",
			"%s is not supported through shardproxy", st.What)
	case parser.Transaction, parser.Set, parser.Show:
		return &Plan{Shards: r.any(), Reason: "no table: any shard"}, nil
	case parser.DDL:
		return &Plan{Shards: r.all, Write: true, Reason: "DDL: every shard"}, nil
	case parser.Explain:
		p, err := r.Route(st.Inner, params)
		if err != nil {
			return nil, err
		}
		if p.SQL != nil {
			return nil, refuse("EXPLAIN each row's INSERT on its own.", "EXPLAIN of a multi-shard INSERT is not supported")
		}
		return &Plan{Shards: p.Shards, Write: st.Writes, Reason: "EXPLAIN: " + p.Reason}, nil
	}
	occs := r.resolve(st)
	var sharded, reference, unknown []occ
	for _, o := range occs {
		switch {
		case o.t == nil:
			unknown = append(unknown, o)
		case o.t.Strategy == Reference:
			reference = append(reference, o)
		default:
			sharded = append(sharded, o)
		}
	}
	if len(unknown) > 0 {
		if len(sharded) > 0 {
			return nil, refuse("Add the table to the config, or run the query on its shard with a /* shard: name */ comment.",
				"table %s is not in the config (it lives on the default shard) and cannot be combined with sharded table %s",
				unknown[0].Table.Name, sharded[0].Table.Name)
		}
		return &Plan{Shards: []int{r.topo.Default}, Write: st.Writes,
			Reason: fmt.Sprintf("table %s not in config: default shard", unknown[0].Table.Name)}, nil
	}
	if len(sharded) == 0 {
		if len(reference) == 0 {
			return &Plan{Shards: r.any(), Write: st.Writes, Reason: "no table: any shard"}, nil
		}
		if st.Writes {
			return &Plan{Shards: r.all, Write: true, Reason: "write to reference table: every shard"}, nil
		}
		return &Plan{Shards: r.any(), Reason: "reference table read: any shard"}, nil
	}
	if st.Writes && len(reference) > 0 && st.Kind != parser.Select {
		if tgt := occs[0]; tgt.TopLevel && tgt.t != nil && tgt.t.Strategy == Reference {
			return nil, refuse("Write reference tables from constants only.",
				"a write to reference table %s that reads sharded table %s is not supported", tgt.Table.Name, sharded[0].Table.Name)
		}
	}
	if st.Kind == parser.Insert {
		return r.routeInsert(st, sharded, params)
	}
	shards, why, err := r.target(st, sharded, params)
	if err != nil {
		return nil, err
	}
	if st.Kind == parser.Update {
		for _, o := range sharded {
			if o.TopLevel && st.UpdatesColumn(o.t.Key) {
				return nil, refuse("Delete the row and insert it with the new key.",
					"UPDATE of shard key column %s.%s is not supported: the row would stay on the wrong shard", o.t.Name, o.t.Key)
			}
		}
	}
	p := &Plan{Shards: shards, Write: st.Writes, Reason: why}
	if len(shards) > 1 && st.Kind == parser.Select {
		if err := r.mergeable(st, p); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (r *Router) resolve(st *parser.Statement) []occ {
	os := st.Occurrences()
	out := make([]occ, 0, len(os))
	for _, o := range os {
		out = append(out, occ{Occurrence: o, t: r.topo.Lookup(o.Table)})
	}
	return out
}

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

// target finds the shards a SELECT/UPDATE/DELETE over sharded tables must run on.
func (r *Router) target(st *parser.Statement, sharded []occ, params Params) ([]int, string, error) {
	if len(sharded) == 1 && sharded[0].TopLevel {
		o := sharded[0]
		return r.evaluate(o.t, st.KeyPredicate(o.Ref, o.t.Key, true), params)
	}
	if err := r.colocated(st, sharded); err != nil {
		return nil, "", err
	}
	// Co-located: every table's rows for one key live on one shard, so any
	// table's key restriction restricts them all; take the narrowest.
	best, bestWhy := r.all, "co-located join, no key: every shard"
	for _, o := range sharded {
		s, why, err := r.evaluate(o.t, st.KeyPredicate(o.Ref, o.t.Key, false), params)
		if err != nil {
			return nil, "", err
		}
		if len(s) < len(best) {
			best, bestWhy = s, "co-located join: "+why
		}
	}
	return best, bestWhy, nil
}

// colocated checks that all sharded occurrences are top-level hash tables
// joined on their shard keys (connected by key equalities).
func (r *Router) colocated(st *parser.Statement, sharded []occ) error {
	hint := "Join sharded tables on their shard keys (e.g. orders.user_id = users.id), or add a shard key predicate to each."
	for _, o := range sharded {
		if !o.TopLevel {
			return refuse(hint, "a subquery or CTE over sharded table %s is not supported across shards yet", o.Table.Name)
		}
		if o.t.Strategy != Hash || o.t.KeyText != sharded[0].t.KeyText {
			return refuse(hint, "a join between %s and %s does not stay on one shard", sharded[0].Table.Name, o.Table.Name)
		}
	}
	parent := make([]int, len(sharded))
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		for parent[i] != i {
			i = parent[i]
		}
		return i
	}
	keyOf := func(c parser.ColumnRef) int {
		found := -1
		for i, o := range sharded {
			if c.Column == o.t.Key && (c.Ref == o.Ref || c.Ref == "") {
				if c.Ref == "" && found >= 0 {
					return -1 // ambiguous unqualified column
				}
				found = i
			}
		}
		return found
	}
	for _, eq := range st.ColumnEqualities() {
		a, b := keyOf(eq[0]), keyOf(eq[1])
		if a >= 0 && b >= 0 {
			parent[find(a)] = find(b)
		}
	}
	root := find(0)
	for i := range sharded {
		if find(i) != root {
			return refuse(hint, "a join between %s and %s not on their shard keys is not supported across shards",
				sharded[0].Table.Name, sharded[i].Table.Name)
		}
	}
	return nil
}

// mergeable accepts a multi-shard SELECT only when concatenation or the
// plain aggregate combiner gives exactly Postgres's answer.
func (r *Router) mergeable(st *parser.Statement, p *Plan) error {
	sh, _ := st.Shape()
	hint := "Add a shard key predicate so the query runs on one shard; cross-shard ORDER BY/LIMIT/GROUP BY/DISTINCT merging is not in this version (see docs/routing.md)."
	what := ""
	switch {
	case sh.Union:
		what = "UNION/INTERSECT/EXCEPT"
	case sh.Distinct:
		what = "DISTINCT"
	case sh.GroupBy:
		what = "GROUP BY"
	case sh.Having:
		what = "HAVING"
	case sh.Window:
		what = "window functions"
	case sh.OrderBy:
		what = "ORDER BY"
	case sh.Limit, sh.Offset:
		what = "LIMIT/OFFSET"
	}
	if what != "" {
		return refuse(hint, "%s across shards is not supported yet", what)
	}
	if !sh.Aggregate {
		return nil
	}
	if sh.Aggs == nil || sh.UnionAll {
		return refuse(hint, "an expression over aggregates across shards is not supported yet")
	}
	for _, a := range sh.Aggs {
		switch {
		case a.Distinct:
			return refuse(hint, "%s(DISTINCT ...) across shards is not supported yet", a.Func)
		case a.Ordered:
			return refuse(hint, "ordered aggregate %s across shards is not supported", a.Func)
		case a.Func != "count" && a.Func != "sum" && a.Func != "min" && a.Func != "max":
			return refuse(hint, "aggregate %s across shards is not supported yet (count, sum, min and max are)", a.Func)
		}
	}
	p.Aggs = sh.Aggs
	p.Reason += ", aggregates combined"
	return nil
}

func (r *Router) routeInsert(st *parser.Statement, sharded []occ, params Params) (*Plan, error) {
	tgt := sharded[0]
	if !tgt.TopLevel || len(sharded) > 1 {
		return nil, refuse("Insert constant rows with VALUES; INSERT ... SELECT across shards is not supported.",
			"INSERT ... SELECT over sharded tables is not supported")
	}
	t := tgt.t
	keys, err := st.InsertKeys(t.Key)
	switch {
	case errors.Is(err, parser.ErrNoColumnList):
		return nil, refuse("Name the columns: INSERT INTO "+t.Name+" (...) VALUES (...).",
			"INSERT into sharded table %s needs a column list to find shard key %s", t.Name, t.Key)
	case errors.Is(err, parser.ErrNotValues):
		return nil, refuse("Insert constant rows with VALUES.", "INSERT ... SELECT into sharded table %s is not supported", t.Name)
	case err != nil:
		return nil, err
	}
	rowShard := make([]int, len(keys))
	for i, k := range keys {
		s, ok := r.shardOfValue(t, k, params)
		if !ok {
			return nil, refuse(fmt.Sprintf("Give %s a constant or a parameter in every row.", t.Key),
				"row %d of INSERT into %s has no shard key value the proxy can evaluate (column %s)", i+1, t.Name, t.Key)
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
	p := &Plan{Shards: shards, Write: true}
	if len(shards) == 1 {
		p.Reason = fmt.Sprintf("INSERT into %s: %s", t.Name, r.topo.Shards[shards[0]].Name)
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

// shardOfValue places one key value; ok is false when it cannot be evaluated.
func (r *Router) shardOfValue(t *Table, v parser.Value, params Params) (int, bool) {
	set, ok := r.valueShards(t, v, params)
	if !ok || len(set) != 1 {
		return 0, false
	}
	return set[0], true
}

// evaluate turns a predicate on t's key into target shards.
func (r *Router) evaluate(t *Table, p parser.Pred, params Params) ([]int, string, error) {
	var set shardSet
	if t.Strategy == Range {
		set = r.rangeShards(t, r.intervals(t, p, params))
	} else {
		set = r.hashPred(t, p, params)
	}
	if set == nil {
		return r.all, fmt.Sprintf("%s: no usable %s predicate: every shard", t.Name, t.Key), nil
	}
	if len(set) == 0 {
		// A contradiction: no row can match. One shard answers with the
		// right columns and no rows.
		return []int{0}, fmt.Sprintf("%s: contradictory %s predicate: one shard", t.Name, t.Key), nil
	}
	names := make([]string, len(set))
	for i, s := range set {
		names[i] = r.topo.Shards[s].Name
	}
	return set, fmt.Sprintf("%s by %s: %s", t.Name, t.Key, strings.Join(names, ",")), nil
}

// shardSet is a sorted set of shard indexes; nil means every shard.
type shardSet []int

func (r *Router) hashPred(t *Table, p parser.Pred, params Params) shardSet {
	switch p.Op {
	case parser.Cmp:
		if p.Cmp != "=" {
			return nil
		}
		var out shardSet
		for _, v := range p.Values {
			s, ok := r.valueShards(t, v, params)
			if !ok {
				return nil
			}
			out = union(out, s)
		}
		return out
	case parser.And:
		var acc shardSet
		first := true
		for _, k := range p.Kids {
			s := r.hashPred(t, k, params)
			if s == nil {
				continue
			}
			if first {
				acc, first = s, false
			} else {
				acc = intersect(acc, s)
			}
		}
		if first {
			return nil
		}
		return acc
	case parser.Or:
		out := shardSet{}
		for _, k := range p.Kids {
			s := r.hashPred(t, k, params)
			if s == nil {
				return nil
			}
			out = union(out, s)
		}
		return out
	}
	return nil
}

// valueShards returns the shards a key value (or array of values) maps to;
// ok is false when the value cannot be evaluated.
func (r *Router) valueShards(t *Table, v parser.Value, params Params) (shardSet, bool) {
	text, null := v.Text, v.Null
	if v.Kind == parser.ParamVal {
		if params == nil {
			return nil, false
		}
		var ok bool
		if text, null, ok = params.Text(v.Param); !ok {
			return nil, false
		}
	}
	if v.Array {
		if null {
			return shardSet{}, true
		}
		elems, ok := parseArray(text)
		if !ok {
			return nil, false
		}
		out := shardSet{}
		for _, e := range elems {
			s, ok := r.valueShards(t, parser.Value{Kind: parser.StringLit, Text: e}, nil)
			if !ok {
				return nil, false
			}
			out = union(out, s)
		}
		return out, true
	}
	if null {
		if t.Strategy == Hash {
			// Postgres hash partitioning sends NULL keys to remainder 0.
			return shardSet{0}, true
		}
		return nil, false
	}
	n := len(r.topo.Shards)
	if t.Strategy == Range {
		lo, hi, ok := timeValue(v, text)
		if !ok {
			return nil, false
		}
		return r.rangeShards(t, []interval{{lo, hi}}), true
	}
	if t.KeyText {
		switch v.Kind {
		case parser.StringLit, parser.ParamVal:
			if v.Cast != "" && v.Cast != "text" && v.Cast != "varchar" {
				return nil, false
			}
			return shardSet{PartitionOf(HashText(text), n)}, true
		}
		return nil, false
	}
	switch v.Cast {
	case "", "int2", "int4", "int8", "text", "varchar":
	default:
		return nil, false
	}
	switch v.Kind {
	// Integer literals beyond int32 reach us as FloatLit (the grammar's
	// Float node keeps their text); ParseInt accepts exactly the integers.
	case parser.IntLit, parser.FloatLit, parser.StringLit, parser.ParamVal:
		i, err := strconv.ParseInt(strings.TrimSpace(text), 10, 64)
		if err != nil {
			return nil, false
		}
		return shardSet{PartitionOf(HashInt(i), n)}, true
	}
	return nil, false
}

// parseArray reads a one-dimensional array literal like {1,2,"x y"}.
func parseArray(s string) ([]string, bool) {
	s = strings.TrimSpace(s)
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return nil, false
	}
	body := s[1 : len(s)-1]
	if strings.TrimSpace(body) == "" {
		return nil, true
	}
	var out []string
	for _, part := range strings.Split(body, ",") {
		p := strings.TrimSpace(part)
		if strings.ContainsAny(p, `"{}\`) || strings.EqualFold(p, "null") {
			return nil, false
		}
		out = append(out, p)
	}
	return out, true
}

// interval is a closed time interval; zero ends are unbounded.
type interval struct{ lo, hi time.Time }

// zoneSlack widens a time written without an offset: the session TimeZone
// decides its instant, and no zone is further than this from UTC.
const zoneSlack = 15 * time.Hour

// timeValue reads a date/timestamp literal as the closed interval of
// instants it can denote.
func timeValue(v parser.Value, text string) (time.Time, time.Time, bool) {
	if v.Kind != parser.StringLit && v.Kind != parser.ParamVal {
		return time.Time{}, time.Time{}, false
	}
	switch v.Cast {
	case "", "timestamptz", "timestamp", "date", "text":
	default:
		return time.Time{}, time.Time{}, false
	}
	s := strings.TrimSpace(text)
	withZone := []string{"2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07",
		"2006-01-02T15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999 Z07:00", "2006-01-02T15:04:05.999999999Z07",
		"2006-01-02Z07:00", "2006-01-02Z07"}
	if v.Cast != "timestamp" && v.Cast != "date" {
		for _, l := range withZone {
			if t, err := time.Parse(l, s); err == nil {
				return t, t, true
			}
		}
	}
	for _, l := range []string{"2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999", "2006-01-02"} {
		if t, err := time.ParseInLocation(l, s, time.UTC); err == nil {
			return t.Add(-zoneSlack), t.Add(zoneSlack), true
		}
	}
	return time.Time{}, time.Time{}, false
}

// intervals turns a predicate on a range key into the union of intervals
// it allows; nil means unrestricted.
func (r *Router) intervals(t *Table, p parser.Pred, params Params) []interval {
	all := []interval{{}}
	switch p.Op {
	case parser.Cmp:
		var out []interval
		for _, v := range p.Values {
			text, null := v.Text, v.Null
			if v.Kind == parser.ParamVal {
				var ok bool
				if params == nil {
					return all
				}
				if text, null, ok = params.Text(v.Param); !ok {
					return all
				}
			}
			if null || v.Array {
				if null {
					continue // = NULL matches nothing
				}
				return all
			}
			lo, hi, ok := timeValue(v, text)
			if !ok {
				return all
			}
			switch p.Cmp {
			case "=":
				out = append(out, interval{lo, hi})
			case ">", ">=":
				out = append(out, interval{lo: lo})
			case "<", "<=":
				out = append(out, interval{hi: hi})
			}
		}
		if out == nil {
			return []interval{}
		}
		return out
	case parser.And:
		acc := all
		for _, k := range p.Kids {
			acc = intersectIntervals(acc, r.intervals(t, k, params))
		}
		return acc
	case parser.Or:
		var out []interval
		for _, k := range p.Kids {
			out = append(out, r.intervals(t, k, params)...)
		}
		if out == nil {
			return []interval{}
		}
		return out
	}
	return all
}

func intersectIntervals(a, b []interval) []interval {
	out := []interval{}
	for _, x := range a {
		for _, y := range b {
			lo, hi := x.lo, x.hi
			if lo.IsZero() || (!y.lo.IsZero() && y.lo.After(lo)) {
				lo = y.lo
			}
			if hi.IsZero() || (!y.hi.IsZero() && y.hi.Before(hi)) {
				hi = y.hi
			}
			if !lo.IsZero() && !hi.IsZero() && lo.After(hi) {
				continue
			}
			out = append(out, interval{lo, hi})
		}
	}
	return out
}

// rangeShards returns the shards whose ranges overlap any interval; an
// interval outside every range selects no shard (the row cannot exist).
func (r *Router) rangeShards(t *Table, ivs []interval) shardSet {
	if len(ivs) == 1 && ivs[0].lo.IsZero() && ivs[0].hi.IsZero() {
		return nil
	}
	out := shardSet{}
	for _, iv := range ivs {
		for _, rg := range t.Ranges {
			if (rg.To.IsZero() || iv.lo.IsZero() || iv.lo.Before(rg.To)) &&
				(rg.From.IsZero() || iv.hi.IsZero() || !iv.hi.Before(rg.From)) {
				out = union(out, shardSet{rg.Shard})
			}
		}
	}
	return out
}

func union(a, b shardSet) shardSet {
	out := append(shardSet{}, a...)
	for _, x := range b {
		i := sort.SearchInts(out, x)
		if i == len(out) || out[i] != x {
			out = append(out, 0)
			copy(out[i+1:], out[i:])
			out[i] = x
		}
	}
	return out
}

func intersect(a, b shardSet) shardSet {
	out := shardSet{}
	for _, x := range a {
		if i := sort.SearchInts(b, x); i < len(b) && b[i] == x {
			out = append(out, x)
		}
	}
	return out
}
