// Command copybench measures COPY through shardproxy: psql's \copy of N
// orders rows (text, then binary) through the proxy (in this process) into 4
// shards, against the same \copy straight into one plain Postgres,
// interleaved in one run; and COPY TO of the whole table through the proxy
// against 4 direct COPY TOs of each shard's part run in parallel. It prints
// rows/s, the ratio, the proxy's CPU per row (this process's CPU, from
// /proc) and its peak RSS. It is part of `make bench`.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/delivery"
	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/router"
)

func main() {
	rows := flag.Int("rows", 1_000_000, "orders rows to load")
	rounds := flag.Int("rounds", 2, "interleaved rounds")
	flag.Parse()
	if err := run(*rows, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "copybench:", err)
		os.Exit(1)
	}
}

type result struct{ secs, cpu, rss []float64 }

func run(n, rounds int) error {
	ctx := context.Background()
	set, err := localpg.Start(ctx, localpg.Options{N: 5, Database: "bench"})
	if err != nil {
		return err
	}
	defer set.Stop()
	set.StopOnSignal()
	stmts, err := parser.Parse(delivery.Schema)
	if err != nil {
		return err
	}
	for i := range set.Clusters {
		c, err := pgx.Connect(ctx, set.Clusters[i].DSN("bench"))
		if err != nil {
			return err
		}
		for _, st := range stmts {
			if _, err := c.Exec(ctx, st.SQL); err != nil {
				return fmt.Errorf("schema: %w", err)
			}
		}
		c.Close(ctx)
	}
	cfg := &router.Config{Tables: map[string]router.TableConfig{"orders": {Strategy: router.Hash, Key: "user_id"}}}
	for i := 0; i < 4; i++ {
		cfg.Shards = append(cfg.Shards, router.ShardConfig{Name: fmt.Sprintf("s%d", i), DSN: set.Clusters[i].DSN("bench")})
	}
	topo, err := router.NewTopology(cfg)
	if err != nil {
		return err
	}
	srv, err := proxy.New(proxy.Config{Database: "bench", BackendRoles: proxy.BackendRolesShared, Users: []proxy.User{{Name: "bench", Auth: "trust"}},
		Pool: proxy.PoolConfig{Size: 8}}, topo, nil)
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
	proxyURL := "postgres://bench@" + ln.Addr().String() + "/bench?sslmode=disable"
	plainURL := set.Clusters[4].DSN("bench")

	dir := set.Dir()
	text := filepath.Join(dir, "orders.txt")
	if err := writeOrders(text, n); err != nil {
		return err
	}
	bin := filepath.Join(dir, "orders.bin")
	truncate := func() error {
		for i := range set.Clusters {
			if _, err := psql(set.Clusters[i].DSN("bench"), "TRUNCATE orders"); err != nil {
				return err
			}
		}
		return nil
	}
	// The binary file comes from the plain Postgres.
	if err := truncate(); err != nil {
		return err
	}
	if _, err := psql(plainURL, fmt.Sprintf(`\copy orders FROM '%s'`, text)); err != nil {
		return err
	}
	if _, err := psql(plainURL, fmt.Sprintf(`\copy (SELECT * FROM orders) TO '%s' (FORMAT binary)`, bin)); err != nil {
		return err
	}

	res := map[string]*result{}
	add := func(k string, secs, cpu, rss float64) {
		if res[k] == nil {
			res[k] = &result{}
		}
		r := res[k]
		r.secs, r.cpu, r.rss = append(r.secs, secs), append(r.cpu, cpu), append(r.rss, rss)
	}
	for r := 0; r < rounds; r++ {
		for _, f := range []struct{ name, file, opts string }{{"text", text, ""}, {"binary", bin, "(FORMAT binary)"}} {
			for _, t := range []struct{ name, url string }{{"direct", plainURL}, {"proxy", proxyURL}} {
				if err := truncate(); err != nil {
					return err
				}
				resetPeak()
				cpu0, t0 := procCPU(), time.Now()
				out, err := psql(t.url, fmt.Sprintf(`\copy orders FROM '%s' %s`, f.file, f.opts))
				if err != nil {
					return err
				}
				if !strings.Contains(out, "COPY "+strconv.Itoa(n)) {
					return fmt.Errorf("%s %s: %s", t.name, f.name, out)
				}
				secs := time.Since(t0).Seconds()
				add("from "+f.name+" "+t.name, secs, (procCPU() - cpu0).Seconds(), peakRSS())
				fmt.Printf("  round %d COPY FROM %-6s %-6s %6.2f s  %9.0f rows/s\n", r+1, f.name, t.name, secs, float64(n)/secs)
			}
		}
		// COPY TO: the proxy over 4 shards against the 4 shards' parts
		// copied out directly in parallel (the table was last loaded
		// through the proxy).
		resetPeak()
		cpu0, t0 := procCPU(), time.Now()
		if out, err := psql(proxyURL, `\copy (SELECT * FROM orders) TO '/dev/null'`); err != nil || !strings.Contains(out, "COPY "+strconv.Itoa(n)) {
			return fmt.Errorf("COPY TO through the proxy: %v %s", err, out)
		}
		secs := time.Since(t0).Seconds()
		add("to text proxy", secs, (procCPU() - cpu0).Seconds(), peakRSS())
		t0 = time.Now()
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				_, errs[i] = psql(set.Clusters[i].DSN("bench"), `\copy (SELECT * FROM orders) TO '/dev/null'`)
			}(i)
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		add("to text direct", time.Since(t0).Seconds(), 0, 0)
		fmt.Printf("  round %d COPY TO proxy %.2f s, 4 shards direct in parallel %.2f s\n", r+1, secs, time.Since(t0).Seconds())
	}
	fmt.Printf("\n%d rows, %d rounds (means)\n\n| COPY | target | rows/s | ratio to direct | proxy CPU us/row | proxy peak RSS MB |\n|---|---|---|---|---|---|\n", n, rounds)
	for _, op := range []string{"from text", "from binary", "to text"} {
		d := res[op+" direct"]
		for _, t := range []string{"direct", "proxy"} {
			x := res[op+" "+t]
			rate := float64(n) / mean(x.secs)
			cpu, rss := "-", "-"
			if t == "proxy" {
				cpu = fmt.Sprintf("%.2f", mean(x.cpu)*1e6/float64(n))
				rss = fmt.Sprintf("%.0f", mean(x.rss))
			}
			fmt.Printf("| %s | %s | %.0f | %.2f | %s | %s |\n", op, t, rate, mean(d.secs)/mean(x.secs), cpu, rss)
		}
	}
	return nil
}

// writeOrders writes n orders rows in COPY text format, users spread over
// 100000 ids, dates over 2025.
func writeOrders(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	statuses := []string{"new", "paid", "delivered", "cancelled"}
	for i := 1; i <= n; i++ {
		ts := base.Add(time.Duration(i%365*24) * time.Hour).Format("2006-01-02 15:04:05+00")
		fmt.Fprintf(w, "%d\t%d\t%d\t%d.%02d\t%s\t%s\n", i, i*7919%100000, i%500, i%200, i%100, statuses[i%4], ts)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

func psql(url, cmd string) (string, error) {
	out, err := exec.Command("psql", "-X", "-v", "ON_ERROR_STOP=1", url, "-c", cmd).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql %s: %v\n%s", cmd, err, out)
	}
	return string(out), nil
}

// procCPU is this process's CPU time (utime+stime) from /proc.
func procCPU() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// resetPeak resets this process's peak RSS (VmHWM).
func resetPeak() { os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS is this process's peak RSS in MB since resetPeak.
func peakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}
