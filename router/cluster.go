package router

import (
	"fmt"

	"github.com/shardproxy/shardproxy/parser"
)

// SetServers tells the router which shards share a Postgres server:
// servers[i] names shard i's server (host:port). A cluster-wide statement
// (roles, databases, tablespaces: parser.Statement.Cluster) then runs once
// per distinct server, on the default shard for its server and on the
// lowest-numbered shard for each other one. Without it every shard counts
// as its own server. Safe to call while routing.
func (r *Router) SetServers(servers []string) {
	if len(servers) != len(r.topo.Shards) {
		return
	}
	seen := map[string]bool{servers[r.topo.Default]: true}
	out := []int{}
	for i, srv := range servers {
		if i == r.topo.Default || !seen[srv] {
			seen[srv] = true
			out = append(out, i)
		}
	}
	r.servers.Store(&out)
}

// serverShards returns one shard per distinct server, ascending.
func (r *Router) serverShards() []int {
	if p := r.servers.Load(); p != nil {
		return *p
	}
	return r.all
}

// compileOnDefault routes DO, CALL and MERGE: the default shard, when
// every table the statement names is not in the config (or, read only, a
// reference table, which the default shard holds in full).
func (r *Router) compileOnDefault(st *parser.Statement) *compiled {
	what := "DO/CALL"
	target, merge := st.MergeTarget()
	if merge || st.Kind != parser.DDL {
		what = "MERGE" // MERGE, or a statement with MERGE inside WITH
	}
	for _, t := range st.Tables {
		tb := r.topo.Lookup(t)
		if tb == nil {
			continue
		}
		if tb.Strategy == Reference && (!merge || r.topo.Lookup(target) != tb) {
			continue
		}
		if what == "MERGE" {
			return &compiled{err: refuseHard("MERGE runs on the default shard into tables not in the config; for a configured table use INSERT ... ON CONFLICT, UPDATE and DELETE, or a /* shard: name */ comment.",
				"MERGE into or from configured table %s is not supported", tb.Name)}
		}
		return &compiled{err: refuseHard("Run it on one shard with a /* shard: name */ comment.",
			"%s naming configured table %s is not supported: it runs on the default shard only", what, tb.Name)}
	}
	return r.fixed([]int{r.topo.Default}, true, fmt.Sprintf("%s: default shard %s", what, r.names[r.topo.Default]))
}

// compileCluster routes a cluster-wide statement: once per server.
func (r *Router) compileCluster() *compiled {
	return &compiled{write: true, dynamic: true, eval: func(Params) (*Plan, error) {
		return &Plan{Shards: r.serverShards(), Write: true, Reason: "roles, databases, tablespaces: once per server"}, nil
	}}
}

// compileCreateFrom routes CREATE TABLE ... AS and SELECT ... INTO whose
// query reads no configured table other than reference tables: the new
// table is not in the config, so its rows live on the default shard; like
// any DDL the table is created on every shard, empty on the others
// (parser.Statement.EmptyCopy), so that later DDL on it (DROP TABLE)
// works everywhere. The answer is the default shard's ("SELECT n"; the
// others answer "SELECT 0"). nil: not such a statement.
func (r *Router) compileCreateFrom(st *parser.Statement) *compiled {
	if st.Kind != parser.DDL && st.Kind != parser.Select {
		return nil
	}
	for _, t := range st.Tables {
		if tb := r.topo.Lookup(t); tb != nil && tb.Strategy != Reference {
			return nil // refused as before: over sharded tables
		}
	}
	empty, target, ok := st.EmptyCopy()
	if !ok || r.topo.Lookup(target) != nil {
		return nil // a configured target: routed as before
	}
	if len(r.all) == 1 {
		return r.fixed(r.all, true, "CREATE TABLE AS / SELECT INTO: default shard")
	}
	sqls := make([]string, len(r.all))
	for i := range sqls {
		sqls[i] = empty
	}
	sqls[r.topo.Default] = st.SQL
	c := r.fixed(r.all, true, fmt.Sprintf("CREATE TABLE AS / SELECT INTO: rows on default shard %s, an empty table on the others", r.names[r.topo.Default]))
	c.static.SQL = sqls
	return c
}
