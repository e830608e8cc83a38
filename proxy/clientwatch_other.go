//go:build !linux

package proxy

import "syscall"

// peerClosed peeks at fd without waiting: an orderly shutdown reads as 0
// bytes. Bytes the client sent before leaving hide the shutdown here
// (Linux's POLLRDHUP does not).
func peerClosed(fd uintptr) bool {
	var one [1]byte
	n, _, err := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n == 0 && err == nil
}
