package proxy

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/internal/upstreamtest"
	"github.com/sluice-ai/sluice/limiter"
	"github.com/sluice-ai/sluice/metrics"
)

// handlerRig drives the proxy handler directly with a reused RequestCtx,
// against a real fake upstream over loopback, and also calls that upstream
// directly, so the handler's own cost is the difference of the two.
type handlerRig struct {
	p      *Proxy
	ctx    fasthttp.RequestCtx
	direct *fasthttp.HostClient
	req    fasthttp.Request
	resp   fasthttp.Response
}

// notBinding are quotas far above what a benchmark reaches: every request
// is parsed, estimated, admitted and reconciled, and none waits.
var notBinding = limiter.Limits{RequestsPerMinute: 6e8, TokensPerMinute: 1e11, MaxConcurrency: 100000,
	RequestBurst: time.Second, TokenBurst: time.Minute}

func newHandlerRig(tb testing.TB, limits limiter.Limits) *handlerRig {
	tb.Helper()
	up, err := upstreamtest.Start("127.0.0.1:0", upstreamtest.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { up.Close() })
	pc := defaultProvider(up.URL)
	pc.Limits = limits
	p, err := New(Settings{Providers: []Provider{pc}, Classes: classNames("critical", "default")},
		metrics.New(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		for _, u := range p.upstreams {
			u.close()
		}
	})
	r := &handlerRig{p: p, direct: &fasthttp.HostClient{Addr: up.Addr}}
	r.ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}, nil)
	r.ctx.Request.Header.SetMethod("POST")
	r.ctx.Request.SetRequestURI("/v1/chat/completions")
	r.ctx.Request.Header.SetContentType("application/json")
	r.ctx.Request.Header.Set("Authorization", "Bearer sk-test")
	r.ctx.Request.Header.Set("X-Priority", "critical")
	r.ctx.Request.SetBodyString(chatBody)

	r.req.Header.SetMethod("POST")
	r.req.SetRequestURI(up.URL + "/v1/chat/completions")
	r.req.Header.SetContentType("application/json")
	r.req.Header.Set("Authorization", "Bearer sk-test")
	r.req.SetBodyString(chatBody)
	return r
}

// proxied runs one request through the handler and writes the response
// out, as the server would.
func (r *handlerRig) proxied(tb testing.TB) {
	r.ctx.Response.Reset()
	r.p.serve(&r.ctx)
	if r.ctx.Response.StatusCode() != 200 {
		tb.Fatalf("status %d: %s", r.ctx.Response.StatusCode(), r.ctx.Response.Body())
	}
	if err := r.ctx.Response.BodyWriteTo(io.Discard); err != nil {
		tb.Fatal(err)
	}
	r.ctx.Response.Reset() // closes the relay, as the server does
}

// direct runs the same request straight to the upstream.
func (r *handlerRig) directCall(tb testing.TB) {
	if err := r.direct.Do(&r.req, &r.resp); err != nil || r.resp.StatusCode() != 200 {
		tb.Fatalf("direct call: %v %d", err, r.resp.StatusCode())
	}
}

func BenchmarkHandler(b *testing.B) {
	r := newHandlerRig(b, limiter.Limits{})
	b.ReportAllocs()
	for b.Loop() {
		r.proxied(b)
	}
}

// BenchmarkHandlerQuota is BenchmarkHandler with every quota configured but
// not binding.
func BenchmarkHandlerQuota(b *testing.B) {
	r := newHandlerRig(b, notBinding)
	b.ReportAllocs()
	for b.Loop() {
		r.proxied(b)
	}
}

func BenchmarkDirect(b *testing.B) {
	r := newHandlerRig(b, limiter.Limits{})
	b.ReportAllocs()
	for b.Loop() {
		r.directCall(b)
	}
}

func BenchmarkHeaders(b *testing.B) {
	var src, dst fasthttp.RequestHeader
	src.SetMethod("POST")
	src.SetRequestURI("/v1/chat/completions")
	for _, kv := range [][2]string{{"Authorization", "Bearer sk-x"}, {"Content-Type", "application/json"},
		{"User-Agent", "OpenAI/Python 1.0"}, {"X-Stainless-Lang", "python"}, {"X-Stainless-Retry-Count", "0"},
		{"X-Priority", "low"}, {"Accept", "application/json"}, {"Connection", "keep-alive"}} {
		src.Set(kv[0], kv[1])
	}
	b.ReportAllocs()
	for b.Loop() {
		dst.Reset()
		copyRequestHeaders(&dst, &src, false)
	}
}
