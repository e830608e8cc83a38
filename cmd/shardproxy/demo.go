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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/shardproxy/shardproxy/certs"
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
	withTLS := fs.Bool("tls", false, "TLS on both sides: clients must use TLS (tls.mode require), shards run with ssl=on and are verified (verify-full); certificates from gen-cert in DIR/certs")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runDemo(ctx, *dir, *listen, *replicas, *withTLS, stdout, stderr); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
	return 0
}

func runDemo(ctx context.Context, dir, listen string, withReplicas, withTLS bool, stdout, stderr io.Writer) error {
	// The address is checked now and listened on once the sample data is
	// loaded (through a loopback listener of the same server), so that a
	// client or pg_isready never meets a half-loaded demo.
	if probe, err := net.Listen("tcp", listen); err != nil {
		return fmt.Errorf("listen %s: %w (is another demo or Postgres running there?)", listen, err)
	} else {
		probe.Close()
	}
	adminAddr := ""
	if probe, err := net.Listen("tcp", demoAdmin); err == nil {
		probe.Close()
		adminAddr = demoAdmin
	} else {
		fmt.Fprintf(stderr, "admin port %s is taken: metrics and health are not served\n", demoAdmin)
	}
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
	var files *certs.Files
	var err error
	opts := localpg.Options{N: 4, Dir: filepath.Join(dir, "shards"), Ports: ports, Database: "deliveryapp"}
	if withTLS {
		if files, err = demoCerts(filepath.Join(abs, "certs"), stdout); err != nil {
			return err
		}
		opts.TLS = &localpg.TLSFiles{Cert: files.Cert, Key: files.Key}
	}
	fmt.Fprintf(stdout, "starting 4 Postgres shards in %s ...\n", abs)
	set, err := localpg.Start(ctx, opts)
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
	// The app's unprivileged role on every shard: the demo's users reach
	// the shards as themselves (backend_roles: per_user).
	for _, c := range set.Clusters[:4] {
		if err := execOn(ctx, c.DSN("deliveryapp"), delivery.AppRole); err != nil {
			return fmt.Errorf("app role on %s: %w", c.Name, err)
		}
	}

	// The demo runs from the config file it writes, so RELOAD and SIGHUP
	// re-read it as they would in production.
	out, err := yaml.Marshal(demoYAML(set, replicas, listen, adminAddr, files))
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(abs, "shardproxy.yaml")
	if err := os.WriteFile(cfgPath, out, 0o644); err != nil {
		return err
	}
	f, err := config.Load(cfgPath)
	if err != nil {
		return err
	}

	topo, err := router.NewTopology(&f.Topology)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	level.Set(slog.LevelWarn)
	log := newLogger(config.Log{}, level, stderr)
	srv, err := proxy.New(f.Proxy, topo, log)
	if err != nil {
		return err
	}
	srv.SetSlowLog(f.Log.SlowLog())
	srv.SetReloader(reloader(cfgPath, f, srv, level, log))
	reg := prometheus.NewRegistry()
	if err := srv.RegisterMetrics(reg); err != nil {
		return err
	}
	srv.Warm(ctx)
	gate := newGateListener()
	loader, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	gate.feed(loader)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, gate) }()
	defer srv.Close()

	ssl := "sslmode=disable"
	if files != nil {
		ssl = "sslmode=verify-full&sslrootcert=" + files.CA
	}
	url := fmt.Sprintf("postgres://app:app@%s/deliveryapp?%s", loader.Addr(), ssl)
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
	loader.Close()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", listen, err)
	}
	gate.feed(ln)
	admin := ""
	if adminAddr != "" {
		aln, err := net.Listen("tcp", adminAddr)
		if err != nil {
			return fmt.Errorf("admin_listen: %w", err)
		}
		admin = adminAddr
		go srv.ServeAdmin(ctx, aln, reg)
	}
	fmt.Fprintf(stdout, `
shardproxy is serving the delivery app on %s over 4 shards (config: %s).

  psql "postgres://app:app@%s/deliveryapp%s"

Try:
  SELECT count(*) FROM orders WHERE user_id = 42;           -- one shard
  SELECT count(*), sum(total), max(created_at) FROM orders; -- every shard, combined
  SELECT * FROM orders o JOIN users u ON u.id = o.user_id WHERE o.user_id = 7;  -- co-located join
  SELECT count(*) FROM events WHERE created_at >= '2025-02-01+00' AND created_at < '2025-03-01+00';  -- range shard s1
  SELECT * FROM restaurants WHERE city = 'Madrid';          -- reference table, any shard
  SELECT * FROM orders ORDER BY created_at DESC LIMIT 5;    -- every shard, merged in order
  SELECT status, count(*), round(avg(total), 2) FROM orders GROUP BY status HAVING count(*) > 100 ORDER BY 2 DESC;  -- groups merged across shards
  SELECT count(DISTINCT restaurant_id) FROM orders;         -- exact: distinct values merged
  SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders;  -- no exact merge: refused (0A000) for app,
  -- whose least-privilege role (backend_roles: per_user) may not use the coordinator; shardproxy.yaml's
  -- backend_roles: shared sends it to the coordinator (docs/operations.md, Backend roles)
  UPDATE orders o SET total = 0 FROM users u WHERE u.name = o.status;  -- still refused (0A000): writes never go to the coordinator

Admin console (SHOW SHARDS, SHOW POOLS, SHOW CONFIG, SHOW QUERIES, SHOW ROUTE <sql>, RELOAD, ...):
  psql "postgres://admin:admin@%s/shardproxy%s"
%s
Ctrl-C stops the proxy and the shards (data stays in %s for the next run).
`, listen, cfgPath, listen, psqlSSL(files), listen, psqlSSL(files), adminURLs(admin), abs)
	select {
	case <-ctx.Done():
		fmt.Fprintln(stdout, "\nstopping ...")
		return nil
	case err := <-served:
		return err
	}
}

