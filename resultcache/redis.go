package resultcache

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shardproxy/shardproxy/parser"
)

// downFor is how long the proxy stops asking a Redis that is down; queries
// read from Postgres meanwhile.
const downFor = time.Second

// downAfter is how long Redis must go without answering any operation
// before a timeout marks it down. A slow answer on a busy machine (the
// scheduler's stall, not Redis's: it delays every operation in flight at
// once) is a miss for those reads alone; an unreachable Redis is marked
// down after downAfter of timeouts. Any other error (connection refused,
// an error reply) marks Redis down at once.
const downAfter = time.Second

// redisStore keeps entries, table generations and the fill locks in Redis,
// shared by every proxy, and publishes invalidations.
//
// Keys: <prefix>e:<sha256 of the key> holds an entry, <prefix>g:<table>
// a table's generation (a random token, new at every invalidation),
// <prefix>epoch the generation of everything (CACHE CLEAR, DDL), <prefix>l:<hash> a fill lock; invalidations are published
// on <prefix>invalidate. An entry is [filled ns][epoch][gens...][reply],
// big-endian 8-byte words: it is served only while the epoch and the
// generations it was filled under are still current, read in the same
// MGET as the entry, so a write committed through any proxy is seen by
// the next lookup on every proxy.
type redisStore struct {
	c  *Cache
	cl *redis.Client
	// wcl sends invalidations, with the longer InvalidateTimeout: a
	// write's invalidation is worth waiting for (a slow one lets other
	// proxies serve entries older than the write).
	wcl     *redis.Client
	lastOK  atomic.Int64 // unix ns of the last operation Redis answered
	cfg     RedisConfig
	id      string
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	down    atomic.Int64 // unix ns until which Redis is not asked
	up      atomic.Bool
	lastLog atomic.Int64

	// pending are invalidations Redis has not taken yet; lookups wait
	// for them (they are retried in the background).
	mu          sync.Mutex
	pending     map[parser.Table]bool
	pendingAll  bool
	hasPending  atomic.Bool
	lockHeldFor time.Duration
}

func newRedisStore(c *Cache, cfg RedisConfig) *redisStore {
	var id [8]byte
	rand.Read(id[:])
	r := &redisStore{c: c, cfg: cfg, id: hex.EncodeToString(id[:]), pending: map[parser.Table]bool{},
		lockHeldFor: c.cfg.FillWait}
	r.cl = redis.NewClient(&redis.Options{Addr: cfg.Addr, Password: cfg.Password, DB: cfg.DB,
		DialTimeout: cfg.Timeout, ReadTimeout: cfg.Timeout, WriteTimeout: cfg.Timeout, MaxRetries: -1,
		ContextTimeoutEnabled: true})
	wt := max(cfg.InvalidateTimeout, cfg.Timeout)
	r.wcl = redis.NewClient(&redis.Options{Addr: cfg.Addr, Password: cfg.Password, DB: cfg.DB,
		DialTimeout: wt, ReadTimeout: wt, WriteTimeout: wt, MaxRetries: -1, PoolSize: 4,
		ContextTimeoutEnabled: true})
	r.up.Store(true)
	r.lastOK.Store(time.Now().UnixNano())
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	// Subscribe before serving, waiting (bounded) for Redis's confirmation:
	// from then on the other proxies' invalidations reach this one. With
	// Redis down, go-redis subscribes once it is back.
	ps := r.cl.Subscribe(ctx, r.channel())
	wctx, wcancel := context.WithTimeout(ctx, max(cfg.Timeout, time.Second))
	ps.Receive(wctx)
	wcancel()
	r.wg.Add(2)
	go r.subscribe(ctx, ps)
	go r.retry(ctx)
	return r
}

func (r *redisStore) close() {
	r.cancel()
	r.cl.Close()
	r.wcl.Close()
	r.wg.Wait()
}

func (r *redisStore) entryKey(key []byte) string {
	sum := sha256.Sum256(key)
	return r.cfg.Prefix + "e:" + hex.EncodeToString(sum[:16])
}

func (r *redisStore) lockKey(key []byte) string {
	sum := sha256.Sum256(key)
	return r.cfg.Prefix + "l:" + hex.EncodeToString(sum[:16])
}

