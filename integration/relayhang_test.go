package integration

import (
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestExtendedBackendSwitchKeepsReplies: inside a transaction on two
// shards, one request (one Sync) runs a statement on the second shard and
// then one that may run anywhere (it goes to the transaction's first
// backend). The first part's messages must still reach its shard and its
// replies the client, in order, as one Postgres would answer; the proxy
// used to drop them when it switched backends, and the client missed
// replies (a pgx batch read the next statement's as its own).
func TestExtendedBackendSwitchKeepsReplies(t *testing.T) {
	uA, uB := userOn(0, 9_900_000), userOn(1, 9_900_000)
	count := &pgproto3.Parse{Name: "cnt", Query: "SELECT count(*) FROM orders WHERE user_id = $1", ParameterOIDs: []uint32{20}}
	bind := func(u int64) *pgproto3.Bind {
		return &pgproto3.Bind{PreparedStatement: "cnt", Parameters: [][]byte{[]byte(strconv.FormatInt(u, 10))}}
	}
	steps := []wireStep{
		{&pgproto3.Query{String: "BEGIN"}},
		{count, bind(uA), &pgproto3.Execute{}, &pgproto3.Sync{}}, // the transaction's first shard
		{bind(uB), &pgproto3.Execute{}, // joins the second shard
			&pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Bind{}, &pgproto3.Execute{}, // anywhere: the first shard's backend
			&pgproto3.Sync{}},
		{bind(uB), &pgproto3.Execute{}, &pgproto3.Parse{Query: "SELECT 2"}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'},
			&pgproto3.Flush{}, &pgproto3.Execute{}, &pgproto3.Sync{}},
		{&pgproto3.Query{String: "COMMIT"}},
	}
	want := transcript(t, env.shards.Clusters[0].DSN("deliveryapp"), steps)
	if got := transcript(t, proxyURL("app", "app"), steps); got != want {
		t.Fatalf("through the proxy:\n%s\nPostgres:\n%s", got, want)
	}
	// A statement described (on a backend outside the transaction, which
	// has no shard yet) and then run in the same request: the Describe's
	// replies come first, whichever shard the statement runs on.
	for sh := 0; sh < nShards; sh++ {
		u := userOn(sh, 9_900_000)
		steps := []wireStep{
			{&pgproto3.Query{String: "BEGIN"}},
			{&pgproto3.Parse{Name: "d", Query: "SELECT count(*) FROM orders WHERE user_id = $1", ParameterOIDs: []uint32{20}},
				&pgproto3.Describe{ObjectType: 'S', Name: "d"},
				&pgproto3.Bind{PreparedStatement: "d", Parameters: [][]byte{[]byte(strconv.FormatInt(u, 10))}}, &pgproto3.Execute{},
				&pgproto3.Sync{}},
			{&pgproto3.Query{String: "COMMIT"}},
		}
		want := transcript(t, env.shards.Clusters[sh].DSN("deliveryapp"), steps)
		if got := transcript(t, proxyURL("app", "app"), steps); got != want {
			t.Fatalf("described and run on shard %d: through the proxy:\n%s\nPostgres:\n%s", sh, got, want)
		}
	}
}
