package proxy

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/router"
)

// adminDatabase is the virtual database of the admin console, modelled on
// PgBouncer's: admin users connect to it with any client and send SHOW
// commands; answers are ordinary rows.
const adminDatabase = "shardproxy"

// loggedIn runs once the client has authenticated: it records the
// connection's facts for SHOW CLIENTS and, on the admin database, lets only
// admins in (42501, as Postgres refuses a database without CONNECT).
func (s *session) loggedIn() error {
	s.q.addr = s.conn.RemoteAddr().String()
	s.q.connected = time.Now()
	if s.database != adminDatabase {
		return nil
	}
	if !s.srv.live.Load().admins[s.user] {
		return &pgError{code: pgerrcode.InsufficientPrivilege,
			msg:    fmt.Sprintf("permission denied for database \"%s\"", adminDatabase),
			detail: fmt.Sprintf("User %s is not in the admins list of the shardproxy config.", s.user)}
	}
	s.q.admin = true
	s.q.state.Store(clientAdmin)
	return nil
}

var adminHelp = [][]string{
	{"SHOW SHARDS", "shards, their health and last check"},
	{"SHOW POOLS", "backend pools per shard: size, open, idle, in use, waiting clients"},
	{"SHOW CLIENTS", "client connections"},
	{"SHOW SERVERS", "backend connections, idle or leased by a client"},
	{"SHOW REPLICAS", "every server of the shards with replicas: role, state, lag, in flight, latency, reads routed"},
	{"SHOW STATS", "statements, errors and time per route kind and per shard"},
	{"SHOW TOTALS", "global counters: slow queries, dropped log lines, parse cache"},
	{"SHOW QUERIES", "per-fingerprint statistics, by total time"},
	{"SHOW CONFIG", "running configuration (no passwords)"},
	{"SHOW ROUTE <sql>", "where a statement would run, and why"},
	{"SHOW TRANSACTIONS", "prepared transactions of this deployment on the shards (in doubt until recovery resolves them), and two-phase commit counters"},
	{"RECOVER", "resolve prepared transactions left by a crash now (recovery also runs every two_phase.recovery_interval)"},
	{"SHOW CACHE", "result cache rules (entries, hits, hit ratio), consolidation and backend"},
	{"CACHE CLEAR", "drop every result cache entry (on every proxy with Redis)"},
	{"RELOAD", "re-read the config file"},
	{"SHOW HELP", "this list"},
}

// adminQuery answers one Query on the admin console.
func (s *session) adminQuery(sql string) error {
	s.q.queries.Add(1)
	text := strings.TrimSpace(strings.TrimRight(strings.TrimSpace(sql), ";"))
	word, rest := cutWord(text)
	if err := s.adminPermitted(strings.ToUpper(word), rest); err != nil {
		s.sendError(err)
		return s.readyForQuery()
	}
	switch strings.ToUpper(word) {
	case "":
		s.out = append(s.out, 'I', 0, 0, 0, 4)
	case "SHOW":
		what, arg := cutWord(rest)
		if err := s.adminShow(strings.ToUpper(what), arg); err != nil {
			s.sendError(err)
		}
	case "RELOAD":
		if rest != "" {
			s.sendError(adminSyntax(text))
			break
		}
		if err := s.srv.Reload(); err != nil {
			s.sendError(&pgError{code: pgerrcode.ConfigFileError, msg: "reload: " + err.Error(),
				hint: "The running config is unchanged; see the proxy log."})
			break
		}
		s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte("RELOAD")})
	case "RECOVER":
		n, err := s.srv.Recover(context.Background())
		if err != nil {
			s.out = appendMsg(s.out, &pgproto3.NoticeResponse{Severity: "WARNING", SeverityUnlocalized: "WARNING",
				Code: pgerrcode.ConnectionFailure, Message: err.Error()})
		}
		s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte("RECOVER " + strconv.Itoa(n))})
	case "CACHE":
		if !strings.EqualFold(rest, "CLEAR") {
			s.sendError(adminSyntax(text))
			break
		}
		s.srv.results.Clear(context.Background())
		s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte("CACHE CLEAR")})
	case "SET":
		// Drivers set client_encoding and the like on connect; as
		// PgBouncer's console, accept and ignore.
		s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte("SET")})
	default:
		s.sendError(adminSyntax(text))
	}
	return s.readyForQuery()
}

func adminSyntax(text string) error {
	w, _ := cutWord(text)
	return &pgError{code: pgerrcode.SyntaxError, msg: fmt.Sprintf("unknown admin command %q", w),
		hint: "SHOW HELP lists the admin console's commands."}
}

// cutWord splits off the first whitespace-separated word.
func cutWord(s string) (word, rest string) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' })
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimSpace(s[i:])
}

