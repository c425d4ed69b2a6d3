package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/internal/upstreamtest"
	"github.com/sluice-ai/sluice/limiter"
	"github.com/sluice-ai/sluice/metrics"
)

// arrivalLog is a fake-upstream handler that records when each request
// arrived and how many were in flight, and answers after a delay.
type arrivalLog struct {
	up    *upstreamtest.Server
	delay time.Duration

	mu       sync.Mutex
	times    []time.Time
	tokens   []int64 // what the upstream will report as used: prompt + completion
	inflight int
	maxIn    int
}

func (l *arrivalLog) handle(ctx *fasthttp.RequestCtx) {
	l.mu.Lock()
	l.times = append(l.times, time.Now())
	l.tokens = append(l.tokens, int64(upstreamtest.PromptTokens(len(ctx.PostBody()))+upstreamtest.CompletionTokens))
	l.inflight++
	l.maxIn = max(l.maxIn, l.inflight)
	l.mu.Unlock()
	// Simulated processing time of the provider, not synchronisation.
	time.Sleep(l.delay)
	l.up.Default(ctx)
	l.mu.Lock()
	l.inflight--
	l.mu.Unlock()
}

// maxInWindow returns the most requests and tokens that arrived within any
// window of length w.
func (l *arrivalLog) maxInWindow(w time.Duration) (requests int, tokens int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	type arrival struct {
		at     time.Time
		tokens int64
	}
	as := make([]arrival, len(l.times))
	for i := range l.times {
		as[i] = arrival{l.times[i], l.tokens[i]}
	}
	slices.SortFunc(as, func(a, b arrival) int { return a.at.Compare(b.at) })
	j := 0
	var sum int64
	for i := range as {
		sum += as[i].tokens
		for as[i].at.Sub(as[j].at) >= w {
			sum -= as[j].tokens
			j++
		}
		requests = max(requests, i-j+1)
		tokens = max(tokens, sum)
	}
	return requests, tokens
}

// limitedProvider is the default provider at up with limits.
func limitedProvider(up *upstreamtest.Server, l limiter.Limits) Provider {
	p := defaultProvider(up.URL)
	p.Limits = l
	return p
}

