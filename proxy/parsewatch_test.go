package proxy

import (
	"bytes"
	"net"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

type sinkConn struct {
	net.Conn
	buf bytes.Buffer
}

func (c *sinkConn) Write(p []byte) (int, error) { return c.buf.Write(p) }

// TestParseWatch: Parses written in any chunking are followed; a Parse
// answered by ParseComplete stays, one not answered by its group's
// ReadyForQuery (failed or skipped) is forgotten, and a later group's
// Parse is not touched by an earlier group's ReadyForQuery.
func TestParseWatch(t *testing.T) {
	var msgs []byte
	msgs = appendMsg(msgs, &pgproto3.Parse{Name: "ok1", Query: "SELECT 1"})
	msgs = appendMsg(msgs, &pgproto3.Bind{PreparedStatement: "ok1"})
	msgs = appendMsg(msgs, &pgproto3.Parse{Name: "bad", Query: "SELECT x"})
	msgs = appendMsg(msgs, &pgproto3.Parse{Name: "skipped", Query: "SELECT 2"})
	msgs = appendMsg(msgs, &pgproto3.Parse{Query: "SELECT 3"})
	msgs = appendMsg(msgs, &pgproto3.Sync{})
	msgs = appendMsg(msgs, &pgproto3.Parse{Name: "next", Query: "SELECT 4"})
	msgs = appendMsg(msgs, &pgproto3.Sync{})
	for _, chunk := range []int{1, 2, 3, 7, len(msgs)} {
		b := &backend{conn: &sinkConn{}, rd: &frameReader{}, stmts: map[string]bool{}}
		watchParses(b)
		for _, n := range []string{"ok1", "bad", "skipped", "next"} {
			b.stmts[n] = true
		}
		for i := 0; i < len(msgs); i += chunk {
			if _, err := b.conn.Write(msgs[i:min(i+chunk, len(msgs))]); err != nil {
				t.Fatal(err)
			}
		}
		w := b.rd.watch
		w.saw('1') // ok1
		w.saw('2')
		w.saw('E') // bad; skipped and the unnamed one never ran
		w.saw('Z')
		got := slices.Sorted(func(yield func(string) bool) {
			for n := range b.stmts {
				if !yield(n) {
					return
				}
			}
		})
		if !slices.Equal(got, []string{"next", "ok1"}) {
			t.Fatalf("chunks of %d: after the first group: %v", chunk, got)
		}
		w.saw('Z') // next's group ends with no ParseComplete: it failed
		if _, ok := b.stmts["next"]; ok || !b.stmts["ok1"] {
			t.Fatalf("chunks of %d: after the second group: %v", chunk, b.stmts)
		}
		if len(w.pending) != 0 {
			t.Fatalf("chunks of %d: pending %v", chunk, w.pending)
		}
	}
}
