package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/internal/upstreamtest"
	"github.com/sluice-ai/sluice/metrics"
)

// testProxy is a running Proxy on a loopback port.
type testProxy struct {
	*Proxy
	URL  string
	Addr string
	reg  *prometheus.Registry
}

// provider returns settings for an upstream with test-friendly timeouts and
// a single attempt per request, so that tests of one exchange see exactly
// one; the failure-handling tests set their own retries.
func provider(name, baseURL string) Provider {
	return Provider{
		Name: name, BaseURL: baseURL,
		ConnectTimeout: 2 * time.Second, StreamIdleTimeout: 10 * time.Second, Timeout: 20 * time.Second,
		Retry: Retry{MaxAttempts: 1},
	}
}

func defaultProvider(baseURL string) Provider {
	p := provider("openai", baseURL)
	p.Default = true
	return p
}

// mustStart starts a proxy with s and stops it at cleanup.
func mustStart(tb testing.TB, s Settings) *testProxy {
	tb.Helper()
	reg := prometheus.NewRegistry()
	p, err := New(s, metrics.New(reg), slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return &testProxy{Proxy: p, URL: "http://" + ln.Addr().String(), Addr: ln.Addr().String(), reg: reg}
}

// client is a fresh net/http client, so tests don't share connections.
func client(tb testing.TB) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func post(tb testing.TB, c *http.Client, url, body string, header map[string]string) *http.Response {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatalf("POST %s: %v", url, err)
	}
	return resp
}

func readAll(tb testing.TB, resp *http.Response) string {
	tb.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("reading body: %v", err)
	}
	return string(b)
}

// apiErrorCode decodes an OpenAI-shaped error body and returns its code.
func apiErrorCode(tb testing.TB, body string) string {
	tb.Helper()
	var doc struct {
		Error struct{ Message, Type, Code string } `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || doc.Error.Message == "" || doc.Error.Type == "" {
		tb.Fatalf("body %q is not an OpenAI-shaped error (%v)", body, err)
	}
	return doc.Error.Code
}

const chatBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`

func TestPassThrough(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	px := mustStart(t, Settings{Providers: []Provider{defaultProvider(up.URL)}, Classes: classNames("critical", "default", "low")})

	resp := post(t, client(t), px.URL+"/v1/chat/completions?trace=1&x=a%20b", chatBody, map[string]string{
		"Authorization":     "Bearer sk-client",
		"X-Priority":        "critical",
		"X-Sluice-Max-Wait": "5s",
		"X-Custom":          "kept",
		"Connection":        "X-Drop-Me",
		"X-Drop-Me":         "dropped",
		"Proxy-Connection":  "keep-alive",
	})
	body := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d, body %s", resp.StatusCode, body)
	}
	if !strings.Contains(body, `"usage"`) {
		t.Errorf("body %s lost the usage", body)
	}
	if id := resp.Header.Get(HeaderRequestID); len(id) != 32 {
		t.Errorf("%s = %q, want 32 hex digits", HeaderRequestID, id)
	}
	if got := resp.Header.Get(HeaderClass); got != "critical" {
		t.Errorf("%s = %q, want critical", HeaderClass, got)
	}
	for _, h := range []string{"X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset-Tokens", "X-Request-Id"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("upstream response header %s was not passed through", h)
		}
	}

	reqs := up.Requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(reqs))
	}
	got := reqs[0]
	if got.Method != "POST" || got.RequestURI != "/v1/chat/completions?trace=1&x=a%20b" {
		t.Errorf("upstream got %s %s, want POST /v1/chat/completions?trace=1&x=a%%20b", got.Method, got.RequestURI)
	}
	if string(got.Body) != chatBody {
		t.Errorf("upstream body = %q, want %q", got.Body, chatBody)
	}
	if got.Host != strings.TrimPrefix(up.URL, "http://") {
		t.Errorf("upstream Host = %q, want %q", got.Host, strings.TrimPrefix(up.URL, "http://"))
	}
	wantHeader := map[string]string{"Authorization": "Bearer sk-client", "X-Custom": "kept", "Content-Type": "application/json"}
	for k, v := range wantHeader {
		if got.Header.Get(k) != v {
			t.Errorf("upstream header %s = %q, want %q", k, got.Header.Get(k), v)
		}
	}
	for _, k := range []string{"X-Priority", "X-Sluice-Max-Wait", "X-Drop-Me", "Proxy-Connection", "Connection"} {
		if v := got.Header.Get(k); v != "" {
			t.Errorf("upstream header %s = %q, want it stripped", k, v)
		}
	}
}

