// Command shardproxy serves one PostgreSQL endpoint over several Postgres
// shards.
//
//	shardproxy -config shardproxy.yaml     serve
//	shardproxy check-config FILE           validate a config file
//	shardproxy demo                        local shards + sample data + serve
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/shardproxy/shardproxy/config"
	"github.com/shardproxy/shardproxy/partman"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/router"
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
	if err := serve(ctx, f, newLogger(f.Log, stderr)); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

const usage = `usage:
  shardproxy [-config FILE]        serve (default config: shardproxy.yaml)
  shardproxy check-config FILE     validate a config file and exit
  shardproxy demo [-dir DIR]       start 4 local shards, load sample data, serve on 127.0.0.1:6432
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

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the proxy for f until ctx ends.
func serve(ctx context.Context, f *config.File, log *slog.Logger) error {
	topo, err := router.NewTopology(&f.Topology)
	if err != nil {
		return err
	}
	srv, err := proxy.New(f.Proxy, topo, log)
	if err != nil {
		return err
	}
	srv.Warm(ctx)
	if f.Partman.LoopInterval > 0 && len(f.Partman.Tables) > 0 {
		runner := &partman.Runner{Config: f.Partman, Shards: topo.Shards, Logger: log.With("component", "partman")}
		go runner.Loop(ctx, func(r partman.Report) {
			for _, line := range r.Failures() {
				log.Warn("partman", "failure", line)
			}
		})
		log.Info("partman loop on", "interval", f.Partman.LoopInterval, "tables", len(f.Partman.Tables))
	}
	log.Info("serving", "listen", f.Proxy.Listen, "shards", len(topo.Shards))
	return srv.ListenAndServe(ctx)
}
