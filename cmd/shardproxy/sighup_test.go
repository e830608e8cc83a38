package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardproxy/shardproxy/certs"
	"github.com/shardproxy/shardproxy/config"
	"github.com/shardproxy/shardproxy/localpg"
)

// TestSIGHUPReloadsCertificates: the certificate files are replaced in
// place (a rotation) and the process gets SIGHUP: new sessions see the new
// certificate, a session opened before goes on over its TLS connection.
func TestSIGHUPReloadsCertificates(t *testing.T) {
	dir := t.TempDir()
	issue := func(name string) (caFile string) {
		ca, err := certs.NewCA(name, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		pair, err := ca.Server([]string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := pair.Write(dir, "server"); err != nil {
			t.Fatal(err)
		}
		caFile = filepath.Join(t.TempDir(), "ca.crt")
		if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		return caFile
	}
	caA := issue("first CA")
	port, err := localpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "shardproxy.yaml")
	doc := fmt.Sprintf(`listen: 127.0.0.1:%d
database: db
backend_roles: shared
users: [{name: app, auth: trust}]
tls: {cert: %s, key: %s, mode: require}
pool: {connect_timeout: 100ms, acquire_timeout: 100ms}
shards:
  - {name: s0, dsn: "postgres://postgres@127.0.0.1:1/db"}
`, port, filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var level slog.LevelVar
	go func() { done <- serve(ctx, path, f, slog.New(slog.NewTextHandler(io.Discard, nil)), &level) }()
	t.Cleanup(func() { cancel(); <-done })

	connect := func(ca string) (*pgconn.PgConn, error) {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		return pgconn.Connect(cctx, fmt.Sprintf("postgres://app@127.0.0.1:%d/db?sslmode=verify-full&sslrootcert=%s", port, ca))
	}
	var old *pgconn.PgConn
	for i := 0; ; i++ { // serve is starting
		if old, err = connect(caA); err == nil {
			break
		}
		if i == 100 {
			t.Fatalf("first certificate: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer old.Close(context.Background())

	caB := issue("second CA")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		c, err := connect(caB)
		if err == nil {
			c.Close(ctx)
			break
		}
		if i == 100 {
			t.Fatalf("the new certificate is not served after SIGHUP: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c, err := connect(caA); err == nil {
		c.Close(ctx)
		t.Fatal("the first CA still verifies the certificate after SIGHUP")
	}
	if _, err := old.Exec(ctx, ";").ReadAll(); err != nil {
		t.Fatalf("the session from before SIGHUP: %v", err)
	}
}