func TestAPIKeyReplacesAuthorization(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	p := defaultProvider(up.URL)
	p.APIKey = "sk-configured"
	px := mustStart(t, Settings{Providers: []Provider{p}})
	readAll(t, post(t, client(t), px.URL+"/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer sk-client"}))
	readAll(t, post(t, client(t), px.URL+"/v1/chat/completions", chatBody, nil))
	for i, r := range up.Requests() {
		if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer sk-configured" {
			t.Errorf("request %d: upstream Authorization = %q, want [Bearer sk-configured]", i, got)
		}
	}
}

func TestPrefixRouting(t *testing.T) {
	openai := upstreamtest.New(t, upstreamtest.Options{})
	anthropic := upstreamtest.New(t, upstreamtest.Options{})
	a := provider("anthropic", anthropic.URL+"/base/")
	a.Prefix = "/anthropic"
	px := mustStart(t, Settings{Providers: []Provider{defaultProvider(openai.URL), a}})
	c := client(t)

	tests := []struct {
		path     string
		status   int
		upstream *upstreamtest.Server
		wantURI  string
	}{
		{"/v1/chat/completions", 200, openai, "/v1/chat/completions"},
		{"/anthropic/v1/messages", 200, anthropic, "/base/v1/messages"},
		{"/anthropicx/v1/messages", 404, nil, ""},
		{"/v2/models", 404, nil, ""},
		{"/", 404, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			before := openai.Count() + anthropic.Count()
			resp := post(t, c, px.URL+tt.path, `{}`, nil)
			body := readAll(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, tt.status, body)
			}
			if tt.upstream == nil {
				if code := apiErrorCode(t, body); code != "unknown_route" {
					t.Errorf("code = %q, want unknown_route", code)
				}
				if n := openai.Count() + anthropic.Count(); n != before {
					t.Errorf("an upstream was contacted for %s", tt.path)
				}
				return
			}
			reqs := tt.upstream.Requests()
			if got := reqs[len(reqs)-1].RequestURI; got != tt.wantURI {
				t.Errorf("upstream request URI = %q, want %q", got, tt.wantURI)
			}
		})
	}
}

