package localpg

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// StartT starts clusters for one test and stops them when it ends. Where
// Postgres cannot start the test is skipped, except under CI=true, where it
// fails: in CI no integration test may skip.
func StartT(t testing.TB, opts Options) *Set {
	t.Helper()
	set, err := Start(context.Background(), opts)
	if err != nil {
		if InCI() {
			t.Fatalf("cannot start Postgres in CI: %v", err)
		}
		t.Skipf("cannot start Postgres: %v", err)
	}
	t.Cleanup(set.Stop)
	return set
}

// Main is a test binary's TestMain when its tests share clusters: it starts
// them (giving up after three minutes), calls run, which sets up what else
// the tests share and returns m.Run()'s code (or non-zero when its setup
// fails), stops the clusters and exits with that code. Where Postgres cannot
// start the binary's tests are skipped (exit 0), except under CI=true, where
// it fails: in CI no integration test may skip. An interrupt stops the
// clusters too.
func Main(m *testing.M, opts Options, run func(*Set) int) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	set, err := Start(ctx, opts)
	cancel()
	if err != nil {
		if InCI() {
			fmt.Fprintf(os.Stderr, "FAIL %s: cannot start Postgres in CI: %v\n", os.Args[0], err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "SKIP %s: cannot start Postgres: %v\n", os.Args[0], err)
		os.Exit(0)
	}
	set.StopOnSignal()
	code := run(set)
	set.Stop()
	os.Exit(code)
}
