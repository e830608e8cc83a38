package partman

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// month returns an attached partition for the month starting at ym ("2026-01").
func month(rel, ym string) Partition {
	from := ts(ym + "-01T00:00:00Z")
	to := Month.Next(from)
	return Partition{Name: PartitionName(rel, Month, from), From: from, To: to, Readable: true,
		Bound: fmt.Sprintf("FOR VALUES FROM (%s) TO (%s)", TimestampTZ.literal(from), TimestampTZ.literal(to))}
}

var defaultPart = Partition{Name: "orders_default", Bound: "DEFAULT", Default: true}

func months(yms ...string) []Partition {
	out := []Partition{defaultPart}
	for _, ym := range yms {
		out = append(out, month("orders", ym))
	}
	return out
}

func summary(p TablePlan) []string {
	var out []string
	for _, a := range p.Actions {
		s := string(a.Op) + " " + a.Name
		if a.Op == OpCreate {
			s += " " + a.From.Format("2006-01-02") + ".." + a.To.Format("2006-01-02")
		}
		out = append(out, s)
	}
	return out
}

func TestPlanTable(t *testing.T) {
	orders := Table{Name: "orders", Relation: "orders", Column: "created_at", Interval: Month, Premake: 4, Mode: Detach, Default: true}
	with := func(f func(*Table)) Table { t := orders; f(&t); return t }
	cases := []struct {
		name     string
		table    Table
		now      string
		parts    []Partition
		taken    []string
		invalid  []string
		want     []string
		problems []string
	}{
		{
			name:  "empty parent: default and current plus 4",
			table: orders, now: "2026-01-15T00:00:00Z", parts: nil,
			want: []string{"create default orders_default",
				"create orders_p2026_01 2026-01-01..2026-02-01", "create orders_p2026_02 2026-02-01..2026-03-01",
				"create orders_p2026_03 2026-03-01..2026-04-01", "create orders_p2026_04 2026-04-01..2026-05-01",
				"create orders_p2026_05 2026-05-01..2026-06-01"},
		},
		{
			name:  "everything present: nothing to do",
			table: orders, now: "2026-01-15T00:00:00Z", parts: months("2026-01", "2026-02", "2026-03", "2026-04", "2026-05"),
		},
		{
			name:  "one month later: one more, oldest detached",
			table: with(func(t *Table) { t.Retention = Retention{N: 1, Unit: Month} }),
			now:   "2026-02-15T00:00:00Z", parts: months("2025-12", "2026-01", "2026-02", "2026-03", "2026-04", "2026-05"),
			want: []string{"create orders_p2026_06 2026-06-01..2026-07-01", "detach orders_p2025_12"},
		},
		{
			name:  "drop mode",
			table: with(func(t *Table) { t.Retention = Retention{N: 1, Unit: Month}; t.Mode = Drop; t.Premake = 0 }),
			now:   "2026-02-15T00:00:00Z", parts: months("2025-11", "2025-12", "2026-01", "2026-02"),
			want: []string{"drop orders_p2025_11", "drop orders_p2025_12"},
		},
		{
			name:  "year end",
			table: with(func(t *Table) { t.Premake = 1 }), now: "2025-12-31T23:59:59Z", parts: months(),
			want: []string{"create orders_p2025_12 2025-12-01..2026-01-01", "create orders_p2026_01 2026-01-01..2026-02-01"},
		},
		{
			name:  "now with an offset is read in UTC",
			table: with(func(t *Table) { t.Premake = 0 }), now: "2026-01-31T23:30:00-02:00", parts: months(),
			want: []string{"create orders_p2026_02 2026-02-01..2026-03-01"},
		},
		{
			name:  "leap year by day",
			table: with(func(t *Table) { t.Interval = Day; t.Premake = 2 }), now: "2024-02-28T12:00:00Z", parts: months(),
			want: []string{"create orders_p2024_02_28 2024-02-28..2024-02-29", "create orders_p2024_02_29 2024-02-29..2024-03-01",
				"create orders_p2024_03_01 2024-03-01..2024-03-02"},
		},
		{
			name:  "backfill",
			table: with(func(t *Table) { t.Premake = 0; t.Backfill = ts("2025-10-20T00:00:00Z") }), now: "2026-01-15T00:00:00Z",
			parts: months("2025-11"),
			want:  []string{"create orders_p2025_10 2025-10-01..2025-11-01", "create orders_p2025_12 2025-12-01..2026-01-01", "create orders_p2026_01 2026-01-01..2026-02-01"},
		},
		{
			name: "backfill is cut at the retention",
			table: with(func(t *Table) {
				t.Premake = 0
				t.Backfill = ts("2020-01-01T00:00:00Z")
				t.Retention = Retention{N: 3, Unit: Month}
			}),
			now: "2026-01-15T00:00:00Z", parts: months(),
			want: []string{"create orders_p2025_10 2025-10-01..2025-11-01", "create orders_p2025_11 2025-11-01..2025-12-01",
				"create orders_p2025_12 2025-12-01..2026-01-01", "create orders_p2026_01 2026-01-01..2026-02-01"},
		},
		{
			name:  "premake 0",
			table: with(func(t *Table) { t.Premake = 0 }), now: "2026-01-15T00:00:00Z", parts: months(),
			want: []string{"create orders_p2026_01 2026-01-01..2026-02-01"},
		},
		{
			name:  "same bounds under another name count",
			table: with(func(t *Table) { t.Premake = 0 }), now: "2026-01-15T00:00:00Z",
			parts: []Partition{defaultPart, {Name: "orders_jan", From: ts("2026-01-01T00:00:00Z"), To: ts("2026-02-01T00:00:00Z"), Readable: true}},
		},
		{
			name:  "overlap is reported, others created",
			table: with(func(t *Table) { t.Premake = 1 }), now: "2026-01-15T00:00:00Z",
			parts:    []Partition{defaultPart, {Name: "orders_odd", From: ts("2026-01-10T00:00:00Z"), To: ts("2026-01-20T00:00:00Z"), Readable: true, Bound: "odd"}},
			want:     []string{"create orders_p2026_02 2026-02-01..2026-03-01"},
			problems: []string{"period 2026-01-01 00:00:00+00 to 2026-02-01 00:00:00+00 overlaps partition orders_odd (odd); not created"},
		},
		{
			name:  "unbounded partition overlaps",
			table: with(func(t *Table) { t.Premake = 0 }), now: "2026-01-15T00:00:00Z",
			parts:    []Partition{{Name: "orders_old", To: ts("2026-01-02T00:00:00Z"), Readable: true, Bound: "old"}},
			want:     []string{"create default orders_default"},
			problems: []string{"period 2026-01-01 00:00:00+00 to 2026-02-01 00:00:00+00 overlaps partition orders_old (old); not created"},
		},
		{
			name:  "expected name with other bounds",
			table: with(func(t *Table) { t.Premake = 0 }), now: "2026-01-15T00:00:00Z",
			parts:    []Partition{defaultPart, {Name: "orders_p2026_01", From: ts("2030-01-01T00:00:00Z"), To: ts("2030-02-01T00:00:00Z"), Readable: true, Bound: "b"}},
			problems: []string{"partition orders_p2026_01 exists with other bounds (b), expected 2026-01-01 00:00:00+00 to 2026-02-01 00:00:00+00; not created"},
		},
		{
			name:  "name taken by a detached table",
			table: with(func(t *Table) { t.Premake = 1 }), now: "2026-01-15T00:00:00Z", parts: months(), taken: []string{"orders_p2026_02"},
			want:     []string{"create orders_p2026_01 2026-01-01..2026-02-01"},
			problems: []string{"table orders_p2026_02 exists but is not attached to orders; attach or rename it (expected 2026-02-01 00:00:00+00 to 2026-03-01 00:00:00+00)"},
		},
		{
			name:  "unreadable bound is reported",
			table: with(func(t *Table) { t.Premake = 0 }), now: "2026-01-15T00:00:00Z",
			parts:    append(months("2026-01"), Partition{Name: "orders_x", Bound: "FOR VALUES FROM (1) TO (2)"}),
			problems: []string{"partition orders_x has bounds partman cannot read: FOR VALUES FROM (1) TO (2)"},
		},
		{
			name:  "no default wanted",
			table: with(func(t *Table) { t.Premake = 0; t.Default = false }), now: "2026-01-15T00:00:00Z",
			want: []string{"create orders_p2026_01 2026-01-01..2026-02-01"},
		},
		{
			name:  "default name taken",
			table: with(func(t *Table) { t.Premake = 0 }), now: "2026-01-15T00:00:00Z", parts: []Partition{month("orders", "2026-01")}, taken: []string{"orders_default"},
			problems: []string{"table orders_default exists but is not attached to orders as DEFAULT; attach or rename it"},
		},
		{
			name:  "retention keeps a partially expired partition",
			table: with(func(t *Table) { t.Premake = 0; t.Retention = Retention{N: 24, Unit: Month} }), now: "2026-01-15T00:00:00Z",
			parts: months("2023-12", "2024-01", "2026-01"),
			want:  []string{"detach orders_p2023_12"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := State{Schema: "public", Relation: "orders", Kind: TimestampTZ, Partitions: c.parts, Taken: map[string]bool{}, InvalidIndexes: c.invalid}
			for _, n := range c.taken {
				st.Taken[n] = true
			}
			p := PlanTable(c.table, ts(c.now), st, time.Second)
			if got := summary(p); !reflect.DeepEqual(got, c.want) {
				t.Errorf("actions:\n got %q\nwant %q", got, c.want)
			}
			if !reflect.DeepEqual(p.Problems, c.problems) {
				t.Errorf("problems:\n got %q\nwant %q", p.Problems, c.problems)
			}
		})
	}
}

