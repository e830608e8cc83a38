package partman

import (
	"strings"
	"testing"
	"time"
)

func intp(n int) *int    { return &n }
func boolp(b bool) *bool { return &b }

func TestResolveDefaults(t *testing.T) {
	c := Config{Tables: map[string]TableConfig{
		"orders":         {Column: "created_at"},
		"archive.events": {Column: "at", Interval: Day, Premake: intp(0), BackfillFrom: "2025-01-15", Retention: "2 years", RetentionMode: Drop, DefaultPartition: boolp(false)},
	}}
	ts, err := c.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[0].Name != "archive.events" || ts[1].Name != "orders" {
		t.Fatalf("tables not sorted: %+v", ts)
	}
	o := ts[1]
	if o.Interval != Month || o.Premake != 4 || o.Mode != Detach || !o.Default || o.Schema != "" || o.Relation != "orders" || o.Retention.N != 0 {
		t.Fatalf("orders defaults: %+v", o)
	}
	e := ts[0]
	if e.Schema != "archive" || e.Relation != "events" || e.Premake != 0 || e.Default || e.Mode != Drop ||
		e.Retention != (Retention{N: 24, Unit: Month}) || !e.Backfill.Equal(time.Date(2025, 1, 15, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("events: %+v", e)
	}
	if c.lockTimeout() != 2*time.Second {
		t.Fatal(c.lockTimeout())
	}
}

func TestValidateErrors(t *testing.T) {
	cases := []struct {
		name string
		c    Config
		want string
	}{
		{"no column", Config{Tables: map[string]TableConfig{"orders": {}}}, "table orders: column (the range partition key) is required"},
		{"bad interval", Config{Tables: map[string]TableConfig{"orders": {Column: "c", Interval: "quarter"}}}, `interval "quarter" is not month, week or day`},
		{"negative premake", Config{Tables: map[string]TableConfig{"orders": {Column: "c", Premake: intp(-1)}}}, "premake -1"},
		{"bad backfill", Config{Tables: map[string]TableConfig{"orders": {Column: "c", BackfillFrom: "last year"}}}, "backfill_from"},
		{"retention without unit", Config{Tables: map[string]TableConfig{"orders": {Column: "c", Retention: "24"}}}, `retention "24" is not like`},
		{"retention bad unit", Config{Tables: map[string]TableConfig{"orders": {Column: "c", Retention: "24 fortnights"}}}, `unit "fortnights"`},
		{"retention zero", Config{Tables: map[string]TableConfig{"orders": {Column: "c", Retention: "0 months"}}}, "not a positive whole number"},
		{"bad mode", Config{Tables: map[string]TableConfig{"orders": {Column: "c", Retention: "1 month", RetentionMode: "archive"}}}, `retention_mode "archive"`},
		{"mode without retention", Config{Tables: map[string]TableConfig{"orders": {Column: "c", RetentionMode: Drop}}}, "retention_mode drop without retention"},
		{"bad name", Config{Tables: map[string]TableConfig{"a.b.c": {Column: "c"}}}, "not table or schema.table"},
		{"duplicate", Config{Tables: map[string]TableConfig{"orders": {Column: "c"}, "ORDERS": {Column: "c"}}}, "listed twice"},
		{"short loop", Config{LoopInterval: time.Second}, "loop_interval 1s is shorter than 1m"},
		{"negative lock timeout", Config{LockTimeout: -time.Second}, "lock_timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.c.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestRetentionCutoff(t *testing.T) {
	cases := []struct {
		in, now, want string
	}{
		{"24 months", "2026-01-15T00:00:00Z", "2024-01-15T00:00:00Z"},
		{"1 year", "2024-02-29T00:00:00Z", "2023-03-01T00:00:00Z"}, // Go normalises Feb 29 of a common year
		{"8 weeks", "2026-01-15T00:00:00Z", "2025-11-20T00:00:00Z"},
		{"90 days", "2026-01-15T00:00:00Z", "2025-10-17T00:00:00Z"},
		{"1 Month", "2026-03-31T00:00:00Z", "2026-03-03T00:00:00Z"},
	}
	for _, c := range cases {
		r, err := ParseRetention(c.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Cutoff(ts(c.now)); !got.Equal(ts(c.want)) {
			t.Errorf("%s before %s = %v, want %s", c.in, c.now, got, c.want)
		}
	}
}
