package proxy

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/router"
)

// fakeCursorShard answers a merged cursor's fetches like a Postgres backend: each
// Execute (with Sync) gets the next batch of rows, then PortalSuspended, or
// CommandComplete after the last, or the error of failAt.
func fakeCursorShard(conn net.Conn, batches [][]string, failAt int, got chan<- string) {
	be := pgproto3.NewBackend(conn, conn)
	for i := 0; ; i++ {
		var seen []string
		for {
			m, err := be.Receive()
			if err != nil {
				close(got)
				return
			}
			switch x := m.(type) {
			case *pgproto3.Execute:
				seen = append(seen, fmt.Sprintf("Execute %s %d", x.Portal, x.MaxRows))
			case *pgproto3.Sync:
				seen = append(seen, "Sync")
			}
			if _, ok := m.(*pgproto3.Sync); ok {
				break
			}
		}
		got <- strings.Join(seen, ",")
		if i == failAt {
			be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "22012", Message: "division by zero"})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'E'})
		} else {
			for _, r := range batches[i] {
				be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte(r)}})
			}
			if i == len(batches)-1 {
				be.Send(&pgproto3.CommandComplete{CommandTag: []byte(fmt.Sprintf("SELECT %d", len(batches[i])))})
			} else {
				be.Send(&pgproto3.PortalSuspended{})
			}
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'T'})
		}
		if err := be.Flush(); err != nil {
			return
		}
	}
}

func TestBatchRowsFetchOnDemand(t *testing.T) {
	cases := []struct {
		name    string
		batches [][]string
		failAt  int
		want    string
		wantErr string
	}{
		{"three batches", [][]string{{"1", "2"}, {"3", "4"}, {"5"}}, -1, "1,2,3,4,5", ""},
		{"an empty last batch", [][]string{{"1", "2"}, {}}, -1, "1,2", ""},
		{"an error in the second batch", [][]string{{"1", "2"}, {"3"}}, 1, "1,2", "22012"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			got := make(chan string, 10)
			go fakeCursorShard(server, c.batches, c.failAt, got)
			b := &backend{conn: client, rd: newFrameReader(client, 4096), pool: &pool{name: "s3"}}
			s := &session{}
			mc := &mcursor{name: "shardproxy_c1", plan: &router.Plan{}, bs: []*backend{b, {pool: &pool{name: "s4"}}}}
			r := &batchRows{s: s, c: mc, i: 0}
			var rows [][]byte
			var err error
			for {
				var row []byte
				if row, err = r.Next(); err != nil || row == nil {
					break
				}
				rows = append(rows, row)
			}
			// Rows stay valid after later batches were read (they are
			// copied out of the read buffer).
			var vals []string
			for _, row := range rows {
				vals = append(vals, string(row[6:]))
			}
			if strings.Join(vals, ",") != c.want {
				t.Fatalf("rows %v, want %s", vals, c.want)
			}
			var se *cursorShardErr
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatal(err)
			case c.wantErr != "":
				if err == nil || !errors.As(err, &se) || !strings.Contains(string(se.raw), c.wantErr) || !strings.Contains(string(se.raw), "shard s3") {
					t.Fatalf("error %v, want %s from shard s3", err, c.wantErr)
				}
			}
			client.Close()
			for msg := range got {
				if msg != fmt.Sprintf("Execute shardproxy_c1 %d,Sync", cursorBatch) {
					t.Fatalf("shard got %q", msg)
				}
			}
		})
	}
}

func TestWithFormats(t *testing.T) {
	rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
		{Name: []byte("a"), DataTypeOID: 23}, {Name: []byte("b"), DataTypeOID: 25}, {Name: []byte("c"), DataTypeOID: 20}}}
	raw := appendMsg(nil, rd)
	for _, c := range []struct {
		formats []int16
		want    string
	}{
		{[]int16{1}, "1,1,1"},
		{[]int16{1, 0}, "1,0,0"},
		{[]int16{0, 1, 1}, "0,1,1"},
	} {
		var out pgproto3.RowDescription
		if err := out.Decode(withFormats(raw, c.formats)[5:]); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, f := range out.Fields {
			got = append(got, fmt.Sprint(f.Format))
		}
		if strings.Join(got, ",") != c.want {
			t.Errorf("formats %v: %v, want %s", c.formats, got, c.want)
		}
	}
	if !allText(nil) || !allText([]int16{0, 0}) || allText([]int16{0, 1}) {
		t.Error("allText")
	}
}