// TestNoOpenProxy sends the classic tricks for reaching another host or
// escaping the base path, over a raw connection so that nothing normalises
// them on the way. The "other" upstream must never be contacted, and the
// configured one only under its base path.
func TestNoOpenProxy(t *testing.T) {
	other := upstreamtest.New(t, upstreamtest.Options{})
	up := upstreamtest.New(t, upstreamtest.Options{})
	a := provider("anthropic", up.URL+"/base")
	a.Prefix = "/anthropic"
	px := mustStart(t, Settings{Providers: []Provider{a}})
	otherHost := strings.TrimPrefix(other.URL, "http://")

	tests := []struct{ name, requestLine, host string }{
		{"absolute URI to another host", "GET http://" + otherHost + "/anthropic/v1/models HTTP/1.1", px.Addr},
		{"absolute URI outside the prefix", "GET http://" + otherHost + "/v1/models HTTP/1.1", otherHost},
		{"Host header of another host", "GET /anthropic/v1/models HTTP/1.1", otherHost},
		{"dot segments", "GET /anthropic/../../v1/models HTTP/1.1", px.Addr},
		{"dot segments inside prefix", "GET /anthropic/v1/../../../etc HTTP/1.1", px.Addr},
		{"encoded dots", "GET /anthropic/%2e%2e/%2e%2e/x HTTP/1.1", px.Addr},
		{"encoded slash and dots", "GET /anthropic/..%2f..%2fx HTTP/1.1", px.Addr},
		{"double encoded dots", "GET /anthropic/%252e%252e/%252e%252e/x HTTP/1.1", px.Addr},
		{"double slash authority", "GET //" + otherHost + "/anthropic/v1 HTTP/1.1", px.Addr},
		{"backslashes", "GET /anthropic/..\\..\\x HTTP/1.1", px.Addr},
		{"CONNECT", "CONNECT " + otherHost + " HTTP/1.1", otherHost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(up.Requests())
			status := rawRequest(t, px.Addr, tt.requestLine+"\r\nHost: "+tt.host+"\r\nConnection: close\r\n\r\n")
			if status == 0 {
				t.Fatalf("no response")
			}
			if n := other.Count(); n != 0 {
				t.Fatalf("the other host received %d requests", n)
			}
			for _, r := range up.Requests()[before:] {
				if !strings.HasPrefix(r.RequestURI, "/base/") {
					t.Errorf("upstream saw %q, outside the base path /base/", r.RequestURI)
				}
				if r.Host != strings.TrimPrefix(up.URL, "http://") {
					t.Errorf("upstream saw Host %q", r.Host)
				}
			}
		})
	}
}

// rawRequest writes a request as given and returns the response status.
func rawRequest(tb testing.TB, addr, raw string) int {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		tb.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestErrors(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	px := mustStart(t, Settings{
		Providers:    []Provider{defaultProvider(up.URL)},
		Classes:      classNames("critical", "default", "low"),
		MaxBodyBytes: 1024,
	})
	c := client(t)
	tests := []struct {
		name   string
		body   string
		header map[string]string
		status int
		code   string
	}{
		{"unknown class", chatBody, map[string]string{"X-Priority": "urgent"}, 400, "invalid_priority"},
		{"class is case sensitive", chatBody, map[string]string{"X-Priority": "Critical"}, 400, "invalid_priority"},
		{"body too large", `{"x":"` + strings.Repeat("a", 2048) + `"}`, nil, 413, "request_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(t, c, px.URL+"/v1/chat/completions", tt.body, tt.header)
			body := readAll(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, tt.status, body)
			}
			if id := resp.Header.Get(HeaderRequestID); len(id) != 32 {
				t.Errorf("%s = %q on an error response", HeaderRequestID, id)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if code := apiErrorCode(t, body); code != tt.code {
				t.Errorf("code = %q, want %q", code, tt.code)
			}
		})
	}
	if n := up.Count(); n != 0 {
		t.Errorf("upstream saw %d requests, want none", n)
	}
}

func TestUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	px := mustStart(t, Settings{Providers: []Provider{defaultProvider("http://" + addr)}})
	resp := post(t, client(t), px.URL+"/v1/chat/completions", chatBody, nil)
	body := readAll(t, resp)
	if resp.StatusCode != 502 || apiErrorCode(t, body) != "upstream_error" {
		t.Fatalf("got %d %s, want 502 upstream_error", resp.StatusCode, body)
	}
	if got := testutil.ToFloat64(mustCounter(t, px.reg, "sluice_upstream_requests_total", "code", "error")); got != 1 {
		t.Errorf("sluice_upstream_requests_total{code=error} = %v, want 1", got)
	}
}

