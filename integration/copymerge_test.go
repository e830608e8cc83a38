package integration

import (
	"bytes"
	"context"
	"fmt"
	"testing"
)

// TestCopyOutMerged: COPY (query) TO STDOUT whose query needs a merge
// across shards (ORDER BY, LIMIT, GROUP BY, DISTINCT, aggregates) gives
// byte for byte what one plain Postgres holding the same rows gives, in
// text and CSV with their options; binary is refused (0A000).
func TestCopyOutMerged(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	plain := plainCopyDB(t)
	lo, hi := copyBase+83000, copyBase+84000
	data := textFile(items(lo, 300))
	if _, err := c.PgConn().CopyFrom(ctx, bytes.NewReader(data), "COPY order_items FROM STDIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := plain.PgConn().CopyFrom(ctx, bytes.NewReader(data), "COPY order_items FROM STDIN"); err != nil {
		t.Fatal(err)
	}
	if spread(t, lo, hi) < 2 {
		t.Fatal("the rows sit on one shard: the merge is not exercised")
	}
	where := fmt.Sprintf("user_id >= %d AND user_id < %d", lo, hi)
	queries := []string{
		"SELECT id, user_id, name, quantity, price FROM order_items WHERE " + where + " ORDER BY user_id, id",
		"SELECT name, id FROM order_items WHERE " + where + " ORDER BY name DESC, id LIMIT 50 OFFSET 3",
		"SELECT name FROM order_items WHERE " + where + " ORDER BY id LIMIT 40",
		"SELECT user_id, count(*), sum(price), max(name) FROM order_items WHERE " + where + " GROUP BY user_id ORDER BY user_id",
		"SELECT DISTINCT quantity FROM order_items WHERE " + where + " ORDER BY 1",
		"SELECT count(*), sum(quantity), min(name) FROM order_items WHERE " + where,
		"SELECT id, NULLIF(quantity, 2) AS q, NULLIF(name, name) AS n FROM order_items WHERE " + where + " ORDER BY price DESC, id",
	}
	formats := []string{"", "(FORMAT text, HEADER, DELIMITER '|')", "(FORMAT csv, HEADER)", "(FORMAT csv, DELIMITER ';', NULL 'NULL', QUOTE '''', ESCAPE '\\')"}
	for _, q := range queries {
		for _, f := range formats {
			sql := "COPY (" + q + ") TO STDOUT " + f
			var got, want bytes.Buffer
			gtag, err := c.PgConn().CopyTo(ctx, &got, sql)
			if err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
			wtag, err := plain.PgConn().CopyTo(ctx, &want, sql)
			if err != nil {
				t.Fatalf("plain: %s: %v", sql, err)
			}
			if gtag.String() != wtag.String() || !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Errorf("%s:\nproxy %s %q\nplain %s %q", sql, gtag, trunc(got.String()), wtag, trunc(want.String()))
			}
		}
	}
	// In a transaction, as pg_dump or an ETL job would.
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	tag, err := c.PgConn().CopyTo(ctx, &got, "COPY ("+queries[0]+") TO STDOUT")
	if err != nil || tag.RowsAffected() != 300 {
		t.Fatalf("in a transaction: %v %v", tag, err)
	}
	if _, err := c.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	// A bad query fails as on Postgres and the session stays usable.
	if _, err := c.PgConn().CopyTo(ctx, &got, "COPY (SELECT id / 0 FROM order_items WHERE "+where+" ORDER BY id) TO STDOUT"); pgCode(err) != "22012" {
		t.Errorf("division by zero: %v, want 22012", err)
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Fatal(err)
	}
}

func trunc(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}
