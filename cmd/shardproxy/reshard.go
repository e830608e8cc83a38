package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/shardproxy/shardproxy/config"
	"github.com/shardproxy/shardproxy/reshard"
	"github.com/shardproxy/shardproxy/router"
	"github.com/shardproxy/shardproxy/topology"
)

const reshardUsage = `usage: shardproxy reshard [-config FILE] COMMAND
  plan -to s0,s1,s2,s3   spread the buckets over these shards (bucket b on the (b mod n)-th)
  plan -table events -range 2026-11-01/2026-12-01 -to s2
                         move one interval [from, to) of a range table to a shard
  start                  schema onto the targets, copy and stream by logical replication
  status                 copy state and lag per move
  cutover [-hold 2s] [-verify=true]
                         hold writes, catch up, compare, publish the new map, wait for every proxy
  verify                 per-bucket row counts and checksums, source against target
  cleanup [-batch 5000]  drop the streams, delete the moved rows from the sources
  abort                  drop the streams and the copied rows (before cutover)
`

func reshardCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reshard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "shardproxy.yaml", "config file")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		fmt.Fprint(stderr, reshardUsage)
		return 2
	}
	f, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if f.Metadata == nil {
		fmt.Fprintln(stderr, "reshard needs a metadata section in the config (docs/resharding.md)")
		return 1
	}
	topo, err := router.NewTopology(&f.Topology)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := newLogger(f.Log, slog.LevelInfo, stderr)
	tool := &reshard.Tool{Topo: topo, Log: log, Out: stdout, IDs: f.Metadata.IDs,
		Store: topology.NewStore(topology.DefaultDSN(*f.Metadata, f.Proxy.Coordinator.DSN, topo), log)}
	sub := flag.NewFlagSet(fs.Arg(0), flag.ContinueOnError)
	sub.SetOutput(stderr)
	to := sub.String("to", "", "plan: the shards to spread the buckets over, comma-separated")
	hold := sub.Duration("hold", 2*time.Second, "cutover: the longest a write is held")
	batch := sub.Int("batch", 5000, "cleanup: rows deleted per transaction")
	verify := sub.Bool("verify", true, "cutover: compare the moved rows (in snapshots taken while writes are held, after releasing them)")
	table := sub.String("table", "", "plan: the range table to move an interval of (with -range)")
	rng := sub.String("range", "", "plan: the interval FROM/TO of -table to move to the shard -to")
	if err := sub.Parse(fs.Args()[1:]); err != nil {
		return 2
	}
	tool.Hold, tool.SkipVerify = *hold, !*verify
	switch fs.Arg(0) {
	case "plan":
		if *to == "" {
			fmt.Fprint(stderr, reshardUsage)
			return 2
		}
		if *table != "" || *rng != "" {
			from, until, ok := strings.Cut(*rng, "/")
			if *table == "" || !ok || strings.Contains(*to, ",") {
				fmt.Fprint(stderr, reshardUsage)
				return 2
			}
			_, err = tool.PlanRange(ctx, *table, from, until, *to)
			break
		}
		_, err = tool.Plan(ctx, strings.Split(*to, ","))
	case "start":
		err = tool.Start(ctx)
	case "status":
		_, err = tool.Status(ctx)
	case "cutover":
		_, err = tool.Cutover(ctx)
	case "verify":
		_, err = tool.Verify(ctx)
	case "cleanup":
		err = tool.Cleanup(ctx, *batch)
	case "abort":
		err = tool.Abort(ctx)
	default:
		fmt.Fprint(stderr, reshardUsage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "reshard:", err)
		return 1
	}
	return 0
}
