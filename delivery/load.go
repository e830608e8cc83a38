package delivery

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Sizes says how much sample data to load.
type Sizes struct {
	Users, Restaurants, Orders, Events int
}

// DemoSizes are the sizes `shardproxy demo` loads.
var DemoSizes = Sizes{Users: 10_000, Restaurants: 200, Orders: 100_000, Events: 20_000}

// Epoch is the first instant of sample orders and events: data spans the
// two years from it, crossing every range of the example config.
var Epoch = time.Date(2024, 7, 1, 0, 0, 0, 0, time.UTC)

// Progress is told how many rows of a table are loaded so far.
type Progress func(table string, done, total int)

var (
	cities   = []string{"Madrid", "Barcelona", "Valencia", "Sevilla", "Bilbao", "Lisboa", "Porto"}
	cuisines = []string{"pizza", "sushi", "tapas", "burger", "thai", "mexican", "vegan", "indian"}
	statuses = []string{"delivered", "delivered", "delivered", "cancelled", "preparing", "on_the_way", "new"}
	kinds    = []string{"app_open", "search", "view_restaurant", "add_to_cart", "checkout", "rate"}
	dishes   = []string{"Margherita", "Ramen", "Patatas bravas", "Cheeseburger", "Pad thai", "Tacos", "Falafel bowl", "Curry"}
)

// Load copies deterministic sample data through conn (normally a
// connection to shardproxy) with COPY FROM STDIN, one COPY per table,
// telling progress every batch rows.
func Load(ctx context.Context, conn *pgx.Conn, sz Sizes, progress Progress) error {
	rng := rand.New(rand.NewPCG(42, 7))
	if progress == nil {
		progress = func(string, int, int) {}
	}
	span := int64(2 * 365 * 24 * time.Hour / time.Second)
	at := func() time.Time { return Epoch.Add(time.Duration(rng.Int64N(span)) * time.Second) }

	if err := batches(ctx, conn, "restaurants", []string{"id", "name", "city", "cuisine", "rating"}, sz.Restaurants, 200,
		func(i int) []any {
			c := cuisines[i%len(cuisines)]
			return []any{int64(i + 1), fmt.Sprintf("%s place %d", strings.ToUpper(c[:1])+c[1:], i+1),
				cities[rng.IntN(len(cities))], c, fmt.Sprintf("%.1f", 3+rng.Float64()*2)}
		}, progress); err != nil {
		return err
	}
	if err := batches(ctx, conn, "users", []string{"id", "name", "email", "city", "created_at"}, sz.Users, 500,
		func(i int) []any {
			id := int64(i + 1)
			return []any{id, fmt.Sprintf("user %d", id), fmt.Sprintf("user%d@example.com", id),
				cities[rng.IntN(len(cities))], Epoch.Add(-time.Duration(rng.IntN(700)) * 24 * time.Hour)}
		}, progress); err != nil {
		return err
	}
	if err := batches(ctx, conn, "orders", []string{"id", "user_id", "restaurant_id", "total", "status", "created_at"}, sz.Orders, 500,
		func(i int) []any {
			// Skewed: a tenth of the users place half of the orders.
			uid := int64(rng.IntN(sz.Users) + 1)
			if rng.IntN(2) == 0 {
				uid = int64(rng.IntN(max(sz.Users/10, 1)) + 1)
			}
			return []any{int64(i + 1), uid, int64(rng.IntN(sz.Restaurants) + 1),
				fmt.Sprintf("%d.%02d", 5+rng.IntN(80), rng.IntN(100)), statuses[rng.IntN(len(statuses))], at()}
		}, progress); err != nil {
		return err
	}
	items := sz.Orders / 2
	if err := batches(ctx, conn, "order_items", []string{"id", "order_id", "user_id", "name", "quantity", "price"}, items, 500,
		func(i int) []any {
			return []any{int64(i + 1), int64(rng.IntN(sz.Orders) + 1), int64(rng.IntN(sz.Users) + 1),
				dishes[rng.IntN(len(dishes))], int32(1 + rng.IntN(4)), fmt.Sprintf("%d.%02d", 3+rng.IntN(20), rng.IntN(100))}
		}, progress); err != nil {
		return err
	}
	return batches(ctx, conn, "events", []string{"id", "user_id", "kind", "payload", "created_at"}, sz.Events, 500,
		func(i int) []any {
			return []any{int64(i + 1), int64(rng.IntN(sz.Users) + 1), kinds[rng.IntN(len(kinds))],
				fmt.Sprintf(`{"v": %d}`, rng.IntN(1000)), at()}
		}, progress)
}

func batches(ctx context.Context, conn *pgx.Conn, table string, cols []string, total, batch int,
	row func(i int) []any, progress Progress) error {
	src := &rowSource{total: total, every: batch, row: row, progress: func(done int) { progress(table, done, total) }}
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{table}, cols, src); err != nil {
		return fmt.Errorf("load %s: %w", table, err)
	}
	progress(table, total, total)
	return nil
}

// rowSource feeds COPY FROM STDIN row by row, telling progress every
// `every` rows (pgx sends as it reads, so progress follows what was sent).
type rowSource struct {
	total, every, i int
	row             func(i int) []any
	cur             []any
	progress        func(done int)
}

func (r *rowSource) Next() bool {
	if r.i >= r.total {
		return false
	}
	if r.i > 0 && r.i%r.every == 0 {
		r.progress(r.i)
	}
	r.cur = r.row(r.i)
	r.i++
	return true
}

func (r *rowSource) Values() ([]any, error) { return r.cur, nil }
func (r *rowSource) Err() error             { return nil }