// demoAdmin is the demo's admin_listen (metrics, health), when free.
const demoAdmin = "127.0.0.1:9930"

func demoYAML(set *localpg.Set, replicas []*localpg.Cluster, listen, admin string, files *certs.Files) map[string]any {
	tlsDSN := func(dsn string) string {
		if files != nil {
			dsn = strings.Replace(dsn, "sslmode=disable", "sslmode=verify-full&sslrootcert="+files.CA, 1)
		}
		return dsn
	}
	var shards []map[string]any
	for i, dsn := range set.DSNs()[:4] {
		sh := map[string]any{"name": fmt.Sprintf("s%d", i), "dsn": tlsDSN(dsn)}
		if i < len(replicas) {
			sh["replicas"] = []map[string]string{{"dsn": tlsDSN(replicas[i].DSN("deliveryapp"))}}
		}
		shards = append(shards, sh)
	}
	var ex map[string]any
	yaml.Unmarshal(delivery.ExampleConfig, &ex)
	ex["listen"] = listen
	ex["shards"] = shards
	if admin == "" {
		delete(ex, "admin_listen") // the port is taken
	} else {
		ex["admin_listen"] = admin
	}
	ex["admins"] = []string{"app", "admin"}
	ex["admin_permissions"] = map[string][]string{"app": {"show"}, "admin": {"all"}}
	// Partitions from the first month of the sample data, kept: the data
	// spans two years from delivery.Epoch and must land in real partitions.
	if pm, ok := ex["partman"].(map[string]any); ok {
		if tables, ok := pm["tables"].(map[string]any); ok {
			for _, t := range tables {
				if tc, ok := t.(map[string]any); ok {
					tc["backfill_from"] = delivery.Epoch.Format("2006-01-02")
					delete(tc, "retention")
					delete(tc, "retention_mode")
				}
			}
		}
	}
	if len(replicas) > 0 {
		ex["replicas"] = map[string]any{"read_from": "replicas", "balance": "round_robin", "read_your_writes": "lsn", "failover_buffer": "5s"}
	}
	ex["coordinator"] = map[string]string{"dsn": set.Clusters[0].DSN(demoCoordinatorDB), "mode": "fallback"}
	if files != nil {
		ex["tls"] = map[string]string{"cert": files.Cert, "key": files.Key, "mode": "require"}
	}
	return ex
}

// demoCoordinatorDB is the demo's coordinator database, on shard 0's cluster.
const demoCoordinatorDB = "shardproxy_coordinator"

// demoCerts reuses the certificates of an earlier -tls run in dir, or
// makes them (as gen-cert does).
func demoCerts(dir string, stdout io.Writer) (*certs.Files, error) {
	f := certs.Files{CA: filepath.Join(dir, "ca.crt"), CAKey: filepath.Join(dir, "ca.key"),
		Cert: filepath.Join(dir, "server.crt"), Key: filepath.Join(dir, "server.key")}
	if _, err := os.Stat(f.Key); err == nil {
		return &f, nil
	}
	f, err := certs.Generate(dir, []string{"localhost", "127.0.0.1"}, 365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "made a CA and a server certificate in %s\n", dir)
	return &f, nil
}

// psqlSSL is the connection-string suffix that verifies the demo's
// certificate.
func psqlSSL(files *certs.Files) string {
	if files == nil {
		return ""
	}
	return "?sslmode=verify-full&sslrootcert=" + files.CA
}

// gateListener is the demo's listener: it accepts from the listeners fed
// to it (a loopback one while the sample data loads, then the public
// address).
type gateListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  atomic.Value // net.Addr of the last listener fed
}

// execOn runs sql on one server (as its superuser).
func execOn(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

func newGateListener() *gateListener {
	return &gateListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// feed accepts connections from ln until ln or the gate is closed.
func (g *gateListener) feed(ln net.Listener) {
	g.addr.Store(ln.Addr())
	go func() {
		defer ln.Close()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case g.conns <- c:
			case <-g.done:
				c.Close()
				return
			}
		}
	}()
	go func() {
		<-g.done
		ln.Close()
	}()
}

func (g *gateListener) Accept() (net.Conn, error) {
	select {
	case c := <-g.conns:
		return c, nil
	case <-g.done:
		return nil, net.ErrClosed
	}
}

func (g *gateListener) Close() error {
	g.once.Do(func() { close(g.done) })
	return nil
}

func (g *gateListener) Addr() net.Addr { return g.addr.Load().(net.Addr) }

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
