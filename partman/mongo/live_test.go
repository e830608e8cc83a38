package mongo

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// TestScenariosLive runs the fake's scenarios against a real mongos of a
// sharded cluster with at least two shards, e.g.
// MONGODB_URI=mongodb://localhost:27017 after `docker compose up`. Each
// scenario uses its own database and zone names and removes them after.
// Commands are captured with the driver's command monitor; any difference
// from the expectations means the fake (or our reading of the server) is
// wrong. No MongoDB can run on the machines this project is built on, so
// this test skips there.
func TestScenariosLive(t *testing.T) {
	uri := os.Getenv("MONGODB_URI")
	if uri == "" {
		t.Skip("MONGODB_URI is not set; the scenarios ran against the fake mongos only")
	}
	liveScenarios(t, uri)
}

// TestLiveHarnessOnFake runs the live test's harness (client-side capture,
// per-scenario databases, cleanup) against the fake, so that the harness
// itself is known to work before it meets a real cluster.
func TestLiveHarnessOnFake(t *testing.T) {
	liveScenarios(t, newFakeMongos(t).URI())
}

func liveScenarios(t *testing.T, uri string) {
	for i, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			rec := &recorder{}
			client := connect(t, uri, options.Client().SetMonitor(&event.CommandMonitor{
				Started: func(_ context.Context, e *event.CommandStartedEvent) { rec.add(e.Command) },
			}))
			var shards struct {
				Shards []struct {
					ID string `bson:"_id"`
				} `bson:"shards"`
			}
			if err := client.Database("admin").RunCommand(context.Background(), bson.D{{Key: "listShards", Value: 1}}).Decode(&shards); err != nil {
				t.Fatal(err)
			}
			if len(shards.Shards) < 2 {
				t.Fatalf("the cluster at MONGODB_URI has %d shards; the scenarios need 2", len(shards.Shards))
			}
			c := &cluster{client: client, db: fmt.Sprintf("partman_test_%d_%d", time.Now().Unix(), i),
				a: shards.Shards[0].ID, b: shards.Shards[1].ID, commands: rec.take}
			t.Cleanup(func() { dropLive(t, c) })
			runScenario(t, c, sc)
		})
	}
}

// dropLive removes what a scenario created: zone ranges, zone
// assignments, the database.
func dropLive(t *testing.T, c *cluster) {
	ctx := context.Background()
	l := c.layout(t)
	admin := c.client.Database("admin")
	for _, tg := range l.Collections {
		for _, z := range tg.Zones {
			err := admin.RunCommand(ctx, bson.D{{Key: "updateZoneKeyRange", Value: l.Namespace(tg)},
				{Key: "min", Value: z.Min}, {Key: "max", Value: z.Max}, {Key: "zone", Value: nil}}).Err()
			if err != nil {
				t.Errorf("cleanup: remove zone range: %v", err)
			}
		}
		for zone, shards := range tg.ZoneShards {
			for _, sh := range shards {
				if err := admin.RunCommand(ctx, bson.D{{Key: "removeShardFromZone", Value: sh}, {Key: "zone", Value: zone}}).Err(); err != nil {
					t.Errorf("cleanup: remove shard from zone: %v", err)
				}
			}
		}
	}
	if err := c.client.Database(c.db).Drop(ctx); err != nil {
		t.Errorf("cleanup: drop %s: %v", c.db, err)
	}
}

// recorder keeps the commands the driver starts, stripped like the fake's.
type recorder struct {
	mu   sync.Mutex
	cmds []bson.D
}

func (r *recorder) add(raw bson.Raw) {
	var d bson.D
	if err := bson.Unmarshal(raw, &d); err != nil {
		return
	}
	r.mu.Lock()
	r.cmds = append(r.cmds, strip(d))
	r.mu.Unlock()
}

func (r *recorder) take() []bson.D {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.cmds
	r.cmds = nil
	return out
}
