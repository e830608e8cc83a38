package router

import "github.com/shardproxy/shardproxy/parser"

// KeyPlacement says how ShardOfKey placed a key value.
type KeyPlacement uint8

const (
	// KeyPlaced: the value belongs to exactly one shard.
	KeyPlaced KeyPlacement = iota
	// KeyInvalid: the value is not a valid key (not an integer, not a time).
	KeyInvalid
	// KeyNoRange: a range key outside every configured range.
	KeyNoRange
	// KeyAmbiguous: a range key whose shard depends on the session's time
	// zone (a time without a UTC offset near a range boundary).
	KeyAmbiguous
)

// ShardOfKey places one row of table t whose key column holds text (the
// value's text form; null for SQL NULL) exactly as an INSERT of that row
// would be routed: the same hash and range maps, no I/O.
func (r *Router) ShardOfKey(t *Table, text string, null bool) (int, KeyPlacement) {
	if null && t.Strategy == Range {
		return 0, KeyNoRange // range partitioning has no place for NULL either
	}
	set, ok := r.valueShards(t, parser.Value{Kind: parser.StringLit, Text: text, Null: null}, nil)
	switch {
	case !ok:
		return 0, KeyInvalid
	case len(set) == 0:
		return 0, KeyNoRange
	case len(set) > 1:
		return 0, KeyAmbiguous
	}
	return set[0], KeyPlaced
}
