// Package metrics defines Sluice's Prometheus collectors.
//
// Every collector lives on a registry passed to [New]; nothing is registered
// globally. The hot path never builds label values: [Metrics.Provider]
// resolves a provider's children once at start-up, and status-code children
// are resolved on first use and cached, so recording a request costs a few
// atomic operations and no allocations.
package metrics

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Upstream outcome labels used in place of an HTTP status code when no
// response arrived.
const (
	CodeError   = "error"   // connection refused, reset, TLS failure, ...
	CodeTimeout = "timeout" // connect, header, idle or total timeout
)

// durationBuckets span a cached embedding (a few ms) to a long reasoning
// generation (minutes).
var durationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// waitBuckets span no wait at all (the quota is not binding) to the longest
// class max wait (an hour for batch work).
var waitBuckets = []float64{.001, .005, .025, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600}

// Token kinds of sluice_tokens_total.
const (
	TokensEstimated  = "estimated"  // charged against the quota before sending
	TokensPrompt     = "prompt"     // reported by the upstream's usage
	TokensCompletion = "completion" // reported by the upstream's usage, or counted from a cut stream
)

// Metrics holds Sluice's collectors. It is safe for concurrent use.
type Metrics struct {
	requests         *prometheus.CounterVec
	requestDuration  *prometheus.HistogramVec
	upstreamRequests *prometheus.CounterVec
	upstreamDuration *prometheus.HistogramVec
	queueWait        *prometheus.HistogramVec
	tokens           *prometheus.CounterVec
	retries          *prometheus.CounterVec
	pauses           *prometheus.CounterVec
	breakerState     *prometheus.GaugeVec
	deadLetters      *prometheus.CounterVec
	replays          *prometheus.CounterVec
	idempotent       *prometheus.CounterVec
	quotaLimits      *prometheus.GaugeVec
	reg              prometheus.Registerer
}

// New creates the collectors and registers them on reg. It panics if a
// collector is already registered there, which is a programming error.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_requests_total",
			Help: "Requests answered by Sluice, by provider, priority class and HTTP status sent to the client.",
		}, []string{"provider", "class", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_request_duration_seconds",
			Help:    "Time from receiving a request to having its response headers ready, including queueing and retries.",
			Buckets: durationBuckets,
		}, []string{"provider", "class"}),
		upstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_upstream_requests_total",
			Help: "Attempts sent upstream, by provider and upstream HTTP status (or error / timeout).",
		}, []string{"provider", "code"}),
		upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_upstream_duration_seconds",
			Help:    "Time from sending an attempt upstream to receiving its response headers.",
			Buckets: durationBuckets,
		}, []string{"provider"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_queue_wait_seconds",
			Help:    "Time requests waited in Sluice's queue for their quota, by provider and priority class (refused requests included).",
			Buckets: waitBuckets,
		}, []string{"provider", "class"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_tokens_total",
			Help: "Tokens by provider and kind: estimated before sending (charged to the quota), and prompt and completion as the upstream reported them.",
		}, []string{"provider", "kind"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_retries_total",
			Help: "Upstream attempts repeated by Sluice, by provider and the reason the previous attempt failed.",
		}, []string{"provider", "reason"}),
		pauses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_ratelimit_pauses_total",
			Help: "Times a provider's rate-limit answer (429, 529) paused all traffic to it.",
		}, []string{"provider"}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_breaker_state",
			Help: "Circuit breaker state by provider: 0 closed, 1 half-open, 2 open.",
		}, []string{"provider"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_deadletters_total",
			Help: "Requests Sluice accepted but could not deliver, recorded as dead letters, by provider and error kind.",
		}, []string{"provider", "reason"}),
		replays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_deadletter_replays_total",
			Help: "Dead letters replayed, by provider and outcome: delivered, failed (sent and failed again) or refused (nothing sent).",
		}, []string{"provider", "outcome"}),
		idempotent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_idempotent_replays_total",
			Help: "Requests with an Idempotency-Key answered without an upstream call of their own, by provider and outcome: stored (a kept outcome), waited (the first request's, after it ran), in_flight (409, still running), mismatch (422, another body), not_kept (409, too large to have kept), unavailable (503, the store failed).",
		}, []string{"provider", "outcome"}),
		quotaLimits: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_quota_limit",
			Help: "Configured quota of a provider's bucket (the provider, or provider/model), by dimension: requests_per_minute, tokens_per_minute, max_concurrency. For drawing use against the limit.",
		}, []string{"provider", "bucket", "dimension"}),
		reg: reg,
	}
	reg.MustRegister(m.requests, m.requestDuration, m.upstreamRequests, m.upstreamDuration, m.queueWait, m.tokens,
		m.retries, m.pauses, m.breakerState, m.deadLetters, m.replays, m.idempotent, m.quotaLimits)
	return m
}