// fire sends n chat requests at once (max_tokens as given) and returns
// their statuses and queue waits.
func fire(t *testing.T, px *testProxy, n int, class string, maxTokens int) (statuses []int, waits []time.Duration) {
	t.Helper()
	c := client(t)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"model":"gpt-4o-mini","max_tokens":%d,"messages":[{"role":"user","content":"request %d of a load test"}]}`, maxTokens, i)
			h := map[string]string{}
			if class != "" {
				h["X-Priority"] = class
			}
			resp := post(t, c, px.URL+"/v1/chat/completions", body, h)
			readAll(t, resp)
			ms, _ := strconv.Atoi(resp.Header.Get(HeaderQueueWait))
			mu.Lock()
			statuses = append(statuses, resp.StatusCode)
			waits = append(waits, time.Duration(ms)*time.Millisecond)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return statuses, waits
}

func TestQuotaHoldsUnderOverload(t *testing.T) {
	t.Run("requests and concurrency", func(t *testing.T) {
		t.Parallel()
		up := upstreamtest.New(t, upstreamtest.Options{})
		log := &arrivalLog{up: up, delay: 100 * time.Millisecond}
		up.Handle(log.handle)
		// 1200 RPM = 20/s with a second's burst; 4 in flight of 100ms each
		// would allow 40/s, so the rate binds, and 3x of it arrives at once.
		l := limiter.Limits{RequestsPerMinute: 1200, RequestBurst: time.Second, MaxConcurrency: 4}
		px := mustStart(t, Settings{Providers: []Provider{limitedProvider(up, l)}, Classes: classNames("default")})

		statuses, _ := fire(t, px, 60, "", 10)
		for i, s := range statuses {
			if s != http.StatusOK {
				t.Fatalf("request %d: status %d, want 200 (every request waits its turn)", i, s)
			}
		}
		for _, w := range []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second} {
			got, _ := log.maxInWindow(w)
			limit := 20 + int(w.Seconds()*20) // burst + rate over the window
			if got > limit {
				t.Errorf("%d requests arrived within %v, limit is %d", got, w, limit)
			}
		}
		if log.maxIn > 4 {
			t.Errorf("%d requests were in flight at once, limit is 4", log.maxIn)
		}
	})
	t.Run("tokens", func(t *testing.T) {
		t.Parallel()
		up := upstreamtest.New(t, upstreamtest.Options{})
		log := &arrivalLog{up: up}
		up.Handle(log.handle)
		// 60000 TPM = 1000 tokens/s with two seconds' burst; each request
		// reserves about 220 (a short prompt and max_tokens 200), so the
		// token rate binds at about 4.5 requests a second.
		l := limiter.Limits{TokensPerMinute: 60000, TokenBurst: 2 * time.Second}
		px := mustStart(t, Settings{Providers: []Provider{limitedProvider(up, l)}, Classes: classNames("default")})

		statuses, _ := fire(t, px, 24, "", 200)
		for i, s := range statuses {
			if s != http.StatusOK {
				t.Fatalf("request %d: status %d, want 200", i, s)
			}
		}
		// What the upstream was asked to do never exceeds the quota: burst
		// plus rate over any window, counted in the tokens it reported.
		for _, w := range []time.Duration{500 * time.Millisecond, time.Second, 3 * time.Second} {
			_, got := log.maxInWindow(w)
			limit := int64(2000 + w.Seconds()*1000)
			if got > limit {
				t.Errorf("%d tokens arrived within %v, limit is %d", got, w, limit)
			}
		}
		est := testutil.ToFloat64(mustCounter(t, px.reg, "sluice_tokens_total", "provider", "openai", "kind", "estimated"))
		used := testutil.ToFloat64(mustCounter(t, px.reg, "sluice_tokens_total", "provider", "openai", "kind", "prompt")) +
			testutil.ToFloat64(mustCounter(t, px.reg, "sluice_tokens_total", "provider", "openai", "kind", "completion"))
		if est <= used || used == 0 {
			t.Errorf("tokens estimated %v, used %v: want estimates (with max_tokens reserved) above what was used", est, used)
		}
	})
}

func TestPriorityOverHTTP(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	log := &arrivalLog{up: up, delay: 30 * time.Millisecond}
	up.Handle(log.handle)
	l := limiter.Limits{MaxConcurrency: 1}
	classes := []Class{
		{Name: "critical", MaxWait: time.Minute, MaxQueue: 100, Weight: 8},
		{Name: "low", MaxWait: time.Minute, MaxQueue: 100, Weight: 1},
	}
	px := mustStart(t, Settings{Providers: []Provider{limitedProvider(up, l)}, Classes: classes})

	var lowWaits, critWaits []time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		var statuses []int
		statuses, lowWaits = fire(t, px, 20, "low", 10)
		for _, s := range statuses {
			if s != http.StatusOK {
				t.Errorf("low request: status %d, want 200 (low is never starved)", s)
			}
		}
	}()
	waitForQueued(t, px, "low", 10)
	// One critical request at a time, each arriving to a queue full of low.
	for range 3 {
		statuses, w := fire(t, px, 1, "critical", 10)
		if statuses[0] != http.StatusOK {
			t.Errorf("critical request: status %d, want 200", statuses[0])
		}
		critWaits = append(critWaits, w...)
	}
	<-done
	slices.Sort(lowWaits)
	slices.Sort(critWaits)
	lowMedian, critMax := lowWaits[len(lowWaits)/2], critWaits[len(critWaits)-1]
	if critMax*3 > lowMedian {
		t.Errorf("critical waited up to %v, low's median wait %v: want critical's under a third of low's", critMax, lowMedian)
	}
	t.Logf("queue wait: critical max %v, low median %v", critMax, lowMedian)
}

// waitForQueued waits until at least n requests of class wait for the
// default provider. Nothing signals an enqueue, so this polls the status.
func waitForQueued(tb testing.TB, px *testProxy, class string, n int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		queued := 0
		for _, ps := range px.Status() {
			for _, sc := range ps.Scopes {
				for _, c := range sc.Classes {
					if c.Name == class {
						queued += c.Queued
					}
				}
			}
		}
		if queued >= n {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d %s requests queued, want %d", queued, class, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestClassShareCeiling(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	log := &arrivalLog{up: up}
	up.Handle(log.handle)
	// low may use half: 10 of the 20 requests a second, and half the burst.
	l := limiter.Limits{RequestsPerMinute: 1200, RequestBurst: time.Second}
	classes := []Class{
		{Name: "critical", MaxWait: time.Minute, MaxQueue: 100},
		{Name: "low", MaxWait: time.Minute, MaxQueue: 100, Share: 0.5},
	}
	px := mustStart(t, Settings{Providers: []Provider{limitedProvider(up, l)}, Classes: classes})
	fire(t, px, 30, "low", 10)
	for _, w := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second} {
		got, _ := log.maxInWindow(w)
		if limit := 10 + int(w.Seconds()*10); got > limit {
			t.Errorf("low: %d requests within %v, its share allows %d", got, w, limit)
		}
	}
}

func TestRefundLetsQueuedGoSooner(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	// 6000 TPM with a minute's burst: a request reserving 5000 tokens
	// (max_tokens) that uses a handful gives nearly all of it back.
	l := limiter.Limits{TokensPerMinute: 6000, TokenBurst: time.Minute}
	px := mustStart(t, Settings{Providers: []Provider{limitedProvider(up, l)}, Classes: classNames("default")})
	c := client(t)
	big := `{"model":"gpt-4o-mini","max_tokens":5000,"messages":[{"role":"user","content":"hi"}]}`
	for i := range 3 {
		resp := post(t, c, px.URL+"/v1/chat/completions", big, nil)
		readAll(t, resp)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
		// Without the refund the second would wait 40s of refill.
		if w := resp.Header.Get(HeaderQueueWait); w != "0" {
			t.Errorf("request %d waited %sms, want 0: the previous one's unused tokens were refunded", i, w)
		}
	}
}

func TestEstimatesConverge(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	l := limiter.Limits{TokensPerMinute: 1e9, TokenBurst: time.Minute}
	px := mustStart(t, Settings{Providers: []Provider{limitedProvider(up, l)}, Classes: classNames("default")})
	c := client(t)
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 40)
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + text + `"}]}`
	var firstErr, lastErr float64
	for i := range 20 {
		before := testutil.ToFloat64(mustCounter(t, px.reg, "sluice_tokens_total", "provider", "openai", "kind", "estimated"))
		resp := post(t, c, px.URL+"/v1/chat/completions", body, nil)
		readAll(t, resp)
		est := testutil.ToFloat64(mustCounter(t, px.reg, "sluice_tokens_total", "provider", "openai", "kind", "estimated")) - before
		actual := float64(upstreamtest.PromptTokens(len(body)))
		rel := (est - actual) / actual
		if rel < 0 {
			rel = -rel
		}
		if i == 0 {
			firstErr = rel
		}
		lastErr = rel
	}
	if lastErr > 0.1 || lastErr >= firstErr {
		t.Errorf("estimate error: first %.0f%%, after 20 usage reports %.0f%%; want it to shrink below 10%%", firstErr*100, lastErr*100)
	}
	t.Logf("estimate error: first %.0f%%, last %.1f%%", firstErr*100, lastErr*100)
}

