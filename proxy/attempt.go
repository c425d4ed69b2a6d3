package proxy

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/breaker"
	"github.com/sluice-ai/sluice/deadletter"
	"github.com/sluice-ai/sluice/limiter"
	"github.com/sluice-ai/sluice/retry"
	"github.com/sluice-ai/sluice/tokens"
)

// Header names of the failure handling.
const (
	HeaderAttempts    = "X-Sluice-Attempts"
	headerShouldRetry = "X-Should-Retry"
)

// failurePolicy is a provider's retry settings with defaults applied.
type failurePolicy struct {
	maxAttempts int
	baseDelay   time.Duration
	maxDelay    time.Duration
	maxPause    time.Duration
}

// setFailureHandling sets up u's retries and breaker from pc. opened is
// called, under the breaker's lock, when it opens: it must only signal.
func (u *upstream) setFailureHandling(pc Provider, log *slog.Logger, opened func()) error {
	r := pc.Retry
	u.policy = failurePolicy{
		maxAttempts: orDefault(r.MaxAttempts, 3),
		baseDelay:   orDefault(r.BaseDelay, 500*time.Millisecond),
		maxDelay:    orDefault(r.MaxDelay, 30*time.Second),
		maxPause:    orDefault(r.MaxPause, 2*time.Minute),
	}
	m, name := u.metrics, u.name
	b, err := breaker.New(breaker.Settings{
		Name:             pc.Name,
		FailureThreshold: orDefault(pc.Breaker.FailureThreshold, 5),
		OpenFor:          orDefault(pc.Breaker.OpenFor, 30*time.Second),
		HalfOpenRequests: orDefault(pc.Breaker.HalfOpenRequests, 1),
		// Runs under the breaker's lock: a gauge and a log line only.
		OnStateChange: func(from, to breaker.State) {
			m.BreakerState(int(to))
			if to == breaker.Open {
				opened()
			}
			log.Warn("circuit breaker changed state", slog.String("provider", name),
				slog.String("from", from.String()), slog.String("to", to.String()))
		},
	})
	if err != nil {
		return err
	}
	u.breaker = b
	return nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// forward sends the request upstream, as many times as the failure policy
// allows, and sets up the response relay. It owns x from here on: the
// relay or forward itself finishes it.
//
// Each attempt asks the breaker first and is admitted through the quota
// (the first one was, by admit). A rate-limit answer pauses the scope for
// as long as the provider asked and sends the request back to its queue,
// keeping its place by age; a transient failure waits a jittered backoff
// first. Nothing is retried once a byte of the response reached the
// client: an attempt is judged on its status line and headers, before any
// of its body is relayed.
func (p *Proxy) forward(ctx *fasthttp.RequestCtx, x *exchange, path []byte) {
	up := x.up
	limit := up.policy.maxAttempts
	if n := p.classes[x.class].MaxAttempts; n > 0 {
		limit = n
	}
	for {
		x.attempts++
		setAttempts(ctx, x.attempts)
		permit, err := up.breaker.Allow()
		if err != nil {
			x.attempts-- // nothing was sent
			if p.awaitBreaker(ctx, x) {
				continue
			}
			return
		}
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		up.prepare(req, ctx, path, x.body)
		up.inflight.Add(1)
		if x.parsed {
			resp.StreamBody = x.est.Stream || !ctx.IsPost()
		} else {
			resp.StreamBody = wantsStream(ctx)
		}
		sent := time.Now()
		err = up.roundTrip(req, resp, sent)
		fasthttp.ReleaseRequest(req)
		if err != nil {
			up.inflight.Add(-1)
			fasthttp.ReleaseResponse(resp)
			apiErr, timedOut := upstreamError(err)
			up.metrics.UpstreamFailed(timedOut, time.Since(sent))
			permit.Done(breaker.Failure)
			p.log.LogAttrs(context.Background(), slog.LevelWarn, "upstream request failed",
				slog.String("provider", up.name), slog.Int("attempt", x.attempts), slog.String("error", err.Error()))
			reason := "connection"
			if timedOut {
				reason = "timeout"
			}
			if x.attempts < limit && !p.draining.Load() {
				if p.again(ctx, x, reason, false) {
					continue
				}
				return
			}
			kind := p.gaveUp(x, reason)
			if kind == deadletter.Shutdown {
				apiErr = errDraining
			} else if timedOut {
				kind = deadletter.UpstreamTimeout
			}
			writeError(ctx, apiErr)
			ctx.Response.Header.Set(headerShouldRetry, "false")
			p.deadLetter(ctx, x, kind, 0, err.Error())
			x.finish(0, tokens.Usage{}, false, 0)
			return
		}
		status := resp.StatusCode()
		up.metrics.Upstream(status, time.Since(sent))
		var body []byte
		if resp.BodyStream() == nil {
			body = resp.Body()
		}
		now := time.Now()
		v := retry.Classify(status, &resp.Header, body, now)
		x.scope.observeRemaining(now, &resp.Header)
		if v.Kind == retry.Transient && status >= 500 {
			permit.Done(breaker.Failure)
		} else {
			permit.Done(breaker.Success) // 429s and 4xx are answers, not outages
		}
		retryable := v.Kind == retry.RateLimited || v.Kind == retry.Transient
		if v.Kind == retry.RateLimited {
			p.pause(x, v.Pause, now)
		}
		if retryable && x.attempts < limit && !p.draining.Load() {
			up.inflight.Add(-1)
			if s := resp.BodyStream(); s != nil {
				_ = resp.CloseBodyStream() // not relayed: the connection is not reused
			}
			fasthttp.ReleaseResponse(resp)
			if p.again(ctx, x, v.Reason, v.Kind == retry.RateLimited) {
				continue
			}
			return
		}
		if retryable {
			// Recorded before respond hands x to the relay or finishes it.
			p.deadLetter(ctx, x, p.gaveUp(x, v.Reason), status,
				"the upstream answered "+strconv.Itoa(status)+" ("+v.Reason+") on its last attempt")
		}
		p.respond(ctx, x, resp, status, body, sent)
		if retryable {
			// Sluice gave up; the SDK must not start another round.
			ctx.Response.Header.Set(headerShouldRetry, "false")
		}
		return
	}
}

// respond hands the upstream's response to the client: whole when it was
// read whole, else as a stream the relay reads after the handler returns.
func (p *Proxy) respond(ctx *fasthttp.RequestCtx, x *exchange, resp *fasthttp.Response, status int, body []byte, sent time.Time) {
	ctx.SetStatusCode(status)
	copyResponseHeaders(&ctx.Response.Header, &resp.Header)
	if resp.BodyStream() == nil {
		// Read whole (or no body at all): nothing outlives the handler.
		ctx.Response.SetBody(body)
		up := x.up // finish releases x
		if x.track {
			u, ok := tokens.ResponseUsage(body)
			x.finish(status, u, ok, 0)
		} else {
			x.finish(status, tokens.Usage{}, false, 0)
		}
		up.inflight.Add(-1)
		fasthttp.ReleaseResponse(resp)
		return
	}
	size := resp.Header.ContentLength()
	if size < 0 || x.strip {
		size = -1 // chunked, until close, or shortened: relay chunk by chunk
	}
	ctx.Response.SetBodyStream(newRelay(ctx, x, resp, sent), size)
}

func setAttempts(ctx *fasthttp.RequestCtx, n int) { setInt(ctx, HeaderAttempts, int64(n)) }

func setQueueWait(ctx *fasthttp.RequestCtx, d time.Duration) {
	setInt(ctx, HeaderQueueWait, d.Milliseconds())
}

// setInt sets a response header to a decimal number without allocating.
func setInt(ctx *fasthttp.RequestCtx, name string, n int64) {
	var buf [20]byte
	ctx.Response.Header.SetBytesV(name, strconv.AppendInt(buf[:0], n, 10))
}

// again prepares the next attempt after a failed one: it settles what the
// failed attempt was charged, waits a jittered backoff after a transient
// failure (a rate limit's wait is the scope's pause, which the quota
// enforces for every request), and queues the request again at its
// priority and age. It reports false when it answered the client instead.
func (p *Proxy) again(ctx *fasthttp.RequestCtx, x *exchange, reason string, rateLimited bool) bool {
	up := x.up
	up.metrics.Retry(reason)
	// The failed attempt keeps its request charge; of its tokens only the
	// prompt, and nothing when the provider refused it outright.
	delta := limiter.Cost{}
	if x.track {
		keep := x.est.Prompt
		if rateLimited {
			keep = 0
		}
		delta.Tokens = keep - x.ticket.Cost.Tokens
	}
	x.scope.sched.Finish(context.Background(), &x.ticket, delta)

	if !rateLimited {
		wait := retry.Backoff(x.attempts, up.policy.baseDelay, up.policy.maxDelay, rand.Float64())
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-p.dispatchers.stopped: // the grace period is over
			t.Stop()
			x.scope = nil
			writeError(ctx, errDraining)
			p.deadLetter(ctx, x, deadletter.Shutdown, 0, "Sluice shut down while the request waited to be retried after "+reason)
			x.release()
			return false
		}
	}
	now := time.Now()
	x.ticket.Deadline = now.Add(p.classes[x.class].MaxWait)
	waited, err := x.scope.sched.Acquire(context.Background(), &x.ticket, now)
	x.waited += waited
	setQueueWait(ctx, x.waited)
	up.metrics.QueueWait(x.class, waited)
	if err != nil {
		x.scope = nil // nothing held
		p.refuse(ctx, x, err, x.ticket.Cost, true)
		x.release()
		return false
	}
	return true
}

