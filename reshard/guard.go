package reshard

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/router"
)

// The shard-side guard: from the cutover (before the new map is
// published) until cleanup, a trigger on each moved table of a source
// refuses INSERT, UPDATE and DELETE of rows in the moved buckets (or
// range) with SQLSTATE 55000. Proxies no longer send such writes there;
// the guard stops a client that bypasses them (psql to the shard, a
// proxy that lost its heartbeat) from writing rows that cleanup would
// delete. The cleanup's own session sets guardOff.

// guardOff is the setting the cleanup session sets to pass the guard.
const guardOff = "shardproxy.reshard_cleanup"

// guardTrigger is move m's trigger name (on each table); guardFunc the
// function of m's i-th table, in schema shardproxy_meta.
func guardTrigger(m Move) string     { return subName(m) + "_guard" }
func guardFunc(m Move, i int) string { return fmt.Sprintf("%s_guard_%d", subName(m), i) }

// installGuards creates move m's guard on its source c, in one
// transaction. Each CREATE TRIGGER takes a SHARE ROW EXCLUSIVE lock: it
// waits for every open transaction that wrote the table, so once it
// returns, a write to a moved row either committed before it or meets the
// guard. The cutover relies on that: see cutover.
func (t *Tool) installGuards(ctx context.Context, c *pgx.Conn, st *State, m Move) error {
	what := "buckets " + router.FormatBucketList(m.Buckets)
	if st.Range != nil {
		what = fmt.Sprintf("the range [%s, %s)", st.Range.From, st.Range.To)
	}
	return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		for i, tb := range st.Tables {
			var ok bool
			if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", tableIdent(tb.Name)).Scan(&ok); err != nil {
				return err
			}
			if !ok {
				continue
			}
			cond, err := t.moved(st, tb, m.Buckets)
			if err != nil {
				return err
			}
			raise := fmt.Sprintf("RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = %s, HINT = %s;",
				literal(fmt.Sprintf("row of %s in %s, which a reshard moved from shard %s to shard %s", tb.Name, what, m.From, m.To)),
				literal("Write through shardproxy: it routes the row to its new shard. This shard keeps the moved rows only until reshard cleanup deletes them."))
			body := `BEGIN
	IF current_setting(` + literal(guardOff) + `, true) = 'on' THEN
		RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
	END IF;
	IF TG_OP <> 'INSERT' THEN
		PERFORM FROM (SELECT OLD.*) AS r WHERE ` + cond + `;
		IF FOUND THEN ` + raise + ` END IF;
	END IF;
	IF TG_OP = 'DELETE' THEN
		RETURN OLD;
	END IF;
	PERFORM FROM (SELECT NEW.*) AS r WHERE ` + cond + `;
	IF FOUND THEN ` + raise + ` END IF;
	RETURN NEW;
END`
			fn := ident("shardproxy_meta", guardFunc(m, i))
			for _, sql := range []string{
				"CREATE SCHEMA IF NOT EXISTS shardproxy_meta",
				"CREATE OR REPLACE FUNCTION " + fn + "() RETURNS trigger LANGUAGE plpgsql AS " + literal(body),
				// CREATE OR REPLACE, not DROP and CREATE: DROP TRIGGER
				// would take an ACCESS EXCLUSIVE lock and queue the
				// table's reads behind its wait.
				"CREATE OR REPLACE TRIGGER " + ident(guardTrigger(m)) + " BEFORE INSERT OR UPDATE OR DELETE ON " + tableIdent(tb.Name) +
					" FOR EACH ROW EXECUTE FUNCTION " + fn + "()",
			} {
				if _, err := tx.Exec(ctx, sql); err != nil {
					return fmt.Errorf("guard %s on %s: %w", tb.Name, m.From, err)
				}
			}
		}
		return nil
	})
}

// dropGuards removes move m's guard from its source; missing parts are
// fine.
func (t *Tool) dropGuards(ctx context.Context, st *State, m Move) error {
	c, err := t.connect(ctx, m.From)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return dropGuardsOn(ctx, c, st, m)
}

func dropGuardsOn(ctx context.Context, c *pgx.Conn, st *State, m Move) error {
	for i, tb := range st.Tables {
		var ok bool
		if err := c.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", tableIdent(tb.Name)).Scan(&ok); err != nil {
			return err
		}
		if ok {
			if _, err := c.Exec(ctx, "DROP TRIGGER IF EXISTS "+ident(guardTrigger(m))+" ON "+tableIdent(tb.Name)); err != nil {
				return fmt.Errorf("drop guard of %s on %s: %w", tb.Name, m.From, err)
			}
		}
		if _, err := c.Exec(ctx, "DROP FUNCTION IF EXISTS "+ident("shardproxy_meta", guardFunc(m, i))+"()"); err != nil {
			return fmt.Errorf("drop guard function on %s: %w", m.From, err)
		}
	}
	return nil
}

// guardLeftovers lists the guard triggers and functions on c.
const guardLeftovers = `SELECT 'guard trigger ' || tgname || ' on ' || tgrelid::regclass::text FROM pg_trigger
	WHERE tgname LIKE 'shardproxy\_rs\_%\_guard' AND tgparentid = 0
	UNION ALL SELECT 'guard function ' || p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
	WHERE n.nspname = 'shardproxy_meta' AND p.proname LIKE 'shardproxy\_rs\_%\_guard\_%'`
