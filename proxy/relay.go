package proxy

import (
	"io"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// relay streams an upstream response body to the client. fasthttp's server
// reads it after the handler has returned and writes each Read as it comes
// (one HTTP chunk, flushed, when the length is unknown), so server-sent
// events reach the client as the provider emits them. The relay owns the
// upstream response until fasthttp closes it.
type relay struct {
	up       *upstream
	resp     *fasthttp.Response
	body     io.Reader
	conn     *trackedConn // nil when the connection is not ours to steer
	deadline time.Time    // the request's total deadline
}

var relayPool = sync.Pool{New: func() any { return new(relay) }}

func newRelay(up *upstream, resp *fasthttp.Response, start time.Time) *relay {
	r := relayPool.Get().(*relay)
	r.up, r.resp, r.body = up, resp, resp.BodyStream()
	r.conn = connOf(resp)
	r.deadline = start.Add(up.totalTimeout)
	return r
}

// Read reads the next piece of the upstream body. Before each read the
// connection's deadline moves to the idle timeout from now, capped by the
// total deadline, so a stream may run long but may not stall.
func (r *relay) Read(p []byte) (int, error) {
	if r.conn != nil {
		d := time.Now().Add(r.up.idleTimeout)
		if r.deadline.Before(d) {
			d = r.deadline
		}
		_ = r.conn.SetReadDeadline(d)
	}
	return r.body.Read(p)
}

// CloseWithError is called by fasthttp once the body has been written, with
// the error that stopped the write (nil when it completed). It releases the
// upstream response; fasthttp closes, rather than reuses, a connection
// whose body was not read to the end or whose client write failed.
func (r *relay) CloseWithError(writeErr error) error {
	if s, ok := r.body.(fasthttp.ReadCloserWithError); ok {
		_ = s.CloseWithError(writeErr)
	}
	r.up.inflight.Add(-1)
	fasthttp.ReleaseResponse(r.resp)
	*r = relay{}
	relayPool.Put(r)
	return nil
}
