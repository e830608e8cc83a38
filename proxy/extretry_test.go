package proxy

import (
	"encoding/binary"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// msgTypes lists the message types of a framed buffer.
func msgTypes(b []byte) string {
	var out []byte
	for i := 0; i+5 <= len(b); i += 1 + int(binary.BigEndian.Uint32(b[i+1:i+5])) {
		out = append(out, b[i])
	}
	return string(out)
}

func kinds(q []reply) []replyKind {
	var out []replyKind
	for _, r := range q {
		out = append(out, r.kind)
	}
	return out
}

// TestReplayFor: a request replayed on a new backend gets the Parses it
// needs there, and only those, each with its dropped reply.
func TestReplayFor(t *testing.T) {
	ps := &prepared{query: "SELECT nextval('s')", global: "sp_1"}
	other := &prepared{query: "SELECT 2", global: "sp_2"}
	s := &session{x: &extState{stmts: map[string]*prepared{"a": ps, "b": other}}}
	synth := reply{kind: rSynth, msg: appendMsg(nil, &pgproto3.ParseComplete{})}
	withParse := appendMsg(nil, &pgproto3.Parse{Name: "sp_1", Query: ps.query})
	withParse = appendMsg(withParse, &pgproto3.Bind{PreparedStatement: "sp_1"})
	withParse = appendMsg(withParse, &pgproto3.Execute{})
	withParse = appendMsg(withParse, &pgproto3.Sync{})
	noParse := appendMsg(nil, &pgproto3.Bind{PreparedStatement: "sp_2"})
	noParse = appendMsg(noParse, &pgproto3.Describe{ObjectType: 'P'})
	noParse = appendMsg(noParse, &pgproto3.Execute{})
	noParse = appendMsg(noParse, &pgproto3.Sync{})
	cases := []struct {
		name      string
		has       []string
		wbuf      []byte
		queue     []reply
		wantMsgs  string
		wantKinds []replyKind
		ok        bool
	}{
		{"new backend lacks the statement: Parse kept", nil, withParse,
			[]reply{synth, {kind: rDrop}, {kind: rPass}, {kind: rExecute}, {kind: rSync}},
			"PBES", []replyKind{rSynth, rDrop, rPass, rExecute, rSync}, true},
		{"new backend has it: Parse dropped", []string{"sp_1"}, withParse,
			[]reply{{kind: rDrop}, {kind: rPass}, {kind: rExecute}, {kind: rSync}},
			"BES", []replyKind{rPass, rExecute, rSync}, true},
		{"old backend had it: Parse injected", nil, noParse,
			[]reply{{kind: rPass}, {kind: rDescribe}, {kind: rExecute}, {kind: rSync}},
			"PBDES", []replyKind{rDrop, rPass, rDescribe, rExecute, rSync}, true},
		{"statement closed meanwhile", nil, appendMsg(nil, &pgproto3.Bind{PreparedStatement: "gone"}),
			[]reply{{kind: rPass}}, "", nil, false},
		{"simple query", nil, appendMsg(nil, &pgproto3.Query{String: "BEGIN"}),
			[]reply{{kind: rSync}}, "", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nb := &backend{stmts: map[string]bool{}}
			for _, h := range c.has {
				nb.stmts[h] = true
			}
			nw, nq, ok := s.replayFor(nb, c.wbuf, c.queue)
			if ok != c.ok {
				t.Fatalf("ok %v, want %v", ok, c.ok)
			}
			if !ok {
				return
			}
			if got := msgTypes(nw); got != c.wantMsgs {
				t.Errorf("messages %q, want %q", got, c.wantMsgs)
			}
			if got := kinds(nq); !slices.Equal(got, c.wantKinds) {
				t.Errorf("replies %v, want %v", got, c.wantKinds)
			}
		})
	}
}
