package localpg

import (
	"context"
	"testing"
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
