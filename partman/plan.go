package partman

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Partition is one attached partition of a parent, as read from the
// catalog.
type Partition struct {
	Name string
	// Bound is pg_get_expr(relpartbound), e.g.
	// FOR VALUES FROM ('2025-03-01 00:00:00+00') TO ('2025-04-01 00:00:00+00').
	Bound   string
	Default bool
	// From and To are the parsed bounds; a zero From is MINVALUE and a zero
	// To is MAXVALUE. Valid only when Readable.
	From, To time.Time
	Readable bool
}

// State is what exists on one shard for one configured table.
type State struct {
	Schema   string // the parent's schema, as in the catalog
	Relation string // the parent's name, as in the catalog
	Kind     ColumnKind
	// Columns are the parent's insertable columns (not dropped, not
	// generated), in order; used to move rows out of DEFAULT.
	Columns []string
	// Partitions are the attached partitions, DEFAULT included.
	Partitions []Partition
	// Taken holds names partman would create that exist in the schema but
	// are not attached to the parent (detached, or unrelated tables).
	Taken map[string]bool
	// DefaultRows counts rows in the DEFAULT partition (-1: not counted).
	DefaultRows int64
	// InvalidIndexes are the parent's partitioned indexes that are not
	// valid because some partition lacks its part (CREATE INDEX ON ONLY).
	InvalidIndexes []string
}

// DefaultPartition returns the attached DEFAULT partition, if any.
func (s *State) DefaultPartition() (Partition, bool) {
	for _, p := range s.Partitions {
		if p.Default {
			return p, true
		}
	}
	return Partition{}, false
}

var boundRE = regexp.MustCompile(`^FOR VALUES FROM \((.+)\) TO \((.+)\)$`)

// ParseBound reads pg_get_expr(relpartbound) of a single-column range
// partition. Literals are read with their offset, whatever the session
// TimeZone that rendered them; MINVALUE gives a zero from, MAXVALUE a zero to.
func ParseBound(s string) (p Partition, err error) {
	p.Bound = s
	if s == "DEFAULT" {
		p.Default = true
		return p, nil
	}
	m := boundRE.FindStringSubmatch(s)
	if m == nil {
		return p, fmt.Errorf("bound %q is not a single-column range", s)
	}
	if p.From, err = parseBoundValue(m[1], "MINVALUE"); err != nil {
		return p, fmt.Errorf("bound %q: %w", s, err)
	}
	if p.To, err = parseBoundValue(m[2], "MAXVALUE"); err != nil {
		return p, fmt.Errorf("bound %q: %w", s, err)
	}
	p.Readable = true
	return p, nil
}

var boundLayouts = []string{
	"2006-01-02 15:04:05-07",
	"2006-01-02 15:04:05-07:00",
	"2006-01-02 15:04:05-07:00:00",
	"2006-01-02 15:04:05",
	"2006-01-02",
}

