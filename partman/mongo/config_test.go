package mongo

import (
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.yaml.in/yaml/v3"

	"github.com/shardproxy/shardproxy/router"
)

const topoYAML = `
shards:
  - {name: s0, dsn: x}
  - {name: s1, dsn: y}
  - {name: s2, dsn: z}
tables:
  orders: {strategy: hash, key: user_id}
  events:
    strategy: range
    key: created_at
    ranges:
      - {from: "2025-07-01", shard: s2}
      - {to: "2025-01-01", shard: s0}
      - {from: "2025-01-01", to: "2025-07-01", shard: s1}
`

const goodMongo = `
uri: mongodb://mongos:27017
database: deliveryapp
collections:
  - name: orders
    shard_key: {userId: hashed}
    indexes:
      - {key: {userId: 1, createdAt: -1}}
      - {name: by_status, key: {status: 1, createdAt: -1}, unique: true}
  - name: analytics
    shard_key: {date: 1, userId: 1}
    zones: {table: events, shards: {s0: [shard1], s1: [shard1], s2: [shard2]}}
`

func decode(t *testing.T, doc string) (Config, *router.Config) {
	t.Helper()
	var cfg Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	var topo router.Config
	if err := yaml.Unmarshal([]byte(topoYAML), &topo); err != nil {
		t.Fatal(err)
	}
	return cfg, &topo
}

func TestKeysKeepYAMLOrder(t *testing.T) {
	cases := []struct {
		doc  string
		want bson.D
	}{
		{"{date: 1, userId: 1}", bson.D{{Key: "date", Value: int32(1)}, {Key: "userId", Value: int32(1)}}},
		{"{userId: 1, date: 1}", bson.D{{Key: "userId", Value: int32(1)}, {Key: "date", Value: int32(1)}}},
		{"{z: -1, a: hashed, m: 1}", bson.D{{Key: "z", Value: int32(-1)}, {Key: "a", Value: "hashed"}, {Key: "m", Value: int32(1)}}},
		{"\n  status: 1\n  createdAt: -1\n", bson.D{{Key: "status", Value: int32(1)}, {Key: "createdAt", Value: int32(-1)}}},
	}
	for _, c := range cases {
		t.Run(c.doc, func(t *testing.T) {
			var k Keys
			if err := yaml.Unmarshal([]byte(c.doc), &k); err != nil {
				t.Fatal(err)
			}
			if shell(bson.D(k)) != shell(c.want) {
				t.Fatalf("got %s, want %s", shell(bson.D(k)), shell(c.want))
			}
		})
	}
	for _, bad := range []string{"[userId]", "{a: 1.5}", "{a: [1]}", "{a: true}"} {
		var k Keys
		if err := yaml.Unmarshal([]byte(bad), &k); err == nil {
			t.Errorf("%s: decoded as %v, want an error", bad, k)
		}
	}
}

func TestResolveZonesFromRouterTable(t *testing.T) {
	cfg, topo := decode(t, goodMongo)
	l, err := cfg.Resolve(topo)
	if err != nil {
		t.Fatal(err)
	}
	a := l.Collections[1]
	var got []string
	for _, z := range a.Zones {
		got = append(got, z.Zone+" "+shell(z.Min)+" "+shell(z.Max))
	}
	want := []string{
		`s0 { date: MinKey, userId: MinKey } { date: ISODate("2025-01-01T00:00:00Z"), userId: MinKey }`,
		`s1 { date: ISODate("2025-01-01T00:00:00Z"), userId: MinKey } { date: ISODate("2025-07-01T00:00:00Z"), userId: MinKey }`,
		`s2 { date: ISODate("2025-07-01T00:00:00Z"), userId: MinKey } { date: MaxKey, userId: MaxKey }`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("zones:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	o := l.Collections[0]
	if o.Indexes[0].Name != "userId_1_createdAt_-1" || o.Indexes[1].Name != "by_status" || !o.Indexes[1].Unique {
		t.Fatalf("index names: %+v", o.Indexes)
	}
	if l.Namespace(o) != "deliveryapp.orders" {
		t.Fatal(l.Namespace(o))
	}
}

func TestResolveExplicitZones(t *testing.T) {
	cfg, _ := decode(t, strings.Replace(goodMongo, "{table: events, shards: {s0: [shard1], s1: [shard1], s2: [shard2]}}",
		`{ranges: [{zone: recent, from: "2026-01-01"}, {zone: old, to: "2026-01-01"}], shards: {old: [shard1], recent: [shard2]}}`, 1))
	l, err := cfg.Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	z := l.Collections[1].Zones
	if len(z) != 2 || z[0].Zone != "old" || z[1].Zone != "recent" || shell(z[1].Max) != "{ date: MaxKey, userId: MaxKey }" {
		t.Fatalf("zones: %+v", z)
	}
}

func TestConfigErrors(t *testing.T) {
	zones := "{table: events, shards: {s0: [shard1], s1: [shard1], s2: [shard2]}}"
	cases := []struct {
		name, from, to, want string
	}{
		{"no uri", "uri: mongodb://mongos:27017", "", "uri is required"},
		{"bad uri", "mongodb://mongos", "postgres://mongos", "does not start with mongodb://"},
		{"no database", "database: deliveryapp", "", "database is required"},
		{"system database", "database: deliveryapp", "database: admin", "not a name"},
		{"duplicate collection", "name: analytics", "name: orders", "listed twice"},
		{"descending shard key", "{userId: hashed}", "{userId: -1}", `a shard key field is 1 or "hashed"`},
		{"two hashed fields", "{date: 1, userId: 1}", "{date: hashed, userId: hashed}", "allows one"},
		{"index type", "{status: 1, createdAt: -1}", "{status: geo}", `unknown index type "geo"`},
		{"index direction", "{status: 1, createdAt: -1}", "{status: 2}", "not 1 or -1"},
		{"duplicate index name", "name: by_status", "name: userId_1_createdAt_-1", "used twice"},
		{"zones on hashed prefix", "{date: 1, userId: 1}", "{userId: hashed, date: 1}", "first field is ascending"},
		{"zones without source", zones, "{shards: {a: [x]}}", "give table"},
		{"unknown table", "table: events", "table: nope", "not a range table"},
		{"hash table", "table: events", "table: orders", "not a range table"},
		{"zone missing shards", "s2: [shard2]", "", "zone s2 has no entry"},
		{"unused zone", "s2: [shard2]", "s2: [shard2], s9: [shard1]", "zone s9, which no range uses"},
		{"overlapping zones", zones, `{ranges: [{zone: a, to: "2025-06-01"}, {zone: b, from: "2025-01-01"}], shards: {a: [x], b: [y]}}`, "overlap"},
		{"bad zone date", zones, `{ranges: [{zone: a, to: "June"}], shards: {a: [x]}}`, "not a date"},
		{"unknown field", "unique: true", "unique: true, sparse: true", "field sparse not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := strings.Replace(goodMongo, c.from, c.to, 1)
			if doc == goodMongo {
				t.Fatalf("replacing %q changed nothing", c.from)
			}
			var cfg Config
			dec := yaml.NewDecoder(strings.NewReader(doc))
			dec.KnownFields(true)
			err := dec.Decode(&cfg)
			if err == nil {
				_, topo := decode(t, goodMongo)
				_, err = cfg.Resolve(topo)
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}