// column is a result column; num columns are sent as int8/numeric so psql
// aligns them right.
type column struct {
	name string
	oid  uint32
}

const (
	oidText    = 25
	oidInt8    = 20
	oidNumeric = 1700
)

func textCols(names ...string) []column {
	out := make([]column, len(names))
	for i, n := range names {
		out[i] = column{n, oidText}
	}
	return out
}

// rows writes a complete result: RowDescription, DataRows, CommandComplete.
func (s *session) rows(cols []column, data [][]string) {
	fields := make([]pgproto3.FieldDescription, len(cols))
	for i, c := range cols {
		fields[i] = pgproto3.FieldDescription{Name: []byte(c.name), DataTypeOID: c.oid, DataTypeSize: -1, TypeModifier: -1}
	}
	s.out = appendMsg(s.out, &pgproto3.RowDescription{Fields: fields})
	for _, r := range data {
		vals := make([][]byte, len(r))
		for i, v := range r {
			vals[i] = []byte(v)
		}
		s.out = appendMsg(s.out, &pgproto3.DataRow{Values: vals})
	}
	s.out = appendMsg(s.out, &pgproto3.CommandComplete{CommandTag: []byte("SHOW")})
}

func (s *session) adminShow(what, arg string) error {
	if arg != "" && what != "ROUTE" {
		return adminSyntax("SHOW " + what + " " + arg)
	}
	srv := s.srv
	switch what {
	case "HELP":
		s.rows(textCols("command", "description"), adminHelp)
	case "REPLICAS":
		s.showReplicas()
	case "SHARDS":
		var data [][]string
		for i, st := range srv.health.status() {
			p := srv.pools[i]
			state := "up"
			if !st.Up {
				state = "down"
			}
			data = append(data, []string{st.Name, p.config().Host, strconv.Itoa(int(p.config().Port)), p.config().Database, state,
				fmtTime(st.Since), strconv.FormatUint(st.Checks, 10), fmtTime(st.LastCheck),
				strconv.Itoa(st.ConsecutiveFailures), st.LastError})
		}
		cols := textCols("shard", "host", "port", "database", "state", "since", "checks", "last_check", "failures", "last_error")
		cols[2].oid, cols[6].oid, cols[8].oid = oidInt8, oidInt8, oidInt8
		s.rows(cols, data)
	case "POOLS":
		var data [][]string
		reserved := srv.reservedByPool() // roles.go
		for _, p := range srv.allPools() {
			ps := p.snapshot()
			data = append(data, []string{p.name, itoa(ps.size), itoa(ps.open), itoa(ps.idle), itoa(ps.open - ps.idle),
				itoa(ps.waiting), strconv.FormatUint(p.connects.Load(), 10), strconv.FormatUint(p.connectErrors.Load(), 10), itoa(reserved[p]),
				p.config().User})
		}
		cols := textCols("shard", "size", "open", "idle", "in_use", "waiting", "connects", "connect_errors", "reserved", "user")
		for i := 1; i < len(cols)-1; i++ {
			cols[i].oid = oidInt8
		}
		s.rows(cols, data)
	case "CLIENTS":
		var data [][]string
		srv.sessions.Range(func(k, v any) bool {
			c := v.(*session)
			data = append(data, []string{strconv.FormatUint(uint64(c.pid), 10), c.user, c.database, c.q.addr,
				clientStateNames[c.q.state.Load()], fmtTime(c.q.connected), strconv.FormatUint(c.q.queries.Load(), 10), c.reservedSummary()})
			return true
		})
		sort.Slice(data, func(i, j int) bool {
			a, _ := strconv.ParseUint(data[i][0], 10, 32)
			b, _ := strconv.ParseUint(data[j][0], 10, 32)
			return a < b
		})
		cols := textCols("conn_id", "user", "database", "addr", "state", "connected", "queries", "reserved")
		cols[0].oid, cols[6].oid = oidInt8, oidInt8
		s.rows(cols, data)
	case "SERVERS":
		s.rows(textCols("shard", "backend_pid", "state", "conn_id", "user", "backend_user"), srv.servers())
	case "STATS":
		s.rows([]column{{"scope", oidText}, {"name", oidText}, {"queries", oidInt8}, {"errors", oidInt8},
			{"total_ms", oidNumeric}, {"avg_ms", oidNumeric}}, srv.statsRows())
	case "TOTALS":
		m := srv.obs.m
		hits, misses := srv.cache.Stats()
		var queries, errs float64
		for k := range nRouteKinds {
			queries += counterValue(m.queries[k][0]) + counterValue(m.queries[k][1])
			errs += counterValue(m.queries[k][1])
		}
		data := [][]string{
			{"queries", ftoa(queries)},
			{"errors", ftoa(errs)},
			{"slow_queries", ftoa(counterValue(m.slow))},
			{"log_lines_dropped", ftoa(counterValue(m.logDropped))},
			{"fanout_rows_merged", ftoa(counterValue(m.rowsMerged))},
			{"parse_cache_hits", strconv.FormatUint(hits, 10)},
			{"parse_cache_misses", strconv.FormatUint(misses, 10)},
			{"fingerprints", itoa(len(srv.obs.stats.top()))},
			{"config_reloads", ftoa(counterValue(m.reloads[0]))},
			{"config_reload_errors", ftoa(counterValue(m.reloads[1]))},
		}
		s.rows([]column{{"name", oidText}, {"value", oidInt8}}, data)
	case "QUERIES":
		var data [][]string
		for _, st := range srv.obs.stats.top() {
			data = append(data, []string{st.fingerprint, st.query, strconv.FormatUint(st.calls, 10),
				fmtMS(st.total), fmtMS(st.total / time.Duration(max(st.calls, 1))), fmtMS(st.max),
				strconv.FormatInt(st.rows, 10), strconv.FormatUint(st.errors, 10), strconv.FormatUint(st.slow, 10)})
		}
		s.rows([]column{{"fingerprint", oidText}, {"query", oidText}, {"calls", oidInt8}, {"total_ms", oidNumeric},
			{"mean_ms", oidNumeric}, {"max_ms", oidNumeric}, {"rows", oidInt8}, {"errors", oidInt8}, {"slow", oidInt8}}, data)
	case "CONFIG":
		s.rows(textCols("key", "value", "reloadable"), srv.configRows())
	case "TRANSACTIONS":
		list, err := srv.listInDoubt(context.Background())
		if err != nil {
			s.out = appendMsg(s.out, &pgproto3.NoticeResponse{Severity: "WARNING", SeverityUnlocalized: "WARNING",
				Code: pgerrcode.ConnectionFailure, Message: err.Error()})
		}
		tp := srv.TwoPhaseStats()
		var data [][]string
		for _, x := range list {
			data = append(data, []string{x.GID, x.Shard, x.Decider, x.Prepared,
				strconv.FormatInt(tp.Commits, 10), strconv.FormatInt(tp.Aborts, 10), strconv.FormatInt(tp.Recovered, 10)})
		}
		s.rows(textCols("gid", "shard", "decider", "prepared", "commits", "aborts", "recovered"), data)
	case "ROUTE":
		return s.showRoute(arg)
	case "CACHE":
		s.showCache()
	default:
		return &pgError{code: pgerrcode.SyntaxError, msg: fmt.Sprintf("unknown SHOW %q on the admin console", what),
			hint: "SHOW HELP lists the admin console's commands."}
	}
	return nil
}