func parseBoundValue(v, unbounded string) (time.Time, error) {
	if v == unbounded {
		return time.Time{}, nil
	}
	if len(v) < 2 || v[0] != '\'' || v[len(v)-1] != '\'' {
		return time.Time{}, fmt.Errorf("%s is not a quoted literal", v)
	}
	lit := v[1 : len(v)-1]
	for _, l := range boundLayouts {
		if t, err := time.ParseInLocation(l, lit, time.UTC); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%s is not a date or timestamp", v)
}

// Op is a kind of maintenance step.
type Op string

// Maintenance steps, in the order a plan runs them.
const (
	OpCreateDefault Op = "create default"
	OpCreate        Op = "create"
	OpDetach        Op = "detach"
	OpDrop          Op = "drop"
)

// Action is one step of a plan; each runs in its own transaction.
type Action struct {
	Op   Op
	Name string // the child partition
	// From and To bound the period of a created partition, or are the
	// actual bounds of a detached or dropped one.
	From, To time.Time
}

// TablePlan is what one run should do to one table on one shard.
type TablePlan struct {
	Table    Table
	State    State
	Now      time.Time
	Actions  []Action
	Problems []string // conflicts reported instead of acted upon
	// LockTimeout is written into every DDL transaction.
	LockTimeout time.Duration
}

// PlanTable computes what to create, detach and drop for table t given the
// state st and the time now. It is pure: no I/O, no clock.
//
// Wanted periods run from the backfill period (or the current one) to
// premake periods after the current one; periods entirely before the
// retention cutoff are never created. A wanted period is satisfied by any
// attached partition whose bounds contain it, whatever its name. A period
// overlapped by other bounds, or whose name is taken by a table that is not
// attached, is reported as a problem and left alone.
func PlanTable(t Table, now time.Time, st State, lockTimeout time.Duration) TablePlan {
	now = now.UTC()
	p := TablePlan{Table: t, State: st, Now: now, LockTimeout: lockTimeout}
	iv := t.Interval
	cur := iv.Trunc(now)
	first := cur
	if !t.Backfill.IsZero() {
		if b := iv.Trunc(t.Backfill); b.Before(first) {
			first = b
		}
	}
	var cutoff time.Time
	if t.Retention.N > 0 {
		cutoff = t.Retention.Cutoff(now)
		for !iv.Next(first).After(cutoff) {
			first = iv.Next(first)
		}
	}
	end := cur
	for i := 0; i <= t.Premake; i++ {
		end = iv.Next(end)
	}
	if _, ok := st.DefaultPartition(); !ok && t.Default {
		if name := DefaultName(st.Relation); st.Taken[name] {
			p.Problems = append(p.Problems, fmt.Sprintf("table %s exists but is not attached to %s as DEFAULT; attach or rename it", name, st.Relation))
		} else {
			p.Actions = append(p.Actions, Action{Op: OpCreateDefault, Name: name})
		}
	}
	for _, ix := range st.InvalidIndexes {
		p.Problems = append(p.Problems, fmt.Sprintf("index %s on %s is not valid: a partition lacks it "+
			"(create it on that partition, then ALTER INDEX %s ATTACH PARTITION ...)", ix, st.Relation, ix))
	}
	for _, part := range st.Partitions {
		if !part.Default && !part.Readable {
			p.Problems = append(p.Problems, fmt.Sprintf("partition %s has bounds partman cannot read: %s", part.Name, part.Bound))
		}
	}
	for _, from := range iv.Periods(first, end) {
		to := iv.Next(from)
		name := PartitionName(st.Relation, iv, from)
		if problem, ok := p.satisfied(name, from, to); ok {
			continue
		} else if problem != "" {
			p.Problems = append(p.Problems, problem)
			continue
		}
		p.Actions = append(p.Actions, Action{Op: OpCreate, Name: name, From: from, To: to})
	}
	if !cutoff.IsZero() {
		op := OpDetach
		if t.Mode == Drop {
			op = OpDrop
		}
		for _, part := range st.Partitions {
			if part.Readable && !part.To.IsZero() && !part.To.After(cutoff) {
				p.Actions = append(p.Actions, Action{Op: op, Name: part.Name, From: part.From, To: part.To})
			}
		}
	}
	return p
}

// satisfied reports whether [from, to) is already covered by one attached
// partition (exactly, or by a wider one such as a migrated yearly table);
// if not, a non-empty problem says why it cannot be created.
func (p *TablePlan) satisfied(name string, from, to time.Time) (problem string, ok bool) {
	k := p.State.Kind
	for _, part := range p.State.Partitions {
		if part.Readable && (part.From.IsZero() || !part.From.After(from)) && (part.To.IsZero() || !part.To.Before(to)) {
			return "", true
		}
	}
	for _, part := range p.State.Partitions {
		if part.Readable && (part.From.IsZero() || part.From.Before(to)) && (part.To.IsZero() || from.Before(part.To)) {
			return fmt.Sprintf("period %s to %s overlaps partition %s (%s); not created",
				k.text(from), k.text(to), part.Name, part.Bound), false
		}
	}
	for _, part := range p.State.Partitions {
		if part.Name == name {
			return fmt.Sprintf("partition %s exists with other bounds (%s), expected %s to %s; not created",
				name, part.Bound, k.text(from), k.text(to)), false
		}
	}
	if p.State.Taken[name] {
		return fmt.Sprintf("table %s exists but is not attached to %s; attach or rename it (expected %s to %s)",
			name, p.State.Relation, k.text(from), k.text(to)), false
	}
	return "", false
}

// text is a bound without quotes, for messages.
func (k ColumnKind) text(t time.Time) string {
	l := k.literal(t)
	return l[1 : len(l)-1]
}

func (p *TablePlan) parent() string {
	return pgx.Identifier{p.State.Schema, p.State.Relation}.Sanitize()
}

func (p *TablePlan) child(name string) string {
	return pgx.Identifier{p.State.Schema, name}.Sanitize()
}

const likeParent = "INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS INCLUDING GENERATED"

// Statements returns the SQL of one action, to run in one transaction in
// this order. Identifiers are quoted with pgx.Identifier; bound literals are
// formatted from computed times only.
func (p *TablePlan) Statements(a Action) []string {
	parent, child := p.parent(), p.child(a.Name)
	out := []string{fmt.Sprintf("SET LOCAL lock_timeout = '%dms'", p.LockTimeout.Milliseconds())}
	switch a.Op {
	case OpCreateDefault:
		out = append(out,
			fmt.Sprintf("CREATE TABLE %s (LIKE %s %s)", child, parent, likeParent),
			fmt.Sprintf("ALTER TABLE %s ATTACH PARTITION %s DEFAULT", parent, child))
	case OpCreate:
		k := p.State.Kind
		// Take the parent's lock first (the one ATTACH takes anyway) so that
		// we never hold DEFAULT while waiting for the parent (pg_partman #796);
		// ONLY, so that the existing partitions are not locked.
		out = append(out,
			fmt.Sprintf("LOCK TABLE ONLY %s IN SHARE UPDATE EXCLUSIVE MODE", parent),
			fmt.Sprintf("CREATE TABLE %s (LIKE %s %s)", child, parent, likeParent))
		if def, ok := p.State.DefaultPartition(); ok && len(p.State.Columns) > 0 {
			col := pgx.Identifier{p.Table.Column}.Sanitize()
			cols := make([]string, len(p.State.Columns))
			for i, c := range p.State.Columns {
				cols[i] = pgx.Identifier{c}.Sanitize()
			}
			list := strings.Join(cols, ", ")
			out = append(out, fmt.Sprintf(
				"WITH moved AS (DELETE FROM ONLY %s WHERE %s >= %s AND %s < %s RETURNING %s) INSERT INTO %s (%s) SELECT %s FROM moved",
				p.child(def.Name), col, k.literal(a.From), col, k.literal(a.To), list, child, list, list))
		}
		out = append(out, fmt.Sprintf("ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%s) TO (%s)",
			parent, child, k.literal(a.From), k.literal(a.To)))
	case OpDetach:
		out = append(out, fmt.Sprintf("ALTER TABLE %s DETACH PARTITION %s", parent, child))
	case OpDrop:
		out = append(out, fmt.Sprintf("DROP TABLE %s", child))
	}
	return out
}

// Ahead counts the consecutive periods after the current one that attached
// partitions cover, or returns -1 when the current period itself is not
// covered (its rows go to DEFAULT, or fail).
func Ahead(iv Interval, now time.Time, parts []Partition) int {
	covered := func(from, to time.Time) bool {
		for _, p := range parts {
			if p.Readable && (p.From.IsZero() || !p.From.After(from)) && (p.To.IsZero() || !p.To.Before(to)) {
				return true
			}
		}
		return false
	}
	p := iv.Trunc(now)
	if !covered(p, iv.Next(p)) {
		return -1
	}
	n := 0
	for p = iv.Next(p); covered(p, iv.Next(p)) && n < 10000; p = iv.Next(p) {
		n++
	}
	return n
}
