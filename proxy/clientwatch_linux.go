package proxy

import "golang.org/x/sys/unix"

// peerClosed polls fd, without waiting, for a hang-up: POLLRDHUP (the peer
// shut down its side, even with unread bytes queued), POLLHUP or POLLERR.
func peerClosed(fd uintptr) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
}
