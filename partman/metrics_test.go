package partman

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// gather renders every sample as `name{l="v",...} value`, sorted.
func gather(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := m.GetGauge().GetValue()
			if m.GetCounter() != nil {
				v = m.GetCounter().GetValue()
			}
			out = append(out, fmt.Sprintf("%s{%s} %g", mf.GetName(), strings.Join(ls, ","), v))
		}
	}
	sort.Strings(out)
	return out
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.Observe(Report{Now: ts("2026-01-15T00:00:00Z"), Shards: []ShardResult{
		{Shard: "s0", Tables: []TableResult{{Table: "orders", Created: []string{"a", "b"}, Detached: []string{"c"}, MovedRows: 3,
			DefaultRows: 1, Ahead: 4, Partitions: []Partition{{}}}}},
		{Shard: "s1", Err: errors.New("down")},
		{Shard: "s2", Tables: []TableResult{{Table: "orders", Problems: []string{"overlap"}, Ahead: -1, Partitions: []Partition{{}}}}},
		{Shard: "s3", Tables: []TableResult{{Table: "orders", Locked: true, DefaultRows: -1, Ahead: -1}}},
	}})
	want := []string{
		`shardproxy_partman_default_rows{shard="s0",table="orders"} 1`,
		`shardproxy_partman_default_rows{shard="s2",table="orders"} 0`,
		`shardproxy_partman_default_rows_moved_total{shard="s0",table="orders"} 3`,
		`shardproxy_partman_default_rows_moved_total{shard="s2",table="orders"} 0`,
		`shardproxy_partman_default_rows_moved_total{shard="s3",table="orders"} 0`,
		`shardproxy_partman_failures_total{shard="s1",table=""} 1`,
		`shardproxy_partman_failures_total{shard="s2",table="orders"} 1`,
		`shardproxy_partman_last_success_timestamp_seconds{shard="s0",table="orders"} 1.7684352e+09`,
		`shardproxy_partman_partitions_created_total{shard="s0",table="orders"} 2`,
		`shardproxy_partman_partitions_created_total{shard="s2",table="orders"} 0`,
		`shardproxy_partman_partitions_created_total{shard="s3",table="orders"} 0`,
		`shardproxy_partman_partitions_removed_total{mode="detach",shard="s0",table="orders"} 1`,
		`shardproxy_partman_partitions_removed_total{mode="detach",shard="s2",table="orders"} 0`,
		`shardproxy_partman_partitions_removed_total{mode="detach",shard="s3",table="orders"} 0`,
		`shardproxy_partman_partitions_removed_total{mode="drop",shard="s0",table="orders"} 0`,
		`shardproxy_partman_partitions_removed_total{mode="drop",shard="s2",table="orders"} 0`,
		`shardproxy_partman_partitions_removed_total{mode="drop",shard="s3",table="orders"} 0`,
		`shardproxy_partman_periods_ahead{shard="s0",table="orders"} 4`,
		`shardproxy_partman_periods_ahead{shard="s2",table="orders"} -1`,
	}
	sort.Strings(want)
	if got := gather(t, reg); !reflect.DeepEqual(got, want) {
		t.Fatalf("metrics:\n%s", strings.Join(got, "\n"))
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("registering twice should fail")
	}
}
