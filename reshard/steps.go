package reshard

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/router"
	"github.com/shardproxy/shardproxy/topology"
)

func (t *Tool) must(ctx context.Context, want ...string) (*State, error) {
	st, err := t.Load(ctx)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, errors.New("no reshard planned: run reshard plan")
	}
	for _, w := range want {
		if st.Phase == w {
			return st, nil
		}
	}
	return nil, fmt.Errorf("the reshard is %s, not %s", st.Phase, strings.Join(want, " or "))
}

// Start creates the schema on the targets, a publication with a row filter
// per move on the source and a subscription on the target that copies the
// rows and then streams changes. Resumable: what exists is kept.
func (t *Tool) Start(ctx context.Context) error {
	st, err := t.must(ctx, Planned, Copying)
	if err != nil {
		return err
	}
	st.Phase = Copying
	if err := t.save(ctx, st); err != nil {
		return err
	}
	for _, m := range st.Moves {
		if err := t.startMove(ctx, st, m); err != nil {
			return fmt.Errorf("%s -> %s: %w", m.From, m.To, err)
		}
		t.printf("copying %s -> %s (buckets %d)\n", m.From, m.To, len(m.Buckets))
	}
	return nil
}

func (t *Tool) startMove(ctx context.Context, st *State, m Move) error {
	src, err := t.connect(ctx, m.From)
	if err != nil {
		return err
	}
	defer src.Close(ctx)
	dst, err := t.connect(ctx, m.To)
	if err != nil {
		return err
	}
	defer dst.Close(ctx)
	var level string
	if err := src.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return err
	}
	if level != "logical" {
		return fmt.Errorf("shard %s has wal_level %s: logical replication needs wal_level = logical", m.From, level)
	}
	// Schema: the tables missing on the target, as pg_dump prints them.
	var missing []Table
	for _, tb := range st.Tables {
		var ok bool
		if err := dst.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", tableIdent(tb.Name)).Scan(&ok); err != nil {
			return err
		}
		if !ok {
			missing = append(missing, tb)
		}
	}
	if len(missing) > 0 {
		// With their partitions (pg_dump -t names the parent only).
		var parts []string
		for _, tb := range missing {
			rows, err := src.Query(ctx, "SELECT relid::regclass::text FROM pg_partition_tree(to_regclass($1)) WHERE relid <> to_regclass($1)", tableIdent(tb.Name))
			if err != nil {
				return err
			}
			ps, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return fmt.Errorf("partitions of %s: %w", tb.Name, err)
			}
			parts = append(parts, ps...)
		}
		sc, _ := t.shard(m.From)
		ddl, err := t.pgDump(ctx, sc.DSN, missing, parts...)
		if err != nil {
			return err
		}
		if err := dst.PgConn().Exec(ctx, ddl).Close(); err != nil {
			return fmt.Errorf("schema onto %s: %w", m.To, err)
		}
	}
	// The target's sequences came with the source's definition: each
	// takes a block of ids of its own.
	if sc, err := t.shard(m.To); err != nil {
		return err
	} else if err := t.Store.Refill(ctx, []router.ShardConfig{sc}, t.IDs); err != nil {
		return err
	}
	if err := t.copyReference(ctx, st, m, src, dst); err != nil {
		return err
	}
	t.at("start:schema")
	if err := t.coverKey(ctx, src, st, m.From); err != nil {
		return err
	}
	if _, err := src.Exec(ctx, hashHelpers); err != nil {
		return err
	}
	if _, err := dst.Exec(ctx, hashHelpers); err != nil {
		return err
	}
	var exists bool
	if err := src.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = $1)", pubName(m)).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		var parts []string
		for _, tb := range st.Tables {
			where, err := t.moved(st, tb, m.Buckets)
			if err != nil {
				return err
			}
			parts = append(parts, "TABLE "+tableIdent(tb.Name)+" WHERE "+where)
		}
		parts = append(parts, "TABLE shardproxy_meta.reshard_marks WHERE (name = "+literal(subName(m))+")")
		sql := "CREATE PUBLICATION " + ident(pubName(m)) + " FOR " + strings.Join(parts, ", ") +
			" WITH (publish_via_partition_root = true)"
		if _, err := src.Exec(ctx, sql); err != nil {
			return fmt.Errorf("create publication on %s: %w", m.From, err)
		}
	}
	t.at("start:publication")
	if err := dst.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_subscription WHERE subname = $1)", subName(m)).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		sc, _ := t.shard(m.From)
		sql := "CREATE SUBSCRIPTION " + ident(subName(m)) + " CONNECTION " + literal(sc.DSN) +
			" PUBLICATION " + ident(pubName(m)) + " WITH (copy_data = true, slot_name = " + literal(subName(m)) + ")"
		if _, err := dst.Exec(ctx, sql); err != nil {
			return fmt.Errorf("create subscription on %s: %w", m.To, err)
		}
	}
	t.at("start:subscribed")
	return nil
}

