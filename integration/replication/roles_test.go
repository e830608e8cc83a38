package replication

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
