package localpg

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestRelativeDir: a relative Dir (make demo's .demo) is where the
// clusters land, although the Postgres tools run in another directory.
func TestRelativeDir(t *testing.T) {
	work := t.TempDir()
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(work)
	set, err := Start(context.Background(), Options{N: 1, Dir: "rel/shards", Database: "probe"})
	if err != nil {
		if InCI() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	defer set.Stop()
	if _, err := os.Stat(filepath.Join(work, "rel", "shards", "shard0", "PG_VERSION")); err != nil {
		t.Fatalf("cluster not under the relative directory: %v (set dir %s)", err, set.Dir())
	}
	if !filepath.IsAbs(set.Dir()) {
		t.Fatalf("Dir() = %q, want absolute", set.Dir())
	}
}
