package mongo

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.yaml.in/yaml/v3"

	"github.com/shardproxy/shardproxy/router"
)

// Config is the `mongo:` section of the config file.
type Config struct {
	// URI of a mongos of the sharded cluster, e.g. mongodb://mongos:27017.
	URI string `yaml:"uri"`
	// Database holds the collections, e.g. deliveryapp.
	Database string `yaml:"database"`
	// Collections to shard, in the order they are set up.
	Collections []Collection `yaml:"collections"`
}

// Collection is one sharded collection.
type Collection struct {
	Name string `yaml:"name"`
	// ShardKey is the ordered shard key: each field is 1 or "hashed".
	ShardKey Keys `yaml:"shard_key"`
	// Indexes to ensure, besides the one shardCollection builds for the key.
	Indexes []Index `yaml:"indexes"`
	// Zones pin ranges of the first shard-key field to MongoDB shards.
	Zones *Zones `yaml:"zones"`
}

// Index is one index to ensure.
type Index struct {
	// Name is sent explicitly so that re-runs are identical. Empty means the
	// name MongoDB drivers and mongosh generate (userId_1_createdAt_-1).
	Name string `yaml:"name"`
	// Key is the ordered index key: 1, -1, or a type such as "hashed".
	Key    Keys `yaml:"key"`
	Unique bool `yaml:"unique"`
}

// Zones describe zone ranges on a collection whose shard key starts with an
// ascending date field. Give Table or Ranges, not both.
type Zones struct {
	// Table names a range table of the router topology (e.g. events): each
	// of its ranges becomes a zone range named after the Postgres shard that
	// holds it, so the Mongo data of a period lives where the config puts
	// the Postgres rows of that period.
	Table string `yaml:"table"`
	// Ranges are explicit zone ranges; an empty From or To is unbounded.
	Ranges []ZoneRange `yaml:"ranges"`
	// Shards maps each zone to the MongoDB shards (listShards _id) that
	// hold it. Every zone used must be listed.
	Shards map[string][]string `yaml:"shards"`
}

// ZoneRange is one explicit zone range [From, To) on the first shard-key
// field, with dates or timestamps as bounds (router.ParseBound).
type ZoneRange struct {
	Zone string `yaml:"zone"`
	From string `yaml:"from"`
	To   string `yaml:"to"`
}

// Keys is an ordered key document (shard key or index key). In YAML it is a
// mapping whose order is kept: {date: 1, userId: 1}.
type Keys bson.D

// UnmarshalYAML reads a mapping in document order; values are integers or
// strings (hashed, text, 2dsphere, 2d).
func (k *Keys) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a key must be a mapping like {userId: 1}", n.Line)
	}
	out := make(Keys, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		name, val := n.Content[i], n.Content[i+1]
		if name.Kind != yaml.ScalarNode || val.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: key fields map a name to 1, -1 or a type", name.Line)
		}
		switch val.Tag {
		case "!!int":
			v, err := strconv.ParseInt(val.Value, 0, 32)
			if err != nil {
				return fmt.Errorf("line %d: field %s: %w", val.Line, name.Value, err)
			}
			out = append(out, bson.E{Key: name.Value, Value: int32(v)})
		case "!!str":
			out = append(out, bson.E{Key: name.Value, Value: val.Value})
		default:
			return fmt.Errorf("line %d: field %s: %q is not 1, -1 or a type name", val.Line, name.Value, val.Value)
		}
	}
	*k = out
	return nil
}

// String renders the key as mongosh would print it: { userId: "hashed" }.
func (k Keys) String() string { return shell(bson.D(k)) }

// DefaultName is the index name drivers and mongosh generate for k.
func (k Keys) DefaultName() string {
	parts := make([]string, 0, 2*len(k))
	for _, e := range k {
		parts = append(parts, e.Key, fmt.Sprint(e.Value))
	}
	return strings.Join(parts, "_")
}

var indexTypes = map[string]bool{"hashed": true, "text": true, "2dsphere": true, "2d": true}

// IsZero reports whether the section is absent from the config file.
func (c *Config) IsZero() bool {
	return c.URI == "" && c.Database == "" && len(c.Collections) == 0
}

