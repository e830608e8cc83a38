package replication

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardproxy/shardproxy/localpg"
)

// TestBackendRoleOnReplicas: a user with a backend role (backend_roles:
// per_user) reads from the replicas, and writes to the primary, as that
// role, never as the DSN's superuser: pg_read_file is refused (42501) on
// the replica that runs the read, and a write the role has no grant for is
// refused by the primary.
func TestBackendRoleOnReplicas(t *testing.T) {
	ctx := context.Background()
	for _, dsn := range []string{env.primary.DSN(database), env.other.DSN(database)} {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		for _, sql := range []string{"DROP OWNED BY lp", "DROP ROLE IF EXISTS lp", "CREATE ROLE lp LOGIN", "GRANT SELECT ON one, kv TO lp"} {
			if _, err := c.Exec(ctx, sql); err != nil && sql != "DROP OWNED BY lp" {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		c.Close(ctx)
		t.Cleanup(func() {
			c, err := pgx.Connect(ctx, dsn)
			if err == nil {
				c.Exec(ctx, "DROP OWNED BY lp")
				c.Exec(ctx, "DROP ROLE IF EXISTS lp")
				c.Close(ctx)
			}
		})
	}
	// The replicas get the role by replaying the primary's WAL: until they
	// have, a dial to them as lp fails and the read falls back to the
	// primary.
	for _, r := range []*localpg.Cluster{env.r1, env.r2} {
		waitFor(t, 20*time.Second, "role lp on replica "+r.Name, func() bool {
			c, err := pgx.Connect(ctx, r.DSN(database))
			if err != nil {
				return false
			}
			defer c.Close(ctx)
			var n int
			return c.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = 'lp'").Scan(&n) == nil && n == 1
		})
	}
	addr := startProxy(t, "backend_roles: per_user\nusers: [{name: app, auth: trust, backend_user: postgres}, {name: lp, auth: trust}]\n"+
		"replicas: {read_from: replicas, read_your_writes: off}", dsnOf(env.primary), dsnOf(env.r1), dsnOf(env.r2))
	waitRotation(t, addr, "s0-r1", "s0-r2")
	for _, m := range modes {
		c := connectAs(t, addr, "lp", m.mode)
		for i := 0; i < 4; i++ {
			var who string
			var recovery bool
			if err := c.QueryRow(ctx, "SELECT current_user::text, pg_is_in_recovery() FROM one").Scan(&who, &recovery); err != nil {
				t.Fatalf("%s: %v", m.name, err)
			}
			if who != "lp" || !recovery {
				t.Fatalf("%s: read ran as %q (on a replica: %v), want lp on a replica", m.name, who, recovery)
			}
			var pe *pgconn.PgError
			_, err := c.Exec(ctx, "SELECT pg_read_file('/etc/hostname') FROM one")
			if !errors.As(err, &pe) || pe.Code != "42501" {
				t.Fatalf("%s: pg_read_file on a replica as lp: %v, want 42501", m.name, err)
			}
		}
		var pe *pgconn.PgError
		if _, err := c.Exec(ctx, "INSERT INTO kv (id, v) VALUES (915000301, 'lp')"); !errors.As(err, &pe) || pe.Code != "42501" {
			t.Fatalf("%s: a write without a grant as lp: %v, want 42501 from the primary", m.name, err)
		}
	}
}

// TestBackendRoleFollowsFailover: the primary of a shard dies and its
// replica is promoted; a backend role's writes, which have pools of their
// own, move to the promoted primary with the default pools' (the role's
// pools follow their retarget) and still run as the role.
func TestBackendRoleFollowsFailover(t *testing.T) {
	ctx := context.Background()
	set, err := localpg.Start(ctx, localpg.Options{N: 1, Database: database})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Stop()
	prim := set.Clusters[0]
	if err := schema(ctx, prim.DSN(database)); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{"CREATE ROLE lp LOGIN", "GRANT SELECT ON one TO lp", "GRANT USAGE ON SEQUENCE seq TO lp"} {
		exec(t, prim, sql)
	}
	rep, err := set.StartReplica(ctx, prim, "rolefailover-r1")
	if err != nil {
		t.Fatal(err)
	}
	addr := startProxy(t, "backend_roles: per_user\nusers: [{name: app, auth: trust, backend_user: postgres}, {name: lp, auth: trust}]\n"+
		"replicas: {read_from: replicas, failover_buffer: 10s, read_your_writes: -1s}", dsnOf(prim), dsnOf(rep))
	waitRotation(t, addr, "s0-r1")
	c := connectAs(t, addr, "lp", pgx.QueryExecModeSimpleProtocol)
	const write = "SELECT nextval('seq')::int * 0 + inet_server_port(), current_user::text FROM one"
	run := func() (int, string, error) {
		var p int
		var who string
		err := c.QueryRow(ctx, write).Scan(&p, &who)
		return p, who, err
	}
	if p, who, err := run(); err != nil || p != prim.Port || who != "lp" {
		t.Fatalf("write before the failover: port %d as %q, %v; want %d as lp", p, who, err, prim.Port)
	}
	if err := prim.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := rep.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	var last string
	waitFor(t, 30*time.Second, "lp's writes on the promoted replica", func() bool {
		p, who, err := run()
		last = fmt.Sprintf("port %d as %q, %v", p, who, err)
		return err == nil && p == rep.Port && who == "lp"
	})
	t.Logf("after the failover: %s", last)
}
