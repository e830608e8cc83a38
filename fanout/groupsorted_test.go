package fanout

import (
	"errors"
	"fmt"
	"math/rand"
	"sort"
	"testing"
)

// TestGroupSortedMatchesGroup: merging shards' ordered partial groups in
// order and combining adjacent keys gives the hash merge's groups, in key
// order, and stops reading once a LIMIT is met.
func TestGroupSortedMatchesGroup(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	const shards = 5
	parts := make([][][]byte, shards)
	var all [][]byte
	for s := range parts {
		// Each shard: its groups (keys 0..39, some missing), ordered.
		for k := 0; k < 40; k++ {
			if rng.Intn(3) == 0 {
				continue
			}
			key := []byte(fmt.Sprintf("%d.%s", k, []string{"5", "50", "500"}[rng.Intn(3)])) // equal numerics, other text
			row := EncodeRow(nil, [][]byte{key, []byte(fmt.Sprint(rng.Intn(9))), []byte(fmt.Sprintf("%d.25", rng.Intn(100)))})
			parts[s] = append(parts[s], row)
			all = append(all, row)
		}
	}
	spec := GroupSpec{Keys: []int{0}, KeyKinds: []KeyKind{KeyNumeric}, Cols: []AggCol{
		{Func: "", Col: 0, Type: NumericOID}, {Func: "count", Col: 1, Type: Int8OID}, {Func: "sum", Col: 2, Type: NumericOID}}}
	cmp, _ := Comparator(NumericOID, true)
	ord := NewOrder([]OrderKey{{Col: 0, Cmp: cmp}})
	srcs := make([]Source, shards)
	for i, p := range parts {
		srcs[i] = NewRows(p)
	}
	sorted, err := GroupSorted(MergeSort(ord, srcs...), spec, &Budget{Max: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	got := drainRows(t, sorted)
	hashed, err := Group(NewRows(all), spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := drainRows(t, hashed)
	sort.Slice(want, func(i, j int) bool {
		c, _ := cmpNumeric(want[i][0], want[j][0])
		return c < 0
	})
	if len(got) != len(want) {
		t.Fatalf("%d groups, hash merge %d", len(got), len(want))
	}
	for i := range got {
		// The group key's representative may differ (1.5 vs 1.50): compare by value.
		if c, _ := cmpNumeric(got[i][0], want[i][0]); c != 0 || got[i][1] != want[i][1] || got[i][2] != want[i][2] {
			t.Fatalf("group %d: %v, hash merge %v", i, got[i], want[i])
		}
	}
	// A source that fails mid-stream fails the merge.
	bad := &failingAfter{rows: parts[0], after: 3}
	g, _ := GroupSorted(MergeSort(ord, bad, NewRows(parts[1])), spec, nil)
	for {
		row, err := g.Next()
		if err != nil {
			if !errors.Is(err, errShardGone) {
				t.Fatal(err)
			}
			break
		}
		if row == nil {
			t.Fatal("no error")
		}
	}
}

var errShardGone = errors.New("shard lost")

type failingAfter struct {
	rows  [][]byte
	after int
}

func (f *failingAfter) Next() ([]byte, error) {
	if f.after == 0 {
		return nil, errShardGone
	}
	f.after--
	r := f.rows[0]
	f.rows = f.rows[1:]
	return r, nil
}

func drainRows(t *testing.T, s Source) [][]string {
	t.Helper()
	var out [][]string
	for {
		row, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if row == nil {
			return out
		}
		vals, _ := DecodeRow(nil, row)
		r := make([]string, len(vals))
		for i, v := range vals {
			r[i] = string(v)
		}
		out = append(out, r)
	}
}
