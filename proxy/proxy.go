// Package proxy is Sluice's data plane: a fasthttp server that routes
// OpenAI-compatible requests to configured providers and relays their
// responses, streams included, as they arrive.
//
// Only configured upstreams are ever contacted: the upstream host comes from
// the provider's base URL, never from the request, and the client's path is
// routed after normalisation and re-escaped before it is appended to the
// provider's base path, so no request line, Host header or encoded dot
// segment can reach another host or leave the base path.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/deadletter"
	"github.com/sluice-ai/sluice/idempotency"
	"github.com/sluice-ai/sluice/limiter"
	"github.com/sluice-ai/sluice/metrics"
	"github.com/sluice-ai/sluice/scheduler"
	"github.com/sluice-ai/sluice/tokens"
)

// Provider configures one upstream.
type Provider struct {
	// Name labels metrics and logs.
	Name string
	// BaseURL is the absolute http(s) URL the client's path is appended to.
	// It may carry a path of its own.
	BaseURL string
	// Prefix is the path under which clients reach this provider
	// ("/anthropic"); the prefix is removed before the path is forwarded.
	// Empty: reachable only as the default provider.
	Prefix string
	// Default makes this provider serve /v1/... as well. At most one
	// provider may be the default.
	Default bool
	// APIKey, when set, replaces the client's Authorization header with
	// "Bearer <APIKey>".
	APIKey string
	// ConnectTimeout bounds the TCP (and TLS) connect. Must be > 0.
	ConnectTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the response headers,
	// counted from sending. Zero or more than Timeout: Timeout.
	ResponseHeaderTimeout time.Duration
	// StreamIdleTimeout bounds every gap while the body is relayed. Must be > 0.
	StreamIdleTimeout time.Duration
	// Timeout bounds the whole exchange, body included. Must be > 0.
	Timeout time.Duration
	// MaxConns caps the connections to this upstream. Zero: fasthttp's
	// default (512).
	MaxConns int
	// TLSConfig is used for https upstreams; nil: system roots, TLS 1.2+.
	TLSConfig *tls.Config

	// Limits are the provider account's quotas. The zero value: none, and
	// requests to the provider are never queued (unless a model has limits).
	Limits limiter.Limits
	// Models have quotas of their own, held in addition to Limits; the
	// model is read from the request body.
	Models []Model
	// DefaultMaxTokens is the completion size charged up front for a
	// request that sets no max_tokens (nor max_completion_tokens) and whose
	// model has no default of its own. Zero: none.
	DefaultMaxTokens int64

	// Retry configures repeated attempts after transient failures and
	// rate limits.
	Retry Retry
	// Breaker configures the provider's circuit breaker.
	Breaker Breaker
}

// Retry configures retries: exponential backoff with full jitter, and
// pauses on the provider's rate-limit answers.
type Retry struct {
	// MaxAttempts caps upstream attempts, the first included (a class may
	// set its own). Zero: 3.
	MaxAttempts int
	// BaseDelay is the longest backoff before the first retry; each further
	// retry doubles it, up to MaxDelay. Zero: 500ms.
	BaseDelay time.Duration
	// MaxDelay caps the backoff. Zero: 30s.
	MaxDelay time.Duration
	// MaxPause caps a pause the provider asks for. Zero: 2m.
	MaxPause time.Duration
}

// Breaker configures a provider's circuit breaker.
type Breaker struct {
	// FailureThreshold is how many consecutive failures (5xx, timeouts,
	// connection errors) open it. Zero: 5.
	FailureThreshold int
	// OpenFor is how long it stays open before probing. Zero: 30s.
	OpenFor time.Duration
	// HalfOpenRequests is how many probes it lets through. Zero: 1.
	HalfOpenRequests int
}

// Model is one model's quota within a provider.
type Model struct {
	Name             string
	Limits           limiter.Limits
	DefaultMaxTokens int64 // zero: the provider's
}

