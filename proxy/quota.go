package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/deadletter"
	"github.com/sluice-ai/sluice/limiter"
	"github.com/sluice-ai/sluice/scheduler"
	"github.com/sluice-ai/sluice/tokens"
)

// quota holds a provider's quota scopes: one for the provider as a whole,
// used by requests for models without limits of their own, and one per
// model with limits. Requests for a model scope are charged to the model's
// buckets and to the provider's. Every provider has one, limits or not: a
// provider's 429 pauses its scope.
type quota struct {
	provider *scope
	models   map[string]*scope // by model name
	scopes   []*scope          // all of the above, for dispatchers and status
	parse    bool              // bodies must be read: tokens are counted or models told apart
}

// scope is one quota scope with its dispatcher.
type scope struct {
	name             string
	sched            *scheduler.Scope
	buckets          []*limiter.Bucket // shared by every class, for status
	tokens           bool              // some bucket limits tokens: estimate and reconcile
	defaultMaxTokens int64
	lim              Limiter
}

// newQuota builds the scopes of provider pc.
func newQuota(pc Provider, classes []Class, lim Limiter, log *slog.Logger) (*quota, error) {
	q := &quota{models: make(map[string]*scope)}
	// Without limits the provider's bucket admits everything, except while
	// the provider has asked for a pause.
	providerBucket, err := lim.NewBucket(pc.Name, pc.Limits)
	if err != nil {
		return nil, fmt.Errorf("provider %s limits: %w", pc.Name, err)
	}
	sc, err := newScope(pc.Name, []*limiter.Bucket{providerBucket}, classes, lim, log)
	if err != nil {
		return nil, err
	}
	sc.defaultMaxTokens = pc.DefaultMaxTokens
	q.provider = sc
	q.scopes = append(q.scopes, sc)
	for _, m := range pc.Models {
		if !limited(m.Limits) {
			continue
		}
		key := pc.Name + "/" + m.Name
		b, err := lim.NewBucket(key, m.Limits)
		if err != nil {
			return nil, fmt.Errorf("provider %s model %s limits: %w", pc.Name, m.Name, err)
		}
		sc, err := newScope(key, []*limiter.Bucket{b, providerBucket}, classes, lim, log)
		if err != nil {
			return nil, err
		}
		sc.defaultMaxTokens = m.DefaultMaxTokens
		if sc.defaultMaxTokens == 0 {
			sc.defaultMaxTokens = pc.DefaultMaxTokens
		}
		q.models[m.Name] = sc
		q.scopes = append(q.scopes, sc)
	}
	for _, sc := range q.scopes {
		q.parse = q.parse || sc.tokens
	}
	q.parse = q.parse || len(q.models) > 0
	return q, nil
}

func limited(l limiter.Limits) bool {
	return l.RequestsPerMinute > 0 || l.TokensPerMinute > 0 || l.MaxConcurrency > 0
}

// newScope builds a scope charged to shared, plus, for each class with a
// share below 1, ceiling buckets of its own scaled down by the share.
func newScope(name string, shared []*limiter.Bucket, classes []Class, lim Limiter, log *slog.Logger) (*scope, error) {
	sc := &scope{name: name, buckets: shared, lim: lim}
	settings := scheduler.Settings{Name: name}
	for _, c := range classes {
		buckets := append([]*limiter.Bucket(nil), shared...)
		if c.Share < 1 {
			for _, b := range shared {
				if !limited(b.Limits()) {
					continue
				}
				own, err := lim.NewBucket(b.Key()+"#"+c.Name, scaled(b.Limits(), c.Share))
				if err != nil {
					return nil, fmt.Errorf("scope %s class %s ceiling: %w", name, c.Name, err)
				}
				buckets = append(buckets, own)
			}
		}
		settings.Classes = append(settings.Classes, scheduler.Class{
			Name:         c.Name,
			MaxQueue:     c.MaxQueue,
			Weight:       c.Weight,
			Buckets:      buckets,
			Own:          len(shared),
			Headroom:     c.Headroom,
			CommitWithin: c.CommitWithin,
		})
	}
	for _, b := range shared {
		sc.tokens = sc.tokens || b.Limits().TokensPerMinute > 0
	}
	s, err := scheduler.New(settings, lim, log)
	if err != nil {
		return nil, err
	}
	sc.sched = s
	return sc, nil
}

