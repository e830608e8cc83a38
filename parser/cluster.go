package parser

import pg "github.com/pganalyze/pg_query_go/v6"

// Cluster-wide statements and statements the router sends to the default
// shard.
//
// Roles, databases and tablespaces belong to a Postgres server, not to one
// of its databases: CREATE ROLE on a server is seen by every database on
// it. Such a statement (Statement.Cluster) runs once on every distinct
// server behind the proxy, not once per shard, or the second shard on the
// same server would answer "role already exists".
//
// DO, CALL and MERGE (Statement.OnDefault) name no table the router can
// place (a DO or CALL body is a string; MERGE is not analysed for shard
// keys): they run on the default shard, where objects not in the config
// live, and are refused when they name a configured table.

// reclassify refines what analyse found for the statements above; it
// runs after analyse's switch.
func (s *Statement) reclassify(n *pg.Node) {
	switch x := n.Node.(type) {
	case *pg.Node_CreateRoleStmt, *pg.Node_AlterRoleStmt, *pg.Node_AlterRoleSetStmt, *pg.Node_DropRoleStmt,
		*pg.Node_GrantRoleStmt,
		*pg.Node_CreatedbStmt, *pg.Node_DropdbStmt, *pg.Node_AlterDatabaseStmt, *pg.Node_AlterDatabaseSetStmt,
		*pg.Node_AlterDatabaseRefreshCollStmt,
		*pg.Node_CreateTableSpaceStmt, *pg.Node_DropTableSpaceStmt, *pg.Node_AlterTableSpaceOptionsStmt,
		*pg.Node_CheckPointStmt:
		s.cluster()
	case *pg.Node_RenameStmt:
		if clusterObject(x.RenameStmt.RenameType) {
			s.cluster()
		}
	case *pg.Node_AlterOwnerStmt:
		if clusterObject(x.AlterOwnerStmt.ObjectType) {
			s.cluster()
		}
	case *pg.Node_CommentStmt:
		if clusterObject(x.CommentStmt.Objtype) {
			s.cluster()
		}
	case *pg.Node_SecLabelStmt:
		if clusterObject(x.SecLabelStmt.Objtype) {
			s.cluster()
		}
	case *pg.Node_DoStmt, *pg.Node_CallStmt:
		// The body may do anything, DDL included (results cached for
		// the tables it touches are dropped as after DDL), and may
		// change settings the proxy cannot see, like set_config.
		s.Kind, s.What, s.Writes, s.OnDefault = DDL, "", true, true
		if s.Session == NoSessionUse {
			s.Session = SetConfig
		}
	case *pg.Node_MergeStmt:
		s.Kind, s.What, s.Writes, s.OnDefault = Update, "", true, true
	}
}

func (s *Statement) cluster() {
	s.Kind, s.What, s.Writes, s.Cluster = DDL, "", true, true
}

// clusterObject reports object types that belong to the server: roles,
// databases, tablespaces.
func clusterObject(t pg.ObjectType) bool {
	switch t {
	case pg.ObjectType_OBJECT_ROLE, pg.ObjectType_OBJECT_DATABASE, pg.ObjectType_OBJECT_TABLESPACE:
		return true
	}
	return false
}

// MergeTarget returns the table a MERGE writes.
func (s *Statement) MergeTarget() (Table, bool) {
	m := s.node.GetMergeStmt()
	if m == nil || m.Relation == nil {
		return Table{}, false
	}
	return Table{Schema: m.Relation.Schemaname, Name: m.Relation.Relname}, true
}