// Validate reports every problem in c that needs no topology. Resolve also
// checks what refers to the router topology.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("mongo: "+format, args...)) }
	if c.URI == "" {
		bad("uri is required (a mongos, e.g. mongodb://mongos:27017)")
	} else if !strings.HasPrefix(c.URI, "mongodb://") && !strings.HasPrefix(c.URI, "mongodb+srv://") {
		bad("uri %q does not start with mongodb:// or mongodb+srv://", c.URI)
	}
	if c.Database == "" {
		bad("database is required")
	} else if strings.ContainsAny(c.Database, `/\. "$`) || c.Database == "admin" || c.Database == "config" || c.Database == "local" {
		bad("database %q is not a name a sharded user database can have", c.Database)
	}
	if len(c.Collections) == 0 {
		bad("collections: at least one collection is required")
	}
	seen := map[string]bool{}
	for i, col := range c.Collections {
		if col.Name == "" || strings.ContainsAny(col.Name, "$\x00") || strings.HasPrefix(col.Name, "system.") {
			bad("collections[%d]: %q is not a collection name", i, col.Name)
		}
		if seen[col.Name] {
			bad("collection %s: listed twice", col.Name)
		}
		seen[col.Name] = true
		errs = append(errs, col.validate()...)
	}
	return errors.Join(errs...)
}

func (col *Collection) validate() []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("mongo: collection %s: "+format, append([]any{col.Name}, args...)...))
	}
	if len(col.ShardKey) == 0 {
		bad("shard_key is required")
	}
	hashed := 0
	for _, e := range col.ShardKey {
		switch e.Value {
		case int32(1):
		case "hashed":
			hashed++
		default:
			bad("shard_key field %s is %v; a shard key field is 1 or \"hashed\"", e.Key, e.Value)
		}
	}
	if hashed > 1 {
		bad("shard_key has %d hashed fields; MongoDB allows one", hashed)
	}
	names := map[string]bool{}
	for i, ix := range col.Indexes {
		if len(ix.Key) == 0 {
			bad("indexes[%d]: key is required", i)
		}
		for _, e := range ix.Key {
			switch v := e.Value.(type) {
			case int32:
				if v != 1 && v != -1 {
					bad("indexes[%d]: field %s is %d, not 1 or -1", i, e.Key, v)
				}
			case string:
				if !indexTypes[v] {
					bad("indexes[%d]: field %s has unknown index type %q", i, e.Key, v)
				}
				if ix.Unique && v == "hashed" {
					bad("indexes[%d]: a hashed index cannot be unique", i)
				}
			}
		}
		name := ix.name()
		if names[name] {
			bad("index name %q is used twice", name)
		}
		names[name] = true
	}
	if z := col.Zones; z != nil {
		if len(col.ShardKey) > 0 && col.ShardKey[0].Value != int32(1) {
			bad("zones need a shard key whose first field is ascending (1), like {date: 1, userId: 1}")
		}
		switch {
		case z.Table == "" && len(z.Ranges) == 0:
			bad("zones: give table (a router range table) or ranges")
		case z.Table != "" && len(z.Ranges) > 0:
			bad("zones: give table or ranges, not both")
		}
		for i, r := range z.Ranges {
			if r.Zone == "" {
				bad("zones.ranges[%d]: zone is required", i)
			}
			for _, b := range []string{r.From, r.To} {
				if b == "" {
					continue
				}
				if _, err := router.ParseBound(b); err != nil {
					bad("zones.ranges[%d]: %v", i, err)
				}
			}
		}
		if len(z.Shards) == 0 {
			bad("zones: shards (zone -> MongoDB shards) is required")
		}
		for zone, shards := range z.Shards {
			if len(shards) == 0 {
				bad("zones: zone %s has no shards", zone)
			}
		}
	}
	return errs
}

func (ix Index) name() string {
	if ix.Name != "" {
		return ix.Name
	}
	return ix.Key.DefaultName()
}

// Layout is the validated target: what the cluster should look like.
type Layout struct {
	Database    string
	Collections []Target
}

// Target is one collection of the Layout.
type Target struct {
	Name    string
	Key     bson.D
	Indexes []Index // names filled in
	// Zones are the zone ranges in ascending order; ZoneShards maps each
	// zone to the MongoDB shards that hold it.
	Zones      []ZoneKeyRange
	ZoneShards map[string][]string
}

// ZoneKeyRange is a resolved zone range over all shard-key fields: Min is
// inclusive, Max exclusive.
type ZoneKeyRange struct {
	Zone     string
	Min, Max bson.D
}

