package config

import (
	"strings"
	"testing"
)

func TestParseBucketsAndMetadata(t *testing.T) {
	f, err := Parse([]byte(good + "buckets: 8\nbucket_map: [{shard: s0, buckets: \"0-3\"}, {shard: s1, buckets: \"4-7\"}]\nmetadata: {poll: 2s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Topology.Buckets != 8 || f.Metadata == nil || f.Metadata.Poll.Seconds() != 2 {
		t.Fatalf("buckets/metadata not read: %+v %+v", f.Topology, f.Metadata)
	}
	for _, c := range []struct{ extra, want string }{
		{"metadata: {}\n", "metadata: needs buckets"},
		{"buckets: 8\nmetadata: {poll: -1s}\n", "metadata.poll"},
		{"buckets: 8\nbucket_map: [{shard: s0, buckets: \"0-3\"}]\n", "buckets 4-7 are not mapped"},
		{"buckets: 8\nmetadata: {dsnn: x}\n", "dsnn"},
	} {
		_, err := Parse([]byte(good + c.extra))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.extra, err, c.want)
		}
	}
}
