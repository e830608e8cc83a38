package proxy

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// maxMessage bounds one protocol message from a client or backend. Postgres
// itself refuses queries over 1 GB; clients get 08P01 for anything larger.
const maxMessage = 256 << 20

// frameReader reads typed protocol messages (type byte, int32 length, body)
// into a reused buffer. The returned body is valid until the next read.
type frameReader struct {
	r   *bufio.Reader
	buf []byte
	// limit, when above 0, bounds the body of Query, Parse and Bind
	// messages (max_query_bytes): a larger one is skipped unbuffered and
	// next returns *errTooLarge (limits.go).
	limit int
	// watch, on a backend's reader, follows its Parses (parsewatch.go).
	watch *parseWatch
}

// clientReadBuffer is the read buffer of a client connection.
const clientReadBuffer = 4 << 10

// newFrameReader reads messages from r through a size-byte buffer; the
// message buffer is allocated at the first message and grows to the
// largest message read.
func newFrameReader(r io.Reader, size int) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, size)}
}

// next returns the next message's type and body, and the whole raw frame
// (header included) for relaying without re-encoding.
func (f *frameReader) next() (typ byte, body []byte, raw []byte, err error) {
	if cap(f.buf) < 5 {
		f.buf = make([]byte, 0, 1024)
	}
	hdr := f.buf[:5]
	if _, err = io.ReadFull(f.r, hdr); err != nil {
		return 0, nil, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:5]))
	if n < 4 || n > maxMessage {
		return 0, nil, nil, fmt.Errorf("invalid message length %d", n)
	}
	if f.limit > 0 && n-4 > f.limit && (hdr[0] == 'Q' || hdr[0] == 'P' || hdr[0] == 'B') {
		if _, err = f.r.Discard(n - 4); err != nil {
			return 0, nil, nil, err
		}
		return 0, nil, nil, &errTooLarge{typ: hdr[0], n: n - 4, max: f.limit}
	}
	total := 1 + n
	if cap(f.buf) < total {
		nb := make([]byte, total)
		copy(nb, hdr)
		f.buf = nb[:0]
	}
	raw = f.buf[:total]
	if _, err = io.ReadFull(f.r, raw[5:]); err != nil {
		return 0, nil, nil, err
	}
	if f.watch != nil {
		f.watch.saw(raw[0])
	}
	return raw[0], raw[5:], raw, nil
}

// startup reads an untyped startup-phase message (length, then body).
func (f *frameReader) startup() ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(f.r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n < 8 || n > 10000 {
		return nil, fmt.Errorf("invalid startup packet length %d", n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(f.r, body); err != nil {
		return nil, err
	}
	return body, nil
}

// buffered reports whether bytes are waiting in the read buffer.
func (f *frameReader) buffered() int { return f.r.Buffered() }

// encoder is anything pgproto3 can encode.
type encoder interface {
	Encode(dst []byte) ([]byte, error)
}

// appendMsg appends an encoded message; encoding our own well-formed
// messages cannot fail except on absurd sizes, which become a protocol error.
func appendMsg(dst []byte, m encoder) []byte {
	out, err := m.Encode(dst)
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", m, err))
	}
	return out
}

// commandTag splits a CommandComplete body into its tag.
func commandTag(body []byte) string {
	if n := len(body); n > 0 && body[n-1] == 0 {
		body = body[:n-1]
	}
	return string(body)
}
