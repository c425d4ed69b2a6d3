package proxy

import (
	"io"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/tokens"
)

// relay streams an upstream response body to the client. fasthttp's server
// reads it after the handler has returned and writes each Read as it comes
// (one HTTP chunk, flushed, when the length is unknown), so server-sent
// events reach the client as the provider emits them. The relay owns the
// upstream response and the exchange until fasthttp closes it.
//
// When the request's tokens are reconciled, the relay watches the events
// for the usage report; when Sluice asked for a usage chunk the client did
// not, it also removes that chunk, which means holding back an incomplete
// event until its end arrives.
type relay struct {
	ctx      *fasthttp.RequestCtx // valid until fasthttp closes the relay
	x        *exchange
	resp     *fasthttp.Response
	body     io.Reader
	conn     *trackedConn // nil when the connection is not ours to steer
	deadline time.Time    // the attempt's total deadline
	status   int
	chunked  bool  // the upstream body is chunked: only a last chunk ends it
	cut      error // the upstream read error that broke the stream off, if any
	idem     hold  // the request's Idempotency-Key claim; its outcome is captured
	captured []byte

	sse  tokens.Stream
	buf  []byte // strip mode: what was read from upstream
	out  []byte // strip mode: filtered bytes not yet returned
	off  int    // read position in out
	rerr error  // strip mode: upstream read error to return once out is empty
}

var relayPool = sync.Pool{New: func() any { return new(relay) }}

// relayBufSize is what one upstream read in strip mode takes; providers
// write an event or a few per read.
const relayBufSize = 16 << 10

func newRelay(ctx *fasthttp.RequestCtx, x *exchange, resp *fasthttp.Response, sent time.Time) *relay {
	r := relayPool.Get().(*relay)
	r.ctx, r.x, r.resp, r.body = ctx, x, resp, resp.BodyStream()
	r.conn = connOf(resp)
	r.deadline = sent.Add(x.up.totalTimeout)
	r.status = resp.StatusCode()
	r.chunked = resp.Header.ContentLength() == -1
	r.idem = x.idem
	if x.track {
		r.sse.Reset(x.strip)
		if x.strip && r.buf == nil {
			r.buf = make([]byte, relayBufSize)
		}
	}
	return r
}

// Read reads the next piece of the upstream body. Before each read the
// connection's deadline moves to the idle timeout from now, capped by the
// total deadline, so a stream may run long but may not stall.
func (r *relay) Read(p []byte) (int, error) {
	n, err := r.next(p)
	if r.idem.token != "" && n > 0 && len(r.captured) <= r.x.p.idemMax {
		r.captured = append(r.captured, p[:n]...) // past the limit the store keeps none of it
	}
	return n, err
}

// next reads what the client is to get next: the upstream body, without
// the usage chunk in strip mode.
func (r *relay) next(p []byte) (int, error) {
	if !r.x.strip {
		n, err := r.read(p)
		if r.x.track && n > 0 {
			r.sse.Observe(p[:n])
		}
		return n, err
	}
	for r.off == len(r.out) {
		if r.rerr != nil {
			return 0, r.rerr
		}
		n, err := r.read(r.buf)
		r.out, r.off = r.sse.Filter(r.out[:0], r.buf[:n]), 0
		if err != nil {
			r.out = r.sse.Flush(r.out)
			r.rerr = err
		}
	}
	n := copy(p, r.out[r.off:])
	r.off += n
	return n, nil
}

func (r *relay) read(p []byte) (int, error) {
	if r.conn != nil {
		d := time.Now().Add(r.x.up.idleTimeout)
		if r.deadline.Before(d) {
			d = r.deadline
		}
		_ = r.conn.SetReadDeadline(d)
	}
	n, err := r.body.Read(p)
	if err == io.EOF && r.chunked && r.conn != nil && r.conn.ended.Load() {
		err = io.ErrUnexpectedEOF // no last chunk came: the upstream hung up
	}
	if err != nil && err != io.EOF {
		r.cut = err
	}
	return n, err
}

// CloseWithError is called by fasthttp once the body has been written, with
// the error that stopped the write (nil when it completed). It settles the
// request's quota, releases the upstream response; fasthttp closes, rather
// than reuses, a connection whose body was not read to the end or whose
// client write failed.
//
// A stream the upstream broke off (or Sluice cut at the end of its grace
// period) cannot be retried, since the client has part of it, and its
// caller got no complete answer: it is dead-lettered. A client that left
// mid-stream is not: that was its choice.
func (r *relay) CloseWithError(writeErr error) error {
	if s, ok := r.body.(fasthttp.ReadCloserWithError); ok {
		_ = s.CloseWithError(writeErr)
	}
	x := r.x
	if r.cut != nil {
		x.p.streamCut(r.ctx, x, r.status, r.cut)
	}
	if r.idem.token != "" {
		x.p.settleStream(r.ctx, x.up, r.idem, r.status, r.captured, r.cut != nil, writeErr != nil)
	}
	x.up.inflight.Add(-1)
	if x.track {
		u, ok := r.sse.Usage()
		x.finish(r.status, u, ok, r.sse.Deltas())
	} else {
		x.finish(r.status, tokens.Usage{}, false, 0)
	}
	fasthttp.ReleaseResponse(r.resp)
	buf, out, sse := r.buf, r.out[:0], r.sse
	*r = relay{buf: buf, out: out, sse: sse} // keep buffers for the next stream; captured went to the store
	relayPool.Put(r)
	return nil
}