func (s *session) showRoute(sql string) error {
	if sql == "" {
		return &pgError{code: pgerrcode.SyntaxError, msg: "SHOW ROUTE needs a statement", hint: "SHOW ROUTE SELECT * FROM orders WHERE user_id = 42"}
	}
	stmts, err := parser.Parse(sql)
	if err != nil {
		return err
	}
	var data [][]string
	for _, st := range stmts {
		plan, err := s.srv.router.Route(st, nil)
		if row := s.coordinatorRouteRow(st, err); row != nil {
			data = append(data, append(row, s.srv.cacheText(st, sql)))
			continue
		}
		if err != nil {
			return err
		}
		names := make([]string, len(plan.Shards))
		for i, x := range plan.Shards {
			names[i] = s.srv.pools[x].name
		}
		kind := "single"
		if !plan.Single() {
			kind = "multi"
		}
		data = append(data, []string{strings.Join(names, ","), kind, strconv.FormatBool(plan.Write),
			strconv.FormatBool(plan.SQL != nil), strconv.FormatBool(plan.Merge != nil && plan.Merge.Grouped), plan.Reason, mergeText(plan),
			s.srv.cacheText(st, sql)})
	}
	s.rows(textCols("shards", "kind", "write", "rewritten", "aggregate", "reason", "merge", "cache"), data)
	return nil
}

// servers lists backend connections: each pool's idle ones, and those
// leased by sessions.
func (srv *Server) servers() [][]string {
	var data [][]string
	for _, p := range srv.allPools() {
		user := p.config().User
		p.mu.Lock()
		for _, b := range p.idle {
			data = append(data, []string{p.name, strconv.FormatUint(uint64(b.pid), 10), "idle", "", "", user})
		}
		p.mu.Unlock()
	}
	srv.sessions.Range(func(_, v any) bool {
		c := v.(*session)
		c.mu.Lock()
		for _, b := range c.leased {
			data = append(data, []string{b.pool.name, strconv.FormatUint(uint64(b.pid), 10), "active",
				strconv.FormatUint(uint64(c.pid), 10), c.user, b.pool.config().User})
		}
		c.mu.Unlock()
		return true
	})
	sort.SliceStable(data, func(i, j int) bool { return data[i][0] < data[j][0] })
	return data
}

