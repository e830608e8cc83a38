// Command twopcbench measures what two-phase commit costs: pgbench with a
// custom script through shardproxy on 4 local shards, a transaction that
// updates two rows of one user (one shard, plain COMMIT) against one that
// updates one row of each of two users on different shards (two-phase
// commit), interleaved in one run; TPS, their ratio and the proxy's CPU per
// transaction. Then the time recovery takes to resolve 100 transactions
// left in doubt by a crash. It is part of `make bench`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/router"
)

func main() {
	clients := flag.Int("c", 8, "pgbench clients")
	secs := flag.Int("T", 8, "seconds per pgbench run")
	rounds := flag.Int("rounds", 2, "interleaved rounds")
	users := flag.Int("users", 10000, "users (rows per slot)")
	flag.Parse()
	if err := run(*clients, *secs, *rounds, *users); err != nil {
		fmt.Fprintln(os.Stderr, "twopcbench:", err)
		os.Exit(1)
	}
}

const shards = 4

func run(clients, secs, rounds, users int) error {
	ctx := context.Background()
	set, err := localpg.Start(ctx, localpg.Options{N: shards, Database: "bench", Settings: map[string]string{"max_connections": "300"}})
	if err != nil {
		return err
	}
	defer set.Stop()
	set.StopOnSignal()
	cfg := &router.Config{Tables: map[string]router.TableConfig{
		"counters": {Strategy: "hash", Key: "user_id"},
		"pairs":    {Strategy: "reference"},
	}}
	for i, c := range set.Clusters {
		cfg.Shards = append(cfg.Shards, router.ShardConfig{Name: fmt.Sprintf("s%d", i), DSN: c.DSN("bench")})
	}
	topo, err := router.NewTopology(cfg)
	if err != nil {
		return err
	}
	srv, err := proxy.New(proxy.Config{Database: "bench", BackendRoles: proxy.BackendRolesShared, Users: []proxy.User{{Name: "bench", Auth: "trust"}},
		Pool: proxy.PoolConfig{Size: 16}, TwoPhase: proxy.TwoPhaseConfig{RecoveryInterval: time.Hour}}, topo, nil)
	if err != nil {
		return err
	}
	srv.Warm(ctx)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go srv.Serve(ctx, ln)
	defer srv.Close()
	url := "postgres://bench@" + ln.Addr().String() + "/bench?sslmode=disable"

	// counters: two slots per user; pairs (a reference table): for each i,
	// a user a and a user b on another shard.
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	for _, q := range []string{
		"CREATE TABLE counters (user_id bigint, slot int, n bigint NOT NULL DEFAULT 0, PRIMARY KEY (user_id, slot))",
		"CREATE TABLE pairs (i int PRIMARY KEY, a bigint NOT NULL, b bigint NOT NULL)",
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			return err
		}
	}
	fmt.Printf("loading %d users ...\n", users)
	var rows [][]any
	for u := 1; u <= users; u++ {
		rows = append(rows, []any{int64(u), 1}, []any{int64(u), 2})
	}
	for lo := 0; lo < len(rows); lo += 1000 {
		hi := min(lo+1000, len(rows))
		var sb strings.Builder
		sb.WriteString("INSERT INTO counters (user_id, slot) VALUES ")
		for i, r := range rows[lo:hi] {
			if i > 0 {
				sb.WriteString(",")
			}
			fmt.Fprintf(&sb, "(%d,%d)", r[0], r[1])
		}
		if _, err := c.Exec(ctx, sb.String()); err != nil {
			return err
		}
	}
	var sb strings.Builder
	sb.WriteString("INSERT INTO pairs (i, a, b) VALUES ")
	n := 0
	for a := int64(1); a <= int64(users); a++ {
		b := a + 1
		for router.PartitionOf(router.HashInt(b), shards) == router.PartitionOf(router.HashInt(a), shards) {
			b++
		}
		if b > int64(users) {
			break
		}
		if n > 0 {
			sb.WriteString(",")
		}
		n++
		fmt.Fprintf(&sb, "(%d,%d,%d)", n, a, b)
	}
	if _, err := c.Exec(ctx, sb.String()); err != nil {
		return err
	}
	c.Close(ctx)

	dir, err := os.MkdirTemp("", "twopcbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	scripts := map[string]string{
		"one-shard": fmt.Sprintf(`\set i random(1, %d)
SELECT a, b FROM pairs WHERE i = :i \gset
BEGIN;
UPDATE counters SET n = n + 1 WHERE user_id = :a AND slot = 1;
UPDATE counters SET n = n + 1 WHERE user_id = :a AND slot = 2;
COMMIT;
`, n),
		"two-shard": fmt.Sprintf(`\set i random(1, %d)
SELECT a, b FROM pairs WHERE i = :i \gset
BEGIN;
UPDATE counters SET n = n + 1 WHERE user_id = :a AND slot = 1;
UPDATE counters SET n = n + 1 WHERE user_id = :b AND slot = 1;
COMMIT;
`, n),
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name+".sql"), []byte(body), 0o644); err != nil {
			return err
		}
	}
	names := []string{"one-shard", "two-shard"}
	tps := map[string][]float64{}
	cpu := map[string][]float64{}
	for r := 0; r < rounds; r++ {
		for _, name := range names {
			before := procCPU(os.Getpid())
			x, tx, err := pgbench(url, filepath.Join(dir, name+".sql"), clients, secs)
			if err != nil {
				return err
			}
			tps[name] = append(tps[name], x)
			if tx > 0 {
				cpu[name] = append(cpu[name], float64((procCPU(os.Getpid())-before).Microseconds())/float64(tx))
			}
			fmt.Printf("  %-10s round %d: %8.0f tps\n", name, r+1, x)
		}
	}
	fmt.Printf("\n| transaction | TPS | ratio to one-shard | proxy CPU us/tx |\n|---|---|---|---|\n")
	for _, name := range names {
		fmt.Printf("| %s | %.0f | %.2f | %.1f |\n", name, mean(tps[name]), mean(tps[name])/mean(tps["one-shard"]), mean(cpu[name]))
	}
	st := srv.TwoPhaseStats()
	fmt.Printf("\ntwo-phase commits: %d, aborts: %d\n", st.Commits, st.Aborts)
	return recoveryTime(ctx, srv, url)
}

