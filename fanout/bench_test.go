package fanout

import (
	"fmt"
	"math/rand"
	"sort"
	"strconv"
	"testing"
)

// Benchmarks of merge throughput over in-memory shards. Rows are about
// 100 bytes in text format: id int8, customer text, amount numeric,
// created timestamptz, status text.

const benchShards = 4

// benchRow is one ~100-byte row.
func benchRow(id int64, amount string) []byte {
	return EncodeRow(nil, [][]byte{
		strconv.AppendInt(nil, id, 10),
		fmt.Appendf(nil, "customer-%06d@example.com shipping", id%100000),
		[]byte(amount),
		fmt.Appendf(nil, "2025-03-%02d 10:%02d:%02d.123456+00", 1+id%28, id%60, (id/60)%60),
		[]byte("delivered"),
	})
}

func benchAmount(rng *rand.Rand) string {
	return fmt.Sprintf("%d.%02d", rng.Intn(100000), rng.Intn(100))
}

// benchShardRows returns perShard rows per shard; sorted orders each
// shard by ord.
func benchShardRows(perShard int, ord *Order) [][][]byte {
	rng := rand.New(rand.NewSource(1))
	shards := make([][][]byte, benchShards)
	for s := range shards {
		for i := range perShard {
			shards[s] = append(shards[s], benchRow(int64(i*benchShards+s), benchAmount(rng)))
		}
		if ord != nil {
			sort.SliceStable(shards[s], func(i, j int) bool { return ord.Less(shards[s][i], shards[s][j]) })
		}
	}
	return shards
}

func sources(shards [][][]byte) []Source {
	srcs := make([]Source, len(shards))
	for i, s := range shards {
		srcs[i] = NewRows(s)
	}
	return srcs
}

// runBench drains the operator op builds once per iteration and reports
// as throughput the rows it reads (in per iteration) per second.
func runBench(b *testing.B, in int, op func() (Source, error)) {
	b.ReportAllocs()
	iters := 0
	for b.Loop() {
		src, err := op()
		if err != nil {
			b.Fatal(err)
		}
		for {
			row, err := src.Next()
			if err != nil {
				b.Fatal(err)
			}
			if row == nil {
				break
			}
		}
		iters++
	}
	b.ReportMetric(float64(in*iters)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkConcat(b *testing.B) {
	shards := benchShardRows(25_000, nil)
	runBench(b, benchShards*25_000, func() (Source, error) { return Concat(sources(shards)...), nil })
}

func BenchmarkMergeSort(b *testing.B) {
	for _, c := range []struct {
		name string
		col  int
		typ  uint32
	}{{"int8", 0, Int8OID}, {"numeric", 2, NumericOID}} {
		b.Run(c.name, func(b *testing.B) {
			cmp, err := Comparator(c.typ, false)
			if err != nil {
				b.Fatal(err)
			}
			norm, _ := NormOf(c.typ, false, true) // as the proxy builds keys: none for numeric
			keys := []OrderKey{{Col: c.col, Cmp: cmp, Norm: norm}}
			shards := benchShardRows(25_000, NewOrder(keys))
			runBench(b, benchShards*25_000, func() (Source, error) {
				return MergeSort(NewOrder(keys), sources(shards)...), nil
			})
		})
	}
}

// BenchmarkGroup merges count, sum and avg partials of each group from
// every shard (each shard sends one row per group).
func BenchmarkGroup(b *testing.B) {
	for _, groups := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("%dk groups", groups/1000), func(b *testing.B) {
			rng := rand.New(rand.NewSource(2))
			shards := make([][][]byte, benchShards)
			for s := range shards {
				for g := range groups {
					sum := benchAmount(rng)
					shards[s] = append(shards[s], EncodeRow(nil, [][]byte{
						fmt.Appendf(nil, "customer-%06d@example.com shipping", g),
						strconv.AppendInt(nil, int64(1+rng.Intn(1000)), 10),
						[]byte(sum),
						[]byte(sum),
						strconv.AppendInt(nil, int64(1+rng.Intn(1000)), 10),
						fmt.Appendf(nil, "2025-03-%02d 10:00:00+00", 1+g%28),
					}))
				}
			}
			spec := GroupSpec{Keys: []int{0}, KeyKinds: []KeyKind{KeyBytes}, Cols: []AggCol{
				{Col: 0},
				{Func: "count", Col: 1, Type: Int8OID},
				{Func: "sum", Col: 2, Type: NumericOID},
				{Func: "avg", Col: 3, Count: 4, Type: NumericOID},
			}}
			runBench(b, benchShards*groups, func() (Source, error) {
				return Group(Concat(sources(shards)...), spec, &Budget{})
			})
		})
	}
}

// BenchmarkDistinct dedupes (id, amount) over four shards where half the
// rows repeat rows of other shards.
func BenchmarkDistinct(b *testing.B) {
	rng := rand.New(rand.NewSource(3))
	shards := make([][][]byte, benchShards)
	for s := range shards {
		for range 25_000 {
			id := rng.Int63n(50_000)
			shards[s] = append(shards[s], benchRow(id, fmt.Sprintf("%d.%02d", id%1000, id%100)))
		}
	}
	runBench(b, benchShards*25_000, func() (Source, error) {
		return Distinct(Concat(sources(shards)...), 2, []KeyKind{KeyBytes, KeyNumeric}, &Budget{}), nil
	})
}

// BenchmarkSort sorts 100k rows (four unsorted shards) by id.
func BenchmarkSort(b *testing.B) {
	shards := benchShardRows(25_000, nil)
	rng := rand.New(rand.NewSource(4))
	for _, s := range shards {
		rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	}
	cmp, err := Comparator(Int8OID, false)
	if err != nil {
		b.Fatal(err)
	}
	runBench(b, benchShards*25_000, func() (Source, error) {
		norm, _ := NormOf(Int8OID, false, true)
		return Sort(Concat(sources(shards)...), NewOrder([]OrderKey{{Col: 0, Cmp: cmp, Norm: norm}}), &Budget{}), nil
	})
}
