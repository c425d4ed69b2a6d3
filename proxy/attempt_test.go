package proxy

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/internal/upstreamtest"
	"github.com/sluice-ai/sluice/metrics"
)

// script answers the fake upstream's requests in turn with the given
// handlers (the last one repeats) and records when each arrived, on the
// upstream's own clock.
type script struct {
	up *upstreamtest.Server

	mu       sync.Mutex
	arrivals []time.Time
	steps    []fasthttp.RequestHandler
}

func newScript(t *testing.T, steps ...fasthttp.RequestHandler) *script {
	s := &script{up: upstreamtest.New(t, upstreamtest.Options{Chunks: 3}), steps: steps}
	s.up.Handle(func(ctx *fasthttp.RequestCtx) {
		s.mu.Lock()
		n := len(s.arrivals)
		s.arrivals = append(s.arrivals, time.Now())
		h := s.steps[min(n, len(s.steps)-1)]
		s.mu.Unlock()
		h(ctx)
	})
	return s
}

func (s *script) times() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.arrivals...)
}

// answer returns a handler that answers status with headers and an
// OpenAI-shaped error body.
func answer(status int, headers map[string]string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		for k, v := range headers {
			ctx.Response.Header.Set(k, v)
		}
		ctx.SetStatusCode(status)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"error":{"message":"scripted","type":"server_error","code":"scripted"}}`)
	}
}

// failingProvider has quick retries for tests.
func failingProvider(url string, attempts int) Provider {
	p := defaultProvider(url)
	p.Retry = Retry{MaxAttempts: attempts, BaseDelay: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond, MaxPause: 5 * time.Second}
	p.Breaker = Breaker{FailureThreshold: 100, OpenFor: time.Second}
	return p
}

func TestRateLimitPauseHonoured(t *testing.T) {
	const pause = 600 * time.Millisecond
	httpDate := func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) }
	tests := []struct {
		name    string
		headers func() map[string]string
		atLeast func(first time.Time) time.Time // the earliest the retry may arrive
	}{
		{"retry-after-ms", func() map[string]string { return map[string]string{"retry-after-ms": "600"} },
			func(f time.Time) time.Time { return f.Add(pause) }},
		{"Retry-After seconds", func() map[string]string { return map[string]string{"Retry-After": "1"} },
			func(f time.Time) time.Time { return f.Add(time.Second) }},
		{"Retry-After HTTP-date", func() map[string]string { return map[string]string{"Retry-After": httpDate()} },
			nil}, // checked against the date itself below
		{"x-ratelimit-reset-requests", func() map[string]string {
			return map[string]string{"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "600ms"}
		}, func(f time.Time) time.Time { return f.Add(pause) }},
		{"anthropic reset timestamp", func() map[string]string {
			return map[string]string{"anthropic-ratelimit-requests-remaining": "0",
				"anthropic-ratelimit-requests-reset": time.Now().Add(time.Second).UTC().Format(time.RFC3339Nano)}
		}, func(f time.Time) time.Time { return f.Add(pause) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := tt.headers()
			var s *script
			s = newScript(t, answer(429, h), func(ctx *fasthttp.RequestCtx) { s.up.Default(ctx) })
			px := mustStart(t, Settings{Providers: []Provider{failingProvider(s.up.URL, 3)}, Classes: classNames("default")})
			resp := post(t, client(t), px.URL+"/v1/chat/completions", chatBody, nil)
			readAll(t, resp)
			if resp.StatusCode != 200 || resp.Header.Get(HeaderAttempts) != "2" {
				t.Fatalf("status %d, attempts %q; want 200 after 2 attempts", resp.StatusCode, resp.Header.Get(HeaderAttempts))
			}
			at := s.times()
			earliest := time.Time{}
			if tt.atLeast != nil {
				earliest = tt.atLeast(at[0])
			} else {
				d, err := http.ParseTime(h["Retry-After"])
				if err != nil {
					t.Fatal(err)
				}
				earliest = d
			}
			// Allow for the upstream's clock reading of the first arrival
			// being taken a moment before Sluice read the 429.
			if at[1].Before(earliest.Add(-50 * time.Millisecond)) {
				t.Errorf("retry arrived %v after the 429, before the pause ended (%v)", at[1].Sub(at[0]), earliest.Sub(at[0]))
			}
			if got := testutil.ToFloat64(mustCounter(t, px.reg, "sluice_ratelimit_pauses_total", "provider", "openai")); got != 1 {
				t.Errorf("ratelimit_pauses_total = %v, want 1", got)
			}
		})
	}
}

func TestPauseHoldsEveryRequest(t *testing.T) {
	// While paused, a second caller's request does not reach the upstream
	// either.
	var s *script
	s = newScript(t, answer(429, map[string]string{"retry-after-ms": "800"}), func(ctx *fasthttp.RequestCtx) { s.up.Default(ctx) })
	px := mustStart(t, Settings{Providers: []Provider{failingProvider(s.up.URL, 3)}, Classes: classNames("default")})
	c := client(t)
	first := make(chan *http.Response, 1)
	go func() { first <- post(t, c, px.URL+"/v1/chat/completions", chatBody, nil) }()
	for len(s.times()) == 0 {
		time.Sleep(time.Millisecond) // wait for the 429 to be served
	}
	paused := time.Now()
	for {
		st := px.Status()
		if len(st[0].Scopes) > 0 && st[0].Scopes[0].PausedUntil != nil {
			break
		}
		if time.Since(paused) > 5*time.Second {
			t.Fatal("the scope was never paused")
		}
		time.Sleep(time.Millisecond)
	}
	resp := post(t, c, px.URL+"/v1/chat/completions", chatBody, nil)
	readAll(t, resp)
	readAll(t, <-first)
	at := s.times()
	if len(at) != 3 {
		t.Fatalf("upstream saw %d requests, want 3", len(at))
	}
	for i, a := range at[1:] {
		if a.Sub(at[0]) < 750*time.Millisecond {
			t.Errorf("request %d arrived %v after the 429, inside the 800ms pause", i+2, a.Sub(at[0]))
		}
	}
}

func TestTransientRetriedWithBackoff(t *testing.T) {
	s := newScript(t, answer(503, nil))
	px := mustStart(t, Settings{Providers: []Provider{failingProvider(s.up.URL, 4)}, Classes: classNames("default")})
	resp := post(t, client(t), px.URL+"/v1/chat/completions", chatBody, nil)
	body := readAll(t, resp)
	if resp.StatusCode != 503 || !strings.Contains(body, "scripted") {
		t.Errorf("final answer %d %s, want the upstream's own 503", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Should-Retry"); got != "false" {
		t.Errorf("x-should-retry = %q, want false once Sluice gave up", got)
	}
	if got := resp.Header.Get(HeaderAttempts); got != "4" {
		t.Errorf("%s = %q, want 4", HeaderAttempts, got)
	}
	at := s.times()
	if len(at) != 4 {
		t.Fatalf("upstream saw %d attempts, want exactly the limit of 4", len(at))
	}
	// Full jitter: gap n is at most base·2^(n-1) (20, 40, 80ms) plus the
	// time an attempt takes.
	for i := 1; i < len(at); i++ {
		limit := 20*time.Millisecond<<(i-1) + 100*time.Millisecond
		if gap := at[i].Sub(at[i-1]); gap > limit {
			t.Errorf("gap before attempt %d = %v, above its backoff cap %v", i+1, gap, limit)
		}
	}
	if got := testutil.ToFloat64(mustCounter(t, px.reg, "sluice_retries_total", "provider", "openai", "reason", "5xx")); got != 3 {
		t.Errorf("retries_total{reason=5xx} = %v, want 3", got)
	}
}

func TestTransientThenSuccess(t *testing.T) {
	var s *script
	s = newScript(t, answer(502, nil), answer(500, nil), func(ctx *fasthttp.RequestCtx) { s.up.Default(ctx) })
	px := mustStart(t, Settings{Providers: []Provider{failingProvider(s.up.URL, 3)}, Classes: classNames("default")})
	resp := post(t, client(t), px.URL+"/v1/chat/completions", chatBody, nil)
	readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get(HeaderAttempts) != "3" {
		t.Errorf("status %d after %s attempts, want 200 after 3", resp.StatusCode, resp.Header.Get(HeaderAttempts))
	}
	if resp.Header.Get("X-Should-Retry") != "" {
		t.Errorf("a success carries x-should-retry %q", resp.Header.Get("X-Should-Retry"))
	}
}

func TestNeverRetried(t *testing.T) {
	for _, status := range []int{400, 401, 403, 404, 413, 422} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			s := newScript(t, answer(status, nil))
			px := mustStart(t, Settings{Providers: []Provider{failingProvider(s.up.URL, 5)}, Classes: classNames("default")})
			resp := post(t, client(t), px.URL+"/v1/chat/completions", chatBody, nil)
			body := readAll(t, resp)
			if resp.StatusCode != status || !strings.Contains(body, "scripted") || len(s.times()) != 1 {
				t.Errorf("status %d after %d attempts, want the upstream's %d passed back after 1", resp.StatusCode, len(s.times()), status)
			}
			if resp.Header.Get("X-Should-Retry") != "" {
				t.Errorf("x-should-retry %q added to a pass-through answer", resp.Header.Get("X-Should-Retry"))
			}
		})
	}
}

func TestQuotaExhaustedNotRetried(t *testing.T) {
	s := newScript(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(429)
		ctx.SetBodyString(`{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}`)
	})
	px := mustStart(t, Settings{Providers: []Provider{failingProvider(s.up.URL, 5)}, Classes: classNames("default")})
	resp := post(t, client(t), px.URL+"/v1/chat/completions", chatBody, nil)
	readAll(t, resp)
	if resp.StatusCode != 429 || len(s.times()) != 1 {
		t.Errorf("status %d after %d attempts, want the 429 at once", resp.StatusCode, len(s.times()))
	}
}

func TestConnectionErrorRetriedThenGivenUp(t *testing.T) {
	p := failingProvider("http://127.0.0.1:1", 2) // nothing listens on port 1
	px := mustStart(t, Settings{Providers: []Provider{p}, Classes: classNames("default")})
	resp := post(t, client(t), px.URL+"/v1/chat/completions", chatBody, nil)
	body := readAll(t, resp)
	if resp.StatusCode != 502 || apiErrorCode(t, body) != "upstream_error" || resp.Header.Get("X-Should-Retry") != "false" {
		t.Errorf("answer %d %s (x-should-retry %q), want 502 upstream_error, false", resp.StatusCode, body, resp.Header.Get("X-Should-Retry"))
	}
	if got := resp.Header.Get(HeaderAttempts); got != "2" {
		t.Errorf("attempts = %q, want 2", got)
	}
}

func TestBreakerOpensAndRecovers(t *testing.T) {
	var healthy sync.Mutex
	broken := true
	var s *script
	s = newScript(t, func(ctx *fasthttp.RequestCtx) {
		healthy.Lock()
		b := broken
		healthy.Unlock()
		if b {
			answer(503, nil)(ctx)
			return
		}
		s.up.Default(ctx)
	})
	p := failingProvider(s.up.URL, 1)
	p.Breaker = Breaker{FailureThreshold: 3, OpenFor: 300 * time.Millisecond, HalfOpenRequests: 1}
	px := mustStart(t, Settings{Providers: []Provider{p}, Classes: classNames("default")})
	c := client(t)
	url := px.URL + "/v1/chat/completions"
	short := map[string]string{"X-Sluice-Max-Wait": "100ms"} // shorter than the open period: no waiting it out
	for range 8 {
		readAll(t, post(t, c, url, chatBody, short))
	}
	if n := len(s.times()); n != 3 {
		t.Errorf("upstream saw %d requests, want 3: the breaker opens after 3 failures", n)
	}
	resp := post(t, c, url, chatBody, short)
	body := readAll(t, resp)
	if resp.StatusCode != 503 || apiErrorCode(t, body) != "breaker_open" || resp.Header.Get("Retry-After") == "" {
		t.Errorf("while open: %d %s (Retry-After %q), want 503 breaker_open with Retry-After", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	if px.Status()[0].Breaker != "open" {
		t.Errorf("status breaker = %q, want open", px.Status()[0].Breaker)
	}
	if got := metricSum(t, px.reg, "sluice_breaker_state", "provider", "openai"); got != 2 {
		t.Errorf("sluice_breaker_state = %v, want 2 (open)", got)
	}

	// A request whose wait outlasts the open period waits for the probe
	// instead of failing, and succeeds once the upstream has healed.
	healthy.Lock()
	broken = false
	healthy.Unlock()
	resp = post(t, c, url, chatBody, nil)
	if body := readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("a request during the open period: %d %s, want 200 after waiting for the breaker", resp.StatusCode, body)
	}
	if w, _ := strconv.Atoi(resp.Header.Get(HeaderQueueWait)); w == 0 {
		t.Errorf("%s = %q, want the time waited for the breaker", HeaderQueueWait, resp.Header.Get(HeaderQueueWait))
	}
	if px.Status()[0].Breaker != "closed" {
		t.Errorf("after a successful probe the breaker is %q, want closed", px.Status()[0].Breaker)
	}
}

func TestRateLimitsNeverOpenTheBreaker(t *testing.T) {
	s := newScript(t, answer(429, map[string]string{"retry-after-ms": "1"}))
	p := failingProvider(s.up.URL, 1)
	p.Breaker = Breaker{FailureThreshold: 2, OpenFor: time.Minute, HalfOpenRequests: 1}
	px := mustStart(t, Settings{Providers: []Provider{p}, Classes: classNames("default")})
	c := client(t)
	for range 6 {
		resp := post(t, c, px.URL+"/v1/chat/completions", chatBody, nil)
		readAll(t, resp)
		if resp.StatusCode != 429 {
			t.Fatalf("status %d, want the upstream's 429 (one attempt allowed)", resp.StatusCode)
		}
	}
	if n := len(s.times()); n != 6 {
		t.Errorf("upstream saw %d requests, want all 6: 429s never open the breaker", n)
	}
}

func TestStreamRetriedOnlyBeforeFirstByte(t *testing.T) {
	t.Run("fails before the first event", func(t *testing.T) {
		var s *script
		s = newScript(t, answer(503, nil), func(ctx *fasthttp.RequestCtx) { s.up.Default(ctx) })
		px := mustStart(t, Settings{Providers: []Provider{failingProvider(s.up.URL, 3)}, Classes: classNames("default")})
		resp := post(t, client(t), px.URL+"/v1/chat/completions", `{"model":"m","stream":true,"messages":[]}`, nil)
		body := readAll(t, resp)
		if resp.StatusCode != 200 || !strings.HasSuffix(body, "data: [DONE]\n\n") || len(s.times()) != 2 {
			t.Errorf("status %d after %d attempts, body %q; want a whole stream on the second", resp.StatusCode, len(s.times()), body)
		}
	})
	t.Run("fails mid-stream", func(t *testing.T) {
		s := newScript(t, func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("text/event-stream")
			ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
				w.WriteString("data: {\"choices\":[{\"delta\":{\"content\":\"tok0 \"}}]}\n\n")
				w.Flush()
				// then the provider dies: the connection ends without [DONE]
			})
			ctx.SetConnectionClose()
		})
		px := mustStart(t, Settings{Providers: []Provider{failingProvider(s.up.URL, 3)}, Classes: classNames("default")})
		resp := post(t, client(t), px.URL+"/v1/chat/completions", `{"model":"m","stream":true,"messages":[]}`, nil)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "tok0") || len(s.times()) != 1 {
			t.Errorf("got %q after %d attempts: a stream that started is never retried", b, len(s.times()))
		}
	})
}

func TestHostilePauseCapped(t *testing.T) {
	var s *script
	s = newScript(t, answer(429, map[string]string{"Retry-After": "99999999"}), func(ctx *fasthttp.RequestCtx) { s.up.Default(ctx) })
	p := failingProvider(s.up.URL, 3)
	p.Retry.MaxPause = 300 * time.Millisecond
	px := mustStart(t, Settings{Providers: []Provider{p}, Classes: classNames("default")})
	resp := post(t, client(t), px.URL+"/v1/chat/completions", chatBody, nil)
	readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200 once the capped pause ended", resp.StatusCode)
	}
	at := s.times()
	if gap := at[1].Sub(at[0]); gap < 250*time.Millisecond || gap > 5*time.Second {
		t.Errorf("retry %v after a Retry-After of 99999999s, want the 300ms max_pause", gap)
	}
}

func TestRemainingAvoidsTheNext429(t *testing.T) {
	// The provider says no requests are left; Sluice believes it has ten.
	var s *script
	s = newScript(t, func(ctx *fasthttp.RequestCtx) {
		s.up.Default(ctx)
		ctx.Response.Header.Set("x-ratelimit-remaining-requests", "0") // over the fake's own figure
	})
	p := failingProvider(s.up.URL, 1)
	p.Limits.RequestsPerMinute, p.Limits.RequestBurst = 600, time.Second // ten at once, then one per 100ms
	px := mustStart(t, Settings{Providers: []Provider{p}, Classes: classNames("default")})
	c := client(t)
	readAll(t, post(t, c, px.URL+"/v1/chat/completions", chatBody, nil))
	resp := post(t, c, px.URL+"/v1/chat/completions", chatBody, nil)
	readAll(t, resp)
	if w, _ := strconv.Atoi(resp.Header.Get(HeaderQueueWait)); w < 50 {
		t.Errorf("second request waited %dms, want about 100ms: the provider reported nothing left", w)
	}
}

// TestShutdownEndsBackoff: a request waiting out a retry backoff when the
// shutdown grace period ends is answered 503 then, not after the backoff.
func TestShutdownEndsBackoff(t *testing.T) {
	s := newScript(t, answer(503, nil))
	pc := failingProvider(s.up.URL, 3)
	pc.Retry.BaseDelay, pc.Retry.MaxDelay = time.Hour, time.Hour // a backoff that outlasts the test
	reg := prometheus.NewRegistry()
	p, err := New(Settings{Providers: []Provider{pc}, Classes: classNames("default")},
		metrics.New(reg), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	answered := make(chan *http.Response, 1)
	go func() {
		answered <- post(t, client(t), "http://"+ln.Addr().String()+"/v1/chat/completions", chatBody, nil)
	}()
	// The retry is counted just before its backoff starts.
	deadline := time.Now().Add(10 * time.Second)
	for metricSum(t, reg, "sluice_retries_total") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first attempt never failed into a backoff")
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	shutdown := make(chan error, 1)
	go func() { shutdown <- p.Shutdown(ctx) }()
	select {
	case resp := <-answered:
		body := readAll(t, resp)
		if resp.StatusCode != 503 || apiErrorCode(t, body) != "shutting_down" {
			t.Errorf("answer %d %s, want 503 shutting_down", resp.StatusCode, body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request in backoff was not answered when the grace period ended")
	}
	<-shutdown
	if err := <-served; err != nil {
		t.Errorf("Serve = %v", err)
	}
	if n := len(s.times()); n != 1 {
		t.Errorf("upstream saw %d attempts, want 1", n)
	}
}
