package reshard

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardproxy/shardproxy/router"
	"github.com/shardproxy/shardproxy/topology"
)

// Reference tables on a new shard: every proxy writes a reference table
// on every configured shard, but a shard added for a reshard starts
// without them. start creates them there (schema from the source) and
// copies their rows under a short fence on the source and the target
// (writes to both held, so that no reference write lands on one side
// only while the copy runs); from then on the proxies' writes keep them
// equal. A shard that serves rows already has them and is left alone.

// serves reports whether shard holds rows in version cur: it owns a
// bucket or a range, or is the default shard.
func (t *Tool) serves(cur *topology.State, shard string) bool {
	if slices.Contains(cur.Owners, shard) || t.Topo.Shards[t.Topo.Default].Name == shard {
		return true
	}
	for _, tb := range t.Topo.Tables {
		if tb.Strategy != router.Range {
			continue
		}
		ivs, err := t.rangesNow(cur, tb)
		if err != nil {
			return true // be conservative: leave it alone
		}
		for _, iv := range ivs {
			if t.Topo.Shards[iv.Shard].Name == shard {
				return true
			}
		}
	}
	return false
}

// referenceTables lists the configured reference tables, sorted.
func (t *Tool) referenceTables() []Table {
	var out []Table
	for _, tb := range t.Topo.Tables {
		if tb.Strategy == router.Reference {
			out = append(out, Table{Name: tb.Name})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// copyReference gives the move's target the reference tables of its
// source, unless the target already serves rows or got them from an
// earlier run.
func (t *Tool) copyReference(ctx context.Context, st *State, m Move, src, dst *pgx.Conn) error {
	if slices.Contains(st.RefCopied, m.To) {
		return nil
	}
	cur, err := t.current(ctx)
	if err != nil {
		return err
	}
	var refs []Table
	for _, tb := range t.referenceTables() {
		var ok bool
		if err := src.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", tableIdent(tb.Name)).Scan(&ok); err != nil {
			return err
		}
		if ok {
			refs = append(refs, tb)
		}
	}
	if len(refs) == 0 || t.serves(cur, m.To) {
		return t.markRefCopied(ctx, st, m.To)
	}
	var missing []Table
	for _, tb := range refs {
		var ok bool
		if err := dst.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", tableIdent(tb.Name)).Scan(&ok); err != nil {
			return err
		}
		if !ok {
			missing = append(missing, tb)
		}
	}
	if len(missing) > 0 {
		sc, _ := t.shard(m.From)
		ddl, err := t.pgDump(ctx, sc.DSN, missing)
		if err != nil {
			return err
		}
		if err := dst.PgConn().Exec(ctx, ddl).Close(); err != nil {
			return fmt.Errorf("reference tables onto %s: %w", m.To, err)
		}
	}
	hold, live := t.Hold, t.Live
	if hold == 0 {
		hold = 2 * time.Second
	}
	if live == 0 {
		live = 5 * time.Second
	}
	fence, err := t.Store.SetFence(ctx, []string{m.From, m.To}, cur.Version+1, hold)
	if err != nil {
		return err
	}
	defer func() {
		if err := t.Store.ClearFences(context.Background()); err != nil {
			t.logError("clear fence", err)
		}
	}()
	cctx, cancel := context.WithTimeout(ctx, hold-hold/4)
	defer cancel()
	begin := time.Now()
	if err := t.waitProxies(cctx, nil, live, func(px topology.Proxy) bool { return px.FenceID == fence || px.Version > cur.Version }); err != nil {
		return fmt.Errorf("proxies did not take the fence: %w", err)
	}
	for _, c := range []*pgx.Conn{src, dst} {
		if _, err := t.drain(cctx, c); err != nil {
			return fmt.Errorf("drain before copying reference tables: %w", err)
		}
	}
	tx, err := dst.Begin(cctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	var rows int64
	for _, tb := range refs {
		if _, err := tx.Exec(cctx, "TRUNCATE "+tableIdent(tb.Name)); err != nil {
			return fmt.Errorf("reference table %s on %s: %w", tb.Name, m.To, err)
		}
		n, err := copyTable(cctx, src, dst, tb.Name)
		if err != nil {
			return fmt.Errorf("copy reference table %s to %s: %w", tb.Name, m.To, err)
		}
		rows += n
	}
	if err := tx.Commit(cctx); err != nil {
		return err
	}
	t.printf("reference tables onto %s: %d tables, %d rows, writes held %s\n", m.To, len(refs), rows, time.Since(begin).Round(time.Millisecond))
	return t.markRefCopied(ctx, st, m.To)
}

func (t *Tool) markRefCopied(ctx context.Context, st *State, shard string) error {
	st.RefCopied = append(st.RefCopied, shard)
	return t.save(ctx, st)
}

// copyTable streams table's rows from src into dst (binary COPY).
func copyTable(ctx context.Context, src, dst *pgx.Conn, table string) (int64, error) {
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		_, err := src.PgConn().CopyTo(ctx, pw, "COPY "+tableIdent(table)+" TO STDOUT (FORMAT binary)")
		pw.CloseWithError(err)
		errc <- err
	}()
	tag, err := dst.PgConn().CopyFrom(ctx, pr, "COPY "+tableIdent(table)+" FROM STDIN (FORMAT binary)")
	pr.CloseWithError(err)
	if serr := <-errc; serr != nil {
		return 0, serr
	}
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (t *Tool) logError(msg string, err error) {
	if t.Log != nil {
		t.Log.Error(msg, "err", err)
	}
}