func TestStreamUsageForcedAndStripped(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{Record: true, Chunks: 4})
	l := limiter.Limits{TokensPerMinute: 1e6, TokenBurst: time.Minute}
	px := mustStart(t, Settings{Providers: []Provider{limitedProvider(up, l)}, Classes: classNames("default")})
	c := client(t)

	for _, tc := range []struct {
		name, body string
		wantUsage  bool
	}{
		{"client did not ask", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`, false},
		{"client asked", `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(mustCounter(t, px.reg, "sluice_tokens_total", "provider", "openai", "kind", "completion"))
			resp := post(t, c, px.URL+"/v1/chat/completions", tc.body, nil)
			body := readAll(t, resp)
			got := <-up.Arrivals()
			if !strings.Contains(string(got.Body), `"include_usage":true`) {
				t.Errorf("upstream body %s: want stream_options.include_usage forced on", got.Body)
			}
			if has := strings.Contains(body, `"usage":{`); has != tc.wantUsage {
				t.Errorf("client stream has a usage chunk: %v, want %v:\n%s", has, tc.wantUsage, body)
			}
			if !strings.HasSuffix(body, "data: [DONE]\n\n") || strings.Count(body, `"content":"tok`) != 4 {
				t.Errorf("client stream lost events:\n%s", body)
			}
			after := testutil.ToFloat64(mustCounter(t, px.reg, "sluice_tokens_total", "provider", "openai", "kind", "completion"))
			if after-before != 4 {
				t.Errorf("completion tokens counted %v, want 4 from the usage chunk", after-before)
			}
		})
	}
}

