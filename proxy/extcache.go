package proxy

import (
	"context"
	"encoding/binary"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardproxy/shardproxy/parser"
	"github.com/shardproxy/shardproxy/resultcache"
)

// The result cache and consolidation in the extended protocol.
//
// A portal the cache may answer (a shareable read bound outside a
// transaction) is held: its Bind, and a Describe of it, wait for the next
// message. When that is the portal's Execute without a row limit, the
// answer (BindComplete, RowDescription when it was described, DataRows,
// CommandComplete) comes from the cache, from an identical read in
// flight, or from one Bind/Describe/Execute/Sync on a shard, whose reply
// (errors at Bind included) the client gets as Postgres would send it.
// Anything else (another message first, a row limit, a write earlier in
// the request, a backend already held by the request) binds the portal on
// a shard as usual, the held Describe with it: it is then not shared.
//
// The key is the simple protocol's (user, database, settings, shard hint)
// plus the statement's text and parameter types, the Bind's parameter
// formats and values, its result formats, and whether the portal was
// described: an entry holds exactly the messages its clients are sent.

// sharedPortal is the cache's part of a portal.
type sharedPortal struct {
	rule *resultcache.Rule
	// describe: a Describe of the portal waits to be answered.
	describe bool
	// bound: the client has had the portal's BindComplete (it ran once).
	bound bool
}

// extShare decides at Bind whether the result cache may answer portal p
// (plan routed; scatter: it runs on several shards). When it may, the
// Bind is held and extShare reports true.
func (s *session) extShare(p *portal, scatter bool) bool {
	c := s.srv.results
	st := p.ps.st
	if s.x.writes || !c.Active() || st.Kind != parser.Select || st.Writes || p.plan.Write ||
		!st.Shareable() || parser.TimeLiteral(p.ps.query) {
		return false
	}
	if !scatter && (!p.plan.Single() || len(p.plan.KeyGuard) > 0) {
		return false
	}
	switch s.status {
	case 'I':
	case 'T': // until_write: answered only by a hit (a miss binds late and runs in the transaction)
		if s.rc.dirty || !s.readCommitted() {
			return false
		}
		if r := c.Match(st); r == nil || !r.ServesUntilWrite() {
			return false
		}
	default:
		return false
	}
	for i, v := range p.bind.Parameters {
		if v != nil && paramFormat(p.bind, i) == 0 && parser.TimeParam(v) {
			return false
		}
	}
	rule := c.Match(st)
	if rule == nil && !c.Consolidating() {
		return false
	}
	p.sh = &sharedPortal{rule: rule}
	p.scatter = scatter
	s.x.pend = p
	return true
}

// extDescribeShared holds a Describe of a held portal until the next
// message says whether its Execute follows. A portal that ran already is
// bound on its shard to be described there.
func (s *session) extDescribeShared(ctx context.Context, p *portal) (bool, error) {
	if p.sh == nil {
		return false, nil
	}
	if s.x.pend == p && !p.sh.describe {
		p.sh.describe = true
		return true, nil
	}
	// Described twice, or after it ran: the first Describe is answered
	// with the late Bind, this one as usual.
	if err := s.extBindLate(ctx, p); err != nil {
		return true, err
	}
	return false, nil
}

// extUnshare binds the held portal on its shard, as an unshared portal,
// with its held Describe.
func (s *session) extUnshare(ctx context.Context) error {
	p := s.x.pend
	s.x.pend = nil
	if p == nil {
		return nil
	}
	return s.extBindLate(ctx, p)
}

// extBindLate gives up sharing portal p: its Bind goes to its shard, and a
// held Describe follows.
func (s *session) extBindLate(ctx context.Context, p *portal) error {
	sh := p.sh
	p.sh = nil
	if s.x.pend == p {
		s.x.pend = nil
	}
	if sh == nil {
		return nil
	}
	if p.scatter {
		if !sh.bound {
			s.emit(&pgproto3.BindComplete{}) // as a scatter portal's Bind is answered
		}
		if sh.describe {
			return s.describeScatter(ctx, p)
		}
		return nil
	}
	x := s.x
	b, err := s.extBackend(ctx, p.ps.st, p.plan)
	if err != nil {
		return err
	}
	s.ensurePrepared(b, p.ps)
	x.wbuf = appendMsg(x.wbuf, p.bind)
	if sh.bound {
		x.queue = append(x.queue, reply{kind: rDrop})
	} else {
		x.queue = append(x.queue, reply{kind: rPass})
	}
	p.where = b
	if sh.describe {
		x.wbuf = appendMsg(x.wbuf, &pgproto3.Describe{ObjectType: 'P', Name: p.bind.DestinationPortal})
		x.queue = append(x.queue, reply{kind: rDescribe})
	}
	return nil
}

