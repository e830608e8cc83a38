package parser

import (
	"errors"
	"testing"
)

func TestHideRows(t *testing.T) {
	filter := func(tb Table) string {
		if tb.Name == "orders" && (tb.Schema == "" || tb.Schema == "public") {
			return "NOT (user_id % 2 = 0)"
		}
		return ""
	}
	cases := []struct{ in, want string }{
		{"SELECT count(*) FROM orders", "SELECT count(*) FROM (SELECT * FROM orders WHERE NOT (user_id % 2) = 0) orders"},
		{"SELECT o.id FROM orders o LEFT JOIN users u ON u.id = o.user_id WHERE o.total > $1",
			"SELECT o.id FROM (SELECT * FROM orders WHERE NOT (user_id % 2) = 0) o LEFT JOIN users u ON u.id = o.user_id WHERE o.total > $1"},
		{"SELECT * FROM users WHERE id IN (SELECT user_id FROM public.orders)",
			"SELECT * FROM users WHERE id IN (SELECT user_id FROM (SELECT * FROM public.orders WHERE NOT (user_id % 2) = 0) orders)"},
		{"WITH x AS (SELECT * FROM orders) SELECT count(*) FROM x",
			"WITH x AS (SELECT * FROM (SELECT * FROM orders WHERE NOT (user_id % 2) = 0) orders) SELECT count(*) FROM x"},
		{"UPDATE orders o SET total = 1 WHERE status = 'x'", "UPDATE orders o SET total = 1 WHERE status = 'x' AND NOT (o.user_id % 2) = 0"},
		{"DELETE FROM orders", "DELETE FROM orders WHERE NOT (orders.user_id % 2) = 0"},
		{"COPY orders TO STDOUT", "COPY (SELECT * FROM (SELECT * FROM orders WHERE NOT (user_id % 2) = 0) orders) TO STDOUT"},
		{"COPY orders (id, total) TO STDOUT WITH (FORMAT csv)", "COPY (SELECT id, total FROM (SELECT * FROM orders WHERE NOT (user_id % 2) = 0) orders) TO STDOUT CSV"},
		{"SELECT * FROM users", "SELECT * FROM users"},
		{"INSERT INTO orders (id, user_id) VALUES (1, 2), (3, 4) RETURNING id", "INSERT INTO orders (id, user_id) VALUES (1, 2), (3, 4) RETURNING id"},
		{"INSERT INTO archive SELECT * FROM orders", "INSERT INTO archive SELECT * FROM (SELECT * FROM orders WHERE NOT (user_id % 2) = 0) orders"},
		{"ALTER TABLE orders ADD COLUMN x int", "ALTER TABLE orders ADD COLUMN x int"},
		{"SELECT * FROM other.orders", "SELECT * FROM other.orders"},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, _, err := HideRows(c.in, filter)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
	for _, in := range []string{
		"SELECT * FROM orders TABLESAMPLE SYSTEM (10)",
	} {
		if _, _, err := HideRows(in, filter); !errors.Is(err, ErrHideRows) {
			t.Errorf("%s: got %v, want ErrHideRows", in, err)
		}
	}
}
