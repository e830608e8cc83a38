package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// pgx batches and pgconn pipelines through the proxy (orders over four
// shards), compared with one plain Postgres holding the same rows (the
// cursor tests' plain Postgres): every statement's rows, tag or SQLSTATE,
// and the rows left afterwards. The tests write ids 962000..962099.

const pipeWhere = "id BETWEEN 962000 AND 962099"

// pipeSeed puts the same 40 orders (ids 962000..962039, one user each, so
// over every shard) where conn points.
func pipeSeed(ctx context.Context, conn *pgx.Conn) error {
	var sb strings.Builder
	sb.WriteString("INSERT INTO orders (id, user_id, restaurant_id, total, status, created_at) VALUES ")
	for i := 0; i < 40; i++ {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "(%d, %d, %d, %d.25, 'new', '2025-05-%02d 09:00:00+00')", 962000+i, 962000+i, i%3, i%9, 1+i%28)
	}
	for _, q := range []string{"DELETE FROM orders WHERE " + pipeWhere, sb.String()} {
		if _, err := conn.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol); err != nil {
			return err
		}
	}
	return nil
}

// errText is what a transcript records of an error: the SQLSTATE of a
// Postgres error, else the message.
func errText(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return "ERROR " + pe.Code
	}
	return "error " + err.Error()
}

// recordRows writes rows' raw values, tag and error to sb.
func recordRows(sb *strings.Builder, rows pgx.Rows) {
	for rows.Next() {
		var vals []string
		for _, v := range rows.RawValues() {
			vals = append(vals, fmt.Sprintf("%q", v))
		}
		fmt.Fprintf(sb, "  row %s\n", strings.Join(vals, " "))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		fmt.Fprintf(sb, "  %s\n", errText(err))
		return
	}
	fmt.Fprintf(sb, "  tag %s\n", rows.CommandTag())
}

// runBatch sends queries as one batch (in tx when it is not nil) and
// records each one's result, then Close's error.
func runBatch(ctx context.Context, sb *strings.Builder, conn *pgx.Conn, tx pgx.Tx, name string, queries [][]any) {
	b := &pgx.Batch{}
	for _, q := range queries {
		b.Queue(q[0].(string), q[1:]...)
	}
	var br pgx.BatchResults
	if tx != nil {
		br = tx.SendBatch(ctx, b)
	} else {
		br = conn.SendBatch(ctx, b)
	}
	fmt.Fprintf(sb, "batch %s\n", name)
	for i := range queries {
		rows, err := br.Query()
		if err != nil {
			// Recorded as an error after the rows: whether a RowDescription
			// came first is not compared (the proxy's merged aggregate
			// fails before it, one Postgres after it).
			fmt.Fprintf(sb, " %d:\n  %s\n", i, errText(err))
			rows.Close()
			continue
		}
		fmt.Fprintf(sb, " %d:\n", i)
		recordRows(sb, rows)
	}
	if err := br.Close(); err != nil {
		fmt.Fprintf(sb, " close: %s\n", errText(err))
	}
}

// recordQuery runs one statement outside any batch and records it.
func recordQuery(ctx context.Context, sb *strings.Builder, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, sql string, args ...any) {
	fmt.Fprintf(sb, "query %s\n", sql)
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		fmt.Fprintf(sb, "  %s\n", errText(err))
		return
	}
	recordRows(sb, rows)
}

const pipeFinal = "SELECT id, user_id, total::text, status FROM orders WHERE " + pipeWhere + " ORDER BY id"