// Class is a priority class.
type Class struct {
	// Name is the X-Priority value that selects the class.
	Name string
	// MaxWait bounds the time a request of this class waits for its quota;
	// X-Sluice-Max-Wait may only shorten it. Zero: one minute.
	MaxWait time.Duration
	// MaxQueue caps the requests of this class waiting per quota scope.
	// Zero: 1000.
	MaxQueue int
	// Weight is the class's share of dispatches while several classes
	// wait. Zero: 1.
	Weight int
	// Share caps the class's use of every quota to this fraction of it,
	// keeping the rest for the others. Zero: 1, the whole quota.
	Share float64
	// MaxAttempts caps upstream attempts for this class. Zero: the
	// provider's.
	MaxAttempts int
	// Headroom is the fraction of every quota's burst a request of this
	// class must leave unused, for the classes above it
	// ([scheduler.Class].Headroom). Zero: none. Must be in [0, 1).
	Headroom float64
	// CommitWithin is how far ahead a request of this class that is next
	// in line may commit its slot ([scheduler.Class].CommitWithin). Zero:
	// only a slot free now.
	CommitWithin time.Duration
}

// Route gives requests to a path (after any provider prefix) a default
// class, used when they carry no X-Priority.
type Route struct {
	Path  string // whole path segments: /v1/embeddings also covers /v1/embeddings/x
	Class string
}

// Settings configures a [Proxy].
type Settings struct {
	// Providers lists the upstreams; at least one.
	Providers []Provider
	// Classes are the priority classes, highest first; X-Priority must
	// name one of them. Empty: the single class "default".
	Classes []Class
	// DefaultClass is the class of requests without X-Priority and without
	// a route. Empty: the class named "default" if there is one, else the
	// last class.
	DefaultClass string
	// Routes give paths their own default class.
	Routes []Route
	// TokenEstimator is how prompt tokens are estimated. Zero: bytes.
	TokenEstimator tokens.Method
	// MaxBodyBytes caps the request body; larger requests get 413. Zero: 32 MiB.
	MaxBodyBytes int
	// DeadLetters records requests that were accepted but could not be
	// delivered. Nil: none are recorded.
	DeadLetters DeadLetters
	// RedactHeaders names request headers redacted in dead letters on top
	// of the credentials and cookies that always are.
	RedactHeaders []string
	// Limiter keeps the quotas. Nil: a [limiter.Local], for one replica;
	// shared mode passes a [limiter.Shared].
	Limiter Limiter
	// Idempotency keeps Idempotency-Key outcomes. Nil: the header is
	// passed upstream and not acted on.
	Idempotency idempotency.Store
	// IdempotencyMaxBody is the largest streamed body captured for a key;
	// the store keeps none larger. Zero: 1 MiB.
	IdempotencyMaxBody int
	// OnBreakerOpen, if set, is told when a provider's breaker opens and
	// until when, so that other replicas can hold theirs open too (see
	// [Proxy.HoldBreakerOpen]). It runs on a goroutine of the proxy's own,
	// one call at a time, and should return within a Redis timeout.
	OnBreakerOpen func(provider string, until time.Time)
}

// Limiter keeps the quotas of every provider: [limiter.Local] in process,
// or [limiter.Shared] across replicas.
type Limiter interface {
	scheduler.Limiter
	NewBucket(key string, lim limiter.Limits) (*limiter.Bucket, error)
	PauseAt(now time.Time, b *limiter.Bucket, until time.Time) bool
	PausedUntil(now time.Time, b *limiter.Bucket) time.Time
	ClampAt(now time.Time, b *limiter.Bucket, remainingRequests, remainingTokens int64)
	Usage(b *limiter.Bucket) limiter.Usage
}

var (
	_ Limiter = (*limiter.Local)(nil)
	_ Limiter = (*limiter.Shared)(nil)
)

// Proxy serves the data plane. Create it with [New]; it is safe for
// concurrent use, and must not be used after [Proxy.Shutdown] returns.
type Proxy struct {
	log       *slog.Logger
	server    *fasthttp.Server
	ids       *idSource
	upstreams []*upstream
	def       *upstream     // serves /v1; may be nil
	prefixed  []prefixRoute // longest prefix first

	classes      []Class
	classNames   [][]byte
	defaultClass int
	routes       []classRoute // longest path first
	errPriority  *apiError

	lim         Limiter
	estimator   *tokens.Estimator
	deadLetters DeadLetters
	redactor    *deadletter.Redactor
	idem        idempotency.Store
	idemMax     int       // largest streamed body captured for a key
	exchanges   sync.Pool // *exchange

	dispatchers struct {
		once     sync.Once
		cancel   context.CancelFunc
		wg       sync.WaitGroup
		stopOnce sync.Once
		stopped  chan struct{} // closed when the dispatchers stop: backoffs end too
	}

	// breakers tells OnBreakerOpen of breakers that opened, from a
	// goroutine of the dispatchers' group: a breaker reports under its lock.
	breakers struct {
		announce func(provider string, until time.Time)
		opened   chan int // indexes upstreams
	}

	draining atomic.Bool
	// listeners are those Serve was given, closed by Shutdown too.
	listeners struct {
		sync.Mutex
		all  []net.Listener
		shut bool
	}
	// active counts exchanges not yet released: requests past routing, up
	// to the end of their response, streams included (the relay releases
	// them), since until then one may still write a dead letter. idle is
	// signalled when the count drops to zero while draining.
	active atomic.Int64
	idle   chan struct{}
}

