package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/localpg"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/proxy/proxytest"
)

// oracleCluster is the rig of the differential (oracle) tests: five
// Postgres clusters of their own, the first four the shards of an
// in-process proxy, the fifth a plain Postgres that gets the same data.
type oracleCluster struct {
	set      *localpg.Set
	addr     string // the proxy's listen address
	database string
	config   string // the proxy's config file, for more proxies over the same shards
}

// startOracleCluster starts the clusters with database created in each, and
// a proxy (user app, trust auth, default shard s1) over the first four with
// tables, the YAML of the config's tables: section. Without Postgres the
// test is skipped, except under CI=true where it fails. Everything is
// stopped when the test ends.
func startOracleCluster(t *testing.T, database, tables string) *oracleCluster {
	t.Helper()
	set := localpg.StartT(t, localpg.Options{N: 5, Database: database})
	var sb strings.Builder
	fmt.Fprintf(&sb, "database: %s\nbackend_roles: shared\nusers: [{name: app, auth: trust}]\npool: {size: 4}\ndefault_shard: s1\nshards:\n", database)
	for i := 0; i < 4; i++ {
		fmt.Fprintf(&sb, "  - {name: s%d, dsn: %q}\n", i, set.Clusters[i].DSN(database))
	}
	sb.WriteString("tables:\n")
	sb.WriteString(tables)
	addr := serveProxy(t, sb.String())
	return &oracleCluster{set: set, addr: addr, database: database, config: sb.String()}
}

// serveProxy starts an in-process proxy with the given config file and
// returns its address; it is closed when the test ends.
func serveProxy(t *testing.T, cfg string) string {
	t.Helper()
	_, addr := serveProxyServer(t, cfg)
	return addr
}

// serveProxyServer is serveProxy that also returns the server, for tests
// that drive it (recovery, fault hooks).
func serveProxyServer(t *testing.T, cfg string) (*proxy.Server, string) {
	t.Helper()
	srv := proxytest.New(t, cfg)
	srv.Warm(context.Background()) // learns the shards' collation (C here): text may be ordered across shards
	return srv, proxytest.Listen(t, srv)
}

// proxyURL is the proxy's address for user app.
func (c *oracleCluster) proxyURL() string {
	return "postgres://app@" + c.addr + "/" + c.database + "?sslmode=disable"
}

// plainURL is the plain Postgres (the fifth cluster).
func (c *oracleCluster) plainURL() string {
	return c.set.Clusters[4].DSN(c.database)
}

// open connects to url in the given exec mode; the connection is closed
// when the test ends (before the proxy and the clusters stop).
func (c *oracleCluster) open(t *testing.T, url string, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cc, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cc.DefaultQueryExecMode = mode
	conn, err := pgx.ConnectConfig(context.Background(), cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
