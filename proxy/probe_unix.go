//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package proxy

import (
	"errors"
	"net"
	"syscall"
)

// connGone reports whether the peer of c has closed the connection, without
// consuming anything from it: fasthttp reads nothing while a handler runs
// and offers no cancellation signal (RequestCtx.Done only fires on server
// shutdown), so a request waiting in the queue would otherwise never learn
// that its client left. A non-blocking MSG_PEEK read returns 0 bytes at end
// of stream, an error for a reset connection, and EAGAIN while the client is
// still there; pipelined bytes of a next request stay unread.
func connGone(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case rerr == nil:
			gone = n == 0
		case errors.Is(rerr, syscall.EAGAIN), errors.Is(rerr, syscall.EINTR):
		default:
			gone = true // reset, or otherwise unusable
		}
		return true // answered: do not wait for readability
	})
	return gone || err != nil
}