type prefixRoute struct {
	prefix []byte
	up     *upstream
}

type classRoute struct {
	path  []byte
	class int
}

// New builds a proxy from s. Metrics are recorded on m.
func New(s Settings, m *metrics.Metrics, log *slog.Logger) (*Proxy, error) {
	if len(s.Providers) == 0 {
		return nil, errors.New("proxy: at least one provider is required")
	}
	classes, err := normaliseClasses(s.Classes)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(classes))
	for i, c := range classes {
		names[i] = c.Name
	}
	defaultClass := len(classes) - 1
	want := s.DefaultClass
	if want == "" {
		want = "default"
	}
	if i := slices.Index(names, want); i >= 0 {
		defaultClass = i
	} else if s.DefaultClass != "" {
		return nil, fmt.Errorf("proxy: default class %q is not among the classes %v", s.DefaultClass, names)
	}
	ids, err := newIDSource()
	if err != nil {
		return nil, fmt.Errorf("proxy: seeding request ids: %w", err)
	}
	var limitedModels []string
	for _, pc := range s.Providers {
		for _, m := range pc.Models {
			limitedModels = append(limitedModels, m.Name)
		}
	}
	est, err := tokens.New(tokens.Settings{Method: s.TokenEstimator, Models: limitedModels})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p := &Proxy{
		log:          log,
		ids:          ids,
		classes:      classes,
		defaultClass: defaultClass,
		errPriority: newAPIError(fasthttp.StatusBadRequest, "invalid_request_error", "invalid_priority",
			"X-Priority must name a priority class: one of "+strings.Join(names, ", ")),
		lim:         s.Limiter,
		estimator:   est,
		deadLetters: s.DeadLetters,
		idem:        s.Idempotency,
		idemMax:     orDefault(s.IdempotencyMaxBody, 1<<20),
		redactor:    deadletter.NewRedactor(s.RedactHeaders),
	}
	if p.lim == nil {
		p.lim = limiter.NewLocal(nil)
	}
	p.breakers.announce = s.OnBreakerOpen
	p.breakers.opened = make(chan int, len(s.Providers))
	p.exchanges.New = func() any { return new(exchange) }
	p.idle = make(chan struct{}, 1)
	p.dispatchers.stopped = make(chan struct{})
	for _, n := range names {
		p.classNames = append(p.classNames, []byte(n))
	}
	for _, r := range s.Routes {
		i := slices.Index(names, r.Class)
		if i < 0 {
			return nil, fmt.Errorf("proxy: route %s: unknown class %q", r.Path, r.Class)
		}
		p.routes = append(p.routes, classRoute{path: []byte(strings.TrimRight(r.Path, "/")), class: i})
	}
	slices.SortFunc(p.routes, func(a, b classRoute) int { return len(b.path) - len(a.path) })

	for _, pc := range s.Providers {
		up, err := newUpstream(pc)
		if err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
		if up.quota, err = newQuota(pc, classes, p.lim, log); err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
		up.metrics = m.Provider(pc.Name, names, func() float64 { return float64(up.inflight.Load()) }, up.quota.queued)
		exportLimits(m, pc.Name, up.quota)
		i := len(p.upstreams)
		opened := func() {
			select {
			case p.breakers.opened <- i:
			default: // this provider is announced already
			}
		}
		if err := up.setFailureHandling(pc, log, opened); err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
		p.upstreams = append(p.upstreams, up)
		if pc.Default {
			if p.def != nil {
				return nil, fmt.Errorf("proxy: providers %s and %s are both the default", p.def.name, up.name)
			}
			p.def = up
		}
		if pc.Prefix != "" {
			prefix := strings.TrimRight(pc.Prefix, "/")
			if !strings.HasPrefix(prefix, "/") {
				return nil, fmt.Errorf("proxy: provider %s: prefix %q must start with /", pc.Name, pc.Prefix)
			}
			p.prefixed = append(p.prefixed, prefixRoute{prefix: []byte(prefix), up: up})
		}
	}
	slices.SortFunc(p.prefixed, func(a, b prefixRoute) int { return len(b.prefix) - len(a.prefix) })

	maxBody := s.MaxBodyBytes
	if maxBody <= 0 {
		maxBody = 32 << 20
	}
	p.server = &fasthttp.Server{
		Handler:               p.serve,
		ErrorHandler:          p.serverError,
		Name:                  "sluice",
		MaxRequestBodySize:    maxBody,
		ReadBufferSize:        16 << 10,
		ReadTimeout:           time.Minute, // reading one request, not answering it
		IdleTimeout:           2 * time.Minute,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		CloseOnShutdown:       true,
		Logger:                fasthttpLogger{log},
	}
	return p, nil
}