// recoveryTime leaves 100 transactions prepared on every shard but the
// decider (a crash after the PREPAREs) and times one recovery pass.
func recoveryTime(ctx context.Context, srv *proxy.Server, url string) error {
	crash := errors.New("crash")
	srv.SetFaultHook(func(point string, shard int) error {
		if point == "decided" {
			return crash
		}
		return nil
	})
	for i := 0; i < 100; i++ {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		for u := int64(1); u <= 8; u++ {
			if _, err := tx.Exec(ctx, "UPDATE counters SET n = n + 1 WHERE user_id = $1 AND slot = 2", u+int64(i)*8); err != nil {
				return err
			}
		}
		tx.Commit(ctx) // fails: the proxy "crashed" after the decision
		c.Close(ctx)
	}
	srv.SetFaultHook(nil)
	time.Sleep(200 * time.Millisecond) // the shards notice the dropped connections
	t := time.Now()
	n, err := srv.Recover(ctx)
	if err != nil {
		return err
	}
	if left := srv.TwoPhaseStats().InDoubt; left != 0 {
		return fmt.Errorf("%d prepared transactions left after recovery", left)
	}
	fmt.Printf("recovery: %d prepared transactions (100 distributed transactions) resolved in %v\n", n, time.Since(t).Round(time.Millisecond))
	return nil
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
var txRE = regexp.MustCompile(`number of transactions actually processed: (\d+)`)

func pgbench(url, script string, clients, secs int) (float64, int64, error) {
	out, err := exec.Command("pgbench", "-n", "-f", script, "-c", strconv.Itoa(clients), "-j", "2",
		"-T", strconv.Itoa(secs), url).CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("pgbench: %v\n%s", err, out)
	}
	m := tpsRE.FindSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("no tps in pgbench output:\n%s", out)
	}
	x, _ := strconv.ParseFloat(string(m[1]), 64)
	var n int64
	if t := txRE.FindSubmatch(out); t != nil {
		n, _ = strconv.ParseInt(string(t[1]), 10, 64)
	}
	return x, n, nil
}

// procCPU is the user+system CPU time of process pid.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * time.Second / 100
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}
