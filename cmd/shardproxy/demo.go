package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/shardproxy/shardproxy/config"
	"github.com/shardproxy/shardproxy/delivery"
	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/partman"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/router"
)

// demo starts 4 local shards under dir, creates the delivery schema and
// sample data through the proxy, and serves until interrupted.
func demo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".demo", "work folder for the shards' data")
	listen := fs.String("listen", "127.0.0.1:6432", "proxy address")
	replicas := fs.Bool("replicas", false, "start one streaming replica per shard and send reads outside transactions to it")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runDemo(ctx, *dir, *listen, *replicas, stdout, stderr); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
	return 0
}

func runDemo(ctx context.Context, dir, listen string, withReplicas bool, stdout, stderr io.Writer) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w (is another demo or Postgres running there?)", listen, err)
	}
	defer ln.Close()
	ports := []int{15432, 15433, 15434, 15435}
	for _, p := range ports {
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err != nil {
			ports = nil // taken: let the harness choose free ports
			break
		} else {
			l.Close()
		}
	}
	abs, _ := filepath.Abs(dir)
	fmt.Fprintf(stdout, "starting 4 Postgres shards in %s ...\n", abs)
	set, err := localpg.Start(ctx, localpg.Options{N: 4, Dir: filepath.Join(dir, "shards"), Ports: ports, Database: "deliveryapp"})
	if err != nil {
		return err
	}
	defer set.Stop()
	var replicas []*localpg.Cluster
	if withReplicas {
		for _, c := range set.Clusters[:4] {
			fmt.Fprintf(stdout, "starting a streaming replica of %s ...\n", c.Name)
			r, err := set.StartReplica(ctx, c, c.Name+"-r1")
			if err != nil {
				return err
			}
			replicas = append(replicas, r)
		}
	}
	// The coordinator: a database of its own beside shard 0's, where
	// postgres_fdw shows the whole cluster to one Postgres.
	if err := set.Clusters[0].CreateDatabase(ctx, demoCoordinatorDB); err != nil {
		return err
	}

	f, err := demoConfig(set, replicas, listen)
	if err != nil {
		return err
	}
	out, _ := yaml.Marshal(demoYAML(set, replicas, listen))
	cfgPath := filepath.Join(dir, "shardproxy.yaml")
	os.WriteFile(cfgPath, out, 0o644)

	topo, err := router.NewTopology(&f.Topology)
	if err != nil {
		return err
	}
	log := newLogger(config.Log{}, slog.LevelWarn, stderr)
	srv, err := proxy.New(f.Proxy, topo, log)
	if err != nil {
		return err
	}
	srv.SetSlowLog(f.Log.SlowLog())
	reg := prometheus.NewRegistry()
	if err := srv.RegisterMetrics(reg); err != nil {
		return err
	}
	admin := ""
	if aln, err := net.Listen("tcp", "127.0.0.1:9930"); err == nil {
		admin = "127.0.0.1:9930"
		go srv.ServeAdmin(ctx, aln, reg)
	} else {
		fmt.Fprintln(stderr, "admin port 127.0.0.1:9930 is taken: metrics and health are not served")
	}
	srv.Warm(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer srv.Close()

	url := fmt.Sprintf("postgres://app:app@%s/deliveryapp?sslmode=disable", listen)
	if err := createSchema(ctx, url); err != nil {
		return err
	}
	// Monthly partitions of orders and events, ahead of the data.
	runner := &partman.Runner{Config: f.Partman, Shards: topo.Shards}
	rep, err := runner.Run(ctx, partman.Apply)
	if err != nil {
		return err
	}
	if fails := rep.Failures(); len(fails) > 0 {
		return fmt.Errorf("partman: %s", strings.Join(fails, "; "))
	}
	created := 0
	for _, sh := range rep.Shards {
		for _, t := range sh.Tables {
			created += len(t.Created)
		}
	}
	fmt.Fprintf(stdout, "partman: %d monthly partitions created on 4 shards\n", created)
	if err := loadDemo(ctx, url, stdout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, `
shardproxy is serving the delivery app on %s over 4 shards (config: %s).

  psql "postgres://app:app@%s/deliveryapp"

Try:
  SELECT count(*) FROM orders WHERE user_id = 42;           -- one shard
  SELECT count(*), sum(total), max(created_at) FROM orders; -- every shard, combined
  SELECT * FROM orders o JOIN users u ON u.id = o.user_id WHERE o.user_id = 7;  -- co-located join
  SELECT count(*) FROM events WHERE created_at >= '2025-02-01+00' AND created_at < '2025-03-01+00';  -- range shard s1
  SELECT * FROM restaurants WHERE city = 'Madrid';          -- reference table, any shard
  SELECT * FROM orders ORDER BY created_at DESC LIMIT 5;    -- every shard, merged in order
  SELECT status, count(*), round(avg(total), 2) FROM orders GROUP BY status HAVING count(*) > 100 ORDER BY 2 DESC;  -- groups merged across shards
  SELECT count(DISTINCT restaurant_id) FROM orders;         -- exact: distinct values merged
  SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders;  -- no exact merge: runs on the coordinator
  SELECT u.city, count(*) FROM orders o JOIN users u ON u.id = o.restaurant_id GROUP BY 1 ORDER BY 2 DESC LIMIT 5;  -- join not on the key: coordinator
  EXPLAIN SELECT status, rank() OVER (ORDER BY total DESC) FROM orders LIMIT 3;  -- the coordinator's plan
  UPDATE orders o SET total = 0 FROM users u WHERE u.name = o.status;  -- still refused (0A000): writes never go to the coordinator

Admin console (SHOW SHARDS, SHOW POOLS, SHOW REPLICAS, SHOW QUERIES, SHOW ROUTE <sql>, ...):
  psql "postgres://app:app@%s/shardproxy"
%s
Ctrl-C stops the proxy and the shards (data stays in %s for the next run).
`, listen, cfgPath, listen, listen, adminURLs(admin), abs)
	select {
	case <-ctx.Done():
		fmt.Fprintln(stdout, "\nstopping ...")
		return nil
	case err := <-served:
		return err
	}
}