// gaveUp logs a request Sluice stops retrying and returns its dead-letter
// kind: retries_exhausted when its attempts are used up, shutdown when
// Sluice is draining and retries no more.
func (p *Proxy) gaveUp(x *exchange, reason string) deadletter.Kind {
	kind := deadletter.RetriesExhausted
	if p.draining.Load() {
		kind = deadletter.Shutdown
	}
	p.log.LogAttrs(context.Background(), slog.LevelWarn, "giving up on request",
		slog.String("provider", x.up.name), slog.String("class", p.classes[x.class].Name),
		slog.String("error_kind", string(kind)), slog.String("reason", reason),
		slog.Int("attempts", x.attempts))
	return kind
}

// streamCut dead-letters a response stream that broke off after it began:
// shutdown when Sluice cut it while draining, upstream_timeout when the
// upstream stalled past the idle or total timeout, stream_cut otherwise.
// The response headers have gone, so the record's id is logged instead,
// with the request id the client did get.
func (p *Proxy) streamCut(ctx *fasthttp.RequestCtx, x *exchange, status int, err error) {
	kind := deadletter.StreamCut
	var ne net.Error
	switch {
	case p.draining.Load():
		kind = deadletter.Shutdown
	case errors.As(err, &ne) && ne.Timeout():
		kind = deadletter.UpstreamTimeout
	}
	id := p.deadLetter(ctx, x, kind, status, "the response stream broke off after it began: "+err.Error())
	p.log.LogAttrs(context.Background(), slog.LevelWarn, "response stream broke off",
		slog.String("provider", x.up.name), slog.String("error_kind", string(kind)), slog.String("error", err.Error()),
		slog.String("request_id", string(ctx.Response.Header.Peek(HeaderRequestID))), slog.String("deadletter_id", id))
}