func TestQuotaErrors(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	l := limiter.Limits{TokensPerMinute: 6000, TokenBurst: 10 * time.Second, RequestsPerMinute: 60, RequestBurst: time.Second}
	px := mustStart(t, Settings{Providers: []Provider{limitedProvider(up, l)}, Classes: classNames("default")})
	c := client(t)
	url := px.URL + "/v1/chat/completions"

	tests := []struct {
		name, body string
		header     map[string]string
		status     int
		code       string
	}{
		{"bad max wait", chatBody, map[string]string{"X-Sluice-Max-Wait": "soon"}, 400, "invalid_max_wait"},
		{"negative max wait", chatBody, map[string]string{"X-Sluice-Max-Wait": "-1s"}, 400, "invalid_max_wait"},
		{"max wait without unit", chatBody, map[string]string{"X-Sluice-Max-Wait": "30"}, 400, "invalid_max_wait"},
		{"unparsable json", `{"model": "gpt-4o-mini", "messages": [`, nil, 400, "invalid_json"},
		{"not an object", `["hi"]`, nil, 400, "invalid_json"},
		{"wrong field type", `{"model":"gpt-4o-mini","max_tokens":"lots","messages":[]}`, nil, 400, "invalid_json"},
		// 6000 TPM with 10s of burst admits 1000 tokens at once at most.
		{"over the token burst", `{"model":"gpt-4o-mini","max_tokens":5000,"messages":[]}`, nil, 413, "exceeds_token_quota"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(t, c, url, tt.body, tt.header)
			body := readAll(t, resp)
			if resp.StatusCode != tt.status || apiErrorCode(t, body) != tt.code {
				t.Errorf("status %d body %s, want %d %s", resp.StatusCode, body, tt.status, tt.code)
			}
		})
	}
	if n := up.Count(); n != 0 {
		t.Errorf("upstream saw %d requests, want none of the refused ones", n)
	}

	// The burst is one request: the second within a second would wait
	// about a second, longer than this caller's 50ms.
	resp := post(t, c, url, chatBody, nil)
	readAll(t, resp)
	resp = post(t, c, url, chatBody, map[string]string{"X-Sluice-Max-Wait": "50ms"})
	body := readAll(t, resp)
	if resp.StatusCode != 429 || apiErrorCode(t, body) != "queue_wait_exceeded" {
		t.Fatalf("status %d body %s, want 429 queue_wait_exceeded", resp.StatusCode, body)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After = %q, want 1 (the next slot is under a second away)", ra)
	}
}

