// Command failoverbench measures a failover under load (make bench;
// docs/benchmarks.md): one shard, a primary and a streaming replica behind
// shardproxy (read_from: replicas, failover_buffer), writer and reader
// clients in a loop; the primary is killed, the replica promoted
// (pg_ctl promote, as an HA tool would). It prints writes and reads per
// interval, the time from the promotion to the first successful write on
// the promoted server, and the errors clients saw.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/router"
)

func main() {
	writers := flag.Int("writers", 4, "writing clients")
	readers := flag.Int("readers", 4, "reading clients")
	before := flag.Duration("before", 2*time.Second, "load before the primary is killed")
	gap := flag.Duration("gap", 500*time.Millisecond, "time between the kill and the promotion")
	after := flag.Duration("after", 3*time.Second, "load after the promotion")
	interval := flag.Duration("interval", 250*time.Millisecond, "reporting interval")
	health := flag.Duration("health", 100*time.Millisecond, "health check interval (failures: 2)")
	flag.Parse()
	if err := run(*writers, *readers, *before, *gap, *after, *interval, *health); err != nil {
		fmt.Fprintln(os.Stderr, "failoverbench:", err)
		os.Exit(1)
	}
}

type sample struct {
	at    time.Time
	write bool
	port  int
	err   error
}

func run(writers, readers int, before, gap, after, interval, health time.Duration) error {
	ctx := context.Background()
	set, err := localpg.Start(ctx, localpg.Options{N: 1, Database: "bench"})
	if err != nil {
		return err
	}
	defer set.Stop()
	set.StopOnSignal()
	prim := set.Clusters[0]
	c, err := pgx.Connect(ctx, prim.DSN("bench"))
	if err != nil {
		return err
	}
	if _, err := c.Exec(ctx, "CREATE TABLE IF NOT EXISTS w (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())"); err != nil {
		return err
	}
	c.Close(ctx)
	rep, err := set.StartReplica(ctx, prim, "bench-r1")
	if err != nil {
		return err
	}
	topo, err := router.NewTopology(&router.Config{Shards: []router.ShardConfig{{Name: "s0", DSN: prim.DSN("bench"),
		Replicas: []router.ReplicaConfig{{DSN: rep.DSN("bench")}}}}})
	if err != nil {
		return err
	}
	srv, err := proxy.New(proxy.Config{Database: "bench", BackendRoles: proxy.BackendRolesShared, Users: []proxy.User{{Name: "bench", Auth: "trust"}},
		Pool:     proxy.PoolConfig{Size: 16},
		Health:   proxy.HealthConfig{Interval: health, Timeout: time.Second, Failures: 2, Successes: 1},
		Replicas: proxy.ReplicasConfig{ReadFrom: "replicas", ReadYourWrites: "off", FailoverBuffer: 10 * time.Second}}, topo, nil)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go srv.Serve(pctx, ln)
	defer srv.Close()
	time.Sleep(time.Second) // the first probes put the replica in rotation
	url := "postgres://bench@" + ln.Addr().String() + "/bench?sslmode=disable"

	var mu sync.Mutex
	var samples []sample
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := func(write bool, mode pgx.QueryExecMode) error {
		cc, err := pgx.ParseConfig(url)
		if err != nil {
			return err
		}
		cc.DefaultQueryExecMode = mode
		conn, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			return err
		}
		sql := "SELECT count(*)::int * 0 + inet_server_port() FROM (SELECT 1) x"
		if write {
			sql = "WITH i AS (INSERT INTO w DEFAULT VALUES RETURNING id) SELECT inet_server_port() FROM i"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close(ctx)
			for {
				select {
				case <-stop:
					return
				default:
				}
				var p int
				err := conn.QueryRow(ctx, sql).Scan(&p)
				mu.Lock()
				samples = append(samples, sample{time.Now(), write, p, err})
				mu.Unlock()
				if err != nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
		return nil
	}
	modes := []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement}
	for i := 0; i < writers; i++ {
		if err := client(true, modes[i%2]); err != nil {
			return err
		}
	}
	for i := 0; i < readers; i++ {
		if err := client(false, modes[i%2]); err != nil {
			return err
		}
	}
	start := time.Now()
	time.Sleep(before)
	killed := time.Now()
	if err := prim.Kill(); err != nil {
		return err
	}
	time.Sleep(gap)
	if err := rep.Promote(ctx); err != nil {
		return err
	}
	promoted := time.Now()
	time.Sleep(after)
	close(stop)
	wg.Wait()

	sort.Slice(samples, func(i, j int) bool { return samples[i].at.Before(samples[j].at) })
	fmt.Printf("failover under load: %d writers, %d readers (simple and extended), health every %v, failures: 2\n",
		writers, readers, health)
	fmt.Printf("primary killed at %.2fs, promote returned at %.2fs\n", killed.Sub(start).Seconds(), promoted.Sub(start).Seconds())
	fmt.Printf("%8s %10s %10s %10s %10s\n", "t (s)", "writes/s", "write err", "reads/s", "read err")
	buckets := 0
	if len(samples) > 0 {
		buckets = int(samples[len(samples)-1].at.Sub(start)/interval) + 1
	}
	type bucket struct{ w, we, r, re int }
	bs := make([]bucket, buckets+2)
	var firstOK time.Time
	writeErrs, readErrs, writesOK, readsOK := 0, 0, 0, 0
	errKinds := map[string]int{}
	for _, s := range samples {
		k := int(s.at.Sub(start) / interval)
		if k < 0 || k >= len(bs) {
			continue
		}
		switch {
		case s.write && s.err != nil:
			bs[k].we++
			writeErrs++
			errKinds[s.err.Error()]++
		case s.write:
			bs[k].w++
			writesOK++
			if s.at.After(promoted) && s.port == rep.Port && firstOK.IsZero() {
				firstOK = s.at
			}
		case s.err != nil:
			bs[k].re++
			readErrs++
			errKinds["read: "+s.err.Error()]++
		default:
			bs[k].r++
			readsOK++
		}
	}
	per := float64(time.Second) / float64(interval)
	for k, b := range bs {
		if b == (bucket{}) {
			continue
		}
		fmt.Printf("%8.2f %10.0f %10d %10.0f %10d\n", (time.Duration(k) * interval).Seconds(), float64(b.w)*per, b.we, float64(b.r)*per, b.re)
	}
	fmt.Printf("writes: %d ok, %d failed; reads: %d ok, %d failed\n", writesOK, writeErrs, readsOK, readErrs)
	if firstOK.IsZero() {
		fmt.Println("no write reached the promoted server")
	} else {
		fmt.Printf("first write on the promoted server %v after promote returned (bar: under 2s); write gap from the kill %v\n",
			firstOK.Sub(promoted).Round(time.Millisecond), firstOK.Sub(killed).Round(time.Millisecond))
	}
	for e, n := range errKinds {
		fmt.Printf("  %d x %s\n", n, e)
	}
	return nil
}