// scaled is a class's ceiling: share of every rate and of the concurrency
// (at least one slot), with the bursts scaled alike so that the class keeps
// (1 - share) of the burst free for the others too.
func scaled(l limiter.Limits, share float64) limiter.Limits {
	out := limiter.Limits{
		RequestsPerMinute: l.RequestsPerMinute * share,
		TokensPerMinute:   l.TokensPerMinute * share,
		RequestBurst:      l.RequestBurst,
		TokenBurst:        l.TokenBurst,
	}
	if l.MaxConcurrency > 0 {
		out.MaxConcurrency = max(1, int64(float64(l.MaxConcurrency)*share))
	}
	return out
}

// queued reports the requests of class ci waiting in all scopes.
func (q *quota) queued(ci int) float64 {
	n := 0
	for _, sc := range q.scopes {
		n += sc.sched.Queued(ci)
	}
	return float64(n)
}

// scopeFor returns the scope a request for model belongs to.
func (q *quota) scopeFor(model *tokens.Model) *scope {
	if model != nil && len(q.models) > 0 {
		if sc, ok := q.models[model.Name]; ok {
			return sc
		}
	}
	return q.provider
}

// exchange is one request's state from admission to the end of its
// response, streamed or not. Pooled.
type exchange struct {
	p      *Proxy
	up     *upstream
	class  int
	ticket scheduler.Ticket
	scope  *scope // nil when not admitted through a quota
	conn   net.Conn

	parsed   bool           // est holds the parsed body
	est      tokens.Request // the body's estimate
	track    bool           // reconcile tokens with the usage
	strip    bool           // the client did not ask for the usage chunk Sluice asked for
	attempts int            // upstream attempts so far
	waited   time.Duration  // time waited for quota, all attempts
	received time.Time      // when the request arrived
	body     []byte         // the body to forward when Sluice changed it; nil: the client's
	bodyBuf  []byte         // reused backing store of body
	idem     hold           // the request's claim on its Idempotency-Key
}

func (x *exchange) reset(p *Proxy, up *upstream, class int, received time.Time) {
	x.p, x.up, x.class, x.received = p, up, class, received
	x.scope, x.conn = nil, nil
	x.parsed, x.est = false, tokens.Request{}
	x.track, x.strip, x.body = false, false, nil
	x.attempts, x.waited = 0, 0
	x.idem = hold{}
	// The ticket keeps its channel and timer for reuse; admit sets the rest.
	x.ticket.Probe = nil
}

// release returns x to the pool.
func (x *exchange) release() {
	p := x.p
	if cap(x.bodyBuf) > 1<<20 {
		x.bodyBuf = nil // do not pin large bodies in the pool
	}
	x.conn, x.scope, x.up, x.p = nil, nil, nil, nil
	p.exchanges.Put(x)
	if p.active.Add(-1) == 0 && p.draining.Load() {
		select {
		case p.idle <- struct{}{}:
		default: // already signalled
		}
	}
}

// Gone implements [scheduler.Prober]: it peeks at the client's connection
// to see whether the client has closed it while its request waited.
func (x *exchange) Gone() bool { return connGone(x.conn) }

// admit reads what the quota needs from the request and waits for the
// quota. It reports false when it answered the request itself (an error);
// then x is the caller's to release.
func (p *Proxy) admit(ctx *fasthttp.RequestCtx, x *exchange, path []byte, start time.Time) bool {
	q := x.up.quota
	maxWait := p.classes[x.class].MaxWait
	if v := ctx.Request.Header.PeekBytes(hdrMaxWait); len(v) > 0 {
		d, err := parseMaxWait(v)
		if err != nil {
			writeError(ctx, errMaxWait)
			return false
		}
		maxWait = min(maxWait, d)
	}

	sc := q.provider
	cost := limiter.Cost{Requests: 1}
	if q.parse && ctx.IsPost() && len(ctx.PostBody()) > 0 {
		if !x.parsed { // claim may have parsed it already
			est, err := p.estimator.Parse(ctx.PostBody())
			if err != nil {
				writeError(ctx, invalidBody(err))
				return false
			}
			x.parsed, x.est = true, est
		}
		est := x.est
		sc = q.scopeFor(est.Model)
		if sc.tokens {
			output := est.MaxOutput
			if output == 0 {
				output = sc.defaultMaxTokens
			}
			cost.Tokens = est.Prompt + output
			x.track = true
			if est.Stream && !est.IncludeUsage && wantsUsageOption(path) {
				body, err := tokens.ForceIncludeUsage(x.bodyBuf[:0], ctx.PostBody())
				if err == nil {
					x.body, x.bodyBuf, x.strip = body, body, true
				}
			}
		}
	}
	x.scope = sc
	x.conn = ctx.Conn()
	x.ticket.Class = x.class
	x.ticket.Cost = cost
	x.ticket.Deadline = start.Add(maxWait)
	x.ticket.Arrived = start
	x.ticket.Probe = x
	waited, err := sc.sched.Acquire(context.Background(), &x.ticket, start)
	x.waited = waited
	x.up.metrics.QueueWait(x.class, waited)
	setQueueWait(ctx, waited)
	if err != nil {
		x.scope = nil
		p.refuse(ctx, x, err, cost, false)
		return false
	}
	x.up.metrics.Estimated(cost.Tokens)
	return true
}