// batchScenario: pgx batches mixing one-shard and cross-shard reads and
// writes, outside a transaction (the batch is one implicit transaction),
// inside one (pgx's Begin, and BEGIN/COMMIT queued in the batch), with an
// error in the middle of each.
func batchScenario(t *testing.T, url string, mode pgx.QueryExecMode) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cc, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cc.DefaultQueryExecMode = mode
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := pipeSeed(ctx, conn); err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	runBatch(ctx, &sb, conn, nil, "mixed, no transaction", [][]any{
		{"SELECT id, status FROM orders WHERE user_id = $1", int64(962003)},
		{"SELECT id, total FROM orders WHERE id BETWEEN $1 AND $2 ORDER BY total DESC, id LIMIT $3", int64(962000), int64(962039), int64(7)},
		{"INSERT INTO orders (id, user_id, restaurant_id, total, status, created_at) VALUES ($1, $1, 1, $2, 'new', '2025-06-01 00:00:00+00')", int64(962050), "3.75"},
		{"UPDATE orders SET status = 'b1' WHERE id BETWEEN 962010 AND 962019"},
		{"SELECT status, count(*), sum(total) FROM orders WHERE " + pipeWhere + " GROUP BY status ORDER BY status"},
		{"DELETE FROM orders WHERE user_id = $1", int64(962004)},
		{"SELECT count(*) FROM orders WHERE " + pipeWhere},
	})
	recordQuery(ctx, &sb, conn, pipeFinal)
	runBatch(ctx, &sb, conn, nil, "error in the middle, no transaction", [][]any{
		{"UPDATE orders SET status = 'b2' WHERE id BETWEEN 962020 AND 962029"},
		{"INSERT INTO orders (id, user_id, restaurant_id, total, status, created_at) VALUES ($1, $1, 1, 1, 'new', '2025-06-01 00:00:00+00')", int64(962051)},
		{"SELECT id, 1 / (id - 962005) FROM orders WHERE user_id = $1", int64(962005)},
		{"UPDATE orders SET status = 'never' WHERE user_id = $1", int64(962006)},
		{"SELECT count(*) FROM orders WHERE " + pipeWhere},
	})
	recordQuery(ctx, &sb, conn, pipeFinal)
	runBatch(ctx, &sb, conn, nil, "cross-shard error in the middle, no transaction", [][]any{
		{"UPDATE orders SET status = 'b3' WHERE user_id = $1", int64(962007)},
		{"SELECT sum(1 / (id - 962033)) FROM orders WHERE " + pipeWhere},
		{"DELETE FROM orders WHERE user_id = $1", int64(962008)},
	})
	recordQuery(ctx, &sb, conn, pipeFinal)

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	runBatch(ctx, &sb, conn, tx, "mixed, in a transaction", [][]any{
		{"UPDATE orders SET status = 't1' WHERE user_id = $1", int64(962009)},
		{"UPDATE orders SET total = total + 1 WHERE id BETWEEN 962030 AND 962039"},
		{"SELECT id, status, total FROM orders WHERE id BETWEEN $1 AND $2 ORDER BY id", int64(962028), int64(962035)},
		{"INSERT INTO orders (id, user_id, restaurant_id, total, status, created_at) VALUES ($1, $1, 2, 2, 'tx', '2025-06-02 00:00:00+00')", int64(962052)},
	})
	recordQuery(ctx, &sb, tx, "SELECT count(*) FROM orders WHERE status IN ('t1', 'tx') AND "+pipeWhere)
	if err := tx.Commit(ctx); err != nil {
		fmt.Fprintf(&sb, "commit: %s\n", errText(err))
	}
	recordQuery(ctx, &sb, conn, pipeFinal)

	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	runBatch(ctx, &sb, conn, tx, "error in the middle, in a transaction", [][]any{
		{"UPDATE orders SET status = 't2' WHERE id BETWEEN 962000 AND 962009"},
		{"SELECT 1 / 0 FROM orders WHERE user_id = $1", int64(962001)},
		{"UPDATE orders SET status = 't3' WHERE user_id = $1", int64(962002)},
	})
	recordQuery(ctx, &sb, tx, "SELECT count(*) FROM orders WHERE "+pipeWhere)
	if err := tx.Rollback(ctx); err != nil {
		fmt.Fprintf(&sb, "rollback: %s\n", errText(err))
	}
	recordQuery(ctx, &sb, conn, pipeFinal)

	runBatch(ctx, &sb, conn, nil, "BEGIN and COMMIT in the batch", [][]any{
		{"BEGIN"},
		{"UPDATE orders SET status = 'bc' WHERE user_id = $1", int64(962011)},
		{"UPDATE orders SET status = 'bc' WHERE id BETWEEN 962036 AND 962039"},
		{"SELECT id, status FROM orders WHERE status = 'bc' AND " + pipeWhere + " ORDER BY id"},
		{"COMMIT"},
		{"SELECT count(*) FROM orders WHERE status = 'bc' AND " + pipeWhere},
	})
	runBatch(ctx, &sb, conn, nil, "BEGIN, an error, ROLLBACK in the batch", [][]any{
		{"BEGIN"},
		{"UPDATE orders SET status = 'bx' WHERE id BETWEEN 962000 AND 962039"},
		{"SELECT 1 / (id - 962012) FROM orders WHERE user_id = $1", int64(962012)},
		{"ROLLBACK"},
	})
	recordQuery(ctx, &sb, conn, "SELECT 1")
	recordQuery(ctx, &sb, conn, pipeFinal)
	return sb.String()
}

