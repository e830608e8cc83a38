package proxy

import (
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/parser"
)

// Session state under transaction pooling.
//
// A client's settings live in the session, not on a backend: the startup
// packet's run-time parameters (startup) and what the client SET or changed
// with set_config(..., false) outside a transaction (sets) are replayed, in
// one round trip, on every backend the client leases. Before a backend goes
// back to the pool everything a client may have changed is undone:
//
//   - RESET ALL for a backend that saw any setting (a replay, a SET, a
//     ParameterStatus, a transaction);
//   - RESET ROLE and SET SESSION AUTHORIZATION DEFAULT as well (RESET ALL
//     leaves both alone) once the session touched the role: SET ROLE, SET
//     SESSION AUTHORIZATION, any set_config call, or a ParameterStatus for
//     session_authorization or is_superuser;
//   - DISCARD ALL for temporary tables.
//
// A reset that fails closes the backend instead of pooling it.
//
// The one exception keeps the hot path cheap: a backend whose only state is
// a session's replay (applied) is pooled as it is, and whoever leases it
// next runs RESET ALL and its own replay in one round trip, or nothing when
// its settings are the same (every pgbench or JDBC client sends the same
// application_name). No client ever runs a statement before its own
// settings are in place; the proxy's own queries on pooled backends reset
// first (resetApplied). A session with plain SETs never pays a DISCARD ALL.

// sessionState is what the session tracks about its settings.
type sessionState struct {
	// startup are the startup packet's settings: replayed first, and what
	// RESET returns to (the session default, as in Postgres).
	startup []setting
	// role: the session may have changed role or session authorization;
	// its backends get the role reset before they are pooled.
	role bool
	// capture: a set_config(..., false) statement runs outside a
	// transaction; the backend's session settings are read back into
	// sets before it is released. Cleared at ReadyForQuery.
	capture bool
	// touched: the request runs a statement that changes settings the
	// proxy cannot see (set_config): every backend it used is reset.
	// Cleared at ReadyForQuery.
	touched bool
	// txSet: the open transaction ran a SET (not LOCAL) or a
	// set_config(..., false), which Postgres keeps after COMMIT: when
	// the transaction's backends are released, their session settings
	// are read back into sets (after ROLLBACK they read back unchanged).
	// Cleared at a ReadyForQuery outside a transaction.
	txSet bool
	// replay caches the query that applies startup and sets (empty:
	// rebuild).
	replay string
}

// resetRoleSQL undoes what RESET ALL leaves: role and session authorization.
const resetRoleSQL = "RESET ROLE; SET SESSION AUTHORIZATION DEFAULT; RESET ALL"

// captureSQL lists the settings a backend's session changed, in a form
// set_config reads back (current_setting's text, with units).
// Role and session authorization are not in pg_settings: they come last,
// session authorization first (it resets the role when replayed). The
// transaction_* settings are the open transaction's, set from the
// default_transaction_* ones at each start: replaying one would set a
// transaction's mode after its first query (25001), so they are left out.
const captureSQL = "SELECT name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings WHERE source = 'session'" +
	" AND name NOT IN ('transaction_isolation', 'transaction_read_only', 'transaction_deferrable')" +
	" UNION ALL SELECT 'session_authorization', pg_catalog.current_setting('session_authorization')" +
	" UNION ALL SELECT 'role', pg_catalog.current_setting('role')"

// roleSetting reports names RESET ALL does not reset.
func roleSetting(name string) bool {
	return name == "role" || name == "session_authorization"
}

// replayQuery returns the query applying the session's settings, or "".
func (s *session) replayQuery() string {
	if s.state.replay == "" && len(s.state.startup)+len(s.sets) > 0 {
		var sb strings.Builder
		for _, list := range [][]setting{s.state.startup, s.sets} {
			for _, x := range list {
				if sb.Len() > 0 {
					sb.WriteString(";\n")
				}
				sb.WriteString(x.sql)
			}
		}
		s.state.replay = sb.String()
	}
	return s.state.replay
}

// setsChanged drops the cached replay query.
func (s *session) setsChanged() { s.state.replay = "" }