func TestQueueFullAndTimeout(t *testing.T) {
	up, g := heldUpstream(t)
	classes := []Class{{Name: "default", MaxWait: 200 * time.Millisecond, MaxQueue: 1}}
	px := mustStart(t, Settings{Providers: []Provider{limitedProvider(up, limiter.Limits{MaxConcurrency: 1})}, Classes: classes})
	c := client(t)
	url := px.URL + "/v1/chat/completions"

	first := make(chan *http.Response, 1)
	go func() { first <- post(t, c, url, chatBody, nil) }()
	queued := make(chan *http.Response, 1)
	waitForInflight(t, &g.held, 1)
	go func() { queued <- post(t, c, url, chatBody, nil) }()
	waitForQueued(t, px, "default", 1)

	resp := post(t, c, url, chatBody, nil)
	body := readAll(t, resp)
	if resp.StatusCode != 429 || apiErrorCode(t, body) != "queue_full" || resp.Header.Get("Retry-After") == "" {
		t.Errorf("third request: %d %s (Retry-After %q), want 429 queue_full with Retry-After", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	resp = <-queued
	body = readAll(t, resp)
	if resp.StatusCode != 429 || apiErrorCode(t, body) != "queue_timeout" {
		t.Errorf("queued request: %d %s, want 429 queue_timeout after its 200ms", resp.StatusCode, body)
	}
	if w, _ := strconv.Atoi(resp.Header.Get(HeaderQueueWait)); w < 200 {
		t.Errorf("queued request waited %dms, want at least its 200ms max wait", w)
	}
	g.open()
	readAll(t, <-first)
}

func waitForInflight(tb testing.TB, n *atomic.Int64, want int64) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n.Load() < want {
		if time.Now().After(deadline) {
			tb.Fatalf("%d requests reached the upstream, want %d", n.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestClientGoneWhileQueued(t *testing.T) {
	up, g := heldUpstream(t)
	px := mustStart(t, Settings{Providers: []Provider{limitedProvider(up, limiter.Limits{MaxConcurrency: 1})}, Classes: classNames("default")})
	c := client(t)
	url := px.URL + "/v1/chat/completions"

	first := make(chan *http.Response, 1)
	go func() { first <- post(t, c, url, chatBody, nil) }()
	waitForInflight(t, &g.held, 1)

	// A raw client queues a request and hangs up.
	conn, err := net.Dial("tcp", px.Addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(chatBody), chatBody)
	waitForQueued(t, px, "default", 1)
	conn.Close()

	// The next arrival wakes the dispatcher, which looks at the head of the
	// queue and finds its client gone before spending anything on it.
	second := make(chan *http.Response, 1)
	go func() { second <- post(t, c, url, chatBody, nil) }()
	deadline := time.Now().Add(10 * time.Second)
	for metricSum(t, px.reg, "sluice_requests_total", "code", "499") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the abandoned request was not noticed")
		}
		time.Sleep(time.Millisecond)
	}

	g.open()
	readAll(t, <-first)
	resp := <-second
	readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("second request: status %d", resp.StatusCode)
	}
	if n := up.Count(); n != 2 {
		t.Errorf("upstream saw %d requests, want 2: the abandoned one must not be sent", n)
	}
}

// metricSum sums every series of the counter or gauge name whose labels
// include the given name/value pairs; zero when there is none yet.
func metricSum(tb testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	tb.Helper()
	var sum float64
	for _, m := range matching(tb, g, name, labels...) {
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum
}

// gate holds the fake upstream's first request until opened.
type gate struct {
	held atomic.Int64 // requests that reached the upstream
	ch   chan struct{}
	once sync.Once
}

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// heldUpstream is a fake upstream whose first request waits for its gate;
// the gate opens at cleanup at the latest.
func heldUpstream(t *testing.T) (*upstreamtest.Server, *gate) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	g := &gate{ch: make(chan struct{})}
	t.Cleanup(g.open)
	up.Handle(func(ctx *fasthttp.RequestCtx) {
		if g.held.Add(1) == 1 {
			<-g.ch
		}
		up.Default(ctx)
	})
	return up, g
}

func TestRouteDefaultClass(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	px := mustStart(t, Settings{
		Providers:    []Provider{defaultProvider(up.URL)},
		Classes:      classNames("critical", "default", "low"),
		DefaultClass: "default",
		Routes:       []Route{{Path: "/v1/embeddings", Class: "low"}},
	})
	c := client(t)
	for path, want := range map[string]string{
		"/v1/embeddings":       "low",
		"/v1/chat/completions": "default",
	} {
		resp := post(t, c, px.URL+path, `{"model":"m","input":"x","messages":[]}`, nil)
		readAll(t, resp)
		if got := resp.Header.Get(HeaderClass); got != want {
			t.Errorf("%s: class %q, want %q", path, got, want)
		}
		if got := resp.Header.Get(HeaderQueueWait); got != "0" {
			t.Errorf("%s: %s = %q, want 0", path, HeaderQueueWait, got)
		}
	}
}

func TestModelQuota(t *testing.T) {
	up, g := heldUpstream(t) // holds the first gpt-4o request
	// Only gpt-4o is limited: one in flight.
	pc := defaultProvider(up.URL)
	pc.Models = []Model{{Name: "gpt-4o", Limits: limiter.Limits{MaxConcurrency: 1}}}
	px := mustStart(t, Settings{Providers: []Provider{pc}, Classes: classNames("default")})
	c := client(t)
	url := px.URL + "/v1/chat/completions"
	big := `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`

	first := make(chan *http.Response, 1)
	go func() { first <- post(t, c, url, big, nil) }()
	waitForInflight(t, &g.held, 1)
	second := make(chan *http.Response, 1)
	go func() { second <- post(t, c, url, big, nil) }()
	waitForQueued(t, px, "default", 1)

	// Another model is not held back by gpt-4o's quota.
	resp := post(t, c, url, chatBody, nil)
	readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get(HeaderQueueWait) != "0" {
		t.Errorf("gpt-4o-mini: status %d, waited %sms; want 200 at once", resp.StatusCode, resp.Header.Get(HeaderQueueWait))
	}
	g.open()
	for _, ch := range []chan *http.Response{first, second} {
		r := <-ch
		readAll(t, r)
		if r.StatusCode != 200 {
			t.Errorf("gpt-4o: status %d", r.StatusCode)
		}
	}
}

// TestCutStreamChargedWhatStreamed: a stream that ends without its usage
// chunk is charged its prompt estimate plus one token per content event
// relayed, not refunded to nothing.
func TestCutStreamChargedWhatStreamed(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{Chunks: 5})
	up.SetGate(make(chan struct{})) // first event, then silence
	pc := limitedProvider(up, limiter.Limits{TokensPerMinute: 1e6, TokenBurst: time.Minute})
	pc.StreamIdleTimeout = 200 * time.Millisecond
	px := mustStart(t, Settings{Providers: []Provider{pc}, Classes: classNames("default")})

	resp := post(t, client(t), px.URL+"/v1/chat/completions",
		`{"model":"gpt-4o-mini","stream":true,"max_tokens":500,"messages":[{"role":"user","content":"hi"}]}`, nil)
	b, err := io.ReadAll(resp.Body) // ends when the idle timeout cuts the stream
	resp.Body.Close()
	if body := string(b); err == nil || strings.Contains(body, "[DONE]") || !strings.Contains(body, `"content":"tok0`) {
		t.Fatalf("stream %q (%v): want the first event only, then a cut", body, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := testutil.ToFloat64(mustCounter(t, px.reg, "sluice_tokens_total", "provider", "openai", "kind", "completion"))
		if got == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("completion tokens = %v, want 1: the one content event relayed before the cut", got)
		}
		time.Sleep(time.Millisecond) // settled by fasthttp's writer after the response ended
	}
}

// TestShutdownAnswersQueued: requests still waiting for quota when the
// grace period ends are answered 503, not dropped.
func TestShutdownAnswersQueued(t *testing.T) {
	up, g := heldUpstream(t)
	p, err := New(Settings{Providers: []Provider{limitedProvider(up, limiter.Limits{MaxConcurrency: 1})}, Classes: classNames("default")},
		metrics.New(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	url := "http://" + ln.Addr().String() + "/v1/chat/completions"
	c := client(t)
	first := make(chan *http.Response, 1)
	go func() { first <- post(t, c, url, chatBody, nil) }()
	waitForInflight(t, &g.held, 1)
	queued := make(chan *http.Response, 1)
	go func() { queued <- post(t, c, url, chatBody, nil) }()
	waitForQueued(t, &testProxy{Proxy: p}, "default", 1)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	shutdown := make(chan error, 1)
	go func() { shutdown <- p.Shutdown(ctx) }()
	resp := <-queued
	body := readAll(t, resp)
	if resp.StatusCode != 503 || apiErrorCode(t, body) != "shutting_down" {
		t.Errorf("queued request at shutdown: %d %s, want 503 shutting_down", resp.StatusCode, body)
	}
	g.open()
	if r := <-first; r != nil {
		readAll(t, r)
	}
	<-shutdown
	if err := <-served; err != nil {
		t.Errorf("Serve = %v", err)
	}
}
