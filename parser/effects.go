package parser

import (
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// sideEffectFuncs are built-in functions that change state when a SELECT
// calls them: a read-only server (a streaming replica) refuses them, and a
// statement calling them is not a read.
var sideEffectFuncs = map[string]bool{
	"nextval": true, "setval": true, "lastval": true, "currval": true,
	"txid_current": true, "pg_current_xact_id": true,
	"pg_notify": true, "set_config": true,
	"pg_advisory_lock": true, "pg_advisory_lock_shared": true, "pg_advisory_xact_lock": true,
	"pg_advisory_xact_lock_shared": true, "pg_try_advisory_lock": true, "pg_try_advisory_lock_shared": true,
	"pg_try_advisory_xact_lock": true, "pg_try_advisory_xact_lock_shared": true,
	"pg_advisory_unlock": true, "pg_advisory_unlock_shared": true, "pg_advisory_unlock_all": true,
	"pg_switch_wal": true, "pg_create_restore_point": true, "pg_logical_emit_message": true,
	"pg_terminate_backend": true, "pg_cancel_backend": true, "pg_reload_conf": true,
	"pg_create_logical_replication_slot": true, "pg_create_physical_replication_slot": true,
	"pg_drop_replication_slot": true, "dblink_exec": true,
}

// sideEffects reports whether the statement calls a built-in function that
// changes state (nextval, advisory locks, large objects...); analyse
// stores it in Statement.SideEffects.
func (s *Statement) sideEffects() bool {
	found := false
	walk(s.node.ProtoReflect(), func(m protoreflect.Message) {
		if f, ok := m.Interface().(*pg.FuncCall); ok && !found {
			ns := names(f.Funcname)
			n := ns[len(ns)-1]
			found = sideEffectFuncs[n] || strings.HasPrefix(n, "lo_") || strings.HasPrefix(n, "pg_stat_reset")
		}
	})
	return found
}
