package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/coordinator"
)

// TestCoordinatorProvisioning checks the coordinator database itself:
// several proxies provisioning one coordinator at once all succeed and
// leave one complete picture; every row a shard holds satisfies the
// coordinator's hash partition bound for that shard (the router's hash is
// Postgres's); filters on the key prune to the key's shard; a table of the
// same name that is not the proxy's is an error, never dropped.
func TestCoordinatorProvisioning(t *testing.T) {
	ctx := context.Background()
	const db = "coord_provisioning"
	cl := env.shards.Clusters[1]
	if err := cl.CreateDatabase(ctx, db); err != nil {
		t.Fatal(err)
	}
	cfg := coordinator.Config{DSN: cl.DSN(db)}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = coordinator.Provision(ctx, cfg, env.topo, nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("provisioning %d: %v", i, err)
		}
	}
	c, err := pgx.Connect(ctx, cfg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	one := func(sql string, args ...any) int64 {
		t.Helper()
		var n int64
		if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return n
	}
	if n := one("SELECT count(*) FROM pg_foreign_server WHERE srvname LIKE 'shardproxy_%'"); n != nShards {
		t.Fatalf("%d foreign servers, want %d", n, nShards)
	}
	if n := one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.orders'::regclass"); n != nShards {
		t.Fatalf("orders has %d partitions, want %d", n, nShards)
	}

	// Rows the proxy placed: each shard's rows satisfy that shard's
	// partition bound on the coordinator.
	conn := mustConnect(t)
	for i := 0; i < 40; i++ {
		if _, err := conn.Exec(ctx, "INSERT INTO users (id, name, email, city) VALUES ($1, 'prov', 'p@x', 'Lyon') ON CONFLICT DO NOTHING", 1_800_000+i*7919); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { conn.Exec(context.Background(), "DELETE FROM users WHERE name = 'prov'") })
	for i, sh := range env.topo.Shards {
		part := pgx.Identifier{"shardproxy_parts", "public.users@" + sh.Name}.Sanitize()
		// OFFSET 0 keeps the check on the coordinator (postgres_fdw would
		// ship the built-in function, with the coordinator's OID, to the shard).
		if n := one(fmt.Sprintf("SELECT count(*) FROM (SELECT id FROM %s WHERE name = 'prov' OFFSET 0) r WHERE NOT satisfies_hash_partition('public.users'::regclass, %d, %d, id)", part, nShards, i)); n != 0 {
			t.Errorf("shard %s holds %d rows outside its hash partition", sh.Name, n)
		}
		if n, direct := one(fmt.Sprintf("SELECT count(*) FROM %s WHERE name = 'prov'", part)), shardInt(t, i, "SELECT count(*) FROM users WHERE name = 'prov'"); n != direct {
			t.Errorf("shard %s: %d rows through the coordinator, %d on the shard", sh.Name, n, direct)
		}
	}
	if n := one("SELECT count(*) FROM users WHERE name = 'prov'"); n != 40 {
		t.Errorf("the coordinator sees %d of the 40 users", n)
	}
	// Pruning: a key filter scans one foreign partition, the one of the
	// shard the proxy routes the key to.
	rows, err := c.Query(ctx, "EXPLAIN (COSTS OFF) SELECT * FROM users WHERE id = 1800000")
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var shard int
	for i := range env.topo.Shards {
		if shardInt(t, i, "SELECT count(*) FROM users WHERE id = 1800000") == 1 {
			shard = i
		}
	}
	if text := strings.Join(plan, "\n"); strings.Count(text, "Foreign Scan") != 1 || !strings.Contains(text, "users@"+env.topo.Shards[shard].Name) {
		t.Errorf("a key filter should scan only shard %s's partition:\n%s", env.topo.Shards[shard].Name, text)
	}
	// Range bounds: events partitions follow the configured intervals.
	if n := one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.events'::regclass"); n != 4 {
		t.Errorf("events has %d partitions, want one per interval (4)", n)
	}

	// A table of the proxy's name that is not the proxy's.
	if err := shardExec(ctx, 0, "CREATE TABLE coord_clash (x int)"); err != nil {
		t.Fatal(err)
	}
	defer shardExec(ctx, 0, "DROP TABLE coord_clash")
	if _, err := c.Exec(ctx, "CREATE TABLE coord_clash (y int)"); err != nil {
		t.Fatal(err)
	}
	err = coordinator.Provision(ctx, cfg, env.topo, nil)
	if err == nil || !strings.Contains(err.Error(), "not the proxy's") {
		t.Fatalf("provisioning over a foreign table of the same name: %v", err)
	}
	if one("SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.coord_clash'::regclass AND attname = 'y'") != 1 {
		t.Fatal("the database's own table was changed")
	}
	// The failed run changed nothing: the earlier tables still answer.
	if n := one("SELECT count(*) FROM users WHERE name = 'prov'"); n != 40 {
		t.Errorf("after a failed provisioning the coordinator sees %d users", n)
	}
}