// MoveStatus is one stream's progress.
type MoveStatus struct {
	Move
	// Synced is true when every table finished its initial copy.
	Synced bool
	// Lag is how far the subscription's confirmed position trails the
	// source's WAL, in bytes.
	Lag int64
}

// Status prints and returns each move's copy state and lag.
func (t *Tool) Status(ctx context.Context) ([]MoveStatus, error) {
	st, err := t.Load(ctx)
	if err != nil || st == nil {
		if st == nil && err == nil {
			t.printf("no reshard planned\n")
		}
		return nil, err
	}
	t.printPlan(st)
	if st.Phase != Copying {
		return nil, nil
	}
	var out []MoveStatus
	for _, m := range st.Moves {
		ms, err := t.moveStatus(ctx, m)
		if err != nil {
			return nil, err
		}
		t.printf("  %s -> %s: synced=%v lag=%d bytes\n", m.From, m.To, ms.Synced, ms.Lag)
		out = append(out, ms)
	}
	return out, nil
}

func (t *Tool) moveStatus(ctx context.Context, m Move) (MoveStatus, error) {
	ms := MoveStatus{Move: m}
	dst, err := t.connect(ctx, m.To)
	if err != nil {
		return ms, err
	}
	defer dst.Close(ctx)
	var notReady, tables int
	err = dst.QueryRow(ctx, `SELECT count(*) FILTER (WHERE r.srsubstate <> 'r'), count(r.*)
		FROM pg_subscription s LEFT JOIN pg_subscription_rel r ON r.srsubid = s.oid WHERE s.subname = $1`, subName(m)).Scan(&notReady, &tables)
	if err != nil {
		return ms, err
	}
	ms.Synced = notReady == 0 && tables > 0
	src, err := t.connect(ctx, m.From)
	if err != nil {
		return ms, err
	}
	defer src.Close(ctx)
	err = src.QueryRow(ctx, `SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), -1)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, subName(m)).Scan(&ms.Lag)
	if errors.Is(err, pgx.ErrNoRows) {
		ms.Lag = -1
		err = nil
	}
	return ms, err
}

// WaitSynced waits until every move finished its initial copy.
func (t *Tool) WaitSynced(ctx context.Context) error {
	st, err := t.must(ctx, Copying)
	if err != nil {
		return err
	}
	for {
		all := true
		for _, m := range st.Moves {
			ms, err := t.moveStatus(ctx, m)
			if err != nil {
				return err
			}
			all = all && ms.Synced
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Pause is what a cutover measured. Writes to the source shards are held
// from the fence until every proxy serves the new map (Total = Fence +
// Drain + CatchUp + Publish + Ack); PreCatchUp runs before the fence and
// Verify after the release, while writes flow.
type Pause struct {
	PreCatchUp                          time.Duration
	Fence, Drain, CatchUp, Publish, Ack time.Duration
	// Guard is the part of CatchUp that installed the shard-side guard.
	Guard  time.Duration
	Total  time.Duration
	Verify time.Duration
}

// Cutover first lets each subscription catch up with its source while
// writes flow; then it holds writes to the source shards at every live
// proxy, waits for the writes in flight there to end and for each
// subscription to confirm the source's current WAL position, takes a
// snapshot of every source and target, publishes the new map and waits
// until every live proxy serves it, which releases the held writes onto
// the new map. Then it compares the moved rows in those snapshots
// (Verify) and drops the streams. On any failure before the publish the
// fence is cleared and nothing changed.
func (t *Tool) Cutover(ctx context.Context) (*Pause, error) {
	st, err := t.must(ctx, Copying)
	if err != nil {
		return nil, err
	}
	hold, live := t.Hold, t.Live
	if hold == 0 {
		hold = 2 * time.Second
	}
	if live == 0 {
		live = 5 * time.Second
	}
	cur, err := t.current(ctx)
	if err != nil {
		return nil, err
	}
	if st.published(cur) {
		// An earlier run published the new map and stopped before it
		// recorded so: finish that cutover.
		t.printf("version %d with the planned map is published: finishing the cutover (not compared: run reshard verify in a quiet period)\n", cur.Version)
		p := &Pause{}
		return p, t.finishCutover(ctx, st, cur.Version, live, p, nil)
	}
	if err := t.WaitSynced(ctx); err != nil {
		return nil, err
	}
	if cur.Version != st.FromVersion {
		return nil, fmt.Errorf("topology moved from version %d to %d since the plan: abort and plan again", st.FromVersion, cur.Version)
	}
	var sources, shards []string
	seen := map[string]bool{}
	for _, m := range st.Moves {
		if !seen[m.From] {
			seen[m.From] = true
			sources = append(sources, m.From)
		}
	}
	shards = append(shards, sources...)
	for _, m := range st.Moves {
		if !seen[m.To] {
			seen[m.To] = true
			shards = append(shards, m.To)
		}
	}
	// Every connection the pause needs is opened before it.
	conns := map[string]*pgx.Conn{}
	defer func() {
		for _, c := range conns {
			c.Close(context.Background())
		}
	}()
	for _, s := range shards {
		c, err := t.connect(ctx, s)
		if err != nil {
			return nil, err
		}
		conns[s] = c
	}
	meta, err := t.Store.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer meta.Close(context.Background())
	// Moves whose publication carries their mark (all but those started
	// by an older version of the tool).
	marked := map[string]bool{}
	for _, m := range st.Moves {
		var ok bool
		if err := conns[m.From].QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_publication_tables WHERE pubname = $1
			AND schemaname = 'shardproxy_meta' AND tablename = 'reshard_marks')`, pubName(m)).Scan(&ok); err != nil {
			return nil, err
		}
		marked[subName(m)] = ok
	}
	p := &Pause{}
	// Catch up while writes flow: the held part then waits only for the
	// last few transactions.
	// Rounds until one is quick: the backlog left for the fence is then
	// what a short round lets through.
	pre := time.Now()
	for round := 0; round < 5; round++ {
		r := time.Now()
		if err := t.catchUpMarked(ctx, st, conns, marked, -time.Now().UnixNano()); err != nil {
			return nil, err
		}
		for _, m := range st.Moves {
			if marked[subName(m)] {
				continue
			}
			var lsn string
			if err := conns[m.From].QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
				return nil, err
			}
			if err := t.waitConfirmed(ctx, conns[m.From], m, lsn); err != nil {
				return nil, fmt.Errorf("catch up %s -> %s: %w", m.From, m.To, err)
			}
		}
		if time.Since(r) < 50*time.Millisecond {
			break
		}
	}
	p.PreCatchUp = time.Since(pre)
	// A cutover gives up before the held writes time out at the proxies.
	budget := hold - hold/4
	cctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	begin := time.Now()
	mark := begin
	lap := func() time.Duration {
		now := time.Now()
		d := now.Sub(mark)
		mark = now
		return d
	}
	fence, err := t.Store.SetMovingFenceOn(ctx, meta, movingFence(st, sources, cur.Version+1, hold))
	if err != nil {
		return nil, err
	}
	published, guarded := false, false
	var snaps map[string]querier
	defer func() {
		for s := range snaps {
			conns[s].Exec(context.Background(), "ROLLBACK")
		}
		if !published && guarded {
			for _, m := range st.Moves {
				if err := dropGuardsOn(context.Background(), conns[m.From], st, m); err != nil {
					t.logError("drop guard", err)
				}
			}
		}
		if !published {
			if err := t.Store.ClearFences(context.Background()); err != nil {
				t.logError("clear fence", err)
			}
		}
	}()
	if err := t.waitProxies(cctx, meta, live, func(px topology.Proxy) bool { return px.FenceID == fence || px.Version > cur.Version }); err != nil {
		return nil, fmt.Errorf("proxies did not take the fence: %w", err)
	}
	t.at("cutover:fenced")
	p.Fence = lap()
	lsns := map[string]string{}
	for _, s := range sources {
		lsn, err := t.drain(cctx, conns[s])
		if err != nil {
			return nil, fmt.Errorf("drain %s: %w", s, err)
		}
		lsns[s] = lsn
	}
	p.Drain = lap()
	t.at("cutover:drained")
	// The shard-side guard goes on before the last catch-up: from here the
	// sources refuse writes to the moved rows (guard.go). Its locks wait
	// for every transaction still writing a moved table, among them a
	// write a proxy let through just before it took the fence, or a COPY
	// begun before it, which the drain's snapshot may have missed; the
	// catch-up then covers what they committed, and any later write to a
	// moved row fails on the source instead of being lost at cleanup.
	g := time.Now()
	guarded = true
	for _, m := range st.Moves {
		if err := t.installGuards(cctx, conns[m.From], st, m); err != nil {
			return nil, err
		}
	}
	p.Guard = time.Since(g)
	for _, m := range st.Moves {
		if marked[subName(m)] {
			continue
		}
		var lsn string
		if err := conns[m.From].QueryRow(cctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
			return nil, fmt.Errorf("wal position of %s: %w", m.From, err)
		}
		lsns[m.From] = lsn
	}
	if err := t.catchUpMarked(cctx, st, conns, marked, fence); err != nil {
		return nil, err
	}
	for _, m := range st.Moves {
		if marked[subName(m)] {
			continue
		}
		if err := t.waitConfirmed(cctx, conns[m.From], m, lsns[m.From]); err != nil {
			return nil, fmt.Errorf("catch up %s -> %s: %w", m.From, m.To, err)
		}
	}
	p.CatchUp = lap()
	t.at("cutover:caught-up")
	if !t.SkipVerify {
		// The moved rows as of now, on both sides, compared after the
		// writes are released: one round trip per shard.
		snaps = map[string]querier{}
		for _, s := range shards {
			if _, err := conns[s].Exec(cctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1"); err != nil {
				return nil, fmt.Errorf("snapshot of %s: %w", s, err)
			}
			snaps[s] = conns[s]
		}
	}
	// The sources keep the moved rows until cleanup: the new version
	// names them stale in the same transaction, so that no proxy routes
	// by it without hiding them from reads across shards.
	v, err := t.publishMap(cctx, meta, st, cur.Version)
	if err != nil {
		return nil, err
	}
	published = true
	p.Publish = lap()
	ackErr := t.waitProxies(ctx, meta, live, func(px topology.Proxy) bool { return px.Version >= v })
	p.Ack = lap()
	p.Total = time.Since(begin)
	var diffs *int
	if snaps != nil && ackErr == nil {
		n := 0
		out, err := t.verify(ctx, st, snaps)
		if err != nil && out == nil {
			return p, fmt.Errorf("version %d published; comparing the moved rows: %w", v, err)
		}
		for _, d := range out {
			if !d.Equal() {
				n++
			}
		}
		diffs = &n
		p.Verify = lap()
	}
	t.at("cutover:published")
	return p, t.finishCutover(ctx, st, v, live, p, diffs)
}