// Namespace is database.collection.
func (l *Layout) Namespace(t Target) string { return l.Database + "." + t.Name }

// Resolve validates c and builds its Layout, taking zone ranges from the
// router topology where the config names a range table.
func (c *Config) Resolve(topo *router.Config) (*Layout, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var errs []error
	l := &Layout{Database: c.Database}
	for _, col := range c.Collections {
		t := Target{Name: col.Name, Key: bson.D(col.ShardKey)}
		for _, ix := range col.Indexes {
			ix.Name = ix.name()
			t.Indexes = append(t.Indexes, ix)
		}
		if col.Zones != nil {
			zr, err := zoneRanges(col, topo)
			if err != nil {
				errs = append(errs, fmt.Errorf("mongo: collection %s: %w", col.Name, err))
			}
			t.Zones, t.ZoneShards = zr, col.Zones.Shards
			used := map[string]bool{}
			for _, r := range zr {
				used[r.Zone] = true
				if len(col.Zones.Shards[r.Zone]) == 0 {
					errs = append(errs, fmt.Errorf("mongo: collection %s: zone %s has no entry in zones.shards", col.Name, r.Zone))
				}
			}
			for zone := range col.Zones.Shards {
				if !used[zone] {
					errs = append(errs, fmt.Errorf("mongo: collection %s: zones.shards names zone %s, which no range uses", col.Name, zone))
				}
			}
		}
		l.Collections = append(l.Collections, t)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return l, nil
}

// zoneRanges builds the zone ranges of col from its explicit ranges or from
// the router range table it names, checking that they do not overlap.
func zoneRanges(col Collection, topo *router.Config) ([]ZoneKeyRange, error) {
	type span struct {
		zone     string
		from, to time.Time
	}
	var spans []span
	if name := col.Zones.Table; name != "" {
		if topo == nil {
			return nil, fmt.Errorf("zones.table %s: no router topology to read it from", name)
		}
		t, err := router.NewTopology(topo)
		if err != nil {
			return nil, fmt.Errorf("zones.table %s: %w", name, err)
		}
		tb, ok := t.Tables[strings.ToLower(name)]
		if !ok || tb.Strategy != router.Range {
			return nil, fmt.Errorf("zones.table %s is not a range table of the topology", name)
		}
		for _, iv := range tb.Ranges {
			spans = append(spans, span{t.Shards[iv.Shard].Name, iv.From, iv.To})
		}
	} else {
		for _, r := range col.Zones.Ranges {
			var s span
			s.zone = r.Zone
			if r.From != "" {
				s.from, _ = router.ParseBound(r.From) // checked by Validate
			}
			if r.To != "" {
				s.to, _ = router.ParseBound(r.To)
			}
			if !s.from.IsZero() && !s.to.IsZero() && !s.from.Before(s.to) {
				return nil, fmt.Errorf("zone %s: from %s is not before to %s", r.Zone, r.From, r.To)
			}
			spans = append(spans, s)
		}
	}
	sort.SliceStable(spans, func(i, j int) bool {
		if spans[i].from.IsZero() != spans[j].from.IsZero() {
			return spans[i].from.IsZero()
		}
		return spans[i].from.Before(spans[j].from)
	})
	for i := 1; i < len(spans); i++ {
		prev, cur := spans[i-1], spans[i]
		if prev.to.IsZero() || cur.from.Before(prev.to) {
			return nil, fmt.Errorf("zones %s and %s overlap", prev.zone, cur.zone)
		}
	}
	out := make([]ZoneKeyRange, 0, len(spans))
	for _, s := range spans {
		out = append(out, ZoneKeyRange{Zone: s.zone, Min: bound(col.ShardKey, s.from, false), Max: bound(col.ShardKey, s.to, true)})
	}
	return out, nil
}

// bound is a zone bound over every shard-key field: the date on the first
// field (MinKey or MaxKey when unbounded) and MinKey on the others, or all
// MaxKey for an unbounded upper end. Zone bounds must name every field.
func bound(key Keys, t time.Time, upper bool) bson.D {
	d := make(bson.D, 0, len(key))
	for i, e := range key {
		var v any = bson.MinKey{}
		switch {
		case t.IsZero() && upper:
			v = bson.MaxKey{}
		case i == 0 && !t.IsZero():
			v = bson.NewDateTimeFromTime(t)
		}
		d = append(d, bson.E{Key: e.Key, Value: v})
	}
	return d
}
