package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// coordinatorDB is the coordinator database the tests create beside a
// cluster's own database.
const coordinatorDB = "shardproxy_coordinator"

// mergeCoordinatorRefused are the corpus queries that stay refused with a
// coordinator configured, with the reason (docs/routing.md lists them).
var mergeCoordinatorRefused = map[int]string{
	44: icuMergeTime, 45: icuMergeTime, 46: icuMergeTime, 47: icuMergeTime, 48: icuMergeTime,
}

// icuMergeTime: these are refused by the merge once the shards' columns are
// known (an ICU collation), not by the router, and only router refusals
// fall back to the coordinator.
const icuMergeTime = "text under an ICU collation is refused at merge time, after routing"

// mergeUndefined are queries whose rows Postgres itself does not define
// (row_number() OVER () numbers rows in scan order): their answers are
// compared column by column, each as a multiset.
var mergeUndefined = map[int]bool{225: true}

// byColumn turns r into one row per column value ("column: value"), so
// that a multiset comparison compares each column's multiset.
func byColumn(r *mergeResult) *mergeResult {
	out := &mergeResult{cols: []string{"column value"}, tolerant: []bool{false}, tag: r.tag}
	for _, row := range r.rows {
		for i, v := range row {
			out.rows = append(out.rows, []string{r.cols[i] + ": " + v})
		}
	}
	return out
}

// orderedAtTop reports whether sql has an ORDER BY outside parentheses: its
// rows come in a defined order (an ORDER BY inside OVER (...) or a
// subquery orders nothing the client sees).
func orderedAtTop(sql string) bool {
	u := strings.ToUpper(sql)
	depth := 0
	for i := 0; i < len(u); i++ {
		switch u[i] {
		case '(':
			depth++
		case ')':
			depth--
		case 'O':
			if depth == 0 && strings.HasPrefix(u[i:], "ORDER BY") {
				return true
			}
		}
	}
	return false
}

// checkMergeCoordinator is TestMergeOracle's second half (issue #17): a
// second proxy over the same shards, with a coordinator database on the
// plain Postgres's cluster, must answer every query the first proxy
// refuses (the corpus's "refuse" queries and the pending ones) exactly as
// the plain Postgres does, in both protocols: through the coordinator.
func checkMergeCoordinator(t *testing.T, oc *oracleCluster, corpus []mergeQuery, plain mergeConns, plainX mergeConns) {
	ctx := context.Background()
	cl := oc.set.Clusters[4]
	if err := cl.CreateDatabase(ctx, coordinatorDB); err != nil {
		t.Fatal(err)
	}
	addr := serveProxy(t, oc.config+fmt.Sprintf("coordinator: {dsn: %q}\n", cl.DSN(coordinatorDB)))
	url := "postgres://app@" + addr + "/" + oc.database + "?sslmode=disable"
	conns := map[string]mergeConns{
		"simple":   {proxy: oc.open(t, url, pgx.QueryExecModeSimpleProtocol), plain: plain.plain},
		"extended": {proxy: oc.open(t, url, pgx.QueryExecModeCacheStatement), plain: plainX.plain},
	}
	pending := readMergePending(t, corpus)
	var equal, refused int
	for _, q := range corpus {
		if q.expect != "refuse" && !pending[mergeKey{q.n, "simple"}] && !pending[mergeKey{q.n, "extended"}] {
			continue
		}
		for _, proto := range []string{"simple", "extended"} {
			c := conns[proto]
			name := fmt.Sprintf("query %d (%s:%d, %s protocol, coordinator)", q.n, mergeCorpus, q.line, proto)
			want, err := mergeRun(ctx, c.plain, q.sql)
			if err != nil {
				t.Errorf("%s: plain Postgres: %v", name, err)
				continue
			}
			got, err := mergeRun(ctx, c.proxy, q.sql)
			if reason, ok := mergeCoordinatorRefused[q.n]; ok {
				if code(err) != "0A000" {
					t.Errorf("%s: listed as refused with a coordinator (%s), got err=%v: remove it from mergeCoordinatorRefused if it answers", name, reason, err)
				}
				refused++
				continue
			}
			if err != nil {
				t.Errorf("%s: %v, want the plain Postgres's answer\n%s", name, err, q.sql)
				continue
			}
			if mergeUndefined[q.n] {
				got, want = byColumn(got), byColumn(want)
			}
			if diff, _ := mergeDiff(got, want, orderedAtTop(q.sql)); diff != "" {
				t.Errorf("%s: WRONG ANSWER\n%s\n%s", name, q.sql, diff)
				continue
			}
			equal++
		}
	}
	t.Logf("coordinator: %d answers equal to the plain Postgres's, %d refused as listed", equal, refused)
}
