package parser

import (
	"reflect"
	"testing"
)

func TestCopy(t *testing.T) {
	cases := []struct {
		sql  string
		want Copy
	}{
		{`COPY orders FROM STDIN`, Copy{Table: Table{Name: "orders"}, From: true, Stdio: true,
			Options: CopyOptions{Format: "text", Delimiter: '\t', Null: `\N`}}},
		{`copy public."Orders" (id, "User_id") from stdin with (format csv, header, delimiter ';', null 'NULL', force_null (id))`,
			Copy{Table: Table{Schema: "public", Name: "Orders"}, Columns: []string{"id", "User_id"}, From: true, Stdio: true,
				Options: CopyOptions{Format: "csv", Delimiter: ';', Null: "NULL", Quote: '"', Escape: '"', Header: true, ForceNull: []string{"id"}}}},
		{`COPY orders FROM STDIN CSV HEADER QUOTE '''' ESCAPE '\' FORCE NOT NULL status`,
			Copy{Table: Table{Name: "orders"}, From: true, Stdio: true,
				Options: CopyOptions{Format: "csv", Delimiter: ',', Quote: '\'', Escape: '\\', Header: true, ForceNotNull: []string{"status"}}}},
		{`COPY orders FROM STDIN (FORMAT binary)`, Copy{Table: Table{Name: "orders"}, From: true, Stdio: true,
			Options: CopyOptions{Format: "binary", Delimiter: '\t', Null: `\N`}}},
		{`COPY orders TO '/tmp/x'`, Copy{Table: Table{Name: "orders"},
			Options: CopyOptions{Format: "text", Delimiter: '\t', Null: `\N`}}},
		{`COPY orders FROM STDIN (HEADER false, DELIMITER 'ab')`, Copy{Table: Table{Name: "orders"}, From: true, Stdio: true,
			Options: CopyOptions{Format: "text", Delimiter: '\t', Null: `\N`, Bad: true}}},
	}
	for _, c := range cases {
		t.Run(c.sql, func(t *testing.T) {
			stmts, err := Parse(c.sql)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := stmts[0].Copy()
			if !ok {
				t.Fatal("not a COPY")
			}
			if stmts[0].Kind != Unsupported {
				t.Errorf("kind %v", stmts[0].Kind)
			}
			if !reflect.DeepEqual(*got, c.want) {
				t.Errorf("got  %+v\nwant %+v", *got, c.want)
			}
		})
	}
	stmts, _ := Parse(`COPY (SELECT * FROM orders WHERE user_id = 42) TO STDOUT`)
	c, _ := stmts[0].Copy()
	if c.Query == nil || c.Query.Kind != Select || len(c.Query.Tables) != 1 || c.From || !c.Stdio {
		t.Errorf("COPY (query): %+v", c)
	}
	if stmts, _ := Parse(`SELECT 1`); stmts != nil {
		if _, ok := stmts[0].Copy(); ok {
			t.Error("SELECT is not a COPY")
		}
	}
}
