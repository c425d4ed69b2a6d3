package proxy

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// dialer opens upstream connections and keeps track of them, for two
// reasons fasthttp does not cover:
//
//   - After the response headers arrive, the read deadline must change from
//     the header timeout to "idle gap, capped by the total timeout". fasthttp
//     keeps the header deadline on the connection while a body streams, and
//     does not expose the connection. Every connection therefore reports a
//     local address that points back to it, which fasthttp copies into
//     Response.LocalAddr, so the relay can find the connection it reads.
//   - At the end of a shutdown grace period the connections still busy must
//     be cut, so that blocked reads return.
type dialer struct {
	connectTimeout time.Duration
	tcp            fasthttp.TCPDialer

	mu     sync.Mutex // protects conns, closed
	conns  map[*trackedConn]struct{}
	closed bool
}

func newDialer(connectTimeout time.Duration) *dialer {
	return &dialer{
		connectTimeout: connectTimeout,
		tcp:            fasthttp.TCPDialer{DNSCacheDuration: time.Minute},
		conns:          make(map[*trackedConn]struct{}),
	}
}

// dial is a fasthttp.DialFuncWithTimeout; timeout is what is left of the
// request's header deadline.
func (d *dialer) dial(addr string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 || d.connectTimeout < timeout {
		timeout = d.connectTimeout
	}
	c, err := d.tcp.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, d: d}
	tc.laddr = connAddr{Addr: c.LocalAddr(), conn: tc}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		_ = c.Close()
		return nil, net.ErrClosed
	}
	d.conns[tc] = struct{}{}
	d.mu.Unlock()
	return tc, nil
}

// closeAll cuts every open connection and refuses new ones.
func (d *dialer) closeAll() {
	d.mu.Lock()
	d.closed = true
	conns := make([]*trackedConn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	d.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// trackedConn is an upstream connection known to its dialer.
type trackedConn struct {
	net.Conn
	d     *dialer
	laddr connAddr
	once  sync.Once
	ended atomic.Bool // a read met the end of the stream: the peer closed
}

func (c *trackedConn) LocalAddr() net.Addr { return &c.laddr }

// Read notes when the peer closes the connection. fasthttp reports a
// chunked body cut off at a chunk boundary as a clean io.EOF, the same as
// one that ended with its last chunk; the relay tells them apart by
// whether the connection ended under it.
func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err == io.EOF {
		c.ended.Store(true)
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.d.mu.Lock()
		delete(c.d.conns, c)
		c.d.mu.Unlock()
	})
	return c.Conn.Close()
}

// connAddr is the local address of a trackedConn, with a way back to it.
type connAddr struct {
	net.Addr
	conn *trackedConn
}

// connOf returns the connection a response was read from, or nil when it
// came through something else (an HTTP proxy dialer, say).
func connOf(resp *fasthttp.Response) *trackedConn {
	if a, ok := resp.LocalAddr().(*connAddr); ok {
		return a.conn
	}
	return nil
}