// Replayed counts one dead-letter replay of provider with its outcome
// (delivered, failed or refused). Replays are rare: the labels are
// resolved per call.
func (m *Metrics) Replayed(provider, outcome string) {
	m.replays.WithLabelValues(provider, outcome).Inc()
}

// QuotaLimit records a configured quota: bucket is the provider or
// provider/model, dimension requests_per_minute, tokens_per_minute or
// max_concurrency. Set once at start-up.
func (m *Metrics) QuotaLimit(provider, bucket, dimension string, v float64) {
	m.quotaLimits.WithLabelValues(provider, bucket, dimension).Set(v)
}

// RedisUp registers sluice_redis_up, for shared mode, and returns its
// setter: 1 while Redis answers, 0 while the replica limits alone.
func (m *Metrics) RedisUp() func(up bool) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_redis_up",
		Help: "1 while the Redis that replicas share quotas through answers; 0 while this replica limits on its own at its degraded share.",
	})
	g.Set(1)
	m.reg.MustRegister(g)
	return func(up bool) {
		if up {
			g.Set(1)
		} else {
			g.Set(0)
		}
	}
}

// RedisRoundTrips registers sluice_redis_round_trips_total, for shared
// mode, and returns its increment: one per command sent alone or pipeline
// sent to Redis, the connection handshakes left out.
func (m *Metrics) RedisRoundTrips() func() {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sluice_redis_round_trips_total",
		Help: "Network round trips to Redis (a command sent alone, or a pipeline), connection handshakes left out: quotas, leases, breaker hints, idempotency keys and dead letters together.",
	})
	m.reg.MustRegister(c)
	return c.Inc
}

// SpoolDepth reports, at scrape time, the dead letters waiting in the local
// spool file for Redis to come back.
func (m *Metrics) SpoolDepth(depth func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_deadletter_spool_depth",
		Help: "Dead letters spooled to the local file while Redis is unreachable, waiting to be moved to the stream.",
	}, depth))
}

// Provider returns the pre-resolved collectors of one provider. classes are
// the priority class names in the order the caller will index them;
// inflight reports the requests being proxied to the provider right now
// (streams count until their last byte), and queued the requests of a class
// waiting for quota; both are read at scrape time, and queued may be nil for
// a provider without quotas. It panics if the provider was registered
// before.
func (m *Metrics) Provider(name string, classes []string, inflight func() float64, queued func(class int) float64) *Provider {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "sluice_inflight_requests",
		Help:        "Requests currently being proxied upstream (streams count until their last byte).",
		ConstLabels: prometheus.Labels{"provider": name},
	}, inflight))
	for i, c := range classes {
		depth := func() float64 { return 0 }
		if queued != nil {
			depth = func() float64 { return queued(i) }
		}
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "sluice_queue_depth",
			Help:        "Requests waiting in Sluice's queue for their quota, by provider and priority class.",
			ConstLabels: prometheus.Labels{"provider": name, "class": c},
		}, depth))
	}
	p := &Provider{
		name:             name,
		retries:          m.retries,
		deadLetters:      m.deadLetters,
		idempotent:       m.idempotent,
		pauses:           m.pauses.WithLabelValues(name),
		breakerState:     m.breakerState.WithLabelValues(name),
		tokensEstimated:  m.tokens.WithLabelValues(name, TokensEstimated),
		tokensPrompt:     m.tokens.WithLabelValues(name, TokensPrompt),
		tokensCompletion: m.tokens.WithLabelValues(name, TokensCompletion),
		upstreamDuration: m.upstreamDuration.WithLabelValues(name),
		upstream:         newCodeCounters(m.upstreamRequests, name),
		upstreamError:    m.upstreamRequests.WithLabelValues(name, CodeError),
		upstreamTimeout:  m.upstreamRequests.WithLabelValues(name, CodeTimeout),
		classes:          make([]classMetrics, len(classes)),
	}
	for i, c := range classes {
		p.classes[i] = classMetrics{
			duration:  m.requestDuration.WithLabelValues(name, c),
			queueWait: m.queueWait.WithLabelValues(name, c),
			requests:  newCodeCounters(m.requests, name, c),
		}
	}
	return p
}