// wantsUsageOption reports whether path is an OpenAI endpoint that streams
// usage only when asked to with stream_options.include_usage:
// .../chat/completions and the legacy .../completions.
func wantsUsageOption(path []byte) bool {
	return bytes.HasSuffix(path, []byte("/completions"))
}

// refuse answers a request that did not get its quota. A request that had
// been accepted (it waited in the queue, or an earlier attempt was sent) is
// dead-lettered when it runs out of time or Sluice stops; one refused at
// admission is not: its caller was told at once.
func (p *Proxy) refuse(ctx *fasthttp.RequestCtx, x *exchange, err error, cost limiter.Cost, retrying bool) {
	var re *scheduler.RetryError
	switch {
	case errors.As(err, &re):
		writeRetryError(ctx, retryErrors[classify(re.Err)], re.After)
		if retrying || errors.Is(err, scheduler.ErrQueueTimeout) {
			p.deadLetter(ctx, x, deadletter.QueueTimeout, 0, err.Error())
		}
	case errors.Is(err, scheduler.ErrTooLarge):
		writeError(ctx, tooLarge(cost.Tokens))
	case errors.Is(err, scheduler.ErrClientGone):
		// Nobody is listening; close rather than answer.
		ctx.SetStatusCode(statusClientClosed)
		ctx.SetConnectionClose()
		p.log.LogAttrs(context.Background(), slog.LevelDebug, "client went away while queued",
			slog.String("provider", x.up.name), slog.String("class", p.classes[x.class].Name))
	case errors.Is(err, scheduler.ErrStopped):
		writeError(ctx, errDraining)
		p.deadLetter(ctx, x, deadletter.Shutdown, 0, "Sluice shut down before the request got its quota")
	default:
		writeError(ctx, errUpstream)
		p.log.LogAttrs(context.Background(), slog.LevelError, "admitting request",
			slog.String("provider", x.up.name), slog.String("error", err.Error()))
	}
}

func classify(err error) int {
	switch {
	case errors.Is(err, scheduler.ErrQueueFull):
		return 0
	case errors.Is(err, scheduler.ErrWaitTooLong):
		return 1
	default:
		return 2
	}
}

// refundAll ends an exchange whose request never reached the upstream: its
// whole charge is returned.
func (x *exchange) refundAll() {
	if sc := x.scope; sc != nil {
		sc.sched.Finish(context.Background(), &x.ticket, limiter.Cost{Requests: -x.ticket.Cost.Requests, Tokens: -x.ticket.Cost.Tokens})
	}
	x.release()
}

// finish ends the exchange once its response is over: it corrects the
// tokens charged up front to what the upstream reported (or, without a
// usage report, to the prompt estimate plus what was streamed; a failed
// attempt keeps only the prompt), returns the concurrency slot and
// releases x. status is 0 when no response arrived.
func (x *exchange) finish(status int, u tokens.Usage, haveUsage bool, streamed int64) {
	if sc := x.scope; sc != nil {
		var delta int64
		if x.track {
			charged := x.ticket.Cost.Tokens
			actual := charged
			switch {
			case haveUsage:
				actual = u.Prompt + u.Completion
				x.up.metrics.Used(u.Prompt, u.Completion)
				x.p.estimator.Observe(x.est.Model, x.est.RawPrompt, u.Prompt)
			case status < 200 || status >= 300:
				actual = x.est.Prompt
			case streamed > 0 || x.est.Stream:
				actual = x.est.Prompt + streamed
				x.up.metrics.Used(0, streamed)
			}
			delta = actual - charged
		}
		sc.sched.Finish(context.Background(), &x.ticket, limiter.Cost{Tokens: delta})
	}
	x.release()
}
