package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/idempotency"
)

// HeaderIdempotentReplay marks an answer that was not sent upstream for
// this request: it is the outcome of an earlier one with the same
// Idempotency-Key, kept or waited for.
const HeaderIdempotentReplay = "X-Sluice-Idempotent-Replay"

var hdrIdempotencyKey = []byte("Idempotency-Key")

// The answers to keyed requests that cannot be sent.
var (
	errKeyReused = newAPIError(fasthttp.StatusUnprocessableEntity, "invalid_request_error", "idempotency_key_reused",
		"this Idempotency-Key was used for a request with a different body; use a new key for a new request")
	errKeyInFlight = newAPIError(fasthttp.StatusConflict, "invalid_request_error", "idempotency_key_in_flight",
		"a request with this Idempotency-Key is being streamed (or is still running); try again when it has finished")
	errKeyForgotten = newAPIError(fasthttp.StatusConflict, "invalid_request_error", "idempotency_response_not_kept",
		"a request with this Idempotency-Key has completed, but its response was too large to keep; it is not sent again")
	errBadKey = newAPIError(fasthttp.StatusBadRequest, "invalid_request_error", "invalid_idempotency_key",
		"Idempotency-Key must be 1 to 255 bytes")
	errStreamCut = newAPIError(fasthttp.StatusBadGateway, "server_error", "stream_cut",
		"the upstream broke the response stream off; the request was dead-lettered")
	errKeyStore = newAPIError(fasthttp.StatusServiceUnavailable, "server_error", "idempotency_unavailable",
		"the store of idempotency keys cannot be reached, so this request cannot be sent at most once; try again shortly")
)

// hold is this request's claim on its Idempotency-Key; the zero value is
// no claim.
type hold struct {
	key, token string
}

// claim looks up the request's Idempotency-Key before it is queued. It
// returns a hold when this request is to be sent, and false when it
// answered instead: with the kept outcome of an earlier request (after
// waiting for it while it runs, within the request's max wait), or with an
// error. A dead-letter replay may re-send a key whose kept outcome failed.
func (p *Proxy) claim(ctx *fasthttp.RequestCtx, x *exchange, key []byte, deadline time.Time) (hold, bool) {
	up := x.up
	h := sha256.New()
	h.Write(ctx.Method())
	h.Write([]byte{'\n'})
	h.Write(ctx.Path())
	h.Write([]byte{'\n'})
	h.Write(ctx.PostBody())
	var sum [32]byte
	h.Sum(sum[:0])
	// Parsed once here; admit uses it. A body that does not parse is
	// answered by admit when the quota needs it.
	if ctx.IsPost() && len(ctx.PostBody()) > 0 {
		if est, err := p.estimator.Parse(ctx.PostBody()); err == nil {
			x.parsed, x.est = true, est
		}
	}
	stream := x.parsed && x.est.Stream
	_, replay := ctx.UserValue(replayOf{}).(string)

	k := string(key)
	c, err := p.idem.Begin(context.Background(), up.name, k, sum, stream, replay)
	if err == nil && c.State == idempotency.InFlight && !stream && !c.Streaming {
		// A buffered duplicate waits for the first one's answer.
		wctx, cancel := context.WithDeadline(context.Background(), deadline)
		c, err = p.idem.Wait(wctx, up.name, k, sum, stream)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			c, err = idempotency.Claim{State: idempotency.InFlight}, nil
		}
		if err == nil && c.State == idempotency.Done {
			up.metrics.IdempotentReplay("waited")
			writeOutcome(ctx, c.Outcome)
			return hold{}, false
		}
	}
	switch {
	case errors.Is(err, idempotency.ErrBadKey):
		writeError(ctx, errBadKey)
	case err != nil:
		p.log.LogAttrs(context.Background(), slog.LevelError, "idempotency store failed",
			slog.String("provider", up.name), slog.String("error", err.Error()))
		up.metrics.IdempotentReplay("unavailable")
		writeRetryError(ctx, errKeyStore, time.Second)
	case c.State == idempotency.Acquired:
		return hold{key: k, token: c.Token}, true
	case c.State == idempotency.Done:
		up.metrics.IdempotentReplay("stored")
		writeOutcome(ctx, c.Outcome)
	case c.State == idempotency.Mismatch:
		up.metrics.IdempotentReplay("mismatch")
		writeError(ctx, errKeyReused)
	case c.State == idempotency.Forgotten:
		up.metrics.IdempotentReplay("not_kept")
		writeError(ctx, errKeyForgotten)
	default: // in flight: a stream, or past the wait
		up.metrics.IdempotentReplay("in_flight")
		writeRetryError(ctx, errKeyInFlight, time.Second)
	}
	return hold{}, false
}

