package config

import (
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"time"

	"github.com/shardproxy/shardproxy/partman"
)

const good = `
listen: 127.0.0.1:6432
admin_listen: 127.0.0.1:9930
users: [{name: app, password: app}]
shards:
  - {name: s0, dsn: "postgres://postgres@127.0.0.1:15432/deliveryapp"}
  - {name: s1, dsn: "postgres://postgres@127.0.0.1:15433/deliveryapp"}
tables:
  users:       {strategy: hash, key: id}
  orders:      {strategy: hash, key: user_id}
  restaurants: {strategy: reference}
  events:      {strategy: range, key: created_at, ranges: [{to: "2025-01-01", shard: s0}, {from: "2025-01-01", shard: s1}]}
`

func TestParseGood(t *testing.T) {
	f, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if f.Proxy.Pool.Size != 16 || f.Proxy.Database != "deliveryapp" || f.Proxy.Users[0].Auth != "scram-sha-256" {
		t.Fatalf("defaults not applied: %+v", f.Proxy)
	}
	if len(f.Topology.Shards) != 2 || f.Topology.Tables["events"].Ranges[1].Shard != "s1" {
		t.Fatalf("topology: %+v", f.Topology)
	}
	if f.Proxy.Coordinator.Enabled() {
		t.Fatal("no coordinator section: the coordinator must be off")
	}
	f, err = Parse([]byte(good + "coordinator: {dsn: 'postgres://c@127.0.0.1/coord'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c := f.Proxy.Coordinator; !c.Enabled() || c.Mode != "fallback" || c.PoolSize != 4 {
		t.Fatalf("coordinator defaults: %+v", c)
	}
}

const mongoSection = `mongo:
  uri: mongodb://127.0.0.1:27017
  database: deliveryapp
  collections:
    - name: analytics
      shard_key: {date: 1, userId: 1}
      zones: {table: events, shards: {s0: [shard1], s1: [shard2]}}
`

func TestParseMongo(t *testing.T) {
	f, err := Parse([]byte(good + mongoSection))
	if err != nil {
		t.Fatal(err)
	}
	key := f.Mongo.Collections[0].ShardKey
	if len(key) != 2 || key[0].Key != "date" || key[1].Key != "userId" {
		t.Fatalf("shard key order lost: %v", key)
	}
	l, err := f.Mongo.Resolve(&f.Topology)
	if err != nil {
		t.Fatal(err)
	}
	z := l.Collections[0].Zones
	if len(z) != 2 || z[0].Zone != "s0" || z[1].Zone != "s1" {
		t.Fatalf("zones from the events ranges: %+v", z)
	}
	if f, err := Parse([]byte(good)); err != nil || !f.Mongo.IsZero() {
		t.Fatalf("a file without mongo: %v, %+v", err, f)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, doc, want string
	}{
		{"unknown key with line", good + "bogus: 1\n", "line 13: field bogus not found"},
		{"unknown nested key", strings.Replace(good, "{strategy: reference}", "{strategy: reference, colour: red}", 1), "field colour not found"},
		{"duplicate shard", strings.Replace(good, "name: s1", "name: s0", 1), "duplicate shard name"},
		{"hash without key", strings.Replace(good, "{strategy: hash, key: id}", "{strategy: hash}", 1), "users: hash strategy needs a key"},
		{"unknown strategy", strings.Replace(good, "{strategy: reference}", "{strategy: modulo}", 1), `unknown strategy "modulo"`},
		{"range gap", strings.Replace(good, `{from: "2025-01-01", shard: s1}`, `{from: "2025-02-01", shard: s1}`, 1), "gap in ranges"},
		{"range overlap", strings.Replace(good, `{from: "2025-01-01", shard: s1}`, `{from: "2024-12-01", shard: s1}`, 1), "ranges overlap"},
		{"two unbounded", strings.Replace(good, `{from: "2025-01-01", shard: s1}`, `{shard: s1}`, 1), "unbounded"},
		{"range unknown shard", strings.Replace(good, `shard: s1}]`, `shard: s9}]`, 1), `unknown shard "s9"`},
		{"bad date", strings.Replace(good, `to: "2025-01-01"`, `to: "Jan 2025"`, 1), "not a date"},
		{"no users", strings.Replace(good, "users: [{name: app, password: app}]", "", 1), "at least one user"},
		{"scram without password", strings.Replace(good, "password: app", "password: ''", 1), "needs a password"},
		{"no shards", "users: [{name: a, auth: trust}]\n", "at least one shard"},
		{"bad log level", good + "log: {level: loud}\n", "log.level"},
		{"empty", "", "empty config"},
		{"mongo without uri", good + strings.Replace(mongoSection, "uri: mongodb://127.0.0.1:27017", "", 1), "mongo: uri is required"},
		{"mongo unknown key", good + mongoSection + "  replicas: 3\n", "field replicas not found"},
		{"mongo zones from a hash table", good + strings.Replace(mongoSection, "table: events", "table: orders", 1), "zones.table orders is not a range table"},
		{"mongo zone without shards", good + strings.Replace(mongoSection, ", s1: [shard2]", "", 1), "zone s1 has no entry in zones.shards"},
		{"mongo with a bad topology", strings.Replace(good, "name: s1", "name: s0", 1) + strings.Replace(mongoSection, "database: deliveryapp", "", 1), "mongo: database is required"},
		{"coordinator unknown key", good + "coordinator: {dsn: 'postgres://c@127.0.0.1/coord', fetchsize: 10}\n", "field fetchsize not found"},
		{"coordinator bad mode", good + "coordinator: {dsn: 'postgres://c@127.0.0.1/coord', mode: always}\n", `coordinator: mode "always"`},
		{"coordinator fallback without dsn", good + "coordinator: {mode: fallback}\n", "coordinator: mode fallback needs a dsn"},
		{"partman unknown key", good + "partman: {tables: {orders: {column: created_at, colour: red}}}\n", "field colour not found"},
		{"partman no column", good + "partman: {tables: {orders: {interval: month}}}\n", "partman: table orders: column"},
		{"partman bad retention", good + "partman: {tables: {orders: {column: created_at, retention: forever}}}\n", `retention "forever"`},
		{"partman bad interval", good + "partman: {tables: {orders: {column: created_at, interval: hour}}}\n", `interval "hour"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestExampleConfigLoads(t *testing.T) {
	f, err := Load("../delivery/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	l, err := f.Mongo.Resolve(&f.Topology)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bson.D{
		"orders":    {{Key: "userId", Value: "hashed"}},
		"analytics": {{Key: "date", Value: int32(1)}, {Key: "userId", Value: int32(1)}},
	}
	for _, c := range l.Collections {
		if got, _ := bson.MarshalExtJSON(c.Key, false, false); string(got) != string(must(bson.MarshalExtJSON(want[c.Name], false, false))) {
			t.Errorf("%s shard key %s", c.Name, got)
		}
	}
	if n := len(l.Collections[0].Indexes); n != 3 {
		t.Errorf("orders has %d indexes, want 3", n)
	}
	if n := len(l.Collections[1].Zones); n != len(f.Topology.Tables["events"].Ranges) {
		t.Errorf("analytics has %d zones, want one per events range", n)
	}
	tables, err := f.Partman.Resolve()
	if err != nil || len(tables) != 2 || tables[1].Name != "orders" || tables[1].Retention.N != 24 {
		t.Fatalf("partman section: %+v, %v", tables, err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestParsePartman(t *testing.T) {
	f, err := Parse([]byte(good + `
partman:
  loop_interval: 1h
  lock_timeout: 3s
  tables:
    orders: {column: created_at, premake: 6, retention: 24 months, retention_mode: drop, default_partition: false}
    events: {column: created_at, interval: week, backfill_from: "2025-01-01"}
`))
	if err != nil {
		t.Fatal(err)
	}
	p := f.Partman
	o := p.Tables["orders"]
	if p.LoopInterval != time.Hour || p.LockTimeout != 3*time.Second || *o.Premake != 6 || o.RetentionMode != partman.Drop ||
		*o.DefaultPartition || p.Tables["events"].Interval != partman.Week {
		t.Fatalf("partman: %+v", p)
	}
}

func TestParseSecurity(t *testing.T) {
	doc := strings.Replace(good, "users: [{name: app, password: app}]",
		"users: [{name: app, password: app, max_client_connections: 5, query_timeout: 2s}]", 1) + `
max_client_connections: 100
max_query_bytes: 1048576
client_idle_timeout: 10m
idle_in_transaction_timeout: 30s
query_timeout: 1m
log: {log_literals: true}
tls: {mode: disable}
`
	f, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	l := f.Proxy.Limits
	if l.MaxClientConnections != 100 || l.MaxQueryBytes != 1<<20 || l.ClientIdleTimeout != 10*time.Minute ||
		l.IdleInTransactionTimeout != 30*time.Second || l.QueryTimeout != time.Minute {
		t.Fatalf("limits: %+v", l)
	}
	if u := f.Proxy.Users[0]; u.MaxClientConnections != 5 || u.QueryTimeout != 2*time.Second {
		t.Fatalf("user limits: %+v", u)
	}
	if !f.Log.SlowLog().Literals {
		t.Fatal("log_literals lost")
	}
	for _, bad := range []string{
		"tls: {mode: disable, sslmode: require}\n",                      // unknown key
		"tls: {mode: required}\n",                                       // unknown mode
		"tls: {mode: require}\n",                                        // no cert
		"tls: {mode: require, cert: /nonexistent, key: /nonexistent}\n", // unreadable
		"max_query_bytes: -1\n",
	} {
		if _, err := Parse([]byte(good + bad)); err == nil {
			t.Errorf("accepted: %s", bad)
		}
	}
}
