// Command shardproxy serves one PostgreSQL endpoint over several Postgres
// shards.
//
//	shardproxy -config shardproxy.yaml     serve
//	shardproxy check-config FILE           validate a config file
//	shardproxy demo [-tls]                 local shards + sample data + serve
//	shardproxy gen-cert [-dir DIR]         a CA and a server certificate
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
	"reflect"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shardproxy/shardproxy/config"
	"github.com/shardproxy/shardproxy/partman"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/router"
	"github.com/shardproxy/shardproxy/topology"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "check-config":
			return checkConfig(args[1:], stdout, stderr)
		case "demo":
			return demo(args[1:], stdout, stderr)
		case "gen-cert":
			return genCert(args[1:], stdout, stderr)
		case "reshard":
			return reshardCmd(args[1:], stdout, stderr)
		case "help", "-h", "--help":
			fmt.Fprint(stdout, usage)
			return 0
		}
	}
	fs := flag.NewFlagSet("shardproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "shardproxy.yaml", "config file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	f, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var level slog.LevelVar
	level.Set(logLevel(f.Log.Level))
	if err := serve(ctx, *path, f, newLogger(f.Log, &level, stderr), &level); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

const usage = `usage:
  shardproxy [-config FILE]        serve (default config: shardproxy.yaml)
  shardproxy check-config FILE     validate a config file and exit
  shardproxy demo [-dir DIR] [-replicas] [-tls]
                                   start 4 local shards, load sample data, serve on 127.0.0.1:6432
                                   (-replicas: a streaming replica per shard serves reads;
                                    -tls: TLS required from clients and used to the shards)
  shardproxy reshard [-config FILE] plan|start|status|cutover|verify|cleanup|abort
                                   move buckets between shards online (docs/resharding.md)
  shardproxy gen-cert [-dir certs] [-hosts localhost,127.0.0.1] [-days 365]
                                   write a CA and a server certificate signed by it
`

func checkConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	f, err := config.Load(args[0])
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%d shards, %d tables, %d users)\n", args[0],
		len(f.Topology.Shards), len(f.Topology.Tables), len(f.Proxy.Users))
	return 0
}

func logLevel(s string) slog.Level {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(s))
	return lvl
}

// newLogger builds the process logger; level may change later (reload).
func newLogger(c config.Log, level slog.Leveler, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the proxy for f (read from path) until ctx ends. The admin
// listener serves /metrics, /health and /ready; SIGHUP re-reads path.
func serve(ctx context.Context, path string, f *config.File, log *slog.Logger, level *slog.LevelVar) error {
	topo, err := router.NewTopology(&f.Topology)
	if err != nil {
		return err
	}
	srv, err := proxy.New(f.Proxy, topo, log)
	if err != nil {
		return err
	}
	srv.SetSlowLog(f.Log.SlowLog())
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := srv.RegisterMetrics(reg); err != nil {
		return err
	}
	srv.SetReloader(reloader(path, f, srv, level, log))
	if f.Proxy.AdminListen != "" {
		ln, err := net.Listen("tcp", f.Proxy.AdminListen)
		if err != nil {
			return fmt.Errorf("admin_listen: %w", err)
		}
		go func() {
			if err := srv.ServeAdmin(ctx, ln, reg); err != nil {
				log.Error("admin listener", "err", err)
			}
		}()
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				srv.Reload() // logs and counts its outcome
			}
		}
	}()
	srv.Warm(ctx)
	if f.Metadata != nil {
		dsn := topology.DefaultDSN(*f.Metadata, f.Proxy.Coordinator.DSN, topo)
		if _, err := topology.Start(ctx, *f.Metadata, dsn, topo, srv, log.With("component", "topology")); err != nil {
			return err
		}
		log.Info("topology from metadata", "version", srv.TopologyVersion())
	}
	if f.Partman.LoopInterval > 0 && len(f.Partman.Tables) > 0 {
		runner := &partman.Runner{Config: f.Partman, Shards: topo.Shards, Logger: log.With("component", "partman")}
		pm, err := partman.NewMetrics(reg)
		if err != nil {
			return err
		}
		go runner.Loop(ctx, func(r partman.Report) {
			pm.Observe(r)
			for _, line := range r.Failures() {
				log.Warn("partman", "failure", line)
			}
		})
		log.Info("partman loop on", "interval", f.Partman.LoopInterval, "tables", len(f.Partman.Tables))
	}
	log.Info("serving", "listen", f.Proxy.Listen, "admin_listen", f.Proxy.AdminListen, "shards", len(topo.Shards))
	return srv.ListenAndServe(ctx)
}

// reloader re-reads path and applies what may change live: users, admins,
// pool sizes, health checks, slow-query log, log level. A topology change
// (shards, tables) is refused: it needs a restart, since sessions and pools
// are bound to the running one.
func reloader(path string, running *config.File, srv *proxy.Server, level *slog.LevelVar, log *slog.Logger) func() error {
	return func() error {
		f, err := config.Load(path)
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(f.Topology, running.Topology) {
			log.Error("config reload refused: shards or tables changed; restart shardproxy to change the topology",
				"path", path)
			return errors.New("topology (shards, tables) changed: restart to apply")
		}
		if err := srv.Apply(f.Proxy); err != nil {
			return err
		}
		srv.SetSlowLog(f.Log.SlowLog())
		level.Set(logLevel(f.Log.Level))
		if f.Log.Format != running.Log.Format {
			log.Warn("config change needs a restart, keeping the running value", "key", "log.format",
				"running", running.Log.Format, "file", f.Log.Format)
		}
		return nil
	}
}
