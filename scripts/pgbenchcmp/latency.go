package main

// The latency table: pgbench -S with per-transaction logs (-l) from 1 to
// 1,000 clients in the three protocol modes, direct vs shardproxy vs
// PgBouncer, p50 and p99 from the logged latencies; then N idle client
// connections opened against each middleman from a child process (so the
// holder's own memory is not counted), the middleman's RSS per idle
// connection, and one more run with the idle connections present.

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

var (
	latencyClients = flag.String("latency", "", "also print a latency table (p50/p99) for these client counts, e.g. 1,10,100,1000")
	idleConns      = flag.Int("idle", 0, "with -latency: open this many idle connections to each middleman, report its memory per connection and rerun with them present")
	holdIdle       = flag.String("hold-idle", "", "internal: connect -idle connections to this URL and wait for stdin to close")
)

// latencyRun is one pgbench run's figures.
type latencyRun struct {
	tps      float64
	p50, p99 time.Duration
	cpuPerTx float64 // middleman us/tx, 0 for direct
}

// pgbenchLatency runs pgbench -S with -l into a temporary directory and
// returns TPS and the latency percentiles of every logged transaction.
func pgbenchLatency(url, mode string, clients, secs int) (latencyRun, int64, error) {
	dir, err := os.MkdirTemp("", "pgbenchlat")
	if err != nil {
		return latencyRun{}, 0, err
	}
	defer os.RemoveAll(dir)
	jobs := 2
	if clients < jobs {
		jobs = clients
	}
	if clients >= 500 && secs < 15 {
		secs = 15 // connecting a thousand clients directly takes seconds of the run
	}
	cmd := exec.Command("pgbench", "-n", "-S", "-M", mode, "-c", strconv.Itoa(clients), "-j", strconv.Itoa(jobs),
		"-T", strconv.Itoa(secs), "-l", "--log-prefix", filepath.Join(dir, "log"), url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return latencyRun{}, 0, fmt.Errorf("%v: %s", err, lastLines(string(out), 5))
	}
	m := tpsRE.FindStringSubmatch(string(out))
	n := txRE.FindStringSubmatch(string(out))
	if m == nil || n == nil {
		return latencyRun{}, 0, fmt.Errorf("unexpected pgbench output: %s", lastLines(string(out), 5))
	}
	var r latencyRun
	r.tps, _ = strconv.ParseFloat(m[1], 64)
	tx, _ := strconv.ParseInt(n[1], 10, 64)
	files, _ := filepath.Glob(filepath.Join(dir, "log*"))
	var lat []int64
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return r, tx, err
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			// client_id transaction_no time script_no time_epoch time_us
			fs := strings.Fields(sc.Text())
			if len(fs) < 3 {
				continue
			}
			if us, err := strconv.ParseInt(fs[2], 10, 64); err == nil {
				lat = append(lat, us)
			}
		}
		fh.Close()
	}
	if len(lat) == 0 {
		return r, tx, fmt.Errorf("pgbench wrote no transaction log")
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration {
		return time.Duration(lat[int(p*float64(len(lat)-1))]) * time.Microsecond
	}
	r.p50, r.p99 = pct(0.50), pct(0.99)
	return r, tx, nil
}

