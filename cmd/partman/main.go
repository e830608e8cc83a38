// Command partman keeps monthly (weekly, daily) partitions ahead of the data
// on every shard of a shardproxy config.
//
//	partman run    [-config FILE] [-now TIME] [-table T] [-v]   create, detach, drop; print a summary
//	partman plan   [-config FILE] [-now TIME] [-table T]        print the SQL a run would execute
//	partman status [-config FILE] [-now TIME] [-table T]        partitions, periods ahead, rows in DEFAULT
//	partman mongo plan|apply [-config FILE] [-uri URI]          the matching MongoDB sharding layout
//
// Exit status: 0 when every shard is in order, 1 when a shard or table
// failed (one line per failure on stderr), 2 for usage or config errors.
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
	"text/tabwriter"
	"time"

	"github.com/shardproxy/shardproxy/config"
	"github.com/shardproxy/shardproxy/partman"
	partmongo "github.com/shardproxy/shardproxy/partman/mongo"
	"github.com/shardproxy/shardproxy/router"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: partman run|plan|status [-config FILE] [-now 2026-01-15T00:00:00Z] [-table T] [-v]
       partman mongo plan|apply [-config FILE] [-uri URI] [-timeout DURATION] [-offline]`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	var mode partman.Mode
	switch args[0] {
	case "run":
		mode = partman.Apply
	case "plan":
		mode = partman.DryRun
	case "status":
		mode = partman.Inspect
	case "mongo":
		return runMongo(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "partman: unknown command %q\n%s\n", args[0], usage)
		return 2
	}
	fs := flag.NewFlagSet("partman "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "shardproxy.yaml", "config file")
	nowFlag := fs.String("now", "", "pretend the time is this (RFC 3339 or a date, UTC unless an offset is given)")
	table := fs.String("table", "", "only this configured table")
	verbose := fs.Bool("v", false, "log every change (to stderr)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "partman: unexpected argument %q\n%s\n", fs.Arg(0), usage)
		return 2
	}
	f, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "partman: %v\n", err)
		return 2
	}
	if len(f.Partman.Tables) == 0 {
		fmt.Fprintf(stderr, "partman: %s has no partman.tables\n", *path)
		return 2
	}
	clock := time.Now
	if *nowFlag != "" {
		at, err := router.ParseBound(*nowFlag)
		if err != nil {
			fmt.Fprintf(stderr, "partman: -now: %v\n", err)
			return 2
		}
		clock = func() time.Time { return at }
	}
	// Failures are printed once, as one line each, below; -v adds a log
	// line per change.
	level := slog.LevelError + 4
	if *verbose {
		level = slog.LevelInfo
	}
	r := &partman.Runner{
		Config: f.Partman,
		Shards: f.Topology.Shards,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
		Now:    clock,
		Table:  *table,
	}
	rep, err := r.Run(ctx, mode)
	if err != nil {
		fmt.Fprintf(stderr, "partman: %v\n", err)
		return 2
	}
	switch mode {
	case partman.Apply:
		printSummary(stdout, rep)
	case partman.DryRun:
		printPlan(stdout, rep)
	default:
		printStatus(stdout, rep)
	}
	failures := rep.Failures()
	for _, l := range failures {
		fmt.Fprintf(stderr, "partman: %s\n", l)
	}
	if len(failures) > 0 {
		return 1
	}
	return 0
}

func printSummary(w io.Writer, rep partman.Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tTABLE\tCREATED\tDETACHED\tDROPPED\tMOVED FROM DEFAULT\tROWS IN DEFAULT\tAHEAD\tNOTE")
	for _, s := range rep.Shards {
		switch {
		case s.Err != nil:
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\tFAILED (shard)\n", s.Shard)
			continue
		case s.Skipped != "":
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\tskipped: %s\n", s.Shard, s.Skipped)
			continue
		}
		for _, t := range s.Tables {
			note := "ok"
			switch {
			case t.Failed():
				note = "FAILED"
			case t.Locked:
				note = "skipped: another run holds the lock"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", s.Shard, t.Table, len(t.Created), len(t.Detached),
				len(t.Dropped), t.MovedRows, rows(t.DefaultRows), ahead(t), note)
		}
	}
	tw.Flush()
}

func rows(n int64) string {
	if n < 0 {
		return "no default"
	}
	return fmt.Sprint(n)
}

func ahead(t partman.TableResult) string {
	switch {
	case t.Locked || t.Err != nil && t.Partitions == nil:
		return "-"
	case t.Ahead < 0:
		return "NONE (current period missing)"
	}
	return fmt.Sprint(t.Ahead)
}

func printPlan(w io.Writer, rep partman.Report) {
	fmt.Fprintf(w, "-- partman plan at %s\n", rep.Now.Format(time.RFC3339))
	for _, s := range rep.Shards {
		if s.Err != nil {
			fmt.Fprintf(w, "\n-- shard %s: FAILED: %v\n", s.Shard, s.Err)
			continue
		}
		for _, t := range s.Tables {
			fmt.Fprintf(w, "\n-- shard %s, table %s", s.Shard, t.Table)
			if t.Err != nil {
				fmt.Fprintf(w, ": FAILED: %v\n", t.Err)
				continue
			}
			if len(t.Plan.Actions) == 0 {
				fmt.Fprint(w, ": nothing to do\n")
			} else {
				fmt.Fprintf(w, ": %d step(s), one transaction each\n", len(t.Plan.Actions))
			}
			for _, p := range t.Problems {
				fmt.Fprintf(w, "-- PROBLEM: %s\n", p)
			}
			for _, a := range t.Plan.Actions {
				fmt.Fprintf(w, "BEGIN;\n%s;\nCOMMIT;\n", strings.Join(t.Plan.Statements(a), ";\n"))
			}
		}
	}
}

func printStatus(w io.Writer, rep partman.Report) {
	for _, s := range rep.Shards {
		if s.Err != nil {
			fmt.Fprintf(w, "shard %s: FAILED: %v\n", s.Shard, s.Err)
			continue
		}
		for _, t := range s.Tables {
			if t.Err != nil {
				fmt.Fprintf(w, "shard %s table %s: FAILED: %v\n", s.Shard, t.Table, t.Err)
				continue
			}
			fmt.Fprintf(w, "shard %s table %s: %d partitions, %ss ahead %s, rows in default %s\n",
				s.Shard, t.Table, len(t.Partitions), t.Interval, ahead(t), rows(t.DefaultRows))
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			for _, p := range t.Partitions {
				fmt.Fprintf(tw, "  %s\t%s\n", p.Name, p.Bound)
			}
			tw.Flush()
		}
	}
}

// runMongo loads the config named by -config among args (the mongo command
// parses the rest) and applies its mongo section.
func runMongo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || partmongo.IsHelp(args[0]) {
		w, code := stdout, 0
		if len(args) == 0 {
			w, code = stderr, 2
		}
		fmt.Fprintln(w, partmongo.MongoUsage)
		return code
	}
	path := "shardproxy.yaml"
	for i, a := range args {
		switch {
		case (a == "-config" || a == "--config") && i+1 < len(args):
			path = args[i+1]
		case strings.HasPrefix(a, "-config="), strings.HasPrefix(a, "--config="):
			path = a[strings.IndexByte(a, '=')+1:]
		}
	}
	f, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "partman: %v\n", err)
		return 2
	}
	return partmongo.Command(ctx, args, f.Mongo, &f.Topology, stdout, stderr)
}