func (r *redisStore) genKey(t parser.Table) string {
	t = norm(t)
	if t.Schema == "" {
		return r.cfg.Prefix + "g:" + t.Name
	}
	return r.cfg.Prefix + "g:" + t.Schema + "." + t.Name
}

func (r *redisStore) channel() string { return r.cfg.Prefix + "invalidate" }

// available reports whether Redis may be asked now: it has not just
// failed, and the invalidations it missed have reached it.
func (r *redisStore) available(ctx context.Context) bool {
	if time.Now().UnixNano() < r.down.Load() {
		return false
	}
	if r.hasPending.Load() {
		c, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		defer cancel()
		return r.flushPending(c)
	}
	return true
}

// failed records a Redis error: counted; when Redis is down (an error that
// is not a timeout, or a timeout after downAfter without an answer) it is
// logged (at most every 10s) and Redis is left alone for downFor.
func (r *redisStore) failed(op string, err error) {
	r.c.backendErrors.Add(1)
	now := time.Now()
	if isTimeout(err) && now.UnixNano()-r.lastOK.Load() < int64(downAfter) {
		return
	}
	r.down.Store(now.Add(downFor).UnixNano())
	r.up.Store(false)
	if last := r.lastLog.Load(); now.UnixNano()-last > int64(10*time.Second) && r.lastLog.CompareAndSwap(last, now.UnixNano()) {
		r.c.log.Warn("result cache: redis unavailable, reading from postgres", "op", op, "err", err)
	}
}

// isTimeout reports whether err is an operation that took too long
// (rather than a Redis that refuses or answers with an error).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

func (r *redisStore) ok() {
	r.lastOK.Store(time.Now().UnixNano())
	if !r.up.Load() {
		r.up.Store(true)
		r.c.log.Info("result cache: redis available again")
	}
}

// get reads the entry of key with the current epoch and generations of
// tables. reply is nil on a miss or a stale entry; gens are the current
// generations (the ones to store a fill under); ok is false when Redis
// could not answer.
func (r *redisStore) get(ctx context.Context, key []byte, tables []parser.Table) (reply []byte, filled time.Time, gens []uint64, ok bool) {
	if !r.available(ctx) {
		return nil, time.Time{}, nil, false
	}
	keys := make([]string, 0, 2+len(tables))
	keys = append(keys, r.entryKey(key), r.cfg.Prefix+"epoch")
	for _, t := range tables {
		keys = append(keys, r.genKey(t))
	}
	vals, err := r.cl.MGet(ctx, keys...).Result()
	if err != nil {
		r.failed("get", err)
		return nil, time.Time{}, nil, false
	}
	r.ok()
	gens = make([]uint64, len(vals)-1)
	for i, v := range vals[1:] {
		if s, isStr := v.(string); isStr {
			gens[i], _ = strconv.ParseUint(s, 10, 64)
		}
	}
	s, isStr := vals[0].(string)
	if !isStr {
		return nil, time.Time{}, gens, true
	}
	b := []byte(s)
	n := 8 * (1 + len(gens))
	if len(b) < n {
		return nil, time.Time{}, gens, true
	}
	filled = time.Unix(0, int64(binary.BigEndian.Uint64(b)))
	for i, g := range gens {
		if binary.BigEndian.Uint64(b[8+8*i:]) != g {
			return nil, time.Time{}, gens, true
		}
	}
	return b[n:], filled, gens, true
}

// set stores reply under key with the generations read before the query.
func (r *redisStore) set(ctx context.Context, key, reply []byte, gens []uint64, ttl time.Duration) bool {
	if !r.available(ctx) {
		return false
	}
	b := make([]byte, 8*(1+len(gens)), 8*(1+len(gens))+len(reply))
	binary.BigEndian.PutUint64(b, uint64(time.Now().UnixNano()))
	for i, g := range gens {
		binary.BigEndian.PutUint64(b[8+8*i:], g)
	}
	b = append(b, reply...)
	if err := r.cl.Set(ctx, r.entryKey(key), b, ttl).Err(); err != nil {
		r.failed("set", err)
		return false
	}
	r.ok()
	return true
}