// finishCutover records the published version v (and the comparison's
// result, when one ran), waits for the proxies to serve it and drops the
// streams.
func (t *Tool) finishCutover(ctx context.Context, st *State, v int64, live time.Duration, p *Pause, diffs *int) error {
	st.Phase, st.ToVersion = CutOver, v
	if diffs != nil {
		st.Diffs = *diffs
	}
	if err := t.save(ctx, st); err != nil {
		return err
	}
	ackErr := t.waitProxies(ctx, nil, live, func(px topology.Proxy) bool { return px.Version >= v })
	t.at("cutover:acked")
	// The sources no longer take writes for the moved buckets: stop the
	// streams before anything deletes there.
	for _, m := range st.Moves {
		if err := t.dropMove(ctx, m); err != nil {
			return err
		}
	}
	if p.Total == 0 {
		t.printf("finished the cutover to version %d\n", v)
	} else {
		t.printf("cut over to version %d: writes held %s (fence %s, drain %s, catch-up %s with guard %s, publish %s, proxies %s); before: catch-up %s; after: verify %s\n",
			v, p.Total.Round(time.Millisecond), p.Fence.Round(time.Millisecond), p.Drain.Round(time.Millisecond),
			p.CatchUp.Round(time.Millisecond), p.Guard.Round(time.Millisecond), p.Publish.Round(time.Millisecond), p.Ack.Round(time.Millisecond),
			p.PreCatchUp.Round(time.Millisecond), p.Verify.Round(time.Millisecond))
	}
	if ackErr != nil {
		return fmt.Errorf("version %d published, but not every proxy acknowledged it: %w", v, ackErr)
	}
	if st.Diffs > 0 {
		return fmt.Errorf("version %d published, but %d moved buckets or ranges differ between source and target (printed above): cleanup refuses until reshard verify agrees", v, st.Diffs)
	}
	return nil
}