// noteSet records what a SET statement may leave on a backend beyond RESET
// ALL's reach.
func (s *session) noteSet(st *parser.Statement) {
	name, local := st.SetName()
	if roleSetting(name) {
		s.state.role = true
	}
	if s.status != 'I' && !local && !strings.HasPrefix(name, "shardproxy.") {
		s.state.txSet = true
	}
}

// setConfigUsed notes a statement calling set_config(..., false): it may
// change any setting, the role included. Outside a transaction the
// change becomes the client's session setting (read back at release).
func (s *session) setConfigUsed() {
	s.state.role, s.state.touched = true, true
	if s.status == 'I' {
		s.state.capture = true
	} else {
		s.state.txSet = true
	}
}

// resetSQL is what release runs on a backend that saw session state.
func (s *session) resetSQL(b *backend) string {
	if s.state.role || b.resetRole {
		return resetRoleSQL
	}
	return "RESET ALL"
}

// noteStatus marks a backend whose ParameterStatus says its user changed.
func noteStatus(b *backend, body []byte) {
	b.dirty = true
	if len(body) > 0 && (body[0] == 's' || body[0] == 'i') {
		var ps pgproto3.ParameterStatus
		if ps.Decode(body) == nil && (ps.Name == "session_authorization" || ps.Name == "is_superuser") {
			b.resetRole = true
		}
	}
}

// captureSettings reads b's session settings back into the client's
// sets, after a set_config(..., false) outside a transaction, so that
// the client keeps them on every backend as Postgres would. On failure
// the backend is closed; the client keeps its earlier settings.
func (s *session) captureSettings(b *backend) {
	rows, err := s.settingRows(b, captureSQL)
	if err != nil || b.txStatus != 'I' {
		b.broken = true
		return
	}
	for _, r := range rows {
		name := strings.ToLower(r[0])
		kept := s.sets[:0]
		for _, x := range s.sets {
			if x.name != name {
				kept = append(kept, x)
			}
		}
		s.sets = kept
		if (name == "role" && r[1] == "none") || (name == "session_authorization" && r[1] == b.params["session_authorization"]) {
			continue // the backend's own
		}
		s.sets = append(s.sets, setting{name: name,
			sql: "SELECT pg_catalog.set_config(" + quoteLiteral(name) + ", " + quoteLiteral(r[1]) + ", false)"})
	}
	s.setsChanged()
}

// settingRows runs sql on b and returns its text rows of two columns.
func (s *session) settingRows(b *backend, sql string) ([][2]string, error) {
	if err := b.sendQuery(sql); err != nil {
		return nil, err
	}
	var out [][2]string
	var qerr error
	for {
		typ, body, _, err := b.rd.next()
		if err != nil {
			b.broken = true
			return nil, &shardError{shard: b.pool.name, err: err}
		}
		switch typ {
		case 'D':
			var d pgproto3.DataRow
			if err := d.Decode(body); err == nil && len(d.Values) == 2 {
				out = append(out, [2]string{string(d.Values[0]), string(d.Values[1])})
			}
		case 'E':
			var e pgproto3.ErrorResponse
			e.Decode(body)
			qerr = &pgError{code: e.Code, msg: e.Message, detail: e.Detail, hint: e.Hint}
		case 'Z':
			b.txStatus = body[0]
			return out, qerr
		}
	}
}

// resetFallback returns what must follow a RESET statement on the check
// backend so that it returns to the startup packet's value (the session
// default) rather than the server's, or "".
func (s *session) resetFallback(name string) string {
	var sb strings.Builder
	for _, x := range s.state.startup {
		if name == "all" || x.name == name {
			sb.WriteString(";\n")
			sb.WriteString(x.sql)
		}
	}
	return sb.String()
}

