package router

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/shardproxy/shardproxy/parser"
)

// hintRoute is a resolved routing hint: the shard it names, or why it is
// refused.
type hintRoute struct {
	shard int
	err   *Unsupported
	text  string
}

// hintOf resolves the first recognised hint comment of st: `shard: <name>`,
// or `<key column>: <value>` for a column that is the shard key of
// configured hash or range tables. Other comments are ignored.
func (r *Router) hintOf(st *parser.Statement) *hintRoute {
	for _, h := range st.Hints {
		text := fmt.Sprintf("hint /* %s: %s */", h.Key, h.Value)
		if h.Key == "shard" {
			i, ok := r.topo.ShardIndex(h.Value)
			if !ok {
				return &hintRoute{err: refuseHard("Name one of the shards: "+strings.Join(r.names, ", ")+".",
					"hint names unknown shard %q", h.Value)}
			}
			return &hintRoute{shard: i, text: text}
		}
		names := make([]string, 0, len(r.topo.Tables))
		for n, t := range r.topo.Tables {
			if t.Strategy != Reference && t.Key == h.Key {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			continue
		}
		sort.Strings(names)
		shard := -1
		for _, n := range names {
			t := r.topo.Tables[n]
			s, ok := r.shardOfValue(t, parser.Value{Kind: parser.StringLit, Text: h.Value}, nil)
			if !ok {
				return &hintRoute{err: refuseHard("Give the hint one value of the shard key, e.g. /* "+h.Key+": 42 */.",
					"hint %s: %q does not place table %s on one shard", h.Key, h.Value, t.Name)}
			}
			if shard >= 0 && s != shard {
				return &hintRoute{err: refuseHard("Use a /* shard: name */ hint instead.",
					"hint %s: %q places tables keyed by %s on different shards", h.Key, h.Value, h.Key)}
			}
			shard = s
		}
		return &hintRoute{shard: shard, text: text}
	}
	return nil
}

// forced routes st to the shard a hint comment or the session names.
func (r *Router) forced(st *parser.Statement, c *compiled, params Params, opt RouteOptions) (*Plan, error) {
	h := c.hint
	if h == nil {
		i, ok := r.topo.ShardIndex(opt.Shard)
		if !ok {
			return nil, refuseHard("SET shardproxy.shard to one of: "+strings.Join(r.names, ", ")+".",
				"shardproxy.shard names unknown shard %q", opt.Shard)
		}
		h = &hintRoute{shard: i, text: "SET shardproxy.shard = " + opt.Shard}
	}
	if h.err != nil {
		return nil, h.err
	}
	p, err := c.route(r, params)
	if err != nil {
		var u *Unsupported
		if !errors.As(err, &u) || u.hard {
			return nil, err
		}
		p = nil // a soft refusal: the hint says where the rows are
	}
	if p != nil {
		if c.insertTo != nil && (len(p.Shards) != 1 || p.Shards[0] != h.shard) {
			return nil, refuseHard("Remove the hint: the proxy places INSERTed rows by their shard key.",
				"the rows of INSERT into %s belong on %s, not on %s named by the %s",
				c.insertTo.Name, r.describe(p.Shards), r.names[h.shard], h.text)
		}
		if p.Replicated {
			return nil, refuseHard("Remove the hint: writes to reference tables go to every shard.",
				"a write to a reference table cannot be limited to %s by a hint", r.names[h.shard])
		}
	}
	fp := &Plan{Shards: r.singles[h.shard], Write: st.Writes, names: r.names,
		Reason: fmt.Sprintf("%s: %s", h.text, r.names[h.shard])}
	if c.keySet != nil {
		if err := r.guardKey(fp, c.keySet, params); err != nil {
			return nil, err
		}
	}
	return fp, nil
}