func TestResponseHeaderTimeout(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	release := make(chan struct{})
	defer close(release)
	up.Push(func(ctx *fasthttp.RequestCtx) {
		select { // a provider that never answers
		case <-release:
		case <-up.Done():
		}
	})
	p := defaultProvider(up.URL)
	p.ResponseHeaderTimeout = 200 * time.Millisecond
	px := mustStart(t, Settings{Providers: []Provider{p}})
	resp := post(t, client(t), px.URL+"/v1/chat/completions", chatBody, nil)
	body := readAll(t, resp)
	if resp.StatusCode != 504 || apiErrorCode(t, body) != "upstream_timeout" {
		t.Fatalf("got %d %s, want 504 upstream_timeout", resp.StatusCode, body)
	}
	if got := testutil.ToFloat64(mustCounter(t, px.reg, "sluice_upstream_requests_total", "code", "timeout")); got != 1 {
		t.Errorf("sluice_upstream_requests_total{code=timeout} = %v, want 1", got)
	}
}

// TestConnectTimeout dials an address whose listen queue is full, so the
// handshake never completes.
func TestConnectTimeout(t *testing.T) {
	addr := fullBacklog(t)
	p := defaultProvider("http://" + addr)
	p.ConnectTimeout = 200 * time.Millisecond
	px := mustStart(t, Settings{Providers: []Provider{p}})
	resp := post(t, client(t), px.URL+"/v1/chat/completions", chatBody, nil)
	body := readAll(t, resp)
	if resp.StatusCode != 504 || apiErrorCode(t, body) != "upstream_timeout" {
		t.Fatalf("got %d %s, want 504 upstream_timeout", resp.StatusCode, body)
	}
}

// sseEvents reads server-sent events from r, one "data: ..." payload per
// element, until EOF or an error.
func sseEvents(r *bufio.Reader, events chan<- string) error {
	defer close(events)
	for {
		line, err := r.ReadString('\n')
		if strings.HasPrefix(line, "data: ") {
			events <- strings.TrimSpace(strings.TrimPrefix(line, "data: "))
		}
		if err != nil {
			return err
		}
	}
}

func TestStreamRelayedAsItArrives(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{Chunks: 4})
	gate := make(chan struct{})
	up.SetGate(gate)
	px := mustStart(t, Settings{Providers: []Provider{defaultProvider(up.URL)}})

	resp := post(t, client(t), px.URL+"/v1/chat/completions",
		`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`, nil)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := make(chan string, 16)
	done := make(chan error, 1)
	go func() { done <- sseEvents(bufio.NewReader(resp.Body), events) }()

	// The upstream holds every event after the first until the gate opens:
	// receiving the first one now proves it was not buffered.
	first := <-events
	if !strings.Contains(first, "tok0") {
		t.Fatalf("first event = %q, want the first chunk", first)
	}
	close(gate)
	var rest []string
	for e := range events {
		rest = append(rest, e)
	}
	if err := <-done; !errors.Is(err, io.EOF) {
		t.Fatalf("stream ended with %v, want EOF", err)
	}
	if len(rest) != 5 || rest[len(rest)-1] != "[DONE]" {
		t.Fatalf("rest of the stream = %q, want 3 chunks, the finish chunk and [DONE]", rest)
	}
}

func TestStreamIdleTimeout(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{Chunks: 3})
	up.SetGate(make(chan struct{})) // never opens: the stream stalls after its first event
	p := defaultProvider(up.URL)
	p.StreamIdleTimeout = 200 * time.Millisecond
	px := mustStart(t, Settings{Providers: []Provider{p}})

	resp := post(t, client(t), px.URL+"/v1/chat/completions", `{"stream":true}`, nil)
	defer resp.Body.Close()
	events := make(chan string, 16)
	err := sseEvents(bufio.NewReader(resp.Body), events)
	var got []string
	for e := range events {
		got = append(got, e)
	}
	if len(got) != 1 {
		t.Errorf("got events %q, want only the first", got)
	}
	if err == nil || errors.Is(err, io.EOF) {
		t.Errorf("stream ended with %v, want a broken chunked body", err)
	}
	if n := px.Status()[0].Inflight; n != 0 {
		t.Errorf("inflight = %d after the stream was cut, want 0", n)
	}
}