// pause stops the request's scope for as long as the provider asked (or a
// backoff when it did not say), capped by the policy.
func (p *Proxy) pause(x *exchange, asked time.Duration, now time.Time) {
	pol := x.up.policy
	d := asked
	if d <= 0 {
		d = retry.Backoff(x.attempts, pol.baseDelay, pol.maxDelay, rand.Float64())
	}
	d = min(d, pol.maxPause)
	if p.lim.PauseAt(now, x.scope.buckets[0], now.Add(d)) {
		x.up.metrics.Paused()
		p.log.LogAttrs(context.Background(), slog.LevelInfo, "provider asked to slow down: paused",
			slog.String("provider", x.up.name), slog.String("scope", x.scope.name), slog.Duration("for", d))
	}
}

// observeRemaining lowers the scope's bucket to what the provider says is
// left of its quota, when that is less than Sluice believes.
func (sc *scope) observeRemaining(now time.Time, h retry.Header) {
	req, reqOK, tok, tokOK := retry.Remaining(h)
	if !reqOK && !tokOK {
		return
	}
	if !reqOK {
		req = -1
	}
	if !tokOK {
		tok = -1
	}
	sc.lim.ClampAt(now, sc.buckets[0], req, tok)
}

// awaitBreaker holds a request whose provider's breaker is open until the
// breaker lets requests through again (or, half-open with its probes
// taken, a short jittered while), when that is within the request's wait;
// then it queues the request again at its priority and age and reports
// true. Otherwise it answers 503 and reports false. Waiting holds no
// quota: the charge is refunded first, since nothing was sent.
func (p *Proxy) awaitBreaker(ctx *fasthttp.RequestCtx, x *exchange) bool {
	up := x.up
	now := time.Now()
	wait := retry.Backoff(1, up.policy.baseDelay, up.policy.maxDelay, rand.Float64())
	if until := up.breaker.OpenUntil(); !until.IsZero() {
		wait = until.Sub(now)
	}
	if now.Add(wait).After(x.ticket.Deadline) {
		p.breakerOpen(ctx, x)
		return false
	}
	x.scope.sched.Finish(context.Background(), &x.ticket, limiter.Cost{Requests: -x.ticket.Cost.Requests, Tokens: -x.ticket.Cost.Tokens})
	t := time.NewTimer(wait)
	select {
	case <-t.C:
	case <-p.dispatchers.stopped:
		t.Stop()
		x.scope = nil
		writeError(ctx, errDraining)
		p.deadLetter(ctx, x, deadletter.Shutdown, 0, "Sluice shut down while the request waited for the provider's circuit breaker")
		x.release()
		return false
	}
	// The deadline stays: the breaker's wait counts against the request's.
	waited, err := x.scope.sched.Acquire(context.Background(), &x.ticket, time.Now())
	x.waited += waited + wait
	setQueueWait(ctx, x.waited)
	if err != nil {
		x.scope = nil
		p.refuse(ctx, x, err, x.ticket.Cost, true)
		x.release()
		return false
	}
	return true
}

// breakerOpen answers a request whose provider's breaker stays open past
// the request's wait, without contacting the upstream: 503 with the time
// until the breaker probes again. Its quota charge is refunded whole.
func (p *Proxy) breakerOpen(ctx *fasthttp.RequestCtx, x *exchange) {
	setAttempts(ctx, x.attempts)
	after := time.Second
	if until := x.up.breaker.OpenUntil(); !until.IsZero() {
		after = max(time.Until(until), time.Second)
	}
	writeRetryError(ctx, errBreakerOpen, after)
	p.deadLetter(ctx, x, deadletter.BreakerOpen, 0, "the provider's circuit breaker is open")
	x.refundAll()
}
