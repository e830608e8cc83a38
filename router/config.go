package router

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Strategy says how a table's rows are placed on shards.
type Strategy string

const (
	// Hash places a row on shard PartitionOf(hash(key), len(shards)), the
	// shard index being the partition remainder.
	Hash Strategy = "hash"
	// Range places a row by its key (a date or timestamptz) in a range map.
	Range Strategy = "range"
	// Reference tables are copied in full on every shard.
	Reference Strategy = "reference"
)

// Config is the topology section of the config file.
type Config struct {
	// Shards in order: the i-th shard holds hash remainder i.
	Shards []ShardConfig `yaml:"shards"`
	// Tables maps a table name (optionally schema-qualified) to its placement.
	Tables map[string]TableConfig `yaml:"tables"`
	// DefaultShard holds tables that are not in Tables. Empty means the first shard.
	DefaultShard string `yaml:"default_shard"`
	// Buckets, when set, hashes hash-table keys into this many buckets
	// (bucket b holds the keys for which satisfies_hash_partition(Buckets,
	// b, key) is true), and BucketMap places buckets on shards. Without a
	// bucket_map bucket b is on shard b mod len(Shards), which with
	// Buckets a multiple of len(Shards) is today's placement. A metadata
	// schema (package topology) may override the map at run time.
	Buckets   int                 `yaml:"buckets"`
	BucketMap []BucketRangeConfig `yaml:"bucket_map"`
}

// ShardConfig names one backend Postgres database.
type ShardConfig struct {
	Name string `yaml:"name"`
	// DSN is a libpq URL or key=value string for the shard's database:
	// its primary, where writes go.
	DSN string `yaml:"dsn"`
	// Weight is the primary's share of reads under the weighted balance
	// when reads may go to it (read_from: any). Default 1.
	Weight int `yaml:"weight"`
	// Replicas are the primary's streaming replicas: reads outside
	// transactions may go to them, and one of them becomes the write
	// target when the operator's HA tool promotes it.
	Replicas []ReplicaConfig `yaml:"replicas"`
}

// ReplicaConfig is one streaming replica of a shard.
type ReplicaConfig struct {
	// Name identifies the replica in metrics and the admin console.
	// Default: the shard's name with "-r1", "-r2"... appended.
	Name string `yaml:"name"`
	DSN  string `yaml:"dsn"`
	// Weight is the replica's share of reads under the weighted balance.
	// Default 1; 0 is not allowed (remove the replica instead).
	Weight int `yaml:"weight"`
}

// ReplicaName is the name of the shard's j-th replica (from 0): its own,
// or the shard's name with -r1, -r2... appended.
func (s ShardConfig) ReplicaName(j int) string {
	if n := s.Replicas[j].Name; n != "" {
		return n
	}
	return fmt.Sprintf("%s-r%d", s.Name, j+1)
}

// TableConfig says how one table is placed.
type TableConfig struct {
	Strategy Strategy `yaml:"strategy"`
	// Key is the shard key column (hash and range tables).
	Key string `yaml:"key"`
	// KeyType is the key column's type. Hash keys: bigint (default; also
	// fits smallint and integer) or text. Range keys: timestamptz (default),
	// date or timestamp; the last two compare in the session's time zone,
	// so literals match more coarsely (see docs/routing.md).
	KeyType string `yaml:"key_type"`
	// Ranges map key intervals [from, to) to shards (range tables). Bounds
	// are dates or timestamps, read as UTC unless they carry an offset.
	Ranges []RangeConfig `yaml:"ranges"`
}

// RangeConfig is one interval of a range map; an empty From or To is unbounded.
type RangeConfig struct {
	From  string `yaml:"from"`
	To    string `yaml:"to"`
	Shard string `yaml:"shard"`
}

// Validate checks the topology and returns every problem found.
func (c *Config) Validate() error {
	_, err := NewTopology(c)
	return err
}