// writeOutcome answers with a kept outcome.
func writeOutcome(ctx *fasthttp.RequestCtx, o idempotency.Outcome) {
	ctx.SetStatusCode(o.Status)
	for _, h := range o.Header {
		ctx.Response.Header.Add(h[0], h[1])
	}
	ctx.Response.Header.Set(HeaderIdempotentReplay, "true")
	if o.Stream {
		ctx.Response.SetBodyStream(bytes.NewReader(o.Body), -1)
	} else {
		ctx.Response.SetBody(o.Body)
	}
}

// final reports whether an answer is kept for the key's duplicates: one
// delivered (2xx), or one Sluice gave up on (it carries a dead letter), so
// that a retrying caller gets it instead of another upstream call.
// Anything else (refused before the upstream, an upstream 4xx) frees the
// key for a new attempt.
func final(ctx *fasthttp.RequestCtx, status int) bool {
	return status/100 == 2 || len(ctx.Response.Header.Peek(HeaderDeadletterID)) > 0
}

// outcomeOf is the kept form of ctx's response with the given status and
// body; the body is the caller's to give away.
func outcomeOf(ctx *fasthttp.RequestCtx, status int, body []byte, stream bool) idempotency.Outcome {
	o := idempotency.Outcome{Status: status, Body: body, Stream: stream}
	for k, v := range ctx.Response.Header.All() {
		if keepForReplay(k) {
			o.Header = append(o.Header, [2]string{string(k), string(v)})
		}
	}
	return o
}

// keep stores o as the key's outcome; free releases the key. A failure
// leaves the key to its lock's expiry.
func (p *Proxy) keep(up *upstream, h hold, o idempotency.Outcome) {
	p.settled(up, p.idem.Complete(context.Background(), up.name, h.key, h.token, o))
}

func (p *Proxy) free(up *upstream, h hold) {
	p.settled(up, p.idem.Abandon(context.Background(), up.name, h.key, h.token))
}

func (p *Proxy) settled(up *upstream, err error) {
	if err != nil {
		p.log.LogAttrs(context.Background(), slog.LevelWarn, "idempotency key not settled; it frees when its lock expires",
			slog.String("provider", up.name), slog.String("error", err.Error()))
	}
}

// settleBuffered ends the hold of a request answered whole.
func (p *Proxy) settleBuffered(ctx *fasthttp.RequestCtx, up *upstream, h hold) {
	status := ctx.Response.StatusCode()
	if !final(ctx, status) {
		p.free(up, h)
		return
	}
	p.keep(up, h, outcomeOf(ctx, status, append([]byte(nil), ctx.Response.Body()...), false))
}

// settleStream ends the hold of a streamed answer once it is over: whole,
// it is kept as the stream the client got; broken off by the upstream, as
// the 502 the next caller should see (its dead letter named); left by the
// client, the key is freed.
func (p *Proxy) settleStream(ctx *fasthttp.RequestCtx, up *upstream, h hold, status int, body []byte, cut, clientGone bool) {
	switch {
	case cut:
		o := outcomeOf(ctx, errStreamCut.status, errStreamCut.body, false)
		for i := range o.Header {
			if o.Header[i][0] == fasthttp.HeaderContentType {
				o.Header[i][1] = "application/json"
			}
		}
		p.keep(up, h, o)
	case clientGone || !final(ctx, status):
		p.free(up, h)
	default:
		p.keep(up, h, outcomeOf(ctx, status, body, true))
	}
}

// keepForReplay reports whether a response header belongs in a kept
// outcome: not the framing, and not what describes this request alone.
func keepForReplay(name []byte) bool {
	switch string(name) {
	case fasthttp.HeaderContentLength, fasthttp.HeaderTransferEncoding, fasthttp.HeaderConnection,
		fasthttp.HeaderDate, fasthttp.HeaderServer, HeaderRequestID, HeaderClass, HeaderQueueWait:
		return false
	}
	return true
}
