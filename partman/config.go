package partman

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shardproxy/shardproxy/router"
)

// DefaultPremake is how many periods after the current one are kept ready
// when a table does not say (pg_partman's default too).
const DefaultPremake = 4

// Config is the partman section of the config file.
type Config struct {
	// LoopInterval runs maintenance inside shardproxy every interval.
	// Zero (the default) disables the loop; cron runs `partman run`.
	LoopInterval time.Duration `yaml:"loop_interval"`
	// LockTimeout bounds how long one DDL statement waits for a lock
	// before the transaction is abandoned and retried. Default 2s.
	LockTimeout time.Duration `yaml:"lock_timeout"`
	// Tables maps a partitioned parent (optionally schema-qualified) to
	// its maintenance settings.
	Tables map[string]TableConfig `yaml:"tables"`
}

// TableConfig is the maintenance policy of one partitioned parent.
type TableConfig struct {
	// Column is the range partition key: timestamptz, timestamp or date.
	Column string `yaml:"column"`
	// Interval is month (default), week (ISO, from Monday) or day.
	Interval Interval `yaml:"interval"`
	// Premake is how many periods after the current one (counted from
	// now, in UTC) must exist. Nil means DefaultPremake.
	Premake *int `yaml:"premake"`
	// BackfillFrom, a date, makes partitions exist from its period up to
	// now as well. Empty means from the current period only.
	BackfillFrom string `yaml:"backfill_from"`
	// Retention like "24 months", "8 weeks" or "90 days": partitions that
	// lie entirely before now minus Retention are detached or dropped.
	// Empty keeps everything.
	Retention string `yaml:"retention"`
	// RetentionMode is detach (default: the table stays, outside the
	// parent) or drop.
	RetentionMode RetentionMode `yaml:"retention_mode"`
	// DefaultPartition, when true (the default), makes sure the parent has
	// a DEFAULT partition named <table>_default. False creates none (an
	// existing one is left alone and still watched).
	DefaultPartition *bool `yaml:"default_partition"`
}

// Interval is the width of one partition.
type Interval string

// Intervals partman knows.
const (
	Month Interval = "month"
	Week  Interval = "week"
	Day   Interval = "day"
)

// RetentionMode says what happens to an expired partition.
type RetentionMode string

// Retention modes.
const (
	Detach RetentionMode = "detach"
	Drop   RetentionMode = "drop"
)

// Retention is a parsed retention period.
type Retention struct {
	N    int
	Unit Interval
}

// Cutoff returns now minus the retention, in UTC.
func (r Retention) Cutoff(now time.Time) time.Time {
	now = now.UTC()
	switch r.Unit {
	case Month:
		return now.AddDate(0, -r.N, 0)
	case Week:
		return now.AddDate(0, 0, -7*r.N)
	default:
		return now.AddDate(0, 0, -r.N)
	}
}

func (r Retention) String() string {
	if r.N == 0 {
		return ""
	}
	return fmt.Sprintf("%d %ss", r.N, r.Unit)
}

// ParseRetention reads "24 months", "1 year", "8 weeks", "90 days".
func ParseRetention(s string) (Retention, error) {
	f := strings.Fields(strings.ToLower(s))
	if len(f) != 2 {
		return Retention{}, fmt.Errorf("retention %q is not like \"24 months\"", s)
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= 0 {
		return Retention{}, fmt.Errorf("retention %q: %q is not a positive whole number", s, f[0])
	}
	switch strings.TrimSuffix(f[1], "s") {
	case "year":
		return Retention{N: 12 * n, Unit: Month}, nil
	case "month", "mon":
		return Retention{N: n, Unit: Month}, nil
	case "week":
		return Retention{N: n, Unit: Week}, nil
	case "day":
		return Retention{N: n, Unit: Day}, nil
	}
	return Retention{}, fmt.Errorf("retention %q: unit %q is not years, months, weeks or days", s, f[1])
}

// Table is the resolved form of one TableConfig, with defaults applied.
type Table struct {
	// Name is the table as configured, e.g. "orders" or "app.orders".
	Name     string
	Schema   string // empty: found through search_path
	Relation string
	Column   string
	Interval Interval
	Premake  int
	// Backfill is the start of the oldest period to create; zero for none.
	Backfill  time.Time
	Retention Retention
	Mode      RetentionMode
	Default   bool
}

// Resolve validates the tables and returns them sorted by name, with
// defaults applied.
func (c *Config) Resolve() ([]Table, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("partman: "+format, args...)) }
	if c.LockTimeout < 0 {
		bad("lock_timeout %s is negative", c.LockTimeout)
	}
	names := make([]string, 0, len(c.Tables))
	for n := range c.Tables {
		names = append(names, n)
	}
	sort.Strings(names)
	seen := map[string]bool{}
	out := make([]Table, 0, len(names))
	for _, name := range names {
		tc := c.Tables[name]
		t := Table{Name: name, Column: tc.Column, Interval: tc.Interval, Premake: DefaultPremake,
			Mode: tc.RetentionMode, Default: true}
		parts := strings.Split(name, ".")
		switch {
		case len(parts) == 1 && parts[0] != "":
			t.Relation = parts[0]
		case len(parts) == 2 && parts[0] != "" && parts[1] != "":
			t.Schema, t.Relation = parts[0], parts[1]
		default:
			bad("table %q: name is not table or schema.table", name)
		}
		if seen[strings.ToLower(name)] {
			bad("table %s: listed twice (names are case-insensitive)", name)
		}
		seen[strings.ToLower(name)] = true
		if t.Column == "" {
			bad("table %s: column (the range partition key) is required", name)
		}
		switch t.Interval {
		case "":
			t.Interval = Month
		case Month, Week, Day:
		default:
			bad("table %s: interval %q is not month, week or day", name, tc.Interval)
		}
		if tc.Premake != nil {
			t.Premake = *tc.Premake
			if t.Premake < 0 || t.Premake > 1000 {
				bad("table %s: premake %d is not between 0 and 1000", name, t.Premake)
			}
		}
		if tc.BackfillFrom != "" {
			b, err := router.ParseBound(tc.BackfillFrom)
			if err != nil {
				bad("table %s: backfill_from: %v", name, err)
			}
			t.Backfill = b
		}
		if tc.Retention != "" {
			r, err := ParseRetention(tc.Retention)
			if err != nil {
				bad("table %s: %v", name, err)
			}
			t.Retention = r
		}
		switch t.Mode {
		case "":
			t.Mode = Detach
		case Detach, Drop:
			if tc.Retention == "" {
				bad("table %s: retention_mode %s without retention", name, t.Mode)
			}
		default:
			bad("table %s: retention_mode %q is not detach or drop", name, tc.RetentionMode)
		}
		if tc.DefaultPartition != nil {
			t.Default = *tc.DefaultPartition
		}
		out = append(out, t)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// Validate checks the section and returns every problem found.
func (c *Config) Validate() error {
	_, err := c.Resolve()
	errs := []error{err}
	if c.LoopInterval < 0 {
		errs = append(errs, fmt.Errorf("partman: loop_interval %s is negative", c.LoopInterval))
	} else if c.LoopInterval > 0 && c.LoopInterval < time.Minute {
		errs = append(errs, fmt.Errorf("partman: loop_interval %s is shorter than 1m", c.LoopInterval))
	}
	return errors.Join(errs...)
}

// lockTimeout returns the configured lock timeout or its default.
func (c *Config) lockTimeout() time.Duration {
	if c.LockTimeout == 0 {
		return 2 * time.Second
	}
	return c.LockTimeout
}