// extExecuteShared answers the Execute of a shared portal through the
// cache; took is false when the portal was bound late instead and runs
// as any other.
func (s *session) extExecuteShared(ctx context.Context, p *portal, maxRows uint32) (took bool, err error) {
	sh := p.sh
	if sh == nil {
		return false, nil
	}
	x := s.x
	if s.status == 'T' && maxRows == 0 && !x.writes {
		hit := s.txLookup(ctx, p.ps.st, p.plan, p.ps.query, func() []byte { return s.extKey(p, sh.describe) })
		if hit != nil {
			var msg []byte
			if !sh.bound {
				msg = appendMsg(msg, &pgproto3.BindComplete{})
			}
			msg = append(msg, hit...)
			sh.describe, sh.bound, x.pend = false, true, nil
			if x.cur != nil && len(x.queue) > 0 {
				x.queue = append(x.queue, reply{kind: rSynth, msg: msg})
			} else {
				s.out = append(s.out, msg...)
			}
			s.q.tag(lastTag(hit))
			return true, nil
		}
	}
	if maxRows != 0 || x.writes || s.status != 'I' || x.cur != nil {
		return false, s.extBindLate(ctx, p)
	}
	// The portal stays shared: run again, it answers again (as a scatter
	// portal does).
	describe, bound := sh.describe, sh.bound
	sh.describe, sh.bound, x.pend = false, true, nil
	c := s.srv.results
	key := s.extKey(p, describe)
	reply, err := c.Read(ctx, key, p.ps.st.Tables, sh.rule, func() ([]byte, error) {
		start, flushes := len(s.out), s.rc.flushes
		err := s.extFetch(ctx, p, describe, !bound)
		if err != nil || x.errored || s.rc.flushes != flushes || len(s.out) < start {
			return nil, err
		}
		reply := s.out[start:]
		if !bound && len(reply) >= 5 && reply[0] == '2' {
			reply = reply[5:] // the BindComplete is not shared
		}
		if plainReply(reply) {
			return reply, nil
		}
		return nil, nil
	})
	if reply != nil {
		if !bound {
			s.out = appendMsg(s.out, &pgproto3.BindComplete{})
		}
		s.out = append(s.out, reply...)
		s.q.tag(lastTag(reply))
		if len(s.out) >= flushAt {
			return true, s.flush()
		}
	}
	return true, err
}

// extKey builds the cache key of portal p in s.rc.key.
func (s *session) extKey(p *portal, describe bool) []byte {
	k := s.keyPrefix()
	k = append(k, 0xff, 'E') // not the start of a simple query's text
	if describe {
		k = append(k, 'D')
	} else {
		k = append(k, 'X')
	}
	k = append(k, p.ps.query...)
	k = append(k, 0)
	b := p.bind
	k = binary.BigEndian.AppendUint16(k, uint16(len(p.ps.oids)))
	for _, o := range p.ps.oids {
		k = binary.BigEndian.AppendUint32(k, o)
	}
	k = binary.BigEndian.AppendUint16(k, uint16(len(b.Parameters)))
	for i, v := range b.Parameters {
		k = binary.BigEndian.AppendUint16(k, uint16(paramFormat(b, i)))
		if v == nil {
			k = binary.BigEndian.AppendUint32(k, 0xffffffff)
			continue
		}
		k = binary.BigEndian.AppendUint32(k, uint32(len(v)))
		k = append(k, v...)
	}
	k = binary.BigEndian.AppendUint16(k, uint16(len(b.ResultFormatCodes)))
	for _, f := range b.ResultFormatCodes {
		k = binary.BigEndian.AppendUint16(k, uint16(f))
	}
	s.rc.key = k
	return k
}

// extFetch runs portal p on its shards and relays the reply: BindComplete
// when bindComplete, the portal's RowDescription when describe, DataRows,
// CommandComplete (or the error).
func (s *session) extFetch(ctx context.Context, p *portal, describe, bindComplete bool) error {
	if p.scatter {
		if bindComplete {
			s.out = appendMsg(s.out, &pgproto3.BindComplete{})
		}
		if describe {
			if err := s.describeScatter(ctx, p); err != nil || s.x.errored {
				return err
			}
		}
		return s.executeScatter(ctx, p, 0)
	}
	b, err := s.leaseFor(ctx, p.ps.st, p.plan.Shards[0]) // replicas.go: a read may go to a replica
	if err != nil {
		return err
	}
	defer s.release(b)
	injected := injectedParse(b, p.ps)
	buf := s.prepareOn(b, p.ps, nil)
	buf = appendMsg(buf, p.unnamedBind())
	if describe {
		buf = appendMsg(buf, &pgproto3.Describe{ObjectType: 'P'})
	}
	buf = appendMsg(buf, &pgproto3.Execute{})
	buf = appendMsg(buf, &pgproto3.Sync{})
	sent := time.Now()
	if _, err := b.conn.Write(buf); err != nil {
		b.broken = true
		return &shardError{shard: b.pool.name, err: err}
	}
	for {
		typ, body, raw, err := b.rd.next()
		if err != nil {
			b.broken = true
			return &shardError{shard: b.pool.name, err: err}
		}
		switch typ {
		case '1': // an injected Parse's
			injected = false
			continue
		case '2':
			if !bindComplete {
				continue
			}
		case 'Z':
			b.txStatus = body[0]
			s.shardDone(b, sent)
			return nil
		case 'S':
			noteStatus(b, body)
		case 'C':
			s.q.tag(body)
		case 'E':
			s.q.shardFailed(body)
			s.x.errored = true
			if injected {
				// The Parse failed (or was skipped): the backend lacks the
				// statement, and the next Bind must prepare it again.
				forgetParse(b, p.ps)
			}
		}
		s.out = append(s.out, raw...)
		if len(s.out) >= flushAt {
			if err := s.flush(); err != nil {
				b.broken = true
				s.cancelRunning()
				return err
			}
		}
	}
}