// ParseBound reads a range bound: a date (2025-01-01) or a timestamp with or
// without an offset; without one it is UTC.
func ParseBound(s string) (time.Time, error) {
	layouts := []string{"2006-01-02", "2006-01-02 15:04:05", "2006-01-02T15:04:05",
		time.RFC3339Nano, "2006-01-02 15:04:05Z07:00", "2006-01-02 15:04:05Z07"}
	for _, l := range layouts {
		if t, err := time.ParseInLocation(l, strings.TrimSpace(s), time.UTC); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a date or timestamp", s)
}

// Topology is the validated, resolved form of Config used for routing.
type Topology struct {
	Shards []ShardConfig
	// Tables by name as configured, lower case; "public." is dropped.
	Tables  map[string]*Table
	Default int
	// Buckets is the number of buckets (0: hash mod len(Shards)), and
	// BucketMap the configured map (version 0), nil without buckets.
	Buckets   int
	BucketMap *BucketMap
	index     map[string]int
	// schemaOnly maps the bare name of a table configured only with a
	// schema (billing.invoices) to that entry: an unqualified reference may
	// mean it, depending on search_path.
	schemaOnly map[string]string
}

// Table is a resolved table placement.
type Table struct {
	Name     string
	Strategy Strategy
	Key      string
	// KeyText is true for a hash key of type text.
	KeyText bool
	// KeyLocal is true for a range key of type date or timestamp (no zone).
	KeyLocal bool
	// KeyDate is true for a range key of type date: a date value compared
	// with it involves no time zone.
	KeyDate bool
	Ranges  []Interval
}

// Interval is a resolved [From, To) range; a zero From or To is unbounded.
type Interval struct {
	From, To time.Time
	Shard    int
}

// ShardIndex returns the index of the named shard.
func (t *Topology) ShardIndex(name string) (int, bool) {
	i, ok := t.index[name]
	return i, ok
}

// NewTopology validates c and resolves it.
func NewTopology(c *Config) (*Topology, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	t := &Topology{Shards: c.Shards, Tables: map[string]*Table{}, index: map[string]int{}}
	if len(c.Shards) == 0 {
		bad("shards: at least one shard is required")
	}
	for i, s := range c.Shards {
		switch {
		case s.Name == "":
			bad("shards[%d]: name is required", i)
		case s.DSN == "":
			bad("shard %s: dsn is required", s.Name)
		}
		if s.Weight < 0 {
			bad("shard %s: weight must be positive", s.Name)
		}
		seen := map[string]bool{s.Name: true}
		for j, r := range s.Replicas {
			if r.DSN == "" {
				bad("shard %s: replicas[%d]: dsn is required", s.Name, j)
			}
			if r.Weight < 0 {
				bad("shard %s: replicas[%d]: weight must be positive", s.Name, j)
			}
			name := s.ReplicaName(j)
			if seen[name] {
				bad("shard %s: replicas[%d]: duplicate server name %q", s.Name, j, name)
			}
			seen[name] = true
		}
		if _, dup := t.index[s.Name]; dup && s.Name != "" {
			bad("shard %s: duplicate shard name", s.Name)
		}
		t.index[s.Name] = i
	}
	if c.DefaultShard != "" {
		i, ok := t.index[c.DefaultShard]
		if !ok {
			bad("default_shard: unknown shard %q", c.DefaultShard)
		}
		t.Default = i
	}
	bm, err := resolveBuckets(c, t.index)
	if err != nil {
		errs = append(errs, err)
	}
	t.BucketMap = bm
	if bm != nil {
		t.Buckets = len(bm.Owner)
	}
	names := make([]string, 0, len(c.Tables))
	for n := range c.Tables {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		tc := c.Tables[name]
		tb := &Table{Name: strings.TrimPrefix(strings.ToLower(name), "public."), Strategy: tc.Strategy, Key: tc.Key}
		switch tc.Strategy {
		case Hash:
			if tc.Key == "" {
				bad("table %s: hash strategy needs a key", name)
			}
			switch tc.KeyType {
			case "", "bigint", "int", "integer":
			case "text":
				tb.KeyText = true
			default:
				bad("table %s: key_type %q is not bigint or text", name, tc.KeyType)
			}
			if len(tc.Ranges) > 0 {
				bad("table %s: ranges are only for the range strategy", name)
			}
		case Range:
			if tc.Key == "" {
				bad("table %s: range strategy needs a key", name)
			}
			switch tc.KeyType {
			case "", "timestamptz", "timestamp with time zone":
			case "date", "timestamp", "timestamp without time zone":
				tb.KeyLocal = true
				tb.KeyDate = tc.KeyType == "date"
			default:
				bad("table %s: key_type %q is not timestamptz, date or timestamp", name, tc.KeyType)
			}
			iv, err := resolveRanges(name, tc.Ranges, t.index)
			if err != nil {
				errs = append(errs, err)
			}
			tb.Ranges = iv
		case Reference:
			if tc.Key != "" || tc.KeyType != "" || len(tc.Ranges) > 0 {
				bad("table %s: a reference table has no key or ranges", name)
			}
		case "":
			bad("table %s: strategy is required (hash, range or reference)", name)
		default:
			bad("table %s: unknown strategy %q (hash, range or reference)", name, tc.Strategy)
		}
		if _, dup := t.Tables[tb.Name]; dup {
			bad("table %s: listed twice (names are case-insensitive)", name)
		}
		t.Tables[tb.Name] = tb
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	t.schemaOnly = map[string]string{}
	for name := range t.Tables {
		if i := strings.LastIndexByte(name, '.'); i >= 0 {
			if _, plain := t.Tables[name[i+1:]]; !plain {
				t.schemaOnly[name[i+1:]] = name
			}
		}
	}
	return t, nil
}

// resolveRanges sorts the intervals and insists that they tile a contiguous
// span with no gap and no overlap.
func resolveRanges(table string, rs []RangeConfig, shards map[string]int) ([]Interval, error) {
	if len(rs) == 0 {
		return nil, fmt.Errorf("table %s: range strategy needs ranges", table)
	}
	var errs []error
	out := make([]Interval, 0, len(rs))
	for i, r := range rs {
		var iv Interval
		var err error
		if r.From != "" {
			if iv.From, err = ParseBound(r.From); err != nil {
				errs = append(errs, fmt.Errorf("table %s: ranges[%d].from: %w", table, i, err))
			}
		}
		if r.To != "" {
			if iv.To, err = ParseBound(r.To); err != nil {
				errs = append(errs, fmt.Errorf("table %s: ranges[%d].to: %w", table, i, err))
			}
		}
		idx, ok := shards[r.Shard]
		if !ok {
			errs = append(errs, fmt.Errorf("table %s: ranges[%d]: unknown shard %q", table, i, r.Shard))
		}
		iv.Shard = idx
		if !iv.From.IsZero() && !iv.To.IsZero() && !iv.From.Before(iv.To) {
			errs = append(errs, fmt.Errorf("table %s: ranges[%d]: from %s is not before to %s", table, i, r.From, r.To))
		}
		out = append(out, iv)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].From.IsZero() != out[j].From.IsZero() {
			return out[i].From.IsZero()
		}
		return out[i].From.Before(out[j].From)
	})
	for i := 1; i < len(out); i++ {
		prev, cur := out[i-1], out[i]
		switch {
		case prev.To.IsZero() || cur.From.IsZero():
			errs = append(errs, fmt.Errorf("table %s: ranges overlap: two ranges are unbounded on the same side", table))
		case cur.From.Before(prev.To):
			errs = append(errs, fmt.Errorf("table %s: ranges overlap at %s", table, cur.From.Format(time.RFC3339)))
		case cur.From.After(prev.To):
			errs = append(errs, fmt.Errorf("table %s: gap in ranges from %s to %s", table,
				prev.To.Format(time.RFC3339), cur.From.Format(time.RFC3339)))
		}
	}
	return out, errors.Join(errs...)
}

// ShardForTime returns the shard whose interval holds t, if any.
func (tb *Table) ShardForTime(t time.Time) (int, bool) {
	for _, iv := range tb.Ranges {
		if (iv.From.IsZero() || !t.Before(iv.From)) && (iv.To.IsZero() || t.Before(iv.To)) {
			return iv.Shard, true
		}
	}
	return 0, false
}