func (srv *Server) statsRows() [][]string {
	m := srv.obs.m
	var data [][]string
	for k := range nRouteKinds {
		h := histValue(m.duration[k])
		errs := counterValue(m.queries[k][1])
		data = append(data, []string{"route", routeKindNames[k], strconv.FormatUint(h.GetSampleCount(), 10),
			ftoa(errs), fmtFloatMS(h.GetSampleSum()), fmtFloatMS(avg(h))})
	}
	for i, p := range srv.pools {
		h := histValue(m.shardDuration[i])
		data = append(data, []string{"shard", p.name, strconv.FormatUint(h.GetSampleCount(), 10), "",
			fmtFloatMS(h.GetSampleSum()), fmtFloatMS(avg(h))})
	}
	return data
}

func (srv *Server) configRows() [][]string {
	lc := srv.live.Load()
	c := lc.cfg
	users := make([]string, len(c.Users))
	for i, u := range c.Users {
		users[i] = u.Name + " (" + u.Auth + ")"
	}
	sl := srv.obs.slowLog.Load()
	h := srv.health.cfg.Load()
	var shards []string
	for _, p := range srv.pools {
		shards = append(shards, p.name+"="+net.JoinHostPort(p.config().Host, strconv.Itoa(int(p.config().Port)))+"/"+p.config().Database)
	}
	rows := [][]string{
		{"listen", c.Listen, "no"},
		{"admin_listen", c.AdminListen, "no"},
		{"database", c.Database, "no"},
		{"users", strings.Join(users, ", "), "yes"},
		{"admins", strings.Join(c.Admins, ", "), "yes"},
		{"backend_roles", c.BackendRoles, "yes"},
		{"pool.size", itoa(c.Pool.Size), "yes"},
		{"pool.connect_timeout", c.Pool.ConnectTimeout.String(), "no"},
		{"pool.acquire_timeout", c.Pool.AcquireTimeout.String(), "no"},
		{"query_stats", itoa(c.QueryStats), "yes"},
		{"health.interval", h.Interval.String(), "yes"},
		{"health.timeout", h.Timeout.String(), "yes"},
		{"health.failures", itoa(h.Failures), "yes"},
		{"health.successes", itoa(h.Successes), "yes"},
		{"log.slow_query", sl.Threshold.String(), "yes"},
		{"log.max_per_second", strconv.FormatFloat(sl.PerSecond, 'f', -1, 64), "yes"},
		{"log.burst", itoa(sl.Burst), "yes"},
		{"shards", strings.Join(shards, " "), "no"},
		{"coordinator", c.Coordinator.String(), "no"},
	}
	// Every other key of the running config, section by section, with
	// secrets hidden; then the tables the router places.
	shown := map[string]bool{}
	for _, r := range rows {
		shown[r[0]] = true
	}
	for _, r := range flattenConfig("", reflect.ValueOf(c), nil) {
		if shown[r[0]] || strings.HasPrefix(r[0], "users[") || strings.HasPrefix(r[0], "health.") || strings.HasPrefix(r[0], "coordinator.") {
			continue
		}
		rows = append(rows, r)
	}
	topo := srv.router.Topology()
	names := make([]string, 0, len(topo.Tables))
	for n := range topo.Tables {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		t := topo.Tables[n]
		v := string(t.Strategy)
		if t.Key != "" {
			v += " (" + t.Key + ")"
		}
		rows = append(rows, []string{"tables." + n, v, "no"})
	}
	return rows
}

func itoa(n int) string     { return strconv.Itoa(n) }
func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05.000Z07:00")
}

func fmtMS(d time.Duration) string { return strconv.FormatFloat(ms(d), 'f', 3, 64) }

func fmtFloatMS(sec float64) string { return strconv.FormatFloat(sec*1000, 'f', 3, 64) }

func avg(h *dto.Histogram) float64 {
	if h.GetSampleCount() == 0 {
		return 0
	}
	return h.GetSampleSum() / float64(h.GetSampleCount())
}

// counterValue reads a counter (admin console only, not the hot path).
func counterValue(c prometheus.Metric) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

func histValue(o any) *dto.Histogram {
	var m dto.Metric
	if w, ok := o.(interface{ Write(*dto.Metric) error }); ok {
		w.Write(&m)
	}
	return m.GetHistogram()
}

// mergeText is the merge tree a multi-shard answer runs, on one line.
func mergeText(p *router.Plan) string { return p.MergeTree() }
