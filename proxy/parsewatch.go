package proxy

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"
)

// parseWatch keeps a backend's list of prepared statements (backend.stmts)
// true to what the server has, whatever path sent the Parse: it sees every
// frame written to the backend and every frame read from it. A named Parse
// the server answered with ParseComplete stands; one it did not answer by
// the ReadyForQuery that ends its Sync (or Query) group failed or was
// skipped after an earlier error, and is forgotten, so that the next use
// parses it again instead of binding a statement the server lacks (a
// fan-out Parse that fails on the shards, a Parse skipped in a pipeline).
//
// Writes and reads of one backend may run at once (rawConn), hence the
// lock; it is taken only for Parse, Sync, Query and FunctionCall frames
// written and ParseComplete and ReadyForQuery frames read.
type parseWatch struct {
	net.Conn
	b *backend

	// The frame being written, possibly across several Writes.
	hdr     [5]byte
	nhdr    int
	left    int  // body bytes of the frame still to come
	parse   bool // the frame is a Parse whose name is not complete yet
	name    []byte
	mu      sync.Mutex
	pending []pendingParse
}

// pendingParse is a Parse sent and not yet answered, or (sync) the end of
// a group that a ReadyForQuery closes.
type pendingParse struct {
	name string
	sync bool
}

// watchParses installs the watch on a new backend connection.
func watchParses(b *backend) {
	w := &parseWatch{Conn: b.conn, b: b}
	b.conn = w
	b.rd.watch = w
}

func (w *parseWatch) Write(p []byte) (int, error) {
	n, err := w.Conn.Write(p)
	w.scan(p[:n])
	return n, err
}

// scan follows the frames written.
func (w *parseWatch) scan(p []byte) {
	for len(p) > 0 {
		if w.nhdr < 5 {
			k := copy(w.hdr[w.nhdr:], p)
			w.nhdr += k
			p = p[k:]
			if w.nhdr < 5 {
				return
			}
			w.left = int(binary.BigEndian.Uint32(w.hdr[1:5])) - 4
			w.parse = w.hdr[0] == 'P'
			w.name = w.name[:0]
			switch w.hdr[0] {
			case 'S', 'Q', 'F':
				w.push(pendingParse{sync: true})
			}
			if w.left <= 0 {
				w.nhdr = 0
			}
			continue
		}
		k := min(len(p), w.left)
		if w.parse {
			if i := bytes.IndexByte(p[:k], 0); i >= 0 {
				w.name = append(w.name, p[:i]...)
				w.parse = false
				w.push(pendingParse{name: string(w.name)})
			} else {
				w.name = append(w.name, p[:k]...)
			}
		}
		w.left -= k
		p = p[k:]
		if w.left == 0 {
			w.nhdr = 0
		}
	}
}

func (w *parseWatch) push(e pendingParse) {
	w.mu.Lock()
	w.pending = append(w.pending, e)
	w.mu.Unlock()
}

// saw follows a frame read from the backend.
func (w *parseWatch) saw(typ byte) {
	if typ != '1' && typ != 'Z' {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if typ == '1' {
		// The oldest unanswered Parse of the current group succeeded.
		if len(w.pending) > 0 && !w.pending[0].sync {
			w.pending = w.pending[1:]
		}
		return
	}
	i := 0
	for ; i < len(w.pending); i++ {
		e := w.pending[i]
		if e.sync {
			i++
			break
		}
		if e.name != "" {
			delete(w.b.stmts, e.name) // never confirmed: the server lacks it
		}
	}
	w.pending = append(w.pending[:0], w.pending[i:]...)
}