// exportLimits publishes the configured quotas of q's buckets (the
// provider's and its models'), so that dashboards can draw use against
// them.
func exportLimits(m *metrics.Metrics, provider string, q *quota) {
	seen := map[*limiter.Bucket]bool{}
	for _, sc := range q.scopes {
		for _, b := range sc.buckets {
			if seen[b] {
				continue
			}
			seen[b] = true
			l := b.Limits()
			for _, d := range []struct {
				name string
				v    float64
			}{{"requests_per_minute", l.RequestsPerMinute}, {"tokens_per_minute", l.TokensPerMinute}, {"max_concurrency", float64(l.MaxConcurrency)}} {
				if d.v > 0 {
					m.QuotaLimit(provider, b.Key(), d.name, d.v)
				}
			}
		}
	}
}

func normaliseClasses(in []Class) ([]Class, error) {
	if len(in) == 0 {
		in = []Class{{Name: "default"}}
	}
	out := make([]Class, len(in))
	for i, c := range in {
		if c.Name == "" || c.MaxWait < 0 || c.MaxQueue < 0 || c.Weight < 0 || c.Share < 0 || c.Share > 1 {
			return nil, fmt.Errorf("proxy: class %d (%q): needs a name, and max wait, max queue, weight >= 0 and share in [0, 1]", i, c.Name)
		}
		// Written so that NaN fails too.
		if !(c.Headroom >= 0 && c.Headroom < 1) || c.CommitWithin < 0 {
			return nil, fmt.Errorf("proxy: class %d (%q): needs headroom in [0, 1) and commit within >= 0, got %v and %v", i, c.Name, c.Headroom, c.CommitWithin)
		}
		if c.MaxWait == 0 {
			c.MaxWait = time.Minute
		}
		if c.MaxQueue == 0 {
			c.MaxQueue = 1000
		}
		if c.Weight == 0 {
			c.Weight = 1
		}
		if c.Share == 0 {
			c.Share = 1
		}
		out[i] = c
	}
	return out, nil
}

// Serve accepts connections on ln until [Proxy.Shutdown]. A Shutdown that
// came first, or that races with the start, closes ln, and Serve returns
// nil.
func (p *Proxy) Serve(ln net.Listener) error {
	p.listeners.Lock()
	if p.listeners.shut {
		p.listeners.Unlock()
		return ln.Close()
	}
	p.listeners.all = append(p.listeners.all, ln)
	p.listeners.Unlock()
	p.startDispatchers()
	return p.server.Serve(ln)
}

// startDispatchers runs every quota scope's dispatcher until
// stopDispatchers.
func (p *Proxy) startDispatchers() {
	p.dispatchers.once.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		p.dispatchers.cancel = cancel
		if p.breakers.announce != nil {
			p.dispatchers.wg.Go(func() { p.announceBreakers(ctx) })
		}
		for _, up := range p.upstreams {
			for _, sc := range up.quota.scopes {
				p.dispatchers.wg.Add(1)
				go func() {
					defer p.dispatchers.wg.Done()
					sc.sched.Run(ctx)
				}()
			}
		}
	})
}

// announceBreakers hands the breakers that open to OnBreakerOpen until ctx
// is done.
func (p *Proxy) announceBreakers(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case i := <-p.breakers.opened:
			up := p.upstreams[i]
			if until := up.breaker.OpenUntil(); !until.IsZero() {
				p.breakers.announce(up.name, until)
			}
		}
	}
}