func TestStatements(t *testing.T) {
	tbl := Table{Name: "Odd", Relation: `Odd"Name`, Column: "created at", Interval: Month, Default: true}
	st := State{Schema: "app", Relation: `Odd"Name`, Kind: TimestampTZ, Columns: []string{"id", "created at"},
		Partitions: []Partition{{Name: `Odd"Name_default`, Default: true, Bound: "DEFAULT"}}}
	p := PlanTable(tbl, ts("2026-01-15T00:00:00Z"), st, 1500*time.Millisecond)
	got := p.Statements(p.Actions[0])
	want := []string{
		`SET LOCAL lock_timeout = '1500ms'`,
		`LOCK TABLE ONLY "app"."Odd""Name" IN SHARE UPDATE EXCLUSIVE MODE`,
		`CREATE TABLE "app"."Odd""Name_p2026_01" (LIKE "app"."Odd""Name" INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS INCLUDING GENERATED)`,
		`WITH moved AS (DELETE FROM ONLY "app"."Odd""Name_default" WHERE "created at" >= '2026-01-01 00:00:00+00' AND "created at" < '2026-02-01 00:00:00+00' RETURNING "id", "created at") INSERT INTO "app"."Odd""Name_p2026_01" ("id", "created at") SELECT "id", "created at" FROM moved`,
		`ALTER TABLE "app"."Odd""Name" ATTACH PARTITION "app"."Odd""Name_p2026_01" FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2026-02-01 00:00:00+00')`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("statements:\n%s", strings.Join(got, "\n"))
	}
	// Without DEFAULT nothing is moved; date columns get date literals.
	st.Partitions, st.Kind = nil, Date
	tbl.Default = false
	p = PlanTable(tbl, ts("2026-01-15T00:00:00Z"), st, time.Second)
	got = p.Statements(p.Actions[0])
	if len(got) != 4 || !strings.HasSuffix(got[3], `FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')`) {
		t.Fatalf("date statements:\n%s", strings.Join(got, "\n"))
	}
	def := p.Statements(Action{Op: OpCreateDefault, Name: "d"})
	if def[2] != `ALTER TABLE "app"."Odd""Name" ATTACH PARTITION "app"."d" DEFAULT` {
		t.Fatal(def)
	}
	for op, want := range map[Op]string{OpDetach: `ALTER TABLE "app"."Odd""Name" DETACH PARTITION "app"."x"`, OpDrop: `DROP TABLE "app"."x"`} {
		if got := p.Statements(Action{Op: op, Name: "x"}); got[1] != want {
			t.Errorf("%s: %q", op, got)
		}
	}
}