// latencyTable runs the grid over targets and prints it as markdown.
func latencyTable(targets []target, modes []string, clients []int, secs int, pids map[string]int) {
	type key struct {
		target, mode string
		clients      int
	}
	res := map[key]latencyRun{}
	one := func(t target, mode string, c int) (latencyRun, bool) {
		var before time.Duration
		if t.cpu != nil {
			before = t.cpu()
		}
		r, n, err := pgbenchLatency(t.url, mode, c, secs)
		if err != nil {
			fmt.Printf("  %s -M %s -c %d: %v\n", t.name, mode, c, err)
			return r, false
		}
		if t.cpu != nil && n > 0 {
			r.cpuPerTx = float64((t.cpu() - before).Microseconds()) / float64(n)
		}
		fmt.Printf("  %-10s -M %-8s -c %-4d %8.0f tps  p50 %v  p99 %v\n", t.name, mode, c, r.tps, r.p50, r.p99)
		return r, true
	}
	for _, mode := range modes {
		for _, c := range clients {
			for _, t := range targets {
				if r, ok := one(t, mode, c); ok {
					res[key{t.name, mode, c}] = r
				}
			}
		}
	}
	fmt.Printf("\n| mode | clients | target | TPS | p50 ms | p99 ms | CPU us/tx |\n|---|---|---|---|---|---|---|\n")
	for _, mode := range modes {
		for _, c := range clients {
			for _, t := range targets {
				r, ok := res[key{t.name, mode, c}]
				if !ok {
					fmt.Printf("| %s | %d | %s | fails | | | |\n", mode, c, t.name)
					continue
				}
				cp := "-"
				if r.cpuPerTx > 0 {
					cp = fmt.Sprintf("%.1f", r.cpuPerTx)
				}
				fmt.Printf("| %s | %d | %s | %.0f | %.3f | %.3f | %s |\n", mode, c, t.name, r.tps,
					float64(r.p50.Microseconds())/1000, float64(r.p99.Microseconds())/1000, cp)
			}
		}
	}
	if *idleConns <= 0 {
		return
	}
	fmt.Printf("\n| target | idle connections | RSS before MB | RSS with idle MB | KiB per connection | extended -c 10 TPS | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|---|\n")
	for _, t := range targets {
		pid, ok := pids[t.name]
		if !ok {
			continue // direct: Postgres forks a backend per connection
		}
		before := procRSS(pid)
		var m0, m1 runtime.MemStats
		if pid == os.Getpid() {
			runtime.GC()
			runtime.ReadMemStats(&m0)
		}
		stop, err := holdIdleConns(t.url, *idleConns)
		if err != nil {
			fmt.Printf("| %s | %d | %s | | | | | |\n", t.name, *idleConns, err)
			continue
		}
		time.Sleep(2 * time.Second)
		after := procRSS(pid)
		if pid == os.Getpid() {
			runtime.GC()
			runtime.ReadMemStats(&m1)
			fmt.Printf("  %s: per idle connection %.1f KiB of goroutine stacks, %.1f KiB of live heap\n", t.name,
				float64(m1.StackInuse-m0.StackInuse)/1024/float64(*idleConns), float64(m1.HeapInuse-m0.HeapInuse)/1024/float64(*idleConns))
		}
		r, ok := one(t, "extended", 10)
		stop()
		row := fmt.Sprintf("| %s | %d | %.1f | %.1f | %.1f |", t.name, *idleConns, float64(before)/(1<<20), float64(after)/(1<<20),
			float64(after-before)/1024/float64(*idleConns))
		if ok {
			row += fmt.Sprintf(" %.0f | %.3f | %.3f |", r.tps, float64(r.p50.Microseconds())/1000, float64(r.p99.Microseconds())/1000)
		} else {
			row += " fails | | |"
		}
		fmt.Println(row)
	}
}

// holdIdleConns starts this program as a child that opens n connections
// to url and keeps them idle until its stdin closes.
func holdIdleConns(url string, n int) (func(), error) {
	cmd := exec.Command(os.Args[0], "-hold-idle", url, "-idle", strconv.Itoa(n))
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() { in.Close(); cmd.Wait() }
	line, err := bufio.NewReader(outp).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		stop()
		return nil, fmt.Errorf("idle holder: %q %v", line, err)
	}
	return stop, nil
}

// runHoldIdle is the child's side of holdIdleConns.
func runHoldIdle(url string, n int) error {
	ctx := context.Background()
	conns := make([]*pgconn.PgConn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := pgconn.Connect(ctx, url)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
		}(i)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		fmt.Printf("error %v\n", err)
		return err
	}
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
	for _, c := range conns {
		c.Close(ctx)
	}
	return nil
}

// procRSS reads VmRSS of a process in bytes.
func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func atoiList(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}
