package proxy

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
)

// fullBacklog returns a loopback address that accepts no more TCP
// handshakes: a socket listening with a backlog of zero whose queue is
// filled by connections nobody accepts. Linux drops further SYNs, so a dial
// there hangs until its timeout, like a provider behind a black hole.
func fullBacklog(tb testing.TB) string {
	tb.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		tb.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		tb.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		tb.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 16 {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return addr // the queue is full
		}
		tb.Cleanup(func() { c.Close() })
	}
	tb.Fatalf("the listen queue of %s never filled", addr)
	return ""
}