func TestParseBound(t *testing.T) {
	cases := []struct {
		in       string
		from, to string // "" for unbounded
		def, bad bool
	}{
		{in: "FOR VALUES FROM ('2025-03-01 00:00:00+00') TO ('2025-04-01 00:00:00+00')", from: "2025-03-01T00:00:00Z", to: "2025-04-01T00:00:00Z"},
		{in: "FOR VALUES FROM ('2025-03-01 01:00:00+01') TO ('2025-04-01 02:00:00+02')", from: "2025-03-01T00:00:00Z", to: "2025-04-01T00:00:00Z"},
		{in: "FOR VALUES FROM ('2025-03-01 05:30:00+05:30') TO ('2025-03-02 05:30:00.5+05:30')", from: "2025-03-01T00:00:00Z", to: "2025-03-02T00:00:00.5Z"},
		{in: "FOR VALUES FROM ('1900-01-01 00:09:21+00:09:21') TO (MAXVALUE)", from: "1900-01-01T00:00:00Z"},
		{in: "FOR VALUES FROM (MINVALUE) TO ('2025-01-01')", to: "2025-01-01T00:00:00Z"},
		{in: "FOR VALUES FROM ('2025-01-01 00:00:00') TO ('2025-02-01 00:00:00')", from: "2025-01-01T00:00:00Z", to: "2025-02-01T00:00:00Z"},
		{in: "DEFAULT", def: true},
		{in: "FOR VALUES FROM ('a', 1) TO ('b', 2)", bad: true},
		{in: "FOR VALUES IN (1, 2)", bad: true},
		{in: "FOR VALUES FROM ('soon') TO ('later')", bad: true},
	}
	for _, c := range cases {
		p, err := ParseBound(c.in)
		switch {
		case c.bad:
			if err == nil || p.Readable {
				t.Errorf("%s: no error", c.in)
			}
			continue
		case err != nil:
			t.Errorf("%s: %v", c.in, err)
			continue
		case c.def:
			if !p.Default || p.Readable {
				t.Errorf("%s: %+v", c.in, p)
			}
			continue
		}
		check := func(what string, got time.Time, want string) {
			if want == "" && !got.IsZero() || want != "" && !got.Equal(ts(want)) {
				t.Errorf("%s: %s = %v, want %q", c.in, what, got, want)
			}
		}
		check("from", p.From, c.from)
		check("to", p.To, c.to)
	}
}

func TestAhead(t *testing.T) {
	now := ts("2026-01-15T00:00:00Z")
	cases := []struct {
		parts []Partition
		want  int
	}{
		{months("2026-01", "2026-02", "2026-03", "2026-04", "2026-05"), 4},
		{months("2026-01", "2026-02", "2026-04"), 1},
		{months("2025-12", "2026-02"), -1},
		{months("2026-01"), 0},
		{[]Partition{{From: ts("2025-01-01T00:00:00Z"), To: ts("2026-04-01T00:00:00Z"), Readable: true}}, 2},
	}
	for i, c := range cases {
		if got := Ahead(Month, now, c.parts); got != c.want {
			t.Errorf("case %d: ahead %d, want %d", i, got, c.want)
		}
	}
}
