package mongo

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.yaml.in/yaml/v3"
)

// The scenarios run unchanged against the fake mongos (always) and against
// a real mongos when MONGODB_URI is set (live_test.go). Expected commands
// are relaxed extended JSON with {db}, {A} and {B} standing for the
// database and the two MongoDB shards; fields that change per run (lsid,
// $clusterTime, maxTimeMS) are left out.

const scenarioYAML = `
uri: mongodb://unused
database: "{db}"
collections:
  - name: orders
    shard_key: {userId: hashed}
    indexes:
      - {name: userId_1_createdAt_-1, key: {userId: 1, createdAt: -1}}
      - {name: restaurantId_1_status_1, key: {restaurantId: 1, status: 1}}
      - {key: {status: 1, createdAt: -1}}
  - name: analytics
    shard_key: {date: 1, userId: 1}
    zones:
      ranges:
        - {zone: "{db}-old", to: "2025-01-01"}
        - {zone: "{db}-new", from: "2025-01-01"}
      shards: {"{db}-old": ["{A}"], "{db}-new": ["{B}"]}
`

// cluster is where a scenario runs: the fake or a live mongos.
type cluster struct {
	client   *mongodrv.Client
	db, a, b string
	// commands returns and forgets the commands sent so far.
	commands func() []bson.D
}

func (c *cluster) expand(s string) string {
	return strings.NewReplacer("{db}", c.db, "{A}", c.a, "{B}", c.b).Replace(s)
}