// TestPgxBatchMatchesPostgres runs batchScenario through the proxy and
// against one plain Postgres in pgx's exec modes and compares.
func TestPgxBatchMatchesPostgres(t *testing.T) {
	seedCursorRows(t) // the plain Postgres's orders table
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			want := batchScenario(t, curPlain(), mode)
			got := batchScenario(t, proxyURL("app", "app"), mode)
			if got != want {
				t.Fatalf("through the proxy:\n%s\nplain Postgres:\n%s", got, want)
			}
			t.Logf("%d lines alike", strings.Count(got, "\n"))
		})
	}
}

// pipelineScenario: pgconn's pipeline with several Prepare and Execute
// before one Sync, an error in the middle (the rest skipped until Sync),
// prepared statements used after it, a failed Prepare, and the same inside
// a transaction.
func pipelineScenario(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := pipeSeed(ctx, conn); err != nil {
		t.Fatal(err)
	}
	pc := conn.PgConn()
	var sb strings.Builder
	txt := func(vals ...any) [][]byte {
		var out [][]byte
		for _, v := range vals {
			out = append(out, []byte(fmt.Sprint(v)))
		}
		return out
	}
	run := func(name string, send func(p *pgconn.Pipeline)) {
		fmt.Fprintf(&sb, "pipeline %s\n", name)
		p := pc.StartPipeline(ctx)
		send(p)
		if err := p.Flush(); err != nil {
			t.Fatal(err)
		}
		for {
			res, err := p.GetResults()
			if err != nil {
				fmt.Fprintf(&sb, "  %s\n", errText(err))
				if !pc.IsBusy() && pc.IsClosed() {
					t.Fatalf("connection closed: %v\n%s", err, sb.String())
				}
				continue
			}
			if res == nil {
				break
			}
			switch r := res.(type) {
			case *pgconn.StatementDescription:
				var cols []string
				for _, f := range r.Fields {
					cols = append(cols, fmt.Sprintf("%s:%d", f.Name, f.DataTypeOID))
				}
				fmt.Fprintf(&sb, "  prepared %v %s\n", r.ParamOIDs, strings.Join(cols, ","))
			case *pgconn.ResultReader:
				res := r.Read()
				for _, row := range res.Rows {
					var vals []string
					for _, v := range row {
						vals = append(vals, string(v))
					}
					fmt.Fprintf(&sb, "  row %s\n", strings.Join(vals, "|"))
				}
				if res.Err != nil {
					fmt.Fprintf(&sb, "  %s\n", errText(res.Err))
				} else {
					fmt.Fprintf(&sb, "  tag %s\n", res.CommandTag)
				}
			case *pgconn.PipelineSync:
				fmt.Fprintf(&sb, "  sync %c\n", pc.TxStatus())
			default:
				fmt.Fprintf(&sb, "  %T\n", res)
			}
		}
		if err := p.Close(); err != nil {
			fmt.Fprintf(&sb, "  close: %s\n", errText(err))
		}
	}
	run("prepares and executes, an error in the middle", func(p *pgconn.Pipeline) {
		p.SendPrepare("p1", "SELECT id, status FROM orders WHERE user_id = $1", nil)
		p.SendPrepare("p2", "SELECT id, total FROM orders WHERE id BETWEEN $1 AND $2 ORDER BY total DESC, id DESC LIMIT $3", nil)
		p.SendPrepare("p3", "UPDATE orders SET status = $2 WHERE user_id = $1", nil)
		p.SendPrepare("p4", "UPDATE orders SET status = $1 WHERE id BETWEEN 962020 AND 962024", nil)
		p.SendQueryPrepared("p1", txt(962001), nil, nil)
		p.SendQueryPrepared("p2", txt(962000, 962039, 5), nil, nil)
		p.SendQueryPrepared("p3", txt(962002, "pp"), nil, nil)
		p.SendQueryPrepared("p4", txt("pq"), nil, nil)
		p.SendQueryParams("SELECT id, 1 / (id - 962003) FROM orders WHERE user_id = $1", txt(962003), nil, nil, nil)
		p.SendQueryPrepared("p1", txt(962002), nil, nil)
		p.SendQueryPrepared("p3", txt(962005, "skipped"), nil, nil)
		p.SendPipelineSync()
		p.SendQueryPrepared("p1", txt(962002), nil, nil)
		p.SendQueryPrepared("p2", txt(962010, 962030, 3), nil, nil)
		p.SendQueryParams("SELECT count(*) FROM orders WHERE status IN ('pp', 'pq', 'skipped')", nil, nil, nil, nil)
		p.SendPipelineSync()
	})
	run("a failed Prepare in the middle", func(p *pgconn.Pipeline) {
		p.SendQueryPrepared("p3", txt(962006, "fp"), nil, nil)
		p.SendPrepare("p5", "SELECT no_such_column FROM orders WHERE user_id = $1", nil)
		p.SendQueryPrepared("p1", txt(962006), nil, nil)
		p.SendPipelineSync()
		// (Not checked: Bind of p5 here. Postgres has no p5 (26000); the
		// proxy Parses it again and answers the Parse's error, 42703.)
		p.SendQueryPrepared("p1", txt(962006), nil, nil)
		p.SendPipelineSync()
	})
	run("in a transaction, an error, then ROLLBACK", func(p *pgconn.Pipeline) {
		p.SendQueryParams("BEGIN", nil, nil, nil, nil)
		p.SendQueryPrepared("p3", txt(962007, "tx"), nil, nil)
		p.SendQueryPrepared("p4", txt("tx"), nil, nil)
		p.SendPipelineSync()
		p.SendQueryPrepared("p1", txt(962007), nil, nil)
		p.SendQueryParams("SELECT 1 / 0 FROM orders WHERE "+pipeWhere, nil, nil, nil, nil)
		p.SendQueryPrepared("p3", txt(962008, "tx"), nil, nil)
		p.SendPipelineSync()
		p.SendQueryPrepared("p1", txt(962007), nil, nil)
		p.SendPipelineSync()
		p.SendQueryParams("ROLLBACK", nil, nil, nil, nil)
		p.SendQueryPrepared("p1", txt(962007), nil, nil)
		p.SendPipelineSync()
	})
	run("in a transaction, committed", func(p *pgconn.Pipeline) {
		p.SendQueryParams("BEGIN", nil, nil, nil, nil)
		p.SendQueryPrepared("p3", txt(962009, "c1"), nil, nil)
		p.SendQueryPrepared("p4", txt("c2"), nil, nil)
		p.SendQueryPrepared("p2", txt(962000, 962039, 4), nil, nil)
		p.SendQueryParams("COMMIT", nil, nil, nil, nil)
		p.SendPipelineSync()
	})
	recordQuery(ctx, &sb, conn, pipeFinal)
	return sb.String()
}