func demoYAML(set *localpg.Set, replicas []*localpg.Cluster, listen string) map[string]any {
	var shards []map[string]any
	for i, dsn := range set.DSNs()[:4] {
		sh := map[string]any{"name": fmt.Sprintf("s%d", i), "dsn": dsn}
		if i < len(replicas) {
			sh["replicas"] = []map[string]string{{"dsn": replicas[i].DSN("deliveryapp")}}
		}
		shards = append(shards, sh)
	}
	var ex map[string]any
	yaml.Unmarshal(delivery.ExampleConfig, &ex)
	ex["listen"] = listen
	ex["shards"] = shards
	delete(ex, "admin_listen") // the demo serves it itself when the port is free
	ex["admins"] = []string{"app"}
	if len(replicas) > 0 {
		ex["replicas"] = map[string]any{"read_from": "replicas", "balance": "round_robin", "failover_buffer": "5s"}
	}
	ex["coordinator"] = map[string]string{"dsn": set.Clusters[0].DSN(demoCoordinatorDB), "mode": "fallback"}
	return ex
}

// demoCoordinatorDB is the demo's coordinator database, on shard 0's cluster.
const demoCoordinatorDB = "shardproxy_coordinator"

func demoConfig(set *localpg.Set, replicas []*localpg.Cluster, listen string) (*config.File, error) {
	out, err := yaml.Marshal(demoYAML(set, replicas, listen))
	if err != nil {
		return nil, err
	}
	return config.Parse(out)
}

// createSchema runs the delivery schema through the proxy: DDL reaches
// every shard.
func createSchema(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect through the proxy: %w", err)
	}
	defer conn.Close(context.Background())
	stmts, err := parser.Parse(delivery.Schema)
	if err != nil {
		return err
	}
	for _, st := range stmts {
		if _, err := conn.Exec(ctx, st.SQL); err != nil {
			return fmt.Errorf("schema: %w", err)
		}
	}
	return nil
}

// loadDemo loads the sample data through the proxy,
// unless a previous run already did.
func loadDemo(ctx context.Context, url string, stdout io.Writer) error {
	cc, err := pgx.ParseConfig(url)
	if err != nil {
		return err
	}
	// Multi-row INSERTs are split per shard by the proxy on the simple
	// protocol (pgx interpolates the arguments safely).
	cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("connect through the proxy: %w", err)
	}
	defer conn.Close(context.Background())
	var users int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&users); err != nil {
		return err
	}
	if users == int64(delivery.DemoSizes.Users) {
		fmt.Fprintln(stdout, "sample data already loaded: reusing it")
		return nil
	}
	if users > 0 {
		fmt.Fprintln(stdout, "partial sample data found: reloading")
		for _, t := range []string{"order_items", "orders", "events", "users", "restaurants"} {
			if _, err := conn.Exec(ctx, "TRUNCATE "+t); err != nil {
				return err
			}
		}
	}
	start := time.Now()
	last := ""
	err = delivery.Load(ctx, conn, delivery.DemoSizes, func(table string, done, total int) {
		if table != last && last != "" {
			fmt.Fprintln(stdout)
		}
		last = table
		const width = 30
		filled := done * width / total
		fmt.Fprintf(stdout, "\rloading %-12s [%s%s] %6d/%d", table, strings.Repeat("#", filled), strings.Repeat(" ", width-filled), done, total)
	})
	fmt.Fprintln(stdout)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "loaded sample data through the proxy in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

func adminURLs(addr string) string {
	if addr == "" {
		return ""
	}
	return fmt.Sprintf("Metrics and health: http://%s/metrics  http://%s/ready\n", addr, addr)
}
