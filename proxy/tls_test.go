package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"

	"github.com/shardproxy/shardproxy/certs"
	"github.com/shardproxy/shardproxy/router"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and client
// certificates, written to a temporary folder.
type testPKI struct {
	dir                    string
	ca                     *certs.CA
	caFile, cert, key      string
	appCert, appKey        string // CN app
	otherCert, otherKey    string // CN other
	strangerC, strangerKey string // CN app, signed by a CA the proxy does not trust
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	var err error
	if p.ca, err = certs.NewCA("test CA", time.Hour); err != nil {
		t.Fatal(err)
	}
	write := func(pair certs.Pair, err error, name string) (string, string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		c, k, err := pair.Write(p.dir, name)
		if err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	p.caFile, _ = write(certs.Pair{CertPEM: p.ca.CertPEM, KeyPEM: p.ca.KeyPEM}, nil, "ca")
	srv, err := p.ca.Server([]string{"127.0.0.1", "localhost"}, time.Hour)
	p.cert, p.key = write(srv, err, "server")
	app, err := p.ca.Client("app", time.Hour)
	p.appCert, p.appKey = write(app, err, "app")
	other, err := p.ca.Client("other", time.Hour)
	p.otherCert, p.otherKey = write(other, err, "other")
	stranger, err := certs.NewCA("stranger", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := stranger.Client("app", time.Hour)
	p.strangerC, p.strangerKey = write(pair, err, "stranger")
	return p
}

// startupPacket encodes a protocol 3.0 startup message.
func startupPacket(params ...string) []byte {
	b := []byte{0, 0, 0, 0, 0, 3, 0, 0}
	for _, p := range params {
		b = append(append(b, p...), 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// startTestServer serves cfg on a loopback port over one unreachable shard:
// logins, empty queries, BEGIN and SET work; routed statements do not.
func startTestServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	topo, err := router.NewTopology(&router.Config{Shards: []router.ShardConfig{{Name: "s0", DSN: "postgres://x@127.0.0.1:1/db?connect_timeout=1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Database == "" {
		cfg.Database = "db"
	}
	cfg.Pool = PoolConfig{Size: 1, ConnectTimeout: 50 * time.Millisecond, AcquireTimeout: 50 * time.Millisecond}
	srv, err := New(cfg, topo, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go srv.Serve(ctx, ln)
	t.Cleanup(func() { cancel(); srv.Close() })
	return srv, ln.Addr().String()
}

func dial(t *testing.T, addr, params string) (*pgconn.PgConn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, fmt.Sprintf("postgres://%s/db?%s", addr, params))
	if err == nil {
		t.Cleanup(func() { c.Close(context.Background()) })
	}
	return c, err
}

func sqlstate(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func tlsUsers() []User {
	return []User{{Name: "app", Password: "pw"}, {Name: "other", Password: "pw"}, {Name: "certy", Auth: "cert"}}
}

func TestTLSModes(t *testing.T) {
	p := newTestPKI(t)
	tlsOn := func(mode string) Config {
		return Config{Users: tlsUsers(), TLS: TLSConfig{Cert: p.cert, Key: p.key, CA: p.caFile, Mode: mode}}
	}
	verify := "sslrootcert=" + p.caFile + "&sslmode=verify-full"
	appCert := "&sslcert=" + p.appCert + "&sslkey=" + p.appKey
	cases := []struct {
		name, mode, params string
		want               string // "" ok, else SQLSTATE, or "err" for a client-side failure
		tls                bool
	}{
		{"disable answers N", "disable", "user=app&password=pw&sslmode=prefer", "", false},
		{"disable refuses sslmode=require", "disable", "user=app&password=pw&sslmode=require", "err", false},
		{"allow takes plaintext", "allow", "user=app&password=pw&sslmode=disable", "", false},
		{"allow verify-full", "allow", "user=app&password=pw&" + verify, "", true},
		{"direct TLS", "allow", "user=app&password=pw&sslnegotiation=direct&" + verify, "", true},
		{"require refuses plaintext", "require", "user=app&password=pw&sslmode=disable", "28000", false},
		{"require takes TLS", "require", "user=app&password=pw&" + verify, "", true},
		{"SCRAM-PLUS required by the client", "require", "user=app&password=pw&channel_binding=require&" + verify, "", true},
		{"channel binding needs TLS", "allow", "user=app&password=pw&sslmode=disable&channel_binding=require", "err", false},
		{"verify-ca needs a client cert", "verify-ca", "user=app&password=pw&" + verify, "err", false},
		{"verify-ca with a cert", "verify-ca", "user=other&password=pw&" + verify + appCert, "", true},
		{"verify-ca with a wrong password", "verify-ca", "user=app&password=bad&" + verify + appCert, "28P01", false},
		{"verify-ca refuses a stranger's cert", "verify-ca", "user=app&password=pw&" + verify + "&sslcert=" + p.strangerC + "&sslkey=" + p.strangerKey, "err", false},
		{"verify-full maps CN to user", "verify-full", "user=app&password=pw&" + verify + appCert, "", true},
		{"verify-full refuses another CN", "verify-full", "user=other&password=pw&" + verify + appCert, "28000", false},
		{"cert auth needs no password", "verify-ca", "user=certy&" + verify + "&sslcert=" + certFor(t, p, "certy"), "", true},
		{"cert auth refuses another CN", "verify-ca", "user=certy&" + verify + appCert, "28000", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := startTestServer(t, tlsOn(tc.mode))
			c, err := dial(t, addr, tc.params)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("connect: %v", err)
			case tc.want == "err" && err == nil:
				t.Fatal("connected")
			case tc.want != "" && tc.want != "err" && sqlstate(err) != tc.want:
				t.Fatalf("got %v (SQLSTATE %q), want %s", err, sqlstate(err), tc.want)
			}
			if err != nil {
				return
			}
			if _, ok := c.Conn().(*tls.Conn); ok != tc.tls {
				t.Fatalf("on TLS: %v, want %v", ok, tc.tls)
			}
			if err := c.Exec(context.Background(), ";").Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// certFor issues a client certificate for user and returns
// "cert&sslkey=key" for a connection string.
func certFor(t *testing.T, p *testPKI, user string) string {
	pair, err := p.ca.Client(user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, k, err := pair.Write(p.dir, user)
	if err != nil {
		t.Fatal(err)
	}
	return c + "&sslkey=" + k
}

// TestPlaintextRefusedBeforePassword checks on the wire that under
// require the first answer to a plaintext startup is the 28000 error, not
// a password request.
func TestPlaintextRefusedBeforePassword(t *testing.T) {
	p := newTestPKI(t)
	_, addr := startTestServer(t, Config{Users: tlsUsers()[:2], TLS: TLSConfig{Cert: p.cert, Key: p.key, Mode: "require"}})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(startupPacket("user", "app", "database", "db"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, _ := c.Read(buf)
	if n == 0 || buf[0] != 'E' || !strings.Contains(string(buf[:n]), "28000") || !strings.Contains(string(buf[:n]), "no encryption") {
		t.Fatalf("first reply %q, want ErrorResponse 28000", buf[:n])
	}
}

// TestDirectTLSNeedsALPN: a direct TLS client that does not offer ALPN
// "postgresql" is refused (Postgres 17 does the same), one offering
// another protocol fails the handshake.
func TestDirectTLSNeedsALPN(t *testing.T) {
	p := newTestPKI(t)
	_, addr := startTestServer(t, Config{Users: tlsUsers()[:2], TLS: TLSConfig{Cert: p.cert, Key: p.key, Mode: "allow"}})
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	for _, protos := range [][]string{nil, {"http/1.1"}} {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: protos})
		if err != nil {
			if protos == nil {
				t.Fatalf("handshake without ALPN: %v", err)
			}
			continue // no_application_protocol: refused in the handshake
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 512)
		n, _ := c.Read(buf)
		c.Close()
		if n == 0 || buf[0] != 'E' || !strings.Contains(string(buf[:n]), "ALPN") {
			t.Fatalf("ALPN %v: reply %q, want a FATAL about ALPN", protos, buf[:n])
		}
	}
}

// TestCertificateReload swaps the server certificate with Apply (what
// SIGHUP and RELOAD do): a session opened before keeps working, a new one
// sees the new certificate.
func TestCertificateReload(t *testing.T) {
	p := newTestPKI(t)
	cfg := Config{Users: tlsUsers()[:2], TLS: TLSConfig{Cert: p.cert, Key: p.key, Mode: "require"}}
	srv, addr := startTestServer(t, cfg)
	verify := "user=app&password=pw&sslmode=verify-full&sslrootcert=" + p.caFile
	old, err := dial(t, addr, verify)
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := certs.NewCA("second CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := ca2.Server([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert2, key2, _ := pair.Write(dir, "server")
	ca2File := filepath.Join(dir, "ca.crt")
	os.WriteFile(ca2File, ca2.CertPEM, 0o644)
	cfg.TLS.Cert, cfg.TLS.Key = cert2, key2
	cfg.Database = "db"
	if err := srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, addr, verify); err == nil {
		t.Fatal("the old CA still verifies the new certificate")
	}
	if _, err := dial(t, addr, "user=app&password=pw&sslmode=verify-full&sslrootcert="+ca2File); err != nil {
		t.Fatalf("new certificate: %v", err)
	}
	if err := old.Exec(context.Background(), ";").Close(); err != nil {
		t.Fatalf("session from before the reload: %v", err)
	}
	cfg.TLS.Key = filepath.Join(dir, "missing.key")
	if err := srv.Apply(cfg); err == nil {
		t.Fatal("a reload with a missing key was accepted")
	}
}

func TestTLSConfigValidate(t *testing.T) {
	p := newTestPKI(t)
	for _, tc := range []struct {
		tls  TLSConfig
		want string
	}{
		{TLSConfig{}, ""},
		{TLSConfig{Mode: "sometimes"}, "tls.mode"},
		{TLSConfig{Mode: "require"}, "needs tls.cert"},
		{TLSConfig{Mode: "verify-ca", Cert: p.cert, Key: p.key}, "needs tls.ca"},
		{TLSConfig{Mode: "require", Cert: p.cert, Key: p.appKey}, "load cert and key"},
		{TLSConfig{Mode: "verify-full", Cert: p.cert, Key: p.key, CA: p.key}, "no PEM certificate"},
		{TLSConfig{Mode: "verify-full", Cert: p.cert, Key: p.key, CA: p.caFile}, ""},
	} {
		err := Config{Users: []User{{Name: "a", Auth: "trust"}}, TLS: tc.tls}.WithDefaults().Validate()
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.tls, err, tc.want)
		}
	}
	err := Config{Users: []User{{Name: "a", Auth: "cert"}}}.WithDefaults().Validate()
	if err == nil || !strings.Contains(err.Error(), "auth cert needs tls.ca") {
		t.Errorf("auth cert without a CA: %v", err)
	}
}

// TestChannelBindingMismatch: a SCRAM-SHA-256-PLUS client whose binding
// data is not the hash of the proxy's certificate (a man in the middle
// would present another) fails with 28P01; the right data logs in.
func TestChannelBindingMismatch(t *testing.T) {
	p := newTestPKI(t)
	_, addr := startTestServer(t, Config{Users: tlsUsers()[:2], TLS: TLSConfig{Cert: p.cert, Key: p.key, Mode: "allow"}})
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	for _, wrong := range []bool{true, false} {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"postgresql"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		st := c.ConnectionState()
		cb, err := scram.NewTLSServerEndpointBinding(&st)
		if err != nil {
			t.Fatal(err)
		}
		if wrong {
			cb.Data[0] ^= 1
		}
		fe := pgproto3.NewFrontend(c, c)
		fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "app", "database": "db"}})
		fe.Flush()
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		sasl, ok := msg.(*pgproto3.AuthenticationSASL)
		if !ok || sasl.AuthMechanisms[0] != "SCRAM-SHA-256-PLUS" {
			t.Fatalf("got %#v, want SCRAM-SHA-256-PLUS offered first", msg)
		}
		client, _ := scram.SHA256.NewClient("", "pw", "")
		conv := client.NewConversationWithChannelBinding(cb)
		first, _ := conv.Step("")
		fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256-PLUS", Data: []byte(first)})
		fe.Flush()
		msg, err = fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		cont, ok := msg.(*pgproto3.AuthenticationSASLContinue)
		if !ok {
			t.Fatalf("got %#v, want SASLContinue", msg)
		}
		final, _ := conv.Step(string(cont.Data))
		fe.Send(&pgproto3.SASLResponse{Data: []byte(final)})
		fe.Flush()
		msg, err = fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		e, failed := msg.(*pgproto3.ErrorResponse)
		switch {
		case wrong && (!failed || e.Code != "28P01"):
			t.Fatalf("wrong binding: got %#v, want 28P01", msg)
		case !wrong && failed:
			t.Fatalf("right binding: %s %s", e.Code, e.Message)
		}
	}
}

// clientHello records the first flight of a TLS client offering ALPN
// protos, for seeds.
func clientHello(protos []string) []byte {
	a, b := net.Pipe()
	go func() {
		tls.Client(a, &tls.Config{InsecureSkipVerify: true, NextProtos: protos}).Handshake()
	}()
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4096)
	n, _ := b.Read(buf)
	a.Close()
	b.Close()
	return buf[:n]
}

// FuzzStartupTLS feeds arbitrary bytes to a session of a server with TLS
// on (allow mode, client CA): SSLRequest and direct TLS negotiation,
// ClientHellos cut or corrupted, plaintext after SSLRequest. The session
// must neither panic nor hang. `go test` runs the seeds only; fuzz with
// go test ./proxy -run '^$' -fuzz FuzzStartupTLS -fuzztime 1m.
func FuzzStartupTLS(f *testing.F) {
	ssl := []byte{0, 0, 0, 8, 4, 210, 22, 47}
	gss := []byte{0, 0, 0, 8, 4, 210, 22, 48}
	hello := clientHello([]string{"postgresql"})
	f.Add(ssl)
	f.Add(append(append([]byte{}, ssl...), hello...))
	f.Add(hello)
	f.Add(clientHello(nil))
	f.Add(hello[:len(hello)/2])
	f.Add(append(append([]byte{}, ssl...), startupPacket("user", "a", "database", "db")...))
	f.Add(append(append(append([]byte{}, gss...), ssl...), hello...))
	f.Add(append(append([]byte{}, ssl...), ssl...))
	f.Add([]byte{0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0})
	dir := f.TempDir()
	ca, err := certs.NewCA("fuzz", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	pair, err := ca.Server([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	cert, key, _ := pair.Write(dir, "server")
	caFile, _, _ := certs.Pair{CertPEM: ca.CertPEM, KeyPEM: ca.KeyPEM}.Write(dir, "ca")
	topo, err := router.NewTopology(&router.Config{Shards: []router.ShardConfig{{Name: "s0", DSN: "postgres://x@127.0.0.1:1/db?connect_timeout=1"}}})
	if err != nil {
		f.Fatal(err)
	}
	srv, err := New(Config{Database: "db", Users: []User{{Name: "a", Auth: "trust"}, {Name: "c", Auth: "cert"}},
		TLS:  TLSConfig{Cert: cert, Key: key, CA: caFile, Mode: "allow"},
		Pool: PoolConfig{Size: 1, ConnectTimeout: 50 * time.Millisecond, AcquireTimeout: 50 * time.Millisecond}}, topo, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) { fuzzSession(t, srv, data) })
}