// TestPgconnPipelineMatchesPostgres runs pipelineScenario through the
// proxy and against one plain Postgres and compares.
func TestPgconnPipelineMatchesPostgres(t *testing.T) {
	seedCursorRows(t)
	want := pipelineScenario(t, curPlain())
	got := pipelineScenario(t, proxyURL("app", "app"))
	if got != want {
		t.Fatalf("through the proxy:\n%s\nplain Postgres:\n%s", got, want)
	}
	t.Logf("%d lines alike", strings.Count(got, "\n"))
}

// TestPipelineWireMatchesPostgres: the same kind of pipelines as raw
// protocol messages, every reply compared (ParseComplete, BindComplete,
// rows, tags, errors and the ReadyForQuery status), one Sync per step.
func TestPipelineWireMatchesPostgres(t *testing.T) {
	seedCursorRows(t)
	ctx := context.Background()
	for _, url := range []string{curPlain(), proxyURL("app", "app")} {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		err = pipeSeed(ctx, c)
		c.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
	}
	parse := func(name, sql string) *pgproto3.Parse { return &pgproto3.Parse{Name: name, Query: sql} }
	bind := func(stmt string, vals ...string) *pgproto3.Bind {
		b := &pgproto3.Bind{PreparedStatement: stmt}
		for _, v := range vals {
			b.Parameters = append(b.Parameters, []byte(v))
		}
		return b
	}
	exec := &pgproto3.Execute{}
	sync := &pgproto3.Sync{}
	q := func(sql string) wireStep { return wireStep{&pgproto3.Query{String: sql}} }
	steps := []wireStep{
		{parse("k", "SELECT id, status FROM orders WHERE user_id = $1"), parse("s", "SELECT id FROM orders WHERE id BETWEEN $1 AND $2 ORDER BY id DESC LIMIT $3"),
			parse("u", "UPDATE orders SET status = $2 WHERE user_id = $1"), parse("x", "UPDATE orders SET status = $1 WHERE id BETWEEN 962030 AND 962034"),
			&pgproto3.Describe{ObjectType: 'S', Name: "s"},
			bind("k", "962001"), exec, bind("s", "962000", "962039", "4"), exec, bind("u", "962002", "w1"), exec, bind("x", "w2"), exec,
			parse("", "SELECT 1 / (id - 962003) FROM orders WHERE user_id = $1"), bind("", "962003"), exec,
			bind("k", "962002"), exec, parse("never", "SELECT 1"), bind("u", "962004", "w3"), exec, sync},
		{bind("k", "962002"), exec, bind("s", "962028", "962036", "9"), &pgproto3.Describe{ObjectType: 'P'}, exec, sync},
		// (A statement Parsed after the error, "never", is not checked: the
		// proxy keeps the client's view of it, where Postgres skipped it.)
		q("SELECT count(*) FROM orders WHERE status LIKE 'w%' AND " + pipeWhere),
		// A cross-shard statement that fails in the middle of a pipeline.
		{bind("u", "962005", "w4"), exec, parse("", "SELECT sum(1 / (id - 962031)) FROM orders WHERE "+pipeWhere), bind(""), exec,
			bind("x", "w5"), exec, sync},
		q("SELECT count(*) FROM orders WHERE status IN ('w4', 'w5') AND " + pipeWhere),
		// In a transaction: the error leaves it failed until ROLLBACK.
		q("BEGIN"),
		{bind("u", "962006", "w6"), exec, bind("x", "w7"), exec, sync},
		{bind("s", "962000", "962039", "2"), exec, parse("", "SELECT 1 / 0"), bind(""), exec, bind("u", "962007", "w8"), exec, sync},
		{bind("k", "962006"), exec, sync},
		q("ROLLBACK"),
		// A cross-shard statement failing in a transaction.
		q("BEGIN"),
		{bind("k", "962007"), exec, parse("", "SELECT sum(1 / (id - 962020)) FROM orders WHERE "+pipeWhere), bind(""), exec, bind("u", "962008", "w10"), exec, sync},
		{bind("k", "962007"), exec, sync},
		q("ROLLBACK"),
		{bind("k", "962006"), exec, &pgproto3.Close{ObjectType: 'S', Name: "u"}, bind("u", "962006", "w9"), exec, sync},
		{bind("k", "962006"), exec, sync},
		q(pipeFinal),
	}
	// (The cross-shard statements that fail are aggregates, so no rows
	// come before the error whatever plan the servers choose.)
	want := transcript(t, curPlain(), steps)
	got := transcript(t, proxyURL("app", "app"), steps)
	if got != want {
		t.Fatalf("through the proxy:\n%s\nplain Postgres:\n%s", got, want)
	}
	t.Logf("%d messages alike", strings.Count(got, "\n"))
}
