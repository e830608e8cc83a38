// Command pgbenchcmp runs pgbench against one Postgres shard directly,
// through shardproxy (in this process, one-shard config) and through
// PgBouncer in transaction mode when it is installed, interleaved in one run,
// and prints TPS ratios and each middleman's CPU microseconds per
// transaction (from /proc). It is `make bench`'s end-to-end half.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/shardproxy/shardproxy/certs"
	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/resultcache"
	"github.com/shardproxy/shardproxy/router"
)

func main() {
	clients := flag.String("clients", "8,32", "pgbench client counts")
	secs := flag.Int("T", 8, "seconds per pgbench run")
	rounds := flag.Int("rounds", 2, "interleaved rounds per target")
	scale := flag.Int("scale", 10, "pgbench scale")
	modes := flag.String("modes", "simple,extended,prepared", "pgbench -M modes")
	replicas := flag.Int("replicas", 0, "also start this many streaming replicas and a proxy that reads from them")
	cpuprofile := flag.String("cpuprofile", "", "write the proxy's CPU profile (whole run) to this file")
	withTLS := flag.Bool("tls", true, "also run pgbench through shardproxy over TLS (sslmode=require), to compare the proxy's CPU per transaction")
	flag.Parse()
	if *holdIdle != "" {
		if err := runHoldIdle(*holdIdle, *idleConns); err != nil {
			os.Exit(1)
		}
		return
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if err := run(*clients, *modes, *secs, *rounds, *scale, *replicas, *withTLS); err != nil {
		fmt.Fprintln(os.Stderr, "pgbenchcmp:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// consolidate sets the proxy's cache.consolidate.
var consolidate = flag.Bool("consolidate", true, "the proxy consolidates identical reads in flight (its default)")

type target struct {
	name string
	url  string
	cpu  func() time.Duration // middleman CPU so far; nil for direct
	pid  int                  // middleman process; 0 for direct
}

func run(clientList, modeList string, secs, rounds, scale, replicas int, withTLS bool) error {
	ctx := context.Background()
	set, err := localpg.Start(ctx, localpg.Options{N: 1, Database: "bench", Settings: map[string]string{"max_connections": strconv.Itoa(maxConnections())}})
	if err != nil {
		return err
	}
	defer set.Stop()
	set.StopOnSignal()
	shard := set.Clusters[0]
	fmt.Printf("initialising pgbench scale %d ...\n", scale)
	if out, err := exec.Command("pgbench", "-i", "-q", "-s", strconv.Itoa(scale), shard.DSN("bench")).CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %v\n%s", err, out)
	}

	topo, err := router.NewTopology(&router.Config{Shards: []router.ShardConfig{{Name: "s0", DSN: shard.DSN("bench")}}})
	if err != nil {
		return err
	}
	cfg := proxy.Config{Database: "bench", BackendRoles: proxy.BackendRolesShared, Users: []proxy.User{{Name: "bench", Auth: "trust"}},
		Pool: proxy.PoolConfig{Size: 16}, Cache: resultcache.Config{Consolidate: consolidate}}
	if withTLS {
		// allow: the same server answers the plaintext and the TLS target.
		files, err := certs.Generate(filepath.Join(set.Dir(), "certs"), []string{"127.0.0.1"}, 24*time.Hour)
		if err != nil {
			return err
		}
		cfg.TLS = proxy.TLSConfig{Cert: files.Cert, Key: files.Key, Mode: "allow"}
	}
	srv, err := proxy.New(cfg, topo, nil)
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

	targets := []target{
		{name: "direct", url: shard.DSN("bench")},
		{name: "shardproxy", url: "postgres://bench@" + ln.Addr().String() + "/bench?sslmode=disable", cpu: func() time.Duration { return procCPU(os.Getpid()) }, pid: os.Getpid()},
	}
	if replicas > 0 {
		t, stop, err := replicaProxy(ctx, set, shard, replicas)
		if err != nil {
			return err
		}
		defer stop()
		targets = append(targets, t)
	}
	if withTLS {
		targets = append(targets, target{name: "proxy+tls", url: "postgres://bench@" + ln.Addr().String() + "/bench?sslmode=require",
			cpu: func() time.Duration { return procCPU(os.Getpid()) }})
	}
	if pb, stop, err := startPgbouncer(set.Dir(), shard.Port); err == nil {
		defer stop()
		targets = append(targets, pb)
	} else {
		fmt.Println("pgbouncer not used:", err)
	}

	if cs := atoiList(*latencyClients); len(cs) > 0 {
		pids := map[string]int{}
		for _, t := range targets {
			if t.pid != 0 {
				pids[t.name] = t.pid
			}
		}
		latencyTable(targets, strings.Split(modeList, ","), cs, secs, pids)
		return nil
	}
	type key struct {
		target, mode string
		clients      int
	}
	tps := map[key][]float64{}
	cpu := map[key][]float64{}
	for _, mode := range strings.Split(modeList, ",") {
		for _, cs := range strings.Split(clientList, ",") {
			c, _ := strconv.Atoi(cs)
			for r := 0; r < rounds; r++ {
				for _, t := range targets {
					var before time.Duration
					if t.cpu != nil {
						before = t.cpu()
					}
					x, n, err := pgbench(t.url, mode, c, secs)
					if err != nil {
						fmt.Printf("%s -M %s -c %d: %v\n", t.name, mode, c, err)
						continue
					}
					k := key{t.name, mode, c}
					tps[k] = append(tps[k], x)
					if t.cpu != nil && n > 0 {
						cpu[k] = append(cpu[k], float64((t.cpu()-before).Microseconds())/float64(n))
					}
					fmt.Printf("  %-10s -M %-8s -c %-3d round %d: %8.0f tps\n", t.name, mode, c, r+1, x)
				}
			}
		}
	}
	fmt.Printf("\n| mode | clients | target | TPS | ratio to direct | CPU us/tx |\n|---|---|---|---|---|---|\n")
	for _, mode := range strings.Split(modeList, ",") {
		for _, cs := range strings.Split(clientList, ",") {
			c, _ := strconv.Atoi(cs)
			d := mean(tps[key{"direct", mode, c}])
			for _, t := range targets {
				k := key{t.name, mode, c}
				if len(tps[k]) == 0 {
					continue
				}
				cp := "-"
				if v := cpu[k]; len(v) > 0 {
					cp = fmt.Sprintf("%.1f", mean(v))
				}
				fmt.Printf("| %s | %d | %s | %.0f | %.2f | %s |\n", mode, c, t.name, mean(tps[k]), mean(tps[k])/d, cp)
			}
		}
	}
	return nil
}

// replicaProxy starts n streaming replicas of shard and a second proxy
// (in this process) whose reads go to them, round robin.
func replicaProxy(ctx context.Context, set *localpg.Set, shard *localpg.Cluster, n int) (target, func(), error) {
	sc := router.ShardConfig{Name: "s0", DSN: shard.DSN("bench")}
	for i := 0; i < n; i++ {
		r, err := set.StartReplica(ctx, shard, fmt.Sprintf("%s-r%d", shard.Name, i+1))
		if err != nil {
			return target{}, nil, err
		}
		sc.Replicas = append(sc.Replicas, router.ReplicaConfig{DSN: r.DSN("bench")})
	}
	topo, err := router.NewTopology(&router.Config{Shards: []router.ShardConfig{sc}})
	if err != nil {
		return target{}, nil, err
	}
	srv, err := proxy.New(proxy.Config{Database: "bench", BackendRoles: proxy.BackendRolesShared, Users: []proxy.User{{Name: "bench", Auth: "trust"}},
		Pool: proxy.PoolConfig{Size: 16}, Health: proxy.HealthConfig{Interval: 500 * time.Millisecond},
		Replicas: proxy.ReplicasConfig{ReadFrom: "replicas", ReadYourWrites: "off"}}, topo, nil)
	if err != nil {
		return target{}, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return target{}, nil, err
	}
	go srv.Serve(ctx, ln)
	time.Sleep(2 * time.Second) // the first probes put the replicas in rotation
	return target{name: fmt.Sprintf("proxy+%dr", n), url: "postgres://bench@" + ln.Addr().String() + "/bench?sslmode=disable",
		cpu: func() time.Duration { return procCPU(os.Getpid()) }}, srv.Close, nil
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
var txRE = regexp.MustCompile(`number of transactions actually processed: (\d+)`)

func pgbench(url, mode string, clients, secs int) (float64, int64, error) {
	cmd := exec.Command("pgbench", "-n", "-S", "-M", mode, "-c", strconv.Itoa(clients), "-j", "2", "-T", strconv.Itoa(secs), url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("%v: %s", err, lastLines(string(out), 5))
	}
	m := tpsRE.FindStringSubmatch(string(out))
	n := txRE.FindStringSubmatch(string(out))
	if m == nil || n == nil {
		return 0, 0, fmt.Errorf("unexpected pgbench output: %s", lastLines(string(out), 5))
	}
	x, _ := strconv.ParseFloat(m[1], 64)
	tx, _ := strconv.ParseInt(n[1], 10, 64)
	return x, tx, nil
}

func startPgbouncer(dir string, shardPort int) (target, func(), error) {
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/pgbouncer"); err2 != nil {
			return target{}, nil, err
		}
		bin = "/usr/sbin/pgbouncer"
	}
	port, err := localpg.FreePort()
	if err != nil {
		return target{}, nil, err
	}
	pbDir := filepath.Join(dir, "pgbouncer")
	os.MkdirAll(pbDir, 0o777)
	os.Chmod(pbDir, 0o777)
	os.WriteFile(filepath.Join(pbDir, "users.txt"), []byte(`"bench" ""`+"\n"), 0o644)
	ini := fmt.Sprintf(`[databases]
bench = host=127.0.0.1 port=%d dbname=bench user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s/users.txt
pool_mode = transaction
default_pool_size = 16
max_client_conn = %d
logfile = %s/pgbouncer.log
pidfile = %s/pgbouncer.pid
`, shardPort, port, pbDir, 500+*idleConns+maxConnections(), pbDir, pbDir)
	os.WriteFile(filepath.Join(pbDir, "pgbouncer.ini"), []byte(ini), 0o644)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		// runuser's PAM session resets the open files limit to 1024:
		// raise it again for the thousands of clients of -latency/-idle.
		cmd = exec.Command("runuser", "-u", "postgres", "--", "sh", "-c", `ulimit -n "$(ulimit -Hn)"; exec "$0" "$1"`, bin, filepath.Join(pbDir, "pgbouncer.ini"))
	} else {
		cmd = exec.Command(bin, filepath.Join(pbDir, "pgbouncer.ini"))
	}
	if err := cmd.Start(); err != nil {
		return target{}, nil, err
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait(); exec.Command("pkill", "-f", pbDir).Run() }
	var pid int
	for i := 0; i < 50; i++ {
		time.Sleep(100 * time.Millisecond)
		if b, err := os.ReadFile(filepath.Join(pbDir, "pgbouncer.pid")); err == nil {
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			if pid > 0 {
				break
			}
		}
	}
	if pid == 0 {
		// runuser keeps pgbouncer as a child; fall back to pgrep.
		out, _ := exec.Command("pgrep", "-f", filepath.Join(pbDir, "pgbouncer.ini")).Output()
		for _, f := range strings.Fields(string(out)) {
			if p, _ := strconv.Atoi(f); p > 0 && p != cmd.Process.Pid {
				pid = p
			}
		}
	}
	if pid == 0 {
		stop()
		return target{}, nil, fmt.Errorf("pgbouncer did not start (see %s/pgbouncer.log)", pbDir)
	}
	return target{name: "pgbouncer", url: fmt.Sprintf("postgres://bench@127.0.0.1:%d/bench?sslmode=disable", port),
		cpu: func() time.Duration { return procCPU(pid) }, pid: pid}, stop, nil
}

// procCPU reads utime+stime of a process from /proc/PID/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
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

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// maxConnections is the shard's max_connections: enough for the largest
// pgbench client count asked for when the clients connect directly.
func maxConnections() int {
	n := 300
	for _, c := range atoiList(*latencyClients) {
		if c+50 > n {
			n = c + 50
		}
	}
	return n
}
