package proxy

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/router"
)

// fakeShard is a minimal Postgres server: trust auth, and every Query is
// answered with one int4 row. It lets the proxy's own CPU be profiled
// without Postgres's.
func fakeShard(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveFake(c)
		}
	}()
	return ln.Addr().String()
}

func serveFake(c net.Conn) {
	defer c.Close()
	be := pgproto3.NewBackend(c, c)
	for {
		m, err := be.ReceiveStartupMessage()
		if err != nil {
			return
		}
		if _, ok := m.(*pgproto3.SSLRequest); ok {
			c.Write([]byte{'N'})
			continue
		}
		break
	}
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if be.Flush() != nil {
		return
	}
	rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("abalance"), DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1}}}
	row := &pgproto3.DataRow{Values: [][]byte{[]byte("0")}}
	cc := &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}
	for {
		m, err := be.Receive()
		if err != nil {
			return
		}
		switch m.(type) {
		case *pgproto3.Query:
			be.Send(rd)
			be.Send(row)
			be.Send(cc)
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if be.Flush() != nil {
				return
			}
		case *pgproto3.Terminate:
			return
		}
	}
}

// benchProxy serves a proxy over 4 fake shards and returns a logged-in
// client connection.
func benchProxy(b *testing.B) (*pgproto3.Frontend, net.Conn) {
	addr := fakeShard(b)
	var shards []router.ShardConfig
	for i := range 4 {
		shards = append(shards, router.ShardConfig{Name: fmt.Sprintf("s%d", i), DSN: "postgres://bench@" + addr + "/db?sslmode=disable"})
	}
	topo, err := router.NewTopology(&router.Config{Shards: shards,
		Tables: map[string]router.TableConfig{"pgbench_accounts": {Strategy: "hash", Key: "aid"}}})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := New(Config{Users: []User{{Name: "app", Auth: "trust"}}}, topo, nil)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go srv.Serve(ctx, ln)
	b.Cleanup(func() { cancel(); srv.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": "app", "database": "deliveryapp"}})
	if err := fe.Flush(); err != nil {
		b.Fatal(err)
	}
	untilReady(b, fe)
	return fe, c
}

func untilReady(b *testing.B, fe *pgproto3.Frontend) {
	for {
		m, err := fe.Receive()
		if err != nil {
			b.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.ReadyForQuery:
			return
		case *pgproto3.ErrorResponse:
			b.Fatalf("%s: %s", m.Code, m.Message)
		}
	}
}

// BenchmarkProxyPointQuery runs routed point queries through the proxy to
// fake shards (no Postgres), so a CPU profile shows the proxy's own time
// and the observer's share of it:
//
//	go test -run '^$' -bench ProxyPointQuery -cpuprofile cpu.out ./proxy/
//	go tool pprof -top -cum proxy.test cpu.out | grep -E 'session\)\.run|observer|waited|shardDone|queryRecord'
//
// "same-text" repeats one statement (parse-cache hits: the cheapest proxy
// path, so the largest observer share); "new-literals" changes the literal
// on every query (pg_query parses each; pgbench -S -M simple).
func BenchmarkProxyPointQuery(b *testing.B) {
	for _, mode := range []string{"same-text", "new-literals"} {
		b.Run(mode, func(b *testing.B) {
			fe, _ := benchProxy(b)
			q := &pgproto3.Query{}
			buf := make([]byte, 0, 128)
			for i := 0; b.Loop(); i++ {
				n := 42
				if mode == "new-literals" {
					n = i
				}
				buf = append(buf[:0], "SELECT abalance FROM pgbench_accounts WHERE aid = "...)
				buf = strconv.AppendInt(buf, int64(n), 10)
				q.String = string(buf)
				fe.Send(q)
				if err := fe.Flush(); err != nil {
					b.Fatal(err)
				}
				untilReady(b, fe)
			}
		})
	}
}
