package partman

import (
	"context"
	"testing"
	"time"
)

// benchConfig keeps 36 months (June 2023 to May 2026 at the bench's now)
// of 3 tables.
func benchConfig() Config {
	t := TableConfig{Column: "created_at", BackfillFrom: "2023-06-01"}
	return Config{Tables: map[string]TableConfig{"orders": t, "events": t, "metrics": t}}
}

const benchNow = "2026-01-15T00:00:00Z"

func benchFresh(b *testing.B) {
	fresh(b)
	for i := range shards.Clusters {
		exec(b, connect(b, i), `CREATE TABLE metrics (
	id bigint NOT NULL, shop_id bigint NOT NULL, value double precision,
	created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at);
CREATE TABLE metrics_default PARTITION OF metrics DEFAULT;
CREATE INDEX ON metrics (shop_id)`)
	}
}

func benchRun(b *testing.B) Report {
	r := &Runner{Config: benchConfig(), Shards: shardConfigs(""), Now: func() time.Time { return ts(benchNow) }}
	rep, err := r.Run(context.Background(), Apply)
	if err != nil {
		b.Fatal(err)
	}
	noFailures(b, rep)
	return rep
}

func countCreated(rep Report) (n int) {
	for _, s := range rep.Shards {
		for _, t := range s.Tables {
			n += len(t.Created)
		}
	}
	return n
}

// BenchmarkFirstRun creates 36 months x 3 tables x 4 shards (432
// partitions, each with its indexes) from empty parents.
func BenchmarkFirstRun(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		benchFresh(b)
		b.StartTimer()
		if n := countCreated(benchRun(b)); n != 36*3*4 {
			b.Fatalf("created %d partitions", n)
		}
	}
}

// BenchmarkRerun is the idempotent pass over the same 432 partitions: it
// must plan no DDL.
func BenchmarkRerun(b *testing.B) {
	benchFresh(b)
	benchRun(b)
	for b.Loop() {
		rep := benchRun(b)
		for _, s := range rep.Shards {
			for _, t := range s.Tables {
				if len(t.Plan.Actions) > 0 || t.Ahead != 4 {
					b.Fatalf("re-run on %s %s: ahead %d, actions %v", s.Shard, t.Table, t.Ahead, summary(*t.Plan))
				}
			}
		}
	}
}
