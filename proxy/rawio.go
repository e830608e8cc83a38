package proxy

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawConn relays bytes on a plain TCP or Unix socket with raw read and
// write system calls through the runtime's netpoller (syscall.RawConn),
// which saves, per read and write, the entersyscall/exitsyscall pair that
// wakes the runtime's sysmon thread with a futex whenever it sleeps (8 % of
// the proxy's CPU under pgbench -S). A read or write on a non-blocking
// socket does not block, which is the case syscall.RawSyscall is for.
//
// A read still tries the socket before waiting for readiness, as the net
// package does: the netpoller forgets readiness that arrived before a read
// starts, so waiting first could sleep on bytes already there.
//
// Deadlines, Close and everything else stay the net.Conn's.
type rawConn struct {
	net.Conn
	rc syscall.RawConn

	// The current calls' buffers and outcomes, set by Read and Write for
	// the method values below (bound once: no closure per call). Reads and
	// writes keep separate fields: they may run concurrently.
	rp, wp         []byte
	rn, wn         int
	rerrno, werrno syscall.Errno

	readFn, writeFn func(fd uintptr) bool
}

// newRawConn wraps plain TCP and Unix sockets; anything else (TLS, test
// pipes) is returned as it is.
func newRawConn(c net.Conn) net.Conn {
	var sc syscall.Conn
	switch t := c.(type) {
	case *net.TCPConn:
		sc = t
	case *net.UnixConn:
		sc = t
	default:
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	r := &rawConn{Conn: c, rc: rc}
	r.readFn, r.writeFn = r.doRead, r.doWrite
	return r
}

// SyscallConn gives the socket beneath (backend.alive peeks through it).
func (r *rawConn) SyscallConn() (syscall.RawConn, error) { return r.rc, nil }

func (r *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rp, r.rn, r.rerrno = p, 0, 0
	err := r.rc.Read(r.readFn)
	r.rp = nil
	switch {
	case err != nil: // closed, or a deadline passed
		return 0, &net.OpError{Op: "read", Net: r.LocalAddr().Network(), Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: err}
	case r.rerrno != 0:
		return 0, &net.OpError{Op: "read", Net: r.LocalAddr().Network(), Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: os.NewSyscallError("read", r.rerrno)}
	case r.rn == 0:
		return 0, io.EOF
	}
	return r.rn, nil
}

func (r *rawConn) doRead(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rp[0])), uintptr(len(r.rp)))
		switch e {
		case 0:
			r.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			r.rerrno = e
			return true
		}
	}
}

func (r *rawConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.wp, r.wn, r.werrno = p, 0, 0
	err := r.rc.Write(r.writeFn)
	n := r.wn
	r.wp = nil
	switch {
	case err != nil:
		return n, &net.OpError{Op: "write", Net: r.LocalAddr().Network(), Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: err}
	case r.werrno != 0:
		return n, &net.OpError{Op: "write", Net: r.LocalAddr().Network(), Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: os.NewSyscallError("write", r.werrno)}
	}
	return n, nil
}

func (r *rawConn) doWrite(fd uintptr) bool {
	for r.wn < len(r.wp) {
		rest := r.wp[r.wn:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch e {
		case 0:
			r.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			r.werrno = e
			return true
		}
	}
	return true
}
