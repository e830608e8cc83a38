package mongo

import (
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

func date(s string) bson.DateTime {
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		panic(err)
	}
	return bson.NewDateTimeFromTime(t)
}

func ixDoc(name string, key bson.D, opts ...bson.E) bson.D {
	return append(bson.D{{Key: "v", Value: int32(2)}, {Key: "key", Value: key}, {Key: "name", Value: name}}, opts...)
}

// TestNewPlan checks the pure planning against hand-built states; the
// wire scenarios check the same logic end to end.
func TestNewPlan(t *testing.T) {
	userIDDesc := bson.D{{Key: "userId", Value: 1.0}, {Key: "createdAt", Value: -1.0}} // as mongosh stores it: doubles
	hashedZoned := Target{
		Name: "events", Key: bson.D{{Key: "day", Value: int32(1)}, {Key: "userId", Value: "hashed"}},
		Zones: []ZoneKeyRange{{Zone: "z1",
			Min: bson.D{{Key: "day", Value: bson.MinKey{}}, {Key: "userId", Value: bson.MinKey{}}},
			Max: bson.D{{Key: "day", Value: bson.MaxKey{}}, {Key: "userId", Value: bson.MaxKey{}}}}},
		ZoneShards: map[string][]string{"z1": {"shard1"}},
	}
	orders := Target{Name: "orders", Key: bson.D{{Key: "userId", Value: "hashed"}},
		Indexes: []Index{{Name: "userId_1_createdAt_-1", Key: Keys{{Key: "userId", Value: int32(1)}, {Key: "createdAt", Value: int32(-1)}}}}}
	analytics := Target{Name: "analytics", Key: bson.D{{Key: "date", Value: int32(1)}, {Key: "userId", Value: int32(1)}},
		Zones: []ZoneKeyRange{{Zone: "s1",
			Min: bson.D{{Key: "date", Value: date("2025-01-01")}, {Key: "userId", Value: bson.MinKey{}}},
			Max: bson.D{{Key: "date", Value: date("2025-07-01")}, {Key: "userId", Value: bson.MinKey{}}}}},
		ZoneShards: map[string][]string{"s1": {"shard1", "shard2"}},
	}
	cases := []struct {
		name      string
		targets   []Target
		state     State
		want      []string // Shell() of each step
		matched   int
		conflicts []string
	}{
		{
			name:    "index stored with double key values matches",
			targets: []Target{orders},
			state: State{DatabaseExists: true,
				Sharded:     map[string]ShardedCollection{"app.orders": {Key: bson.D{{Key: "userId", Value: "hashed"}}}},
				Collections: map[string]bson.D{"orders": nil},
				Indexes:     map[string][]bson.D{"orders": {ixDoc("_id_", bson.D{{Key: "_id", Value: 1}}), ixDoc("userId_1_createdAt_-1", userIDDesc)}}},
			matched: 3,
		},
		{
			name:    "non-simple default collation",
			targets: []Target{orders},
			state: State{DatabaseExists: true,
				Collections: map[string]bson.D{"orders": {{Key: "locale", Value: "fr"}}},
				Indexes:     map[string][]bson.D{"orders": {ixDoc("userId_1_createdAt_-1", userIDDesc)}}},
			want:    []string{`db.adminCommand({ shardCollection: "app.orders", key: { userId: "hashed" }, collation: { locale: "simple" } })`},
			matched: 2,
		},
		{
			name:    "hashed key with zones on a new collection presplits",
			targets: []Target{hashedZoned},
			state:   State{DatabaseExists: true, Shards: map[string][]string{"shard1": {"z1"}}},
			want: []string{
				`db.adminCommand({ updateZoneKeyRange: "app.events", min: { day: MinKey, userId: MinKey }, max: { day: MaxKey, userId: MaxKey }, zone: "z1" })`,
				`db.adminCommand({ shardCollection: "app.events", key: { day: 1, userId: "hashed" }, presplitHashedZones: true })`,
			},
			matched: 2,
		},
		{
			name:    "hashed key with zones on an existing collection does not presplit",
			targets: []Target{hashedZoned},
			state:   State{DatabaseExists: true, Shards: map[string][]string{"shard1": {"z1"}}, Collections: map[string]bson.D{"events": nil}},
			want: []string{
				`db.adminCommand({ updateZoneKeyRange: "app.events", min: { day: MinKey, userId: MinKey }, max: { day: MaxKey, userId: MaxKey }, zone: "z1" })`,
				`db.adminCommand({ shardCollection: "app.events", key: { day: 1, userId: "hashed" } })`,
			},
			matched: 2,
		},
		{
			name:    "zone assigned to one shard of two",
			targets: []Target{analytics},
			state: State{Shards: map[string][]string{"shard1": {"s1"}, "shard2": {"other"}},
				Tags: []Tag{{NS: "app.analytics", Min: analytics.Zones[0].Min, Max: analytics.Zones[0].Max, Zone: "s1"}}},
			want: []string{
				`db.adminCommand({ enableSharding: "app" })`,
				`db.adminCommand({ addShardToZone: "shard2", zone: "s1" })`,
				`db.adminCommand({ shardCollection: "app.analytics", key: { date: 1, userId: 1 } })`,
			},
			matched: 2,
		},
		{
			name:    "unknown MongoDB shard",
			targets: []Target{analytics},
			state:   State{DatabaseExists: true, Shards: map[string][]string{"shard1": nil}},
			want: []string{ // computed, but Apply runs none while there are conflicts
				`db.adminCommand({ addShardToZone: "shard1", zone: "s1" })`,
				`db.adminCommand({ updateZoneKeyRange: "app.analytics", min: { date: ISODate("2025-01-01T00:00:00Z"), userId: MinKey }, max: { date: ISODate("2025-07-01T00:00:00Z"), userId: MinKey }, zone: "s1" })`,
				`db.adminCommand({ shardCollection: "app.analytics", key: { date: 1, userId: 1 } })`,
			},
			matched:   1,
			conflicts: []string{"MongoDB shard shard2, which listShards does not have (it has [shard1])"},
		},
		{
			name:    "same range in another zone",
			targets: []Target{analytics},
			state: State{DatabaseExists: true, Shards: map[string][]string{"shard1": {"s1"}, "shard2": {"s1"}},
				Tags: []Tag{{NS: "app.analytics", Min: analytics.Zones[0].Min, Max: analytics.Zones[0].Max, Zone: "old"}}},
			want:      []string{`db.adminCommand({ shardCollection: "app.analytics", key: { date: 1, userId: 1 } })`},
			matched:   3,
			conflicts: []string{`is in zone old, the config says s1`},
		},
		{
			name:    "overlapping range",
			targets: []Target{analytics},
			state: State{DatabaseExists: true, Shards: map[string][]string{"shard1": {"s1"}, "shard2": {"s1"}},
				Tags: []Tag{{NS: "app.analytics", Zone: "x",
					Min: bson.D{{Key: "date", Value: date("2025-06-01")}, {Key: "userId", Value: bson.MinKey{}}},
					Max: bson.D{{Key: "date", Value: bson.MaxKey{}}, {Key: "userId", Value: bson.MaxKey{}}}}}},
			want:      []string{`db.adminCommand({ shardCollection: "app.analytics", key: { date: 1, userId: 1 } })`},
			matched:   3,
			conflicts: []string{`overlaps the existing range [{ date: ISODate("2025-06-01T00:00:00Z"), userId: MinKey }, { date: MaxKey, userId: MaxKey }) of zone x`},
		},
		{
			name:    "range of another namespace is not ours",
			targets: []Target{analytics},
			state: State{DatabaseExists: true, Shards: map[string][]string{"shard1": {"s1"}, "shard2": {"s1"}},
				Tags: []Tag{{NS: "app.other", Min: analytics.Zones[0].Min, Max: analytics.Zones[0].Max, Zone: "x"}}},
			want: []string{
				`db.adminCommand({ updateZoneKeyRange: "app.analytics", min: { date: ISODate("2025-01-01T00:00:00Z"), userId: MinKey }, max: { date: ISODate("2025-07-01T00:00:00Z"), userId: MinKey }, zone: "s1" })`,
				`db.adminCommand({ shardCollection: "app.analytics", key: { date: 1, userId: 1 } })`,
			},
			matched: 3,
		},
		{
			name:    "sharded unique on the same key",
			targets: []Target{orders},
			state: State{DatabaseExists: true,
				Sharded: map[string]ShardedCollection{"app.orders": {Key: bson.D{{Key: "userId", Value: "hashed"}}, Unique: true}}},
			want:      []string{`db.getSiblingDB("app").runCommand({ createIndexes: "orders", indexes: [ { key: { userId: 1, createdAt: -1 }, name: "userId_1_createdAt_-1" } ] })`},
			matched:   1,
			conflicts: []string{`app.orders is sharded on { userId: "hashed" } (unique), the config says { userId: "hashed" }`},
		},
		{
			name:    "same name and key, other options",
			targets: []Target{orders},
			state: State{DatabaseExists: true,
				Sharded:     map[string]ShardedCollection{"app.orders": {Key: bson.D{{Key: "userId", Value: "hashed"}}}},
				Collections: map[string]bson.D{"orders": nil},
				Indexes:     map[string][]bson.D{"orders": {ixDoc("userId_1_createdAt_-1", userIDDesc, bson.E{Key: "sparse", Value: true})}}},
			matched:   2,
			conflicts: []string{`app.orders index userId_1_createdAt_-1 has options { sparse: true }, the config says {} (code 85`},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := NewPlan(&Layout{Database: "app", Collections: c.targets}, &c.state)
			var got []string
			for _, s := range p.Steps {
				got = append(got, s.Shell())
			}
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
			if len(p.Matched) != c.matched {
				t.Errorf("matched %d %q, want %d", len(p.Matched), p.Matched, c.matched)
			}
			if len(p.Conflicts) != len(c.conflicts) {
				t.Fatalf("conflicts %q, want %q", p.Conflicts, c.conflicts)
			}
			for i := range c.conflicts {
				if !strings.Contains(p.Conflicts[i], c.conflicts[i]) {
					t.Errorf("conflict %q, want it to contain %q", p.Conflicts[i], c.conflicts[i])
				}
			}
		})
	}
}

func TestCompareValues(t *testing.T) {
	ordered := []any{bson.MinKey{}, int32(-1), 0.5, int64(2), "a", "b", date("2025-01-01"), date("2025-02-01"), bson.MaxKey{}}
	for i := range ordered {
		for j := range ordered {
			got := compareValues(ordered[i], ordered[j])
			if (i < j && got >= 0) || (i > j && got <= 0) || (i == j && got != 0) {
				t.Errorf("compare(%v, %v) = %d", ordered[i], ordered[j], got)
			}
		}
	}
	if compareValues(int32(1), 1.0) != 0 || compareValues(int64(1), int32(1)) != 0 {
		t.Error("numbers of different types must compare by value")
	}
}
