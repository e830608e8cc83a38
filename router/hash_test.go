package router

import "testing"

// Golden values from PostgreSQL 15: hashint8extended(v, seed) and
// hashtextextended(s, seed) with HASH_PARTITION_SEED, as signed bigints.
func TestHashIntMatchesPostgres(t *testing.T) {
	cases := []struct {
		v    int64
		want int64
	}{
		{0, -4403592609991167795},
		{1, 5968994663651403477},
		{-1, -5017072347659237694},
		{2, -6784076462669891433},
		{42, 7363975540656877951},
		{1000, 3814039551646223601},
		{123456789, -922921598128084246},
		{-123456789, 6330150885115812063},
		{2147483647, -6050265599104649060},
		{-2147483648, 4938542303000433043},
		{4294967296, 5968994663651403477},
		{9223372036854775807, 4938542303000433043},
		{-9223372036854775808, -6050265599104649060},
	}
	for _, c := range cases {
		if got := int64(HashInt(c.v)); got != c.want {
			t.Errorf("HashInt(%d) = %d, want %d", c.v, got, c.want)
		}
	}
}

func TestHashTextMatchesPostgres(t *testing.T) {
	cases := []struct {
		s    string
		want int64
	}{
		{"", -5700645584453517373},
		{"a", -6705225459120232837},
		{"ab", 596009030900183869},
		{"abc", 3628778498291917250},
		{"abcd", 4029384952263848046},
		{"abcde", 4809259092934399961},
		{"abcdefgh", -7754745184861941070},
		{"abcdefghi", -7860738947571725408},
		{"abcdefghijk", -2046435308545367432},
		{"abcdefghijkl", -7876791541613377658},
		{"abcdefghijklm", -6785754114725280077},
		{"hello world, this is longer than twenty four", -772218427178529662},
		{"ñandú", -1957805725181861240},
	}
	for _, c := range cases {
		if got := int64(HashText(c.s)); got != c.want {
			t.Errorf("HashText(%q) = %d, want %d", c.s, got, c.want)
		}
	}
}

func TestPartitionOfIsStable(t *testing.T) {
	for v := int64(-500); v < 500; v++ {
		p := PartitionOf(HashInt(v), 4)
		if p < 0 || p >= 4 {
			t.Fatalf("partition %d out of range", p)
		}
		if p != PartitionOf(HashInt(v), 4) {
			t.Fatal("not deterministic")
		}
	}
}

func BenchmarkHashInt(b *testing.B) {
	for i := 0; i < b.N; i++ {
		_ = PartitionOf(HashInt(int64(i)), 4)
	}
}