// waitProxies waits until every proxy with a fresh heartbeat satisfies
// ok, reading the heartbeats on c (nil: a connection of its own).
func (t *Tool) waitProxies(ctx context.Context, c *pgx.Conn, live time.Duration, ok func(topology.Proxy) bool) error {
	if c == nil {
		var err error
		if c, err = t.Store.Connect(ctx); err != nil {
			return err
		}
		defer c.Close(context.Background())
	}
	for {
		ps, err := topology.ProxiesOn(ctx, c, live)
		if err != nil {
			return err
		}
		var late []string
		for _, px := range ps {
			if !ok(px) {
				late = append(late, px.ID)
			}
		}
		if len(late) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", strings.Join(late, ", "), ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// drain waits until the transactions that hold a transaction id on the
// source c (they may have written moving rows before the fence) have
// ended, prepared ones included, and returns the WAL position after them.
func (t *Tool) drain(ctx context.Context, c *pgx.Conn) (string, error) {
	var pids []int32
	var xids []string
	rows, err := c.Query(ctx, `SELECT pid, backend_xid::text FROM pg_stat_activity
		WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() AND backend_type = 'client backend'`)
	if err != nil {
		return "", err
	}
	for rows.Next() {
		var pid int32
		var xid string
		if err := rows.Scan(&pid, &xid); err != nil {
			return "", err
		}
		pids, xids = append(pids, pid), append(xids, xid)
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	for {
		var left int
		var lsn string
		err := c.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_stat_activity a, unnest($1::int[], $2::text[]) AS w(pid, xid)
			WHERE a.pid = w.pid AND a.backend_xid::text = w.xid) + (SELECT count(*) FROM pg_prepared_xacts),
			pg_current_wal_lsn()::text`, pids, xids).Scan(&left, &lsn)
		if err != nil {
			return "", err
		}
		if left == 0 {
			return lsn, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%d transactions still open: %w", left, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// catchUpMarked writes mark n for every marked move on its source (after
// the drained transactions), then waits until each target has applied
// its marks: the streams catch up in parallel.
func (t *Tool) catchUpMarked(ctx context.Context, st *State, conns map[string]*pgx.Conn, marked map[string]bool, n int64) error {
	for _, m := range st.Moves {
		if !marked[subName(m)] {
			continue
		}
		if _, err := conns[m.From].Exec(ctx, `INSERT INTO shardproxy_meta.reshard_marks (name, n) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET n = excluded.n`, subName(m), n); err != nil {
			return fmt.Errorf("write mark on %s: %w", m.From, err)
		}
	}
	for _, m := range st.Moves {
		if !marked[subName(m)] {
			continue
		}
		if err := t.awaitMark(ctx, conns[m.To], m, n); err != nil {
			return fmt.Errorf("catch up %s -> %s: %w", m.From, m.To, err)
		}
	}
	return nil
}

// awaitMark waits until the target dst has applied the move's mark n.
func (t *Tool) awaitMark(ctx context.Context, dst *pgx.Conn, m Move, n int64) error {
	for {
		var got int64
		err := dst.QueryRow(ctx, "SELECT coalesce((SELECT n FROM shardproxy_meta.reshard_marks WHERE name = $1), -1)", subName(m)).Scan(&got)
		if err != nil {
			return err
		}
		if got == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// waitConfirmed waits until the move's slot on the source c has
// confirmed lsn.
func (t *Tool) waitConfirmed(ctx context.Context, c *pgx.Conn, m Move, lsn string) error {
	for {
		var done bool
		err := c.QueryRow(ctx, "SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1", subName(m), lsn).Scan(&done)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// dropMove drops the move's subscription (and with it the slot on the
// source) and its publication. Missing objects are fine.
func (t *Tool) dropMove(ctx context.Context, m Move) error {
	dst, err := t.connect(ctx, m.To)
	if err != nil {
		return err
	}
	defer dst.Close(ctx)
	var exists bool
	if err := dst.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_subscription WHERE subname = $1)", subName(m)).Scan(&exists); err != nil {
		return err
	}
	if exists {
		if _, err := dst.Exec(ctx, "DROP SUBSCRIPTION "+ident(subName(m))); err != nil {
			// The source is unreachable: detach the slot and drop locally,
			// leaving the slot to be reported.
			_, _ = dst.Exec(ctx, "ALTER SUBSCRIPTION "+ident(subName(m))+" DISABLE")
			_, _ = dst.Exec(ctx, "ALTER SUBSCRIPTION "+ident(subName(m))+" SET (slot_name = NONE)")
			if _, err2 := dst.Exec(ctx, "DROP SUBSCRIPTION "+ident(subName(m))); err2 != nil {
				return fmt.Errorf("drop subscription on %s: %w", m.To, err)
			}
		}
	}
	src, err := t.connect(ctx, m.From)
	if err != nil {
		return err
	}
	defer src.Close(ctx)
	if _, err := src.Exec(ctx, "DROP PUBLICATION IF EXISTS "+ident(pubName(m))); err != nil {
		return fmt.Errorf("drop publication on %s: %w", m.From, err)
	}
	_, err = src.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active", subName(m))
	return err
}

// Leftovers lists replication objects and shard-side guards of reshards
// still on any shard.
func (t *Tool) Leftovers(ctx context.Context) ([]string, error) {
	return t.leftovers(ctx, true)
}

func (t *Tool) leftovers(ctx context.Context, guards bool) ([]string, error) {
	var out []string
	for _, sc := range t.Topo.Shards {
		c, err := t.connect(ctx, sc.Name)
		if err != nil {
			return nil, err
		}
		rows, err := c.Query(ctx, `SELECT 'slot ' || slot_name FROM pg_replication_slots WHERE slot_name LIKE 'shardproxy\_rs\_%'
			UNION ALL SELECT 'publication ' || pubname FROM pg_publication WHERE pubname LIKE 'shardproxy\_rs\_%'
			UNION ALL SELECT 'subscription ' || subname FROM pg_subscription WHERE subname LIKE 'shardproxy\_rs\_%'`)
		if err == nil {
			var names []string
			names, err = pgx.CollectRows(rows, pgx.RowTo[string])
			for _, n := range names {
				out = append(out, sc.Name+": "+n)
			}
		}
		if err == nil && guards {
			rows, err = c.Query(ctx, guardLeftovers)
		}
		if err == nil && guards {
			var names []string
			names, err = pgx.CollectRows(rows, pgx.RowTo[string])
			for _, n := range names {
				out = append(out, sc.Name+": "+n)
			}
		}
		c.Close(ctx)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Abort drops the streams and the rows copied to the targets and clears
// any fence: the sources are left as they were. A reshard that has cut
// over cannot be aborted (plan a reshard back instead).
func (t *Tool) Abort(ctx context.Context) error {
	st, err := t.must(ctx, Planned, Copying)
	if err != nil {
		return err
	}
	if cur, err := t.current(ctx); err != nil {
		return err
	} else if st.published(cur) {
		return fmt.Errorf("version %d with the planned map is published (a cutover stopped after it): run reshard cutover again to finish it, then cleanup", cur.Version)
	}
	if err := t.Store.ClearFences(ctx); err != nil {
		return err
	}
	for _, m := range st.Moves {
		if err := t.dropMove(ctx, m); err != nil {
			return err
		}
		if err := t.deleteBuckets(ctx, st, m.To, m.Buckets); err != nil {
			return err
		}
		// A cutover killed after it guarded the source.
		if err := t.dropGuards(ctx, st, m); err != nil {
			return err
		}
	}
	if err := t.restoreIdentity(ctx, st); err != nil {
		return err
	}
	st.Phase = Aborted
	if err := t.save(ctx, st); err != nil {
		return err
	}
	return t.reportLeftovers(ctx)
}

func (t *Tool) reportLeftovers(ctx context.Context) error {
	return t.reportLeft(ctx, true)
}

// reportLeft prints what is left on the shards (guards too, when guards)
// and fails if anything is.
func (t *Tool) reportLeft(ctx context.Context, guards bool) error {
	left, err := t.leftovers(ctx, guards)
	if err != nil {
		return err
	}
	for _, l := range left {
		t.printf("left behind: %s\n", l)
	}
	if len(left) > 0 {
		return fmt.Errorf("%d replication objects or guards left behind", len(left))
	}
	return nil
}

// Cleanup, after a cutover, drops what is left of the streams and deletes
// the moved rows from the sources in batches.
func (t *Tool) Cleanup(ctx context.Context, batch int) error {
	st, err := t.must(ctx, CutOver)
	if err != nil {
		return err
	}
	if st.Diffs > 0 {
		return fmt.Errorf("the cutover's comparison found %d moved buckets or ranges different on source and target: investigate, and run reshard verify in a quiet period before cleanup deletes the sources' rows", st.Diffs)
	}
	if batch <= 0 {
		batch = 5000
	}
	for _, m := range st.Moves {
		if err := t.dropMove(ctx, m); err != nil {
			return err
		}
	}
	if err := t.reportLeft(ctx, false); err != nil { // the guards stay until the rows are gone
		return err
	}
	t.at("cleanup:streams")
	for _, m := range st.Moves {
		if err := t.deleteBatches(ctx, st, m.From, m.Buckets, batch); err != nil {
			return err
		}
		if err := t.dropGuards(ctx, st, m); err != nil {
			return err
		}
	}
	for _, m := range st.Moves {
		if err := t.Store.ClearStale(ctx, m.From); err != nil {
			return err
		}
	}
	if err := t.restoreIdentity(ctx, st); err != nil {
		return err
	}
	if err := t.reportLeftovers(ctx); err != nil {
		return err
	}
	st.Phase = Cleaned
	return t.save(ctx, st)
}

func (t *Tool) deleteBuckets(ctx context.Context, st *State, shard string, buckets []int) error {
	return t.deleteBatches(ctx, st, shard, buckets, 0)
}

// deleteBatches deletes the rows of buckets from shard's tables, batch rows
// per transaction (0: all at once).
func (t *Tool) deleteBatches(ctx context.Context, st *State, shard string, buckets []int, batch int) error {
	c, err := t.connect(ctx, shard)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	// Past the shard-side guard (guard.go).
	if _, err := c.Exec(ctx, "SELECT set_config($1, 'on', false)", guardOff); err != nil {
		return err
	}
	for _, tb := range st.Tables {
		var ok bool
		if err := c.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", tableIdent(tb.Name)).Scan(&ok); err != nil || !ok {
			continue
		}
		where, err := t.moved(st, tb, buckets)
		if err != nil {
			return err
		}
		sql := "DELETE FROM " + tableIdent(tb.Name) + " WHERE " + where
		if batch > 0 {
			// (tableoid, ctid): a ctid alone repeats across partitions.
			sql = "DELETE FROM " + tableIdent(tb.Name) + " WHERE (tableoid, ctid) IN (SELECT tableoid, ctid FROM " + tableIdent(tb.Name) +
				" WHERE " + where + fmt.Sprintf(" LIMIT %d)", batch)
		}
		total := int64(0)
		for {
			tag, err := c.Exec(ctx, sql)
			if err != nil {
				return fmt.Errorf("delete moved rows of %s on %s: %w", tb.Name, shard, err)
			}
			total += tag.RowsAffected()
			if batch > 0 {
				t.at("cleanup:batch")
			}
			if batch == 0 || tag.RowsAffected() == 0 {
				break
			}
		}
		t.printf("deleted %d rows of %s from %s\n", total, tb.Name, shard)
	}
	return nil
}

// coverKey makes each table's replica identity cover its shard key, which
// a row filter on UPDATE and DELETE needs: where the identity (the primary
// key) lacks the key, the table and its partitions go to REPLICA IDENTITY
// FULL until cleanup or abort.
func (t *Tool) coverKey(ctx context.Context, c *pgx.Conn, st *State, shard string) error {
	for _, tb := range st.Tables {
		var covered bool
		err := c.QueryRow(ctx, `SELECT c.relreplident = 'f' OR EXISTS (
			SELECT FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
			WHERE i.indrelid = c.oid AND a.attname = $2 AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident)))
			FROM pg_class c WHERE c.oid = to_regclass($1)`, tableIdent(tb.Name), tb.Key).Scan(&covered)
		if err != nil {
			return fmt.Errorf("replica identity of %s on %s: %w", tb.Name, shard, err)
		}
		if covered {
			continue
		}
		if err := setIdentity(ctx, c, tb.Name, "FULL"); err != nil {
			return fmt.Errorf("%s on %s: %w", tb.Name, shard, err)
		}
		st.IdentityFull = append(st.IdentityFull, shard+"\t"+tb.Name)
		if err := t.save(ctx, st); err != nil {
			return err
		}
	}
	return nil
}

func setIdentity(ctx context.Context, c *pgx.Conn, table, to string) error {
	rows, err := c.Query(ctx, "SELECT relid::regclass::text FROM pg_partition_tree(to_regclass($1))", tableIdent(table))
	if err != nil {
		return err
	}
	rels, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	if len(rels) == 0 {
		rels = []string{tableIdent(table)}
	}
	for _, r := range rels {
		// r is regclass output: already quoted where needed.
		if _, err := c.Exec(ctx, "ALTER TABLE "+r+" REPLICA IDENTITY "+to); err != nil {
			return fmt.Errorf("set replica identity %s: %w", to, err)
		}
	}
	return nil
}

// restoreIdentity sets back what coverKey changed.
func (t *Tool) restoreIdentity(ctx context.Context, st *State) error {
	for _, e := range st.IdentityFull {
		shard, table, _ := strings.Cut(e, "\t")
		c, err := t.connect(ctx, shard)
		if err != nil {
			return err
		}
		err = setIdentity(ctx, c, table, "DEFAULT")
		c.Close(ctx)
		if err != nil {
			return err
		}
	}
	st.IdentityFull = nil
	return nil
}

// movingFence is the cutover's fence: writes to the sources are held only
// where they may touch the moving buckets (or range).
func movingFence(st *State, sources []string, until int64, hold time.Duration) topology.Fence {
	f := topology.Fence{Shards: sources, Until: until, Hold: hold}
	if st.Range != nil {
		f.Range = &topology.FenceRange{Table: st.Range.Table, From: st.Range.From, To: st.Range.To}
		return f
	}
	for _, m := range st.Moves {
		f.Buckets = append(f.Buckets, m.Buckets...)
	}
	return f
}
