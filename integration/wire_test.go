package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// A wire script sends protocol messages and records the replies up to each
// ReadyForQuery. Each script runs through the proxy and straight against a
// shard; the two transcripts must be equal (CockroachDB's pgtest idea).

type wireStep []pgproto3.FrontendMessage

// rawConn opens a connection to connString, past the startup, to drive
// with raw protocol messages; it is closed when the test ends.
func rawConn(t *testing.T, connString string) *pgconn.HijackedConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, connString)
	if err != nil {
		t.Fatal(err)
	}
	hj, err := conn.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hj.Conn.Close() })
	return hj
}

func transcript(t *testing.T, connString string, steps []wireStep) string {
	t.Helper()
	hj := rawConn(t, connString)
	defer hj.Conn.Close() // not only at the test's end: scripts run in loops
	fe := hj.Frontend
	var sb strings.Builder
	for _, step := range steps {
		for _, m := range step {
			fe.Send(m)
		}
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		hj.Conn.SetDeadline(time.Now().Add(10 * time.Second))
		for {
			m, err := fe.Receive()
			if err != nil {
				t.Fatalf("receive: %v (so far:\n%s)", err, sb.String())
			}
			switch x := m.(type) {
			case *pgproto3.ParseComplete:
				sb.WriteString("ParseComplete\n")
			case *pgproto3.BindComplete:
				sb.WriteString("BindComplete\n")
			case *pgproto3.CloseComplete:
				sb.WriteString("CloseComplete\n")
			case *pgproto3.NoData:
				sb.WriteString("NoData\n")
			case *pgproto3.ParameterDescription:
				fmt.Fprintf(&sb, "ParameterDescription %v\n", x.ParameterOIDs)
			case *pgproto3.RowDescription:
				var cols []string
				for _, f := range x.Fields {
					cols = append(cols, fmt.Sprintf("%s:%d:%d", f.Name, f.DataTypeOID, f.Format))
				}
				fmt.Fprintf(&sb, "RowDescription %s\n", strings.Join(cols, ","))
			case *pgproto3.DataRow:
				var vals []string
				for _, v := range x.Values {
					vals = append(vals, string(v))
				}
				fmt.Fprintf(&sb, "DataRow %s\n", strings.Join(vals, "|"))
			case *pgproto3.CommandComplete:
				fmt.Fprintf(&sb, "CommandComplete %s\n", x.CommandTag)
			case *pgproto3.FunctionCallResponse:
				fmt.Fprintf(&sb, "FunctionCallResponse %q\n", x.Result)
			case *pgproto3.EmptyQueryResponse:
				sb.WriteString("EmptyQueryResponse\n")
			case *pgproto3.PortalSuspended:
				sb.WriteString("PortalSuspended\n")
			case *pgproto3.ErrorResponse:
				fmt.Fprintf(&sb, "ErrorResponse %s\n", x.Code)
			case *pgproto3.ReadyForQuery:
				fmt.Fprintf(&sb, "ReadyForQuery %c\n", x.TxStatus)
			case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
				continue
			default:
				fmt.Fprintf(&sb, "%T\n", m)
			}
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
	}
	return sb.String()
}

func TestWireScriptsMatchPostgres(t *testing.T) {
	ctx := context.Background()
	c := mustConnect(t)
	if _, err := c.Exec(ctx, "INSERT INTO restaurants (id, name, city, cuisine) VALUES (7777, 'Wire', 'Porto', 'grill') ON CONFLICT DO NOTHING"); err != nil {
		t.Fatal(err)
	}
	text := func(s string) []byte { return []byte(s) }
	scripts := map[string][]wireStep{
		"describe statement before bind": {
			{&pgproto3.Parse{Name: "s1", Query: "SELECT id, name FROM restaurants WHERE id = $1", ParameterOIDs: []uint32{20}},
				&pgproto3.Describe{ObjectType: 'S', Name: "s1"}, &pgproto3.Sync{}},
			{&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "s1", Parameters: [][]byte{text("7777")}},
				&pgproto3.Describe{ObjectType: 'P', Name: "p1"}, &pgproto3.Execute{Portal: "p1"}, &pgproto3.Sync{}},
			{&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{text("7777")}, ResultFormatCodes: []int16{1, 0}},
				&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}},
		},
		"portal suspended": {
			{&pgproto3.Parse{Query: "SELECT g FROM generate_series(1, 5) g"}, &pgproto3.Bind{},
				&pgproto3.Execute{MaxRows: 2}, &pgproto3.Execute{MaxRows: 2}, &pgproto3.Execute{}, &pgproto3.Sync{}},
		},
		"error mid pipeline skips to sync": {
			{&pgproto3.Parse{Query: "SELECT 1/0"}, &pgproto3.Bind{}, &pgproto3.Execute{},
				&pgproto3.Parse{Query: "SELECT 2"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}},
			{&pgproto3.Parse{Query: "SELECT 3"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}},
		},
		"close unknown statement and portal": {
			{&pgproto3.Close{ObjectType: 'S', Name: "nope"}, &pgproto3.Close{ObjectType: 'P', Name: "nope"}, &pgproto3.Sync{}},
		},
		"bind unknown statement": {
			{&pgproto3.Bind{DestinationPortal: "x", PreparedStatement: "missing"}, &pgproto3.Execute{Portal: "x"}, &pgproto3.Sync{}},
			{&pgproto3.Parse{Query: "SELECT 4"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}},
		},
		"duplicate statement name": {
			{&pgproto3.Parse{Name: "dup", Query: "SELECT 1"}, &pgproto3.Parse{Name: "dup", Query: "SELECT 2"}, &pgproto3.Sync{}},
			{&pgproto3.Close{ObjectType: 'S', Name: "dup"}, &pgproto3.Parse{Name: "dup", Query: "SELECT 5"},
				&pgproto3.Bind{PreparedStatement: "dup"}, &pgproto3.Execute{}, &pgproto3.Sync{}},
		},
		"empty query": {
			{&pgproto3.Parse{Query: ""}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}},
		},
		"SET inside a multi-statement string": {
			{&pgproto3.Query{String: "SET client_min_messages TO warning;SET TIME ZONE INTERVAL '+00:00' HOUR TO MINUTE"}},
			{&pgproto3.Query{String: "SHOW client_min_messages"}},
			{&pgproto3.Query{String: "SET work_mem TO '2MB'; SELECT current_setting('work_mem'); SELECT 1/0"}},
			{&pgproto3.Query{String: "SHOW work_mem"}},
			{&pgproto3.Query{String: "SET work_mem TO '3MB'; SELECT current_setting('work_mem')"}},
			{&pgproto3.Query{String: "SHOW work_mem"}},
			{&pgproto3.Query{String: "RESET ALL; SELECT 1"}},
			{&pgproto3.Query{String: "SHOW work_mem"}},
		},
		"SET inside a transaction lasts past COMMIT, not ROLLBACK": {
			{&pgproto3.Query{String: "BEGIN"}},
			{&pgproto3.Query{String: "SET search_path TO public, pg_catalog"}},
			{&pgproto3.Query{String: "SELECT count(*) > 0 FROM restaurants"}},
			{&pgproto3.Query{String: "COMMIT"}},
			{&pgproto3.Query{String: "SHOW search_path"}},
			{&pgproto3.Query{String: "BEGIN"}},
			{&pgproto3.Query{String: "SELECT count(*) > 0 FROM restaurants"}},
			{&pgproto3.Query{String: "SET search_path TO pg_catalog"}},
			{&pgproto3.Query{String: "ROLLBACK"}},
			{&pgproto3.Query{String: "SHOW search_path"}},
			{&pgproto3.Query{String: "RESET search_path"}},
		},
		"DateStyle merges with the current value": {
			{&pgproto3.Query{String: "SET datestyle TO iso"}},
			{&pgproto3.Query{String: "SET datestyle TO ymd"}},
			{&pgproto3.Query{String: "SHOW datestyle"}},
			{&pgproto3.Query{String: "SELECT date '1999-01-08'"}},
			{&pgproto3.Query{String: "SET datestyle TO dmy"}},
			{&pgproto3.Query{String: "SELECT date '1/8/1999'"}},
			{&pgproto3.Query{String: "RESET datestyle"}},
			{&pgproto3.Query{String: "SHOW datestyle"}},
		},
		"function call protocol": {
			{&pgproto3.FunctionCall{Function: 870, Arguments: [][]byte{text("MiXeD")}, ResultFormatCode: 0}},
			{&pgproto3.FunctionCall{Function: 177, ArgFormatCodes: []uint16{0}, Arguments: [][]byte{text("40"), text("2")}}},
			{&pgproto3.FunctionCall{Function: 1, Arguments: nil}},
			{&pgproto3.Query{String: "BEGIN"}},
			{&pgproto3.FunctionCall{Function: 870, Arguments: [][]byte{text("InTx")}}},
			{&pgproto3.FunctionCall{Function: 177, Arguments: [][]byte{text("x"), text("2")}}},
			{&pgproto3.FunctionCall{Function: 870, Arguments: [][]byte{text("aborted")}}},
			{&pgproto3.Query{String: "ROLLBACK"}},
		},
		"transaction through extended protocol": {
			{&pgproto3.Parse{Query: "BEGIN"}, &pgproto3.Bind{}, &pgproto3.Execute{},
				&pgproto3.Parse{Name: "q", Query: "SELECT name FROM restaurants WHERE id = $1"},
				&pgproto3.Bind{PreparedStatement: "q", Parameters: [][]byte{text("7777")}}, &pgproto3.Execute{}, &pgproto3.Sync{}},
			{&pgproto3.Parse{Query: "SELECT 1/0"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}},
			{&pgproto3.Bind{PreparedStatement: "q", Parameters: [][]byte{text("7777")}}, &pgproto3.Execute{}, &pgproto3.Sync{}},
			{&pgproto3.Parse{Query: "ROLLBACK"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}},
		},
	}
	direct := env.shards.Clusters[0].DSN("deliveryapp")
	for name, steps := range scripts {
		t.Run(name, func(t *testing.T) {
			want := transcript(t, direct, steps)
			got := transcript(t, proxyURL("app", "app"), steps)
			if got != want {
				t.Fatalf("through the proxy:\n%s\nstraight to Postgres:\n%s", got, want)
			}
		})
	}
}