func (c *cluster) layout(t *testing.T) *Layout {
	t.Helper()
	var cfg Config
	if err := yaml.Unmarshal([]byte(c.expand(scenarioYAML)), &cfg); err != nil {
		t.Fatal(err)
	}
	l, err := cfg.Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// run sends setup commands directly (as an operator would have), forgets
// them, and returns nothing: setup is not what is asserted.
func (c *cluster) run(t *testing.T, setup []string) {
	t.Helper()
	for _, s := range setup {
		var cmd bson.D
		var env struct {
			DB  string `bson:"db"`
			Cmd bson.D `bson:"cmd"`
		}
		if err := bson.UnmarshalExtJSON([]byte(c.expand(s)), false, &env); err != nil {
			t.Fatalf("setup %s: %v", s, err)
		}
		cmd = env.Cmd
		if err := c.client.Database(env.DB).RunCommand(context.Background(), cmd).Err(); err != nil {
			t.Fatalf("setup %s: %v", s, err)
		}
	}
	c.commands()
}

const (
	helloCmd   = `{"hello":1,"$db":"admin"}`
	findDBs    = `{"find":"databases","filter":{"_id":"{db}"},"$db":"config"}`
	findColls  = `{"find":"collections","filter":{"_id":{"$in":["{db}.orders","{db}.analytics"]}},"$db":"config"}`
	listColls  = `{"listCollections":1,"filter":{"name":{"$in":["orders","analytics"]}},"cursor":{},"$db":"{db}"}`
	listOrders = `{"listIndexes":"orders","cursor":{},"$db":"{db}"}`
	listAnalyt = `{"listIndexes":"analytics","cursor":{},"$db":"{db}"}`
	listShards = `{"listShards":1,"$db":"admin"}`
	findTags   = `{"find":"tags","filter":{"ns":{"$in":["{db}.orders","{db}.analytics"]}},"$db":"config"}`
)

var freshWrites = []string{
	`{"enableSharding":"{db}","$db":"admin"}`,
	`{"addShardToZone":"{A}","zone":"{db}-old","$db":"admin"}`,
	`{"addShardToZone":"{B}","zone":"{db}-new","$db":"admin"}`,
	`{"shardCollection":"{db}.orders","key":{"userId":"hashed"},"$db":"admin"}`,
	`{"createIndexes":"orders","indexes":[` +
		`{"key":{"userId":1,"createdAt":-1},"name":"userId_1_createdAt_-1"},` +
		`{"key":{"restaurantId":1,"status":1},"name":"restaurantId_1_status_1"},` +
		`{"key":{"status":1,"createdAt":-1},"name":"status_1_createdAt_-1"}],"$db":"{db}"}`,
	`{"updateZoneKeyRange":"{db}.analytics","min":{"date":{"$minKey":1},"userId":{"$minKey":1}},` +
		`"max":{"date":{"$date":"2025-01-01T00:00:00Z"},"userId":{"$minKey":1}},"zone":"{db}-old","$db":"admin"}`,
	`{"updateZoneKeyRange":"{db}.analytics","min":{"date":{"$date":"2025-01-01T00:00:00Z"},"userId":{"$minKey":1}},` +
		`"max":{"date":{"$maxKey":1},"userId":{"$maxKey":1}},"zone":"{db}-new","$db":"admin"}`,
	`{"shardCollection":"{db}.analytics","key":{"date":1,"userId":1},"$db":"admin"}`,
}

type scenario struct {
	name string
	// setup are {"db": ..., "cmd": {...}} documents run before the step.
	setup []string
	// stalePlan plans against an empty State instead of reading, to see
	// how Apply handles a conflict only the server knows about.
	stalePlan bool
	want      []string // every command partman sends, in order
	conflicts []string // substrings, one per expected conflict
	created   int
}

var scenarios = []scenario{
	{
		name:    "fresh cluster",
		want:    append([]string{helloCmd, findDBs, findColls, listColls, listShards, findTags}, freshWrites...),
		created: len(freshWrites),
	},
	{
		name: "re-run changes nothing",
		setup: append([]string{}, func() []string {
			// The fresh run's writes, sent directly, leave the cluster as
			// partman leaves it.
			var out []string
			for _, w := range freshWrites {
				out = append(out, asSetup(w))
			}
			return out
		}()...),
		want: []string{helloCmd, findDBs, findColls, listColls, listOrders, listAnalyt, listShards, findTags},
	},
	{
		name: "conflicting shard key",
		setup: []string{
			`{"db":"admin","cmd":{"enableSharding":"{db}"}}`,
			`{"db":"admin","cmd":{"shardCollection":"{db}.orders","key":{"userId":1}}}`,
		},
		want:      []string{helloCmd, findDBs, findColls, listColls, listOrders, listShards, findTags},
		conflicts: []string{`{db}.orders is sharded on { userId: 1 }, the config says { userId: "hashed" }`},
	},
	{
		name: "conflicting index",
		setup: []string{
			`{"db":"{db}","cmd":{"createIndexes":"orders","indexes":[{"key":{"userId":1},"name":"userId_1_createdAt_-1"}]}}`,
			`{"db":"{db}","cmd":{"createIndexes":"orders","indexes":[{"key":{"restaurantId":1,"status":1},"name":"byRestaurant"}]}}`,
		},
		want: []string{helloCmd, findDBs, findColls, listColls, listOrders, listShards, findTags},
		conflicts: []string{
			`{db}.orders index userId_1_createdAt_-1 has key { userId: 1 }, the config says { userId: 1, createdAt: -1 } (code 86`,
			`{db}.orders already has index byRestaurant on { restaurantId: 1, status: 1 }, the config names it restaurantId_1_status_1 (code 85`,
		},
	},
	{
		name: "conflict reported by the server stops apply",
		setup: []string{
			`{"db":"{db}","cmd":{"createIndexes":"orders","indexes":[{"key":{"userId":1},"name":"userId_1_createdAt_-1"}]}}`,
		},
		stalePlan: true,
		want:      freshWrites[:5],
		created:   4,
		conflicts: []string{`create indexes [userId_1_createdAt_-1 restaurantId_1_status_1 status_1_createdAt_-1] on {db}.orders: the server refused: (IndexKeySpecsConflict)`},
	},
}

// asSetup wraps an expected command as a setup document.
func asSetup(cmd string) string {
	var d bson.D
	if err := bson.UnmarshalExtJSON([]byte(cmd), false, &d); err != nil {
		panic(err)
	}
	db := lookup(d, "$db").(string)
	d = d[:len(d)-1]
	b, err := bson.MarshalExtJSON(bson.D{{Key: "db", Value: db}, {Key: "cmd", Value: d}}, false, false)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// runScenario runs sc on c and checks every command sent, the conflicts
// and what was created.
func runScenario(t *testing.T, c *cluster, sc scenario) {
	t.Helper()
	c.run(t, sc.setup)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l := c.layout(t)
	var res *Result
	var err error
	if sc.stalePlan {
		res, err = Apply(ctx, c.client, NewPlan(l, &State{Shards: map[string][]string{c.a: nil, c.b: nil}}))
	} else {
		_, res, err = Run(ctx, c.client, l, true)
	}
	if err != nil {
		t.Fatal(err)
	}
	assertCommands(t, c, c.commands(), sc.want)
	if len(res.Conflicts) != len(sc.conflicts) {
		t.Fatalf("conflicts: got %q, want %d like %q", res.Conflicts, len(sc.conflicts), sc.conflicts)
	}
	for i, want := range sc.conflicts {
		if !strings.Contains(res.Conflicts[i], c.expand(want)) {
			t.Errorf("conflict %d: got %q, want it to contain %q", i, res.Conflicts[i], c.expand(want))
		}
	}
	if len(res.Created) != sc.created {
		t.Errorf("created %d (%q), want %d", len(res.Created), res.Created, sc.created)
	}
}

func assertCommands(t *testing.T, c *cluster, got []bson.D, want []string) {
	t.Helper()
	var gotJSON []string
	for _, d := range got {
		b, err := bson.MarshalExtJSON(d, false, false)
		if err != nil {
			t.Fatal(err)
		}
		gotJSON = append(gotJSON, string(b))
	}
	n := max(len(gotJSON), len(want))
	for i := 0; i < n; i++ {
		var g, w string
		if i < len(gotJSON) {
			g = gotJSON[i]
		}
		if i < len(want) {
			w = c.expand(want[i])
		}
		if g != w {
			t.Errorf("command %d:\n got %s\nwant %s", i, g, w)
		}
	}
}

// strip removes what changes from run to run, as the fake's recorder does.
func strip(cmd bson.D) bson.D {
	out := bson.D{}
	for _, e := range cmd {
		switch e.Key {
		case "lsid", "$clusterTime", "txnNumber", "maxTimeMS", "$readPreference":
		default:
			out = append(out, e)
		}
	}
	return out
}

func connect(t *testing.T, uri string, opts ...*options.ClientOptions) *mongodrv.Client {
	t.Helper()
	client, err := mongodrv.Connect(append([]*options.ClientOptions{options.Client().ApplyURI(uri)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	return client
}

func fakeCluster(t *testing.T) (*cluster, *fakeMongos) {
	f := newFakeMongos(t)
	return &cluster{client: connect(t, f.URI()), db: "deliveryapp", a: "shard1", b: "shard2", commands: f.commands}, f
}

func TestScenariosFake(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			c, _ := fakeCluster(t)
			runScenario(t, c, sc)
		})
	}
}

func TestNotMongos(t *testing.T) {
	c, f := fakeCluster(t)
	f.setMongod(true)
	_, _, err := Run(context.Background(), c.client, c.layout(t), true)
	if !errors.Is(err, ErrNotMongos) || !strings.Contains(err.Error(), "standalone mongod") {
		t.Fatalf("got %v, want ErrNotMongos naming a standalone mongod", err)
	}
	assertCommands(t, c, c.commands(), []string{helloCmd})
}

// The fake keeps state like a mongos: after the fresh run, a second run
// sends only reads. This is the re-run scenario without a setup shortcut.
func TestApplyTwiceFake(t *testing.T) {
	c, _ := fakeCluster(t)
	runScenario(t, c, scenarios[0])
	runScenario(t, c, scenario{want: scenarios[1].want})
	if len(scenarios[1].setup) != len(freshWrites) {
		t.Fatal("the re-run scenario should replay every fresh write")
	}
}

// On 8.0 config.collections also lists unsharded collections, marked
// unsplittable, with key {_id: 1}: those are not sharded, so partman shards
// them instead of reporting a key conflict.
func TestUnsplittableIsNotSharded(t *testing.T) {
	c, f := fakeCluster(t)
	c.run(t, []string{`{"db":"{db}","cmd":{"createIndexes":"orders","indexes":[{"key":{"userId":1,"createdAt":-1},"name":"userId_1_createdAt_-1"}]}}`})
	f.mu.Lock()
	f.sharded["deliveryapp.orders"] = fakeSharded{key: bson.D{{Key: "_id", Value: int32(1)}}, unsplittable: true}
	f.mu.Unlock()
	p, _, err := Run(context.Background(), c.client, c.layout(t), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Conflicts) != 0 {
		t.Fatalf("conflicts: %q", p.Conflicts)
	}
	var shells []string
	for _, s := range p.Steps {
		shells = append(shells, s.Shell())
	}
	want := `db.adminCommand({ shardCollection: "deliveryapp.orders", key: { userId: "hashed" } })`
	if !slices.Contains(shells, want) {
		t.Fatalf("plan lacks %s:\n%s", want, strings.Join(shells, "\n"))
	}
}
