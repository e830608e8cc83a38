package mongo

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/shardproxy/shardproxy/router"
)

// Command runs `partman mongo plan|apply [flags]` and returns the exit
// status: 0 when the cluster matches the config (or, for plan, when there is
// no conflict), 1 on conflicts or errors, 2 on bad usage. args are the words
// after `partman mongo`; cfg is the file's mongo section and topo its
// topology (for zones taken from a range table). plan prints the mongosh
// commands it would run; apply runs them. Both print a summary.
func Command(ctx context.Context, args []string, cfg Config, topo *router.Config, stdout, stderr io.Writer) int {
	usage := func() {
		fmt.Fprintln(stderr, MongoUsage)
	}
	if len(args) > 0 && IsHelp(args[0]) {
		fmt.Fprintln(stdout, MongoUsage)
		return 0
	}
	if len(args) == 0 || (args[0] != "plan" && args[0] != "apply") {
		usage()
		return 2
	}
	verb := args[0]
	fs := flag.NewFlagSet("partman mongo "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	uri := fs.String("uri", "", "mongos URI (overrides mongo.uri of the config)")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	fs.String("config", "", "config file (read by partman before this command runs)")
	offline := fs.Bool("offline", false, "plan only: print every command for an empty cluster, without connecting to a mongos")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		usage()
		return 2
	}
	if cfg.IsZero() {
		fmt.Fprintln(stderr, "partman mongo: the config file has no mongo: section (see docs/mongo.md)")
		return 1
	}
	if *uri != "" {
		cfg.URI = *uri
	}
	layout, err := cfg.Resolve(topo)
	if err != nil {
		fmt.Fprintf(stderr, "partman mongo: %v\n", err)
		return 1
	}
	if *offline {
		if verb != "plan" {
			fmt.Fprintln(stderr, "partman mongo: -offline is for plan only")
			return 2
		}
		printPlan(stdout, NewPlan(layout, emptyState(layout)))
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	client, err := mongodrv.Connect(options.Client().ApplyURI(cfg.URI).SetAppName("partman"))
	if err != nil {
		fmt.Fprintf(stderr, "partman mongo: connect: %v\n", err)
		return 1
	}
	defer func() {
		// Disconnect ends the sessions; bound it so an unreachable
		// server cannot hold the exit.
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer dcancel()
		_ = client.Disconnect(dctx)
	}()

	plan, res, err := Run(ctx, client, layout, verb == "apply")
	if err != nil {
		fmt.Fprintf(stderr, "partman mongo %s: %v\n", verb, err)
		if plan == nil {
			return 1
		}
	}
	if verb == "plan" {
		printPlan(stdout, plan)
	} else {
		printResult(stdout, plan, res)
	}
	if err != nil || len(plan.Conflicts) > 0 || (res != nil && len(res.Conflicts) > 0) {
		return 1
	}
	return 0
}

// Run checks that client talks to a mongos, reads the state of l and plans
// the changes; with apply it runs them. It blocks until done or ctx ends.
func Run(ctx context.Context, client *mongodrv.Client, l *Layout, apply bool) (*Plan, *Result, error) {
	if err := CheckMongos(ctx, client); err != nil {
		return nil, nil, err
	}
	state, err := Read(ctx, client, l)
	if err != nil {
		return nil, nil, err
	}
	plan := NewPlan(l, state)
	if !apply {
		return plan, nil, nil
	}
	res, err := Apply(ctx, client, plan)
	return plan, res, err
}

func printPlan(w io.Writer, p *Plan) {
	if len(p.Conflicts) > 0 {
		fmt.Fprintln(w, "// conflicts: apply will change nothing until they are resolved")
	}
	for _, c := range p.Steps {
		fmt.Fprintf(w, "%s  // %s\n", c.Shell(), c.What)
	}
	for _, m := range p.Matched {
		fmt.Fprintf(w, "matched:  %s\n", m)
	}
	for _, c := range p.Conflicts {
		fmt.Fprintf(w, "conflict: %s\n", c)
	}
	fmt.Fprintf(w, "plan: %d to create, %d already matched, %d conflicts\n", len(p.Steps), len(p.Matched), len(p.Conflicts))
}

func printResult(w io.Writer, p *Plan, r *Result) {
	created := 0
	if r != nil {
		created = len(r.Created)
		for _, c := range r.Created {
			fmt.Fprintf(w, "created:  %s\n", c)
		}
	}
	for _, m := range p.Matched {
		fmt.Fprintf(w, "matched:  %s\n", m)
	}
	conflicts := p.Conflicts
	if r != nil {
		conflicts = r.Conflicts
	}
	for _, c := range conflicts {
		fmt.Fprintf(w, "conflict: %s\n", c)
	}
	if created < len(p.Steps) {
		fmt.Fprintf(w, "not run:  %d of %d commands\n", len(p.Steps)-created, len(p.Steps))
	}
	fmt.Fprintf(w, "summary: %d created, %d already matched, %d conflicts\n", created, len(p.Matched), len(conflicts))
}

// MongoUsage is the usage line of partman mongo.
const MongoUsage = `usage: partman mongo plan|apply [-config FILE] [-uri URI] [-timeout DURATION]
       partman mongo plan -offline [-config FILE]   the plan for an empty cluster, without a mongos`

// IsHelp reports whether arg asks for usage.
func IsHelp(arg string) bool {
	return arg == "-h" || arg == "--help" || arg == "-help" || arg == "help"
}

// emptyState is a sharded cluster with nothing of the layout yet: no
// database, collections or zone ranges; the shards the zones name exist,
// in no zone.
func emptyState(l *Layout) *State {
	s := &State{Sharded: map[string]ShardedCollection{}, Collections: map[string]bson.D{},
		Indexes: map[string][]bson.D{}, Shards: map[string][]string{}}
	for _, t := range l.Collections {
		for _, shards := range t.ZoneShards {
			for _, sh := range shards {
				s.Shards[sh] = nil
			}
		}
	}
	return s
}
