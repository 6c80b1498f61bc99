package broker

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// clientGone reports whether the client at the other end of c has closed
// or reset its connection: a CONNECT whose client gave up waiting for its
// CONNACK. It asks the kernel, without reading (poll for POLLRDHUP, which
// a FIN raises even with bytes left unread, such as a TLS close_notify),
// so nothing mochi has still to read is taken. A connection it cannot ask
// (a websocket) is taken to be there.
func clientGone(c net.Conn) bool {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	_ = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			gone = fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
		}
	})
	return gone
}
