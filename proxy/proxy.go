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
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/metrics"
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
}

// Settings configures a [Proxy].
type Settings struct {
	// Providers lists the upstreams; at least one.
	Providers []Provider
	// Classes names the priority classes, highest first; X-Priority must
	// name one of them. Empty: the single class "default".
	Classes []string
	// DefaultClass is the class of requests without X-Priority. Empty: the
	// class named "default" if there is one, else the last class.
	DefaultClass string
	// MaxBodyBytes caps the request body; larger requests get 413. Zero: 32 MiB.
	MaxBodyBytes int
}

// Proxy serves the data plane. Create it with [New]; it is safe for
// concurrent use, and must not be used after [Proxy.Shutdown] returns.
type Proxy struct {
	log       *slog.Logger
	server    *fasthttp.Server
	ids       *idSource
	upstreams []*upstream
	def       *upstream     // serves /v1; may be nil
	prefixed  []prefixRoute // longest prefix first

	classes      [][]byte
	defaultClass int
	errPriority  *apiError

	draining atomic.Bool
}

type prefixRoute struct {
	prefix []byte
	up     *upstream
}

// New builds a proxy from s. Metrics are recorded on m.
func New(s Settings, m *metrics.Metrics, log *slog.Logger) (*Proxy, error) {
	if len(s.Providers) == 0 {
		return nil, errors.New("proxy: at least one provider is required")
	}
	classes := s.Classes
	if len(classes) == 0 {
		classes = []string{"default"}
	}
	defaultClass := len(classes) - 1
	want := s.DefaultClass
	if want == "" {
		want = "default"
	}
	if i := slices.Index(classes, want); i >= 0 {
		defaultClass = i
	} else if s.DefaultClass != "" {
		return nil, fmt.Errorf("proxy: default class %q is not among the classes %v", s.DefaultClass, classes)
	}
	ids, err := newIDSource()
	if err != nil {
		return nil, fmt.Errorf("proxy: seeding request ids: %w", err)
	}
	p := &Proxy{
		log:          log,
		ids:          ids,
		defaultClass: defaultClass,
		errPriority: newAPIError(fasthttp.StatusBadRequest, "invalid_request_error", "invalid_priority",
			"X-Priority must name a priority class: one of "+strings.Join(classes, ", ")),
	}
	for _, c := range classes {
		p.classes = append(p.classes, []byte(c))
	}
	for _, pc := range s.Providers {
		up, err := newUpstream(pc)
		if err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
		up.metrics = m.Provider(pc.Name, classes, func() float64 { return float64(up.inflight.Load()) })
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

// Serve accepts connections on ln until [Proxy.Shutdown].
func (p *Proxy) Serve(ln net.Listener) error {
	return p.server.Serve(ln)
}

// Shutdown stops accepting requests and waits for those in flight, streams
// included, until ctx is done. Then it cuts the upstream connections still
// busy, so that their handlers answer, and waits a moment for them.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.draining.Store(true)
	err := p.server.ShutdownWithContext(ctx)
	for _, up := range p.upstreams {
		up.close()
	}
	if err == nil {
		return nil
	}
	// Cut streams have been answered as far as they got; wait briefly for
	// their connections to finish.
	wait, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = p.server.ShutdownWithContext(wait)
	return fmt.Errorf("proxy: grace period over with requests in flight: %w", err)
}

// serve is the fasthttp handler: route, forward, relay.
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
	class, ok := p.class(ctx.Request.Header.PeekBytes(hdrPriority))
	if !ok {
		writeError(ctx, p.errPriority)
		up.metrics.Request(p.defaultClass, fasthttp.StatusBadRequest, time.Since(start))
		return
	}
	ctx.Response.Header.SetBytesV(HeaderClass, p.classes[class])
	p.forward(ctx, up, path, start)
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

// class resolves an X-Priority value.
func (p *Proxy) class(v []byte) (int, bool) {
	if len(v) == 0 {
		return p.defaultClass, true
	}
	for i, c := range p.classes {
		if string(c) == string(v) {
			return i, true
		}
	}
	return 0, false
}

// forward sends the request upstream and sets up the response relay.
func (p *Proxy) forward(ctx *fasthttp.RequestCtx, up *upstream, path []byte, start time.Time) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	up.prepare(req, ctx, path)

	up.inflight.Add(1)
	resp.StreamBody = wantsStream(ctx)
	sent := time.Now()
	err := up.roundTrip(req, resp, start)
	fasthttp.ReleaseRequest(req)
	if err != nil {
		up.inflight.Add(-1)
		fasthttp.ReleaseResponse(resp)
		apiErr, timedOut := upstreamError(err)
		up.metrics.UpstreamFailed(timedOut, time.Since(sent))
		if p.draining.Load() {
			apiErr = errDraining
		}
		writeError(ctx, apiErr)
		p.log.LogAttrs(context.Background(), slog.LevelWarn, "upstream request failed",
			slog.String("provider", up.name), slog.String("error", err.Error()))
		return
	}
	status := resp.StatusCode()
	up.metrics.Upstream(status, time.Since(sent))

	ctx.SetStatusCode(status)
	copyResponseHeaders(&ctx.Response.Header, &resp.Header)
	if resp.BodyStream() == nil {
		// Read whole (or no body at all): nothing outlives the handler.
		ctx.Response.SetBody(resp.Body())
		up.inflight.Add(-1)
		fasthttp.ReleaseResponse(resp)
		return
	}
	size := resp.Header.ContentLength()
	if size < 0 {
		size = -1 // chunked or until close: relay chunk by chunk
	}
	ctx.Response.SetBodyStream(newRelay(up, resp, start), size)
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
	Name     string `json:"name"`
	Upstream string `json:"upstream"`
	Default  bool   `json:"default"`
	Inflight int64  `json:"inflight"`
}

// Status reports every provider's current state.
func (p *Proxy) Status() []ProviderStatus {
	out := make([]ProviderStatus, 0, len(p.upstreams))
	for _, up := range p.upstreams {
		out = append(out, ProviderStatus{
			Name:     up.name,
			Upstream: string(up.scheme) + "://" + string(up.host) + string(up.basePath),
			Default:  up == p.def,
			Inflight: up.inflight.Load(),
		})
	}
	return out
}
