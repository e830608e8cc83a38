package parser

import (
	"reflect"
	"testing"
)

func TestSortKeys(t *testing.T) {
	cases := []struct {
		sql  string
		keys []SortKey
		ok   bool
	}{
		{"SELECT id, total FROM orders ORDER BY total DESC, id", []SortKey{{1, true, true, ""}, {0, false, false, ""}}, true},
		{"SELECT id, total AS t FROM orders ORDER BY t NULLS FIRST", []SortKey{{1, false, true, ""}}, true},
		{"SELECT o.id, o.total FROM orders o ORDER BY 2 DESC NULLS LAST", []SortKey{{1, true, false, ""}}, true},
		{"SELECT o.id FROM orders o ORDER BY o.id", []SortKey{{0, false, false, ""}}, true},
		{"SELECT id FROM orders ORDER BY total", nil, false}, // not selected
		{"SELECT * FROM orders ORDER BY id", []SortKey{{-1, false, false, "id"}}, true},
		{"SELECT id, total FROM orders ORDER BY total + 1", nil, false},
		{"SELECT id FROM orders ORDER BY 3", nil, false},
		{"SELECT id FROM orders", nil, true},
	}
	for _, c := range cases {
		sts, err := Parse(c.sql)
		if err != nil {
			t.Fatal(err)
		}
		sh, _ := sts[0].Shape()
		if sh.SortOK != c.ok || (c.ok && !reflect.DeepEqual(sh.Sort, c.keys)) {
			t.Errorf("%s: %+v %v, want %+v %v", c.sql, sh.Sort, sh.SortOK, c.keys, c.ok)
		}
	}
	sts, _ := Parse("SELECT id FROM orders ORDER BY id LIMIT $1")
	if sh, _ := sts[0].Shape(); sh.LimitCount == nil || sh.LimitCount.Kind != ParamVal {
		t.Errorf("LIMIT $1: %+v", sh.LimitCount)
	}
}