// HoldBreakerOpen holds the breaker of the named provider open until
// until, as another replica's breaker is: requests to it wait or fail as
// with an open breaker of its own. A hold only ever extends.
func (p *Proxy) HoldBreakerOpen(provider string, until time.Time) {
	for _, up := range p.upstreams {
		if up.name == provider && up.breaker.HoldOpenUntil(until) {
			p.log.Warn("circuit breaker held open: another replica's opened", slog.String("provider", provider),
				slog.Time("until", until))
		}
	}
}

// stopDispatchers refuses what still waits for quota and stops the
// dispatchers.
func (p *Proxy) stopDispatchers() {
	p.dispatchers.once.Do(func() {}) // never started: nothing waits
	p.dispatchers.stopOnce.Do(func() { close(p.dispatchers.stopped) })
	if p.dispatchers.cancel != nil {
		p.dispatchers.cancel()
	}
	p.dispatchers.wg.Wait()
}

// Shutdown stops accepting requests and waits for those queued and in
// flight, streams included, until ctx is done. Then it refuses the requests
// still queued, cuts the upstream connections still busy, so that their
// handlers answer, and waits a moment for them to finish, dead letters
// included: when Shutdown returns, the dead-letter store may be closed.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.draining.Store(true)
	p.listeners.Lock()
	p.listeners.shut = true
	lns := p.listeners.all
	p.listeners.Unlock()
	err := p.server.ShutdownWithContext(ctx)
	// fasthttp closes only the listeners its Serve has registered; one
	// whose Serve was just starting would accept forever.
	for _, ln := range lns {
		_ = ln.Close()
	}
	p.stopDispatchers()
	for _, up := range p.upstreams {
		up.close()
	}
	// Refused and cut requests are answered and recorded in moments; the
	// bound only guards against a store that hangs.
	wait := time.NewTimer(5 * time.Second)
	defer wait.Stop()
	for p.active.Load() > 0 {
		select {
		case <-p.idle:
		case <-wait.C:
			return fmt.Errorf("proxy: %d requests still unfinished 5s after the grace period", p.active.Load())
		}
	}
	if err != nil {
		return fmt.Errorf("proxy: grace period over with requests in flight: %w", err)
	}
	return nil
}

// serve is the fasthttp handler: route, classify, wait for quota, forward,
// relay.
func (p *Proxy) serve(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	var idBuf [32]byte
	ctx.Response.Header.SetBytesV(HeaderRequestID, p.ids.next(&idBuf))

	if p.draining.Load() {
		writeError(ctx, errDraining)
		return
	}
	up, path := p.route(ctx.Path())
	if up == nil {
		writeError(ctx, errNoRoute)
		return
	}
	class, ok := p.class(ctx.Request.Header.PeekBytes(hdrPriority), path)
	if !ok {
		writeError(ctx, p.errPriority)
		up.metrics.Request(p.defaultClass, fasthttp.StatusBadRequest, time.Since(start))
		return
	}
	ctx.Response.Header.SetBytesV(HeaderClass, p.classNames[class])

	x := p.exchanges.Get().(*exchange)
	p.active.Add(1)
	x.reset(p, up, class, start)
	var h hold
	if key := ctx.Request.Header.PeekBytes(hdrIdempotencyKey); len(key) > 0 && p.idem != nil {
		var ok bool
		if h, ok = p.claim(ctx, x, key, start.Add(p.classes[class].MaxWait)); !ok {
			x.release()
			up.metrics.Request(class, ctx.Response.StatusCode(), time.Since(start))
			return
		}
		x.idem = h
	}
	if p.admit(ctx, x, path, start) {
		p.forward(ctx, x, path)
	} else {
		x.release()
	}
	if h.token != "" && !ctx.Response.IsBodyStream() {
		p.settleBuffered(ctx, up, h) // a stream's relay settles it at its end
	}
	up.metrics.Request(class, ctx.Response.StatusCode(), time.Since(start))
}

// route picks the provider for a normalised request path and returns the
// path to forward.
func (p *Proxy) route(path []byte) (*upstream, []byte) {
	for _, r := range p.prefixed {
		if hasPathPrefix(path, r.prefix) {
			return r.up, path[len(r.prefix):]
		}
	}
	if p.def != nil && hasPathPrefix(path, []byte("/v1")) {
		return p.def, path
	}
	return nil, nil
}

// hasPathPrefix reports whether prefix is a whole-segment prefix of path.
func hasPathPrefix(path, prefix []byte) bool {
	return len(path) >= len(prefix) && string(path[:len(prefix)]) == string(prefix) &&
		(len(path) == len(prefix) || path[len(prefix)] == '/')
}