// Provider records the metrics of one provider. Class arguments index the
// class list given to [Metrics.Provider]; an index out of range is a
// programming error and panics.
type Provider struct {
	name             string
	retries          *prometheus.CounterVec
	deadLetters      *prometheus.CounterVec
	idempotent       *prometheus.CounterVec
	pauses           prometheus.Counter
	breakerState     prometheus.Gauge
	upstreamDuration prometheus.Observer
	upstream         *codeCounters
	upstreamError    prometheus.Counter
	upstreamTimeout  prometheus.Counter
	tokensEstimated  prometheus.Counter
	tokensPrompt     prometheus.Counter
	tokensCompletion prometheus.Counter
	classes          []classMetrics
}

type classMetrics struct {
	duration  prometheus.Observer
	queueWait prometheus.Observer
	requests  *codeCounters
}

// Retry counts one repeated attempt; reason is a bounded label such as
// "rate_limited", "5xx", "timeout" or "connection".
func (p *Provider) Retry(reason string) {
	p.retries.WithLabelValues(p.name, reason).Inc()
}

// DeadLettered counts a request recorded as a dead letter of kind.
func (p *Provider) DeadLettered(kind string) {
	p.deadLetters.WithLabelValues(p.name, kind).Inc()
}

// IdempotentReplay counts a keyed request answered without an upstream
// call of its own (see sluice_idempotent_replays_total for the outcomes).
func (p *Provider) IdempotentReplay(outcome string) {
	p.idempotent.WithLabelValues(p.name, outcome).Inc()
}

// Paused counts a rate-limit pause of the provider.
func (p *Provider) Paused() { p.pauses.Inc() }

// BreakerState sets the breaker gauge: 0 closed, 1 half-open, 2 open. It
// only sets a gauge, so it may run under the breaker's lock.
func (p *Provider) BreakerState(state int) { p.breakerState.Set(float64(state)) }

// QueueWait records how long a request of a class waited for its quota.
func (p *Provider) QueueWait(class int, d time.Duration) {
	p.classes[class].queueWait.Observe(d.Seconds())
}

// Estimated counts tokens charged to the quota before sending.
func (p *Provider) Estimated(tokens int64) {
	if tokens > 0 {
		p.tokensEstimated.Add(float64(tokens))
	}
}

// Used counts the tokens the upstream reported (or, for a cut stream, what
// was counted of it).
func (p *Provider) Used(prompt, completion int64) {
	if prompt > 0 {
		p.tokensPrompt.Add(float64(prompt))
	}
	if completion > 0 {
		p.tokensCompletion.Add(float64(completion))
	}
}

// Request records one answered request: the status sent to the client and
// the time until its response headers were ready.
func (p *Provider) Request(class, status int, d time.Duration) {
	c := &p.classes[class]
	c.requests.status(status).Inc()
	c.duration.Observe(d.Seconds())
}

// Upstream records one upstream attempt that got a response.
func (p *Provider) Upstream(status int, d time.Duration) {
	p.upstream.status(status).Inc()
	p.upstreamDuration.Observe(d.Seconds())
}

// UpstreamFailed records one upstream attempt that got no response, as
// [CodeTimeout] when timedOut and as [CodeError] otherwise.
func (p *Provider) UpstreamFailed(timedOut bool, d time.Duration) {
	if timedOut {
		p.upstreamTimeout.Inc()
	} else {
		p.upstreamError.Inc()
	}
	p.upstreamDuration.Observe(d.Seconds())
}

// codeCounters caches the children of a counter vector whose last label is
// an HTTP status code, so that a status seen once is counted without a map
// lookup or an allocation.
type codeCounters struct {
	vec    *prometheus.CounterVec
	prefix []string // label values before the code
	byCode [600]atomic.Pointer[prometheus.Counter]
}

func newCodeCounters(vec *prometheus.CounterVec, prefix ...string) *codeCounters {
	return &codeCounters{vec: vec, prefix: prefix}
}

func (cc *codeCounters) status(code int) prometheus.Counter {
	if code < 100 || code >= len(cc.byCode) {
		return cc.named(strconv.Itoa(code))
	}
	if c := cc.byCode[code].Load(); c != nil {
		return *c
	}
	c := cc.named(strconv.Itoa(code))
	cc.byCode[code].Store(&c)
	return c
}

func (cc *codeCounters) named(code string) prometheus.Counter {
	lvs := make([]string, 0, len(cc.prefix)+1)
	lvs = append(append(lvs, cc.prefix...), code)
	return cc.vec.WithLabelValues(lvs...)
}
