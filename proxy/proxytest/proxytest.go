// Package proxytest starts shardproxy servers on loopback ports for tests.
package proxytest

import (
	"context"
	"net"
	"testing"

	"github.com/shardproxy/shardproxy/config"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/router"
)

// New makes a server from cfg (a config file's YAML, its own topology),
// closed when t ends. Set it up further (metrics, Warm, hooks), then Listen.
func New(t testing.TB, cfg string) *proxy.Server {
	t.Helper()
	f, err := config.Parse([]byte(cfg))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, cfg)
	}
	topo, err := router.NewTopology(&f.Topology)
	if err != nil {
		t.Fatal(err)
	}
	return NewConfig(t, f.Proxy, topo)
}

// NewConfig makes a server from cfg over topo, closed when t ends.
func NewConfig(t testing.TB, cfg proxy.Config, topo *router.Topology) *proxy.Server {
	t.Helper()
	srv, err := proxy.New(cfg, topo, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// Listen serves srv on a new loopback port until t ends and returns the
// port's address.
func Listen(t testing.TB, srv *proxy.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go srv.Serve(ctx, ln)
	t.Cleanup(func() { cancel(); srv.Close() })
	return ln.Addr().String()
}

// Serve is New then Listen: the server and its address.
func Serve(t testing.TB, cfg string) (*proxy.Server, string) {
	t.Helper()
	srv := New(t, cfg)
	return srv, Listen(t, srv)
}