// execSet runs a SET/RESET on b and relays its reply, keeping only the
// first command's tag: the statements the proxy appended (startup values
// after a RESET, a probe of the resulting value) are invisible to the
// client, as in Postgres, where RESET returns to the session default in one
// step. ParameterStatus messages come once at the end, as Postgres sends
// them. With probe, the last statement is a one-value SELECT whose value is
// returned and whose rows are not relayed.
func (s *session) execSet(b *backend, sql string, probe bool) (string, error) {
	if err := b.sendQuery(sql); err != nil {
		s.fail(err)
		return "", nil
	}
	tagged := false
	value := ""
	for {
		typ, body, raw, err := b.rd.next()
		if err != nil {
			b.broken = true
			s.fail(&shardError{shard: b.pool.name, err: err})
			return "", nil
		}
		switch typ {
		case 'Z':
			b.txStatus = body[0]
			return value, nil
		case 'S':
			noteStatus(b, body)
		case 'T':
			if probe {
				continue
			}
		case 'D':
			if probe {
				var d pgproto3.DataRow
				if d.Decode(body) == nil && len(d.Values) == 1 {
					value = string(d.Values[0])
				}
				continue
			}
		case 'C':
			if tagged {
				continue
			}
			tagged = true
		}
		s.out = append(s.out, raw...)
	}
}

// mergedSetting reports settings whose SET merges with the current value
// (SET DateStyle TO ymd keeps the output style): replaying the client's
// text on a fresh backend would give another value, so the resulting
// value is read back and kept instead.
func mergedSetting(name string) bool { return name == "datestyle" }

func probeSQL(name string) string {
	return "SELECT pg_catalog.current_setting(" + quoteLiteral(name) + ")"
}

// keepValue makes the session's last setting of name replay value.
func (s *session) keepValue(name, value string) {
	for i := len(s.sets) - 1; i >= 0; i-- {
		if s.sets[i].name == name {
			s.sets[i].sql = "SET " + quoteIdent(name) + " TO " + quoteLiteral(value)
			break
		}
	}
	s.setsChanged()
}

// setStatement applies the session bookkeeping of a successful SET/RESET
// outside a transaction. RESET ALL keeps role and session authorization,
// which Postgres's RESET ALL leaves alone.
func (s *session) setStatement(st *parser.Statement, name string) {
	kept := s.sets[:0]
	for _, x := range s.sets {
		// SET/RESET SESSION AUTHORIZATION also resets the role.
		if x.name != name && (name != "all" || roleSetting(x.name)) && (name != "session_authorization" || x.name != "role") {
			kept = append(kept, x)
		}
	}
	s.sets = kept
	if !st.IsReset() {
		s.sets = append(s.sets, setting{name: name, sql: st.SQL})
	}
	s.setsChanged()
}

// multiSets records the SETs of a multi-statement query string that ran
// outside a transaction on b: when the string succeeded and left no
// transaction open they are the client's session settings, as in Postgres
// (a failed string rolls them back with its implicit transaction).
func (s *session) multiSets(b *backend, sets []*parser.Statement) {
	if len(sets) == 0 || b.txStatus != 'I' || s.q.sqlstate != "" {
		return
	}
	for _, st := range sets {
		name, _ := st.SetName()
		s.setStatement(st, name)
	}
}

// applySettings puts the session's settings on a freshly leased backend:
// nothing when the backend already carries exactly them, else RESET ALL
// (when it carries another session's) and the replay, in one round trip.
// A session that changed its role always gets a full reset at release.
func (s *session) applySettings(b *backend) error {
	q := s.replayQuery()
	if s.state.role && q != "" {
		b.dirty = true // role and session authorization: reset eagerly
	}
	if q == b.applied {
		return nil
	}
	sql := q
	if b.applied != "" {
		sql = "RESET ALL"
		if q != "" {
			sql += ";\n" + q
		}
	}
	b.applied = ""
	if err := s.quiet(b, sql); err != nil {
		b.dirty = true
		return err
	}
	b.applied = q
	return nil
}

// resetApplied clears a pooled backend's replayed settings before the
// proxy runs its own queries on it.
func resetApplied(b *backend) {
	if b.applied == "" {
		return
	}
	b.applied = ""
	if err := b.sendQuery("RESET ALL"); err != nil {
		return
	}
	for {
		typ, body, _, err := b.rd.next()
		if err != nil {
			b.broken = true
			return
		}
		if typ == 'Z' {
			b.txStatus = body[0]
			return
		}
	}
}