func TestStreamTotalTimeout(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{Chunks: 1000, ChunkDelay: 10 * time.Millisecond})
	p := defaultProvider(up.URL)
	p.Timeout = 300 * time.Millisecond
	px := mustStart(t, Settings{Providers: []Provider{p}})

	resp := post(t, client(t), px.URL+"/v1/chat/completions", `{"stream":true}`, nil)
	defer resp.Body.Close()
	events := make(chan string, 2000)
	err := sseEvents(bufio.NewReader(resp.Body), events)
	n := len(events)
	if err == nil || errors.Is(err, io.EOF) {
		t.Errorf("stream ended with %v after %d events, want it cut", err, n)
	}
	if n == 0 || n >= 1000 {
		t.Errorf("got %d events, want some but not all", n)
	}
}

func TestTLSUpstream(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{TLS: true})
	p := defaultProvider(up.URL)
	p.TLSConfig = &tls.Config{RootCAs: up.CertPool(), MinVersion: tls.VersionTLS12}
	px := mustStart(t, Settings{Providers: []Provider{p}})
	resp := post(t, client(t), px.URL+"/v1/chat/completions", chatBody, nil)
	body := readAll(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(body, "chat.completion") {
		t.Fatalf("got %d %s, want the completion over TLS", resp.StatusCode, body)
	}

	// Without the fake's CA the certificate is not trusted.
	untrusted := mustStart(t, Settings{Providers: []Provider{defaultProvider(up.URL)}})
	resp = post(t, client(t), untrusted.URL+"/v1/chat/completions", chatBody, nil)
	body = readAll(t, resp)
	if resp.StatusCode != 502 {
		t.Fatalf("untrusted upstream: got %d %s, want 502", resp.StatusCode, body)
	}
}

func TestMetrics(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	px := mustStart(t, Settings{Providers: []Provider{defaultProvider(up.URL)}, Classes: classNames("critical", "default")})
	c := client(t)
	readAll(t, post(t, c, px.URL+"/v1/chat/completions", chatBody, map[string]string{"X-Priority": "critical"}))
	readAll(t, post(t, c, px.URL+"/v1/chat/completions", chatBody, nil))
	readAll(t, post(t, c, px.URL+"/v1/nope", chatBody, nil))

	if got := testutil.ToFloat64(mustCounter(t, px.reg, "sluice_requests_total", "class", "critical", "code", "200")); got != 1 {
		t.Errorf("requests_total{class=critical,code=200} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(mustCounter(t, px.reg, "sluice_requests_total", "class", "default", "code", "200")); got != 1 {
		t.Errorf("requests_total{class=default,code=200} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(mustCounter(t, px.reg, "sluice_upstream_requests_total", "code", "404")); got != 1 {
		t.Errorf("upstream_requests_total{code=404} = %v, want 1", got)
	}
	problems, err := testutil.GatherAndLint(px.reg)
	if err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %v", err, problems)
	}
	const want = `
# HELP sluice_inflight_requests Requests currently being proxied upstream (streams count until their last byte).
# TYPE sluice_inflight_requests gauge
sluice_inflight_requests{provider="openai"} 0
`
	if err := testutil.GatherAndCompare(px.reg, strings.NewReader(want), "sluice_inflight_requests"); err != nil {
		t.Error(err)
	}
}

// mustCounter finds the one series of family name whose labels include the
// given name/value pairs.
func mustCounter(tb testing.TB, g prometheus.Gatherer, name string, labels ...string) prometheus.Collector {
	tb.Helper()
	ms := matching(tb, g, name, labels...)
	if len(ms) == 0 {
		tb.Fatalf("no series %s%v", name, labels)
	}
	m := ms[0]
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x", Help: "x"},
		func() float64 { return m.GetCounter().GetValue() })
}

