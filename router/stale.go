package router

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/shardproxy/shardproxy/parser"
)

// Stale rows: between a reshard's cutover and its cleanup the source
// shards still hold the rows of the buckets they gave away (BucketMap.Stale).
// A statement routed by its shard key never meets them (its keys' buckets
// are on their new shards), but one that reads a whole table on several
// shards would count them twice. Such a statement runs on a shard with
// stale buckets rewritten (parser.HideRows): every hash table it reads is
// replaced by the subselect of its rows whose bucket the shard owns,
//
//	(SELECT * FROM orders WHERE NOT (satisfies_hash_partition(
//	    'shardproxy_meta.hash_int8'::regclass, 64, 2, user_id::bigint) OR ...)) orders
//
// and an UPDATE or DELETE of one gets the condition added to its WHERE.

// staleHider is a placement's filter for the shards with stale buckets.
type staleHider struct {
	cond map[int]map[string]string // shard -> table name -> condition
	// cache holds rewritten statements by text, bounded.
	mu    sync.Mutex
	cache map[hideKey]hidden
}

type hideKey struct {
	shard int
	sql   string
}

type hidden struct {
	sql string
	err error
}

const hideCacheMax = 4096

func (r *Router) newHider(m *BucketMap) *staleHider {
	if m == nil || (len(m.Stale) == 0 && len(m.StaleRanges) == 0) {
		return nil
	}
	h := &staleHider{cond: map[int]map[string]string{}, cache: map[hideKey]hidden{}}
	v := len(m.Owner)
	for shard, bs := range m.Stale {
		if len(bs) == 0 {
			continue
		}
		conds := map[string]string{}
		for _, t := range r.topo.Tables {
			if t.Strategy != Hash || t.Key == "" {
				continue
			}
			conds[t.Name] = "NOT " + BucketCondition(t.Key, t.KeyText, v, bs)
		}
		h.cond[shard] = conds
	}
	for shard, tabs := range m.StaleRanges {
		for name, ivs := range tabs {
			t := r.topo.Tables[name]
			if t == nil || len(ivs) == 0 {
				continue
			}
			if h.cond[shard] == nil {
				h.cond[shard] = map[string]string{}
			}
			h.cond[shard][name] = "NOT coalesce(" + RangeCondition(t, ivs) + ", false)"
		}
	}
	return h
}

// BucketCondition is the SQL condition "the row's key is in one of
// buckets" (of v): Postgres's satisfies_hash_partition over the
// hash-partitioned helper tables of the metadata schema (shardproxy_meta.
// hash_int8 and hash_text, which the reshard tool creates on the shards).
func BucketCondition(key string, text bool, v int, buckets []int) string {
	parent, col := "'shardproxy_meta.hash_int8'::regclass", quoteIdent(key)+"::bigint"
	if text {
		parent, col = "'shardproxy_meta.hash_text'::regclass", quoteIdent(key)+"::text"
	}
	ors := make([]string, 0, len(buckets))
	for _, b := range buckets {
		ors = append(ors, fmt.Sprintf("satisfies_hash_partition(%s, %d, %d, %s)", parent, v, b, col))
	}
	return "(" + strings.Join(ors, " OR ") + ")"
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// hide rewrites, for the shards of p that hold stale buckets, the
// statement each runs. Only plans over several shards need it.
func (r *Router) hide(pl *placement, st *parser.Statement, p *Plan) (*Plan, error) {
	h := pl.hider
	if h == nil || len(p.Shards) < 2 || p.NoRows || (p.Replicated && p.Write) {
		return p, nil
	}
	var out []string
	for i, sh := range p.Shards {
		conds := h.cond[sh]
		if conds == nil {
			continue
		}
		sql := st.SQL
		if p.SQL != nil {
			sql = p.SQL[i]
		}
		got, err := h.rewrite(r, sh, sql, conds)
		if err != nil {
			if errors.Is(err, parser.ErrHideRows) {
				return nil, refuseHard("Run it after `shardproxy reshard cleanup`, or add a shard key predicate.",
					"%s while a reshard's cleanup is pending: %v", "this statement is not supported across shards", err)
			}
			return nil, err
		}
		if got == sql {
			continue
		}
		if out == nil {
			out = make([]string, len(p.Shards))
			for j := range out {
				out[j] = st.SQL
				if p.SQL != nil {
					out[j] = p.SQL[j]
				}
			}
		}
		out[i] = got
	}
	if out == nil {
		return p, nil
	}
	q := *p
	q.SQL = out
	q.Reason += ", moved buckets hidden on their old shards"
	return &q, nil
}

func (h *staleHider) rewrite(r *Router, shard int, sql string, conds map[string]string) (string, error) {
	k := hideKey{shard, sql}
	h.mu.Lock()
	c, ok := h.cache[k]
	h.mu.Unlock()
	if ok {
		return c.sql, c.err
	}
	out, _, err := parser.HideRows(sql, func(t parser.Table) string {
		if tb := r.topo.Lookup(t); tb != nil {
			return conds[tb.Name]
		}
		return ""
	})
	h.mu.Lock()
	if len(h.cache) < hideCacheMax {
		h.cache[k] = hidden{out, err}
	}
	h.mu.Unlock()
	return out, err
}

// StaleBuckets lists, per shard name, the buckets whose rows the shard
// still holds for a reshard's cleanup (empty when none).
func (r *Router) StaleBuckets() map[string][]int {
	m := r.placing.Load().buckets
	out := map[string][]int{}
	if m == nil {
		return out
	}
	for sh, bs := range m.Stale {
		out[r.topo.Shards[sh].Name] = append([]int(nil), bs...)
	}
	return out
}

// HashModN reports whether rows sit where hash mod the shard count puts
// them, with no stale rows anywhere: what the coordinator's hash
// partitions assume.
func (r *Router) HashModN() bool {
	m := r.placing.Load().buckets
	if m == nil {
		return true
	}
	if len(m.Stale) > 0 || len(m.Ranges) > 0 || len(m.StaleRanges) > 0 {
		return false
	}
	n := len(r.topo.Shards)
	for b, o := range m.Owner {
		if o != b%n || len(m.Owner)%n != 0 {
			return false
		}
	}
	return true
}

// HideStale returns the statement shard runs instead of sql (a COPY TO,
// or a read the proxy sends to every shard itself), with the stale
// buckets hidden; sql itself when the shard holds none.
func (r *Router) HideStale(shard int, sql string) (string, error) {
	h := r.placing.Load().hider
	if h == nil || h.cond[shard] == nil {
		return sql, nil
	}
	out, err := h.rewrite(r, shard, sql, h.cond[shard])
	if errors.Is(err, parser.ErrHideRows) {
		return "", refuseHard("Run it after `shardproxy reshard cleanup`.", "this statement is not supported while a reshard's cleanup is pending: %v", err)
	}
	return out, err
}

// Serving returns the shards that hold rows now (bucket owners, range
// targets, the default shard), ascending; the slice must not be modified.
func (r *Router) Serving() []int { return r.serving() }
