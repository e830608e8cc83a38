package mongo

import (
	"fmt"
	"sort"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// State is what Read found on the cluster.
type State struct {
	// DatabaseExists is true when config.databases has the database.
	DatabaseExists bool
	// Sharded maps a namespace to its config.collections entry (entries
	// marked unsplittable, which 8.0 keeps for unsharded collections, are
	// left out).
	Sharded map[string]ShardedCollection
	// Collections maps each existing collection name to its default
	// collation (nil when simple).
	Collections map[string]bson.D
	// Indexes maps a collection name to its listIndexes documents.
	Indexes map[string][]bson.D
	// Shards maps each MongoDB shard (listShards _id) to its zones. It is
	// read only when the layout has zones.
	Shards map[string][]string
	// Tags are the config.tags zone ranges of the layout's namespaces.
	Tags []Tag
}

// ShardedCollection is the part of a config.collections entry we compare.
type ShardedCollection struct {
	Key    bson.D
	Unique bool
}

// Tag is a config.tags entry: a zone range of a namespace.
type Tag struct {
	NS       string
	Min, Max bson.D
	Zone     string
}

// Step is one command to run, with the database it runs on.
type Step struct {
	DB  string
	Cmd bson.D
	// What says what the command does, for the summary.
	What string
}

// Shell renders c as the mongosh line that runs it.
func (c Step) Shell() string {
	if c.DB == "admin" {
		return "db.adminCommand(" + shell(c.Cmd) + ")"
	}
	return fmt.Sprintf("db.getSiblingDB(%q).runCommand(%s)", c.DB, shell(c.Cmd))
}

// Plan is the difference between a Layout and a State.
type Plan struct {
	// Steps are the commands still needed, in order.
	Steps []Step
	// Matched lists what already is as the config says.
	Matched []string
	// Conflicts lists what exists but differs from the config; while there
	// are any, Apply runs nothing.
	Conflicts []string
}

// NewPlan computes the commands that take the cluster from s to l. It does
// no I/O. The order is: enableSharding, addShardToZone, then per
// collection updateZoneKeyRange, shardCollection and createIndexes (zones
// first, because presplitHashedZones needs them before shardCollection).
func NewPlan(l *Layout, s *State) *Plan {
	p := &Plan{}
	if s.DatabaseExists {
		p.Matched = append(p.Matched, fmt.Sprintf("database %s exists", l.Database))
	} else {
		p.add("admin", fmt.Sprintf("enable sharding on database %s", l.Database),
			bson.D{{Key: "enableSharding", Value: l.Database}})
	}
	p.zoneShards(l, s)
	for _, t := range l.Collections {
		ns := l.Namespace(t)
		p.zoneRanges(ns, t, s)
		if sc, ok := s.Sharded[ns]; ok {
			if keysEqual(sc.Key, t.Key) && !sc.Unique {
				p.Matched = append(p.Matched, fmt.Sprintf("%s is sharded on %s", ns, shell(t.Key)))
			} else {
				p.Conflicts = append(p.Conflicts, fmt.Sprintf("%s is sharded on %s%s, the config says %s; changing it needs reshardCollection, which partman leaves to an operator",
					ns, shell(sc.Key), uniqueNote(sc.Unique), shell(t.Key)))
			}
		} else {
			cmd := bson.D{{Key: "shardCollection", Value: ns}, {Key: "key", Value: t.Key}}
			_, exists := s.Collections[t.Name]
			if len(t.Zones) > 0 && hasHashed(t.Key) && !exists {
				cmd = append(cmd, bson.E{Key: "presplitHashedZones", Value: true})
			}
			if coll := s.Collections[t.Name]; coll != nil {
				// The collection has a non-simple default collation: the
				// shard key needs the simple one, said explicitly.
				cmd = append(cmd, bson.E{Key: "collation", Value: bson.D{{Key: "locale", Value: "simple"}}})
			}
			p.add("admin", fmt.Sprintf("shard %s on %s", ns, shell(t.Key)), cmd)
		}
		p.indexes(l, t, s)
	}
	return p
}

func (p *Plan) add(db, what string, cmd bson.D) {
	p.Steps = append(p.Steps, Step{DB: db, Cmd: cmd, What: what})
}

// zoneShards assigns zones to shards: addShardToZone for each pair the
// cluster lacks, once even when collections share a zone.
func (p *Plan) zoneShards(l *Layout, s *State) {
	want := map[string]map[string]bool{} // shard -> zone
	for _, t := range l.Collections {
		for zone, shards := range t.ZoneShards {
			for _, sh := range shards {
				if want[sh] == nil {
					want[sh] = map[string]bool{}
				}
				want[sh][zone] = true
			}
		}
	}
	for _, sh := range sortedKeys(want) {
		have, ok := s.Shards[sh]
		if !ok {
			p.Conflicts = append(p.Conflicts, fmt.Sprintf("zones name MongoDB shard %s, which listShards does not have (it has %v)", sh, sortedKeys(s.Shards)))
			continue
		}
		for _, zone := range sortedKeys(want[sh]) {
			if contains(have, zone) {
				p.Matched = append(p.Matched, fmt.Sprintf("shard %s is in zone %s", sh, zone))
				continue
			}
			p.add("admin", fmt.Sprintf("add shard %s to zone %s", sh, zone),
				bson.D{{Key: "addShardToZone", Value: sh}, {Key: "zone", Value: zone}})
		}
	}
}

// zoneRanges adds the zone ranges of t that config.tags lacks. A range
// with the same bounds and another zone, or one that overlaps an existing
// range, is a conflict: the server would refuse it.
func (p *Plan) zoneRanges(ns string, t Target, s *State) {
	for _, want := range t.Zones {
		matched, conflict := false, ""
		for _, tag := range s.Tags {
			if tag.NS != ns {
				continue
			}
			same := keysEqual(tag.Min, want.Min) && keysEqual(tag.Max, want.Max)
			switch {
			case same && tag.Zone == want.Zone:
				matched = true
			case same:
				conflict = fmt.Sprintf("%s range [%s, %s) is in zone %s, the config says %s", ns, shell(tag.Min), shell(tag.Max), tag.Zone, want.Zone)
			case compareKeys(tag.Min, want.Max) < 0 && compareKeys(want.Min, tag.Max) < 0:
				conflict = fmt.Sprintf("%s zone %s range [%s, %s) overlaps the existing range [%s, %s) of zone %s",
					ns, want.Zone, shell(want.Min), shell(want.Max), shell(tag.Min), shell(tag.Max), tag.Zone)
			}
		}
		switch {
		case matched:
			p.Matched = append(p.Matched, fmt.Sprintf("%s range [%s, %s) is in zone %s", ns, shell(want.Min), shell(want.Max), want.Zone))
		case conflict != "":
			p.Conflicts = append(p.Conflicts, conflict)
		default:
			p.add("admin", fmt.Sprintf("put %s range [%s, %s) in zone %s", ns, shell(want.Min), shell(want.Max), want.Zone),
				bson.D{{Key: "updateZoneKeyRange", Value: ns}, {Key: "min", Value: want.Min}, {Key: "max", Value: want.Max}, {Key: "zone", Value: want.Zone}})
		}
	}
}

// indexes adds one createIndexes for the indexes of t that are missing,
// following the server's rules (index_catalog_impl.cpp): the same name with
// another key is IndexKeySpecsConflict (86); the same name and key with
// other options, or the same key under another name, is
// IndexOptionsConflict (85).
func (p *Plan) indexes(l *Layout, t Target, s *State) {
	ns := l.Namespace(t)
	var missing bson.A
	var names []string
	for _, ix := range t.Indexes {
		state, why := "missing", ""
		for _, have := range s.Indexes[t.Name] {
			name, _ := lookup(have, "name").(string)
			key, _ := lookup(have, "key").(bson.D)
			switch {
			case name == ix.Name && !keysEqual(key, ix.Key.doc()):
				state, why = "conflict", fmt.Sprintf("%s index %s has key %s, the config says %s (code 86, IndexKeySpecsConflict)", ns, name, shell(key), ix.Key)
			case name == ix.Name && optionsDiffer(have, ix):
				state, why = "conflict", fmt.Sprintf("%s index %s has options %s, the config says %s (code 85, IndexOptionsConflict)", ns, name, shell(indexOptions(have)), shell(ix.options()))
			case name == ix.Name:
				state = "matched"
			case keysEqual(key, ix.Key.doc()) && !optionsDiffer(have, ix):
				state, why = "conflict", fmt.Sprintf("%s already has index %s on %s, the config names it %s (code 85, IndexOptionsConflict)", ns, name, shell(key), ix.Name)
			}
			if state != "missing" {
				break
			}
		}
		switch state {
		case "matched":
			p.Matched = append(p.Matched, fmt.Sprintf("%s has index %s %s", ns, ix.Name, ix.Key))
		case "conflict":
			p.Conflicts = append(p.Conflicts, why)
		default:
			spec := bson.D{{Key: "key", Value: ix.Key.doc()}, {Key: "name", Value: ix.Name}}
			spec = append(spec, ix.options()...)
			missing = append(missing, spec)
			names = append(names, ix.Name)
		}
	}
	if len(missing) > 0 {
		p.add(l.Database, fmt.Sprintf("create indexes %v on %s", names, ns),
			bson.D{{Key: "createIndexes", Value: t.Name}, {Key: "indexes", Value: missing}})
	}
}

func (k Keys) doc() bson.D { return bson.D(k) }

// options are the index options the config sets.
func (ix Index) options() bson.D {
	if ix.Unique {
		return bson.D{{Key: "unique", Value: true}}
	}
	return bson.D{}
}

// indexOptions are the fields of a listIndexes document other than its
// identity; v is the index version and background is ignored since 4.2.
func indexOptions(have bson.D) bson.D {
	out := bson.D{}
	for _, e := range have {
		switch e.Key {
		case "v", "key", "name", "ns", "background":
		default:
			out = append(out, e)
		}
	}
	return out
}

func optionsDiffer(have bson.D, ix Index) bool {
	opts := indexOptions(have)
	unique := false
	for _, e := range opts {
		if e.Key != "unique" {
			return true
		}
		unique, _ = e.Value.(bool)
	}
	return unique != ix.Unique
}

func uniqueNote(u bool) string {
	if u {
		return " (unique)"
	}
	return ""
}

func hasHashed(k bson.D) bool {
	for _, e := range k {
		if e.Value == "hashed" {
			return true
		}
	}
	return false
}

func lookup(d bson.D, key string) any {
	for _, e := range d {
		if e.Key == key {
			return e.Value
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// keysEqual compares key documents field by field, in order, with numbers
// equal by value whatever their BSON type (mongosh sends doubles, Go int32).
func keysEqual(a, b bson.D) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || compareValues(a[i].Value, b[i].Value) != 0 {
			return false
		}
	}
	return true
}

// compareKeys orders two zone bounds of the same shard key.
func compareKeys(a, b bson.D) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if c := compareValues(a[i].Value, b[i].Value); c != 0 {
			return c
		}
	}
	return len(a) - len(b)
}

// compareValues orders the values that appear in keys and zone bounds in
// BSON order: MinKey < numbers < strings < dates < MaxKey. Other types
// compare as equal only to themselves by their printed form.
func compareValues(a, b any) int {
	ra, rb := rank(a), rank(b)
	if ra != rb {
		return ra - rb
	}
	switch ra {
	case 1:
		x, y := number(a), number(b)
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	case 2:
		return cmpString(a.(string), b.(string))
	case 3:
		return int(a.(bson.DateTime).Time().Compare(b.(bson.DateTime).Time()))
	case 5:
		return cmpString(fmt.Sprint(a), fmt.Sprint(b))
	}
	return 0
}

func rank(v any) int {
	switch v.(type) {
	case bson.MinKey:
		return 0
	case int32, int64, float64, int:
		return 1
	case string:
		return 2
	case bson.DateTime:
		return 3
	case bson.MaxKey:
		return 9
	}
	return 5
}

func number(v any) float64 {
	switch n := v.(type) {
	case int32:
		return float64(n)
	case int64:
		return float64(n)
	case int:
		return float64(n)
	case float64:
		return n
	}
	return 0
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