// matching gathers the series of metric name whose labels include the
// given name/value pairs.
func matching(tb testing.TB, g prometheus.Gatherer, name string, labels ...string) []*dto.Metric {
	tb.Helper()
	families, err := g.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var out []*dto.Metric
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			out = append(out, m)
		}
	}
	return out
}

// streamInFlight starts a proxy that is not stopped at cleanup, opens a
// streamed completion through it whose upstream holds everything after the
// first event until gate closes, and returns once that event arrived.
type streamInFlight struct {
	p          *Proxy
	addr       string
	served     chan error // Serve's result
	streamDone chan error // the client's read of the rest of the stream
}

func startStreamInFlight(t *testing.T, gate <-chan struct{}) *streamInFlight {
	t.Helper()
	up := upstreamtest.New(t, upstreamtest.Options{Chunks: 3})
	up.SetGate(gate)
	p, err := New(Settings{Providers: []Provider{defaultProvider(up.URL)}},
		metrics.New(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &streamInFlight{p: p, addr: ln.Addr().String(), served: make(chan error, 1), streamDone: make(chan error, 1)}
	go func() { s.served <- p.Serve(ln) }()

	resp := post(t, client(t), "http://"+s.addr+"/v1/chat/completions", `{"stream":true}`, nil)
	t.Cleanup(func() { resp.Body.Close() })
	events := make(chan string, 16)
	go func() { s.streamDone <- sseEvents(bufio.NewReader(resp.Body), events) }()
	<-events
	return s
}

func TestShutdownDrainsStreams(t *testing.T) {
	gate := make(chan struct{})
	s := startStreamInFlight(t, gate)
	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- s.p.Shutdown(ctx)
	}()
	// New connections are refused once the listener is closed.
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		select {
		case err := <-shutdown:
			t.Fatalf("Shutdown returned %v with a stream in flight", err)
		default:
		}
	}
	close(gate) // the stream may now finish
	if err := <-s.streamDone; !errors.Is(err, io.EOF) {
		t.Errorf("in-flight stream ended with %v, want a complete stream", err)
	}
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown = %v, want nil", err)
	}
	if err := <-s.served; err != nil {
		t.Errorf("Serve = %v", err)
	}
}

func TestShutdownGraceCutsStreams(t *testing.T) {
	s := startStreamInFlight(t, make(chan struct{})) // the gate never opens
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want the grace period exceeded", err)
	}
	if err := <-s.streamDone; err == nil || errors.Is(err, io.EOF) {
		t.Errorf("stream ended with %v, want it cut", err)
	}
	if err := <-s.served; err != nil {
		t.Errorf("Serve = %v", err)
	}
}

func ExampleNew() {
	reg := prometheus.NewRegistry()
	p, err := New(Settings{Providers: []Provider{{
		Name: "openai", BaseURL: "https://api.openai.com", Default: true,
		ConnectTimeout: 10 * time.Second, StreamIdleTimeout: 2 * time.Minute, Timeout: 10 * time.Minute,
	}}}, metrics.New(reg), slog.New(slog.DiscardHandler))
	fmt.Println(err == nil, p.Status()[0].Upstream)
	// Output: true https://api.openai.com
}

// classNames makes classes with generous bounds and equal weights.
func classNames(names ...string) []Class {
	out := make([]Class, len(names))
	for i, n := range names {
		out[i] = Class{Name: n, MaxWait: time.Minute, MaxQueue: 1000}
	}
	return out
}

// TestShutdownRightAfterStart: a Shutdown that comes before (or while)
// Serve starts still ends it; fasthttp alone would leave it accepting.
func TestShutdownRightAfterStart(t *testing.T) {
	for range 200 {
		p, err := New(Settings{Providers: []Provider{defaultProvider("http://127.0.0.1:1")}}, metrics.New(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- p.Serve(ln) }()
		if err := p.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Fatalf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Serve still runs 5s after Shutdown")
		}
	}
}