// class resolves an X-Priority value; without one, the route's default
// class for path applies.
func (p *Proxy) class(v, path []byte) (int, bool) {
	if len(v) == 0 {
		for _, r := range p.routes {
			if hasPathPrefix(path, r.path) {
				return r.class, true
			}
		}
		return p.defaultClass, true
	}
	for i, c := range p.classNames {
		if string(c) == string(v) {
			return i, true
		}
	}
	return 0, false
}

// fasthttpLogger routes fasthttp's own messages into slog at debug level:
// they are about single connections (a client that sent garbage), not
// about Sluice.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(format, args...), slog.String("source", "fasthttp"))
	}
}

// ProviderStatus is a provider's row in the admin status.
type ProviderStatus struct {
	Name      string        `json:"name"`
	Upstream  string        `json:"upstream"`
	Default   bool          `json:"default"`
	Inflight  int64         `json:"inflight"`
	Breaker   string        `json:"breaker"`                      // closed, half-open or open
	OpenUntil *time.Time    `json:"breaker_open_until,omitempty"` // when an open breaker probes again
	Scopes    []ScopeStatus `json:"scopes,omitempty"`
}

// ScopeStatus is a quota scope's state: its queues by class and its
// buckets' limits and current headroom.
type ScopeStatus struct {
	Name string `json:"name"`
	// PausedUntil is when a pause the provider asked for (429 with
	// Retry-After or reset headers) ends; absent when not paused.
	PausedUntil *time.Time              `json:"paused_until,omitempty"`
	Classes     []scheduler.ClassStatus `json:"classes"`
	Buckets     []BucketStatus          `json:"buckets"`
}

// BucketStatus is one bucket's limits and what it could admit right now.
type BucketStatus struct {
	Key               string  `json:"key"`
	RequestsPerMinute float64 `json:"requests_per_minute,omitempty"`
	TokensPerMinute   float64 `json:"tokens_per_minute,omitempty"`
	MaxConcurrency    int64   `json:"max_concurrency,omitempty"`
	// RequestsAvailable and TokensAvailable are what could go out at once
	// now, out of RequestCapacity and TokenCapacity (the bursts).
	RequestsAvailable float64 `json:"requests_available,omitempty"`
	RequestCapacity   float64 `json:"request_capacity,omitempty"`
	TokensAvailable   float64 `json:"tokens_available,omitempty"`
	TokenCapacity     float64 `json:"token_capacity,omitempty"`
	Inflight          int64   `json:"inflight"`
}

// Status reports every provider's current state.
func (p *Proxy) Status() []ProviderStatus {
	out := make([]ProviderStatus, 0, len(p.upstreams))
	for _, up := range p.upstreams {
		ps := ProviderStatus{
			Name:     up.name,
			Upstream: string(up.scheme) + "://" + string(up.host) + string(up.basePath),
			Default:  up == p.def,
			Inflight: up.inflight.Load(),
			Breaker:  up.breaker.State().String(),
		}
		if t := up.breaker.OpenUntil(); !t.IsZero() {
			ps.OpenUntil = &t
		}
		now := time.Now()
		for _, sc := range up.quota.scopes {
			ss := ScopeStatus{Name: sc.name, Classes: sc.sched.Status()}
			if t := p.lim.PausedUntil(now, sc.buckets[0]); !t.IsZero() {
				ss.PausedUntil = &t
			}
			for _, b := range sc.buckets {
				ss.Buckets = append(ss.Buckets, bucketStatus(p.lim, b))
			}
			ps.Scopes = append(ps.Scopes, ss)
		}
		out = append(out, ps)
	}
	return out
}

func bucketStatus(lim Limiter, b *limiter.Bucket) BucketStatus {
	l, u := b.Limits(), lim.Usage(b)
	bs := BucketStatus{
		Key:               b.Key(),
		RequestsPerMinute: l.RequestsPerMinute,
		TokensPerMinute:   l.TokensPerMinute,
		MaxConcurrency:    l.MaxConcurrency,
		Inflight:          u.Inflight,
	}
	if l.RequestsPerMinute > 0 {
		bs.RequestsAvailable, bs.RequestCapacity = u.Requests, u.RequestCapacity
	}
	if l.TokensPerMinute > 0 {
		bs.TokensAvailable, bs.TokenCapacity = u.Tokens, u.TokenCapacity
	}
	return bs
}