// lock takes the fill lock of key (SET NX PX FillWait): true when this
// proxy fills the entry, or when Redis cannot say (then it reads for
// itself).
func (r *redisStore) lock(ctx context.Context, key []byte) bool {
	if !r.available(ctx) {
		return true
	}
	got, err := r.cl.SetNX(ctx, r.lockKey(key), r.id, r.lockHeldFor).Result()
	if err != nil {
		r.failed("lock", err)
		return true
	}
	r.ok()
	return got
}

func (r *redisStore) unlock(key []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer cancel()
	if err := r.cl.Del(ctx, r.lockKey(key)).Err(); err != nil {
		r.failed("unlock", err)
	}
}

// await polls for another proxy's fill of key, for at most wait.
func (r *redisStore) await(ctx context.Context, key []byte, tables []parser.Table, wait time.Duration) []byte {
	deadline := time.Now().Add(wait)
	pause := 2 * time.Millisecond
	for time.Now().Before(deadline) {
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		reply, _, _, ok := r.get(ctx, key, tables)
		if !ok {
			return nil
		}
		if reply != nil {
			return reply
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
	return nil
}

// invalidate moves the generations of tables (or the epoch, when all) in
// Redis and publishes them. What Redis does not take stays pending.
func (r *redisStore) invalidate(ctx context.Context, tables []parser.Table, all bool) {
	r.mu.Lock()
	for _, t := range tables {
		r.pending[norm(t)] = true
	}
	r.pendingAll = r.pendingAll || all
	r.hasPending.Store(true)
	r.mu.Unlock()
	// Not skipped while Redis is marked down: a write's invalidation is
	// worth a timeout, and Redis may be back for the other proxies. While
	// Redis is marked down, the short timeout: the background retry sends
	// it when Redis is back.
	wait := max(r.cfg.InvalidateTimeout, r.cfg.Timeout)
	if time.Now().UnixNano() < r.down.Load() {
		wait = r.cfg.Timeout
	}
	c, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	r.flushPending(c)
}

// flushPending sends the pending invalidations; false when Redis failed.
func (r *redisStore) flushPending(ctx context.Context) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) == 0 && !r.pendingAll {
		r.hasPending.Store(false)
		return true
	}
	pipe := r.wcl.Pipeline()
	msg := []string{r.id}
	if r.pendingAll {
		pipe.Set(ctx, r.cfg.Prefix+"epoch", token(), 0)
		msg = append(msg, "*")
	}
	for t := range r.pending {
		pipe.Set(ctx, r.genKey(t), token(), 0)
		msg = append(msg, t.Schema+"."+t.Name)
	}
	pipe.Publish(ctx, r.channel(), strings.Join(msg, "\n"))
	if _, err := pipe.Exec(ctx); err != nil {
		r.failed("invalidate", err)
		return false
	}
	r.ok()
	clear(r.pending)
	r.pendingAll = false
	r.hasPending.Store(false)
	return true
}

// token is a new generation: random, not a counter, so that a Redis
// restarted empty can never bring back a generation an old entry holds.
func token() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) | 1
}

// retry sends pending invalidations while Redis was away.
func (r *redisStore) retry(ctx context.Context) {
	defer r.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r.hasPending.Load() {
			c, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
			r.flushPending(c)
			cancel()
		}
	}
}

// subscribe applies the other proxies' invalidations to this proxy's
// generations (consolidation and memory entries follow them). go-redis
// resubscribes after a lost connection.
func (r *redisStore) subscribe(ctx context.Context, ps *redis.PubSub) {
	defer r.wg.Done()
	defer ps.Close()
	ch := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			parts := strings.Split(m.Payload, "\n")
			if len(parts) < 2 || parts[0] == r.id {
				continue
			}
			var tables []parser.Table
			for _, p := range parts[1:] {
				if p == "*" {
					r.c.bumpEpoch()
					continue
				}
				schema, name, _ := strings.Cut(p, ".")
				tables = append(tables, parser.Table{Schema: schema, Name: name})
			}
			r.c.bump(tables)
		}
	}
}
