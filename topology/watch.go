package topology

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/shardproxy/shardproxy/router"
)

// Target is what a watcher drives: a proxy. Apply installs s (a new bucket
// map and the fence) and returns the version and fence id it now serves,
// which go into the heartbeat.
type Target interface {
	ApplyTopology(s *State) (version, fence int64, err error)
}

// DefaultProxyID names a proxy by host and process.
func DefaultProxyID() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s:%d", h, os.Getpid())
}

// Watch keeps t on the current topology until ctx ends: it LISTENs on
// Channel, rereads on every notification and at least every poll, applies
// what changed and writes the heartbeat. Connection errors are logged and
// retried every poll; t keeps its last good state meanwhile. When ctx ends
// the heartbeat row is removed.
func (s *Store) Watch(ctx context.Context, id string, poll time.Duration, t Target) {
	defer func() {
		gctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.Goodbye(gctx, id)
	}()
	for ctx.Err() == nil {
		err := s.watchOnce(ctx, id, poll, t)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("topology watch", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(poll):
		}
	}
}

func (s *Store) watchOnce(ctx context.Context, id string, poll time.Duration, t Target) error {
	c, err := s.Connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, "LISTEN "+Channel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var lastVersion, lastFence int64 = -1, -1
	for {
		st, err := s.Load(ctx, c)
		if err != nil {
			return err
		}
		v, f, err := t.ApplyTopology(st)
		if err != nil {
			s.log.Error("topology not applied", "version", st.Version, "err", err)
		}
		if v != lastVersion || f != lastFence {
			s.log.Info("topology", "version", v, "fence", f)
			lastVersion, lastFence = v, f
		}
		if err := heartbeat(ctx, c, id, v, f); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, poll)
		_, err = c.WaitForNotification(wctx)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// A timed-out wait leaves the connection usable (pgx), any
			// other error does not.
			if c.IsClosed() {
				return fmt.Errorf("wait for notification: %w", err)
			}
		}
	}
}

// Start makes t serve the metadata topology: it creates the schema when
// missing (seeding version 1 from the config's bucket map), applies the
// current version before returning, and then watches in the background
// until ctx ends. The proxy must not accept clients before Start returns.
func Start(ctx context.Context, c Config, dsn string, topo *router.Topology, t Target, log *slog.Logger) (*Store, error) {
	c = c.WithDefaults()
	if topo.BucketMap == nil {
		return nil, errors.New("metadata: the topology needs buckets (buckets: V) to be versioned")
	}
	s := NewStore(dsn, log)
	if err := s.Init(ctx, Names(topo.BucketMap, topo)); err != nil {
		return nil, err
	}
	conn, err := s.Connect(ctx)
	if err != nil {
		return nil, err
	}
	st, err := s.Load(ctx, conn)
	conn.Close(ctx)
	if err != nil {
		return nil, err
	}
	if _, _, err := t.ApplyTopology(st); err != nil {
		return nil, err
	}
	id := c.ProxyID
	if id == "" {
		id = DefaultProxyID()
	}
	if len(c.IDs) > 0 {
		// Every sequence gets its block before the first client's INSERT.
		if err := s.Refill(ctx, topo.Shards, c.IDs); err != nil {
			return nil, err
		}
		go s.refillLoop(ctx, topo.Shards, c.IDs, max(c.Poll, time.Second))
	}
	go s.Watch(ctx, id, c.Poll, t)
	return s, nil
}
