package main

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/internal/redistest"
	"github.com/sluice-ai/sluice/internal/upstreamtest"
)

// arrivals is a fake upstream that notes when each request arrives and
// how many are in flight at once.
type arrivals struct {
	up       *upstreamtest.Server
	mu       sync.Mutex
	times    []time.Time
	inflight atomic.Int64
	peak     atomic.Int64
}

func newArrivals(t *testing.T, hold time.Duration) *arrivals {
	a := &arrivals{up: upstreamtest.New(t, upstreamtest.Options{})}
	a.up.Handle(func(ctx *fasthttp.RequestCtx) {
		n := a.inflight.Add(1)
		for p := a.peak.Load(); n > p && !a.peak.CompareAndSwap(p, n); p = a.peak.Load() {
		}
		a.mu.Lock()
		a.times = append(a.times, time.Now())
		a.mu.Unlock()
		if hold > 0 {
			time.Sleep(hold) // the upstream's own latency
		}
		a.inflight.Add(-1)
		a.up.Default(ctx)
	})
	return a
}

func (a *arrivals) all() []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.times)
}

// maxInWindow returns the most arrivals within any window of length w.
func maxInWindow(ts []time.Time, w time.Duration) int {
	most := 0
	for i := range ts {
		j := i
		for j < len(ts) && ts[j].Sub(ts[i]) < w {
			j++
		}
		most = max(most, j-i)
	}
	return most
}

// sharedConfig is testConfig in shared mode on redisURL for three
// replicas, with provider keys (indented for the provider) and top-level
// keys added. Redis calls get a second: these tests are about sharing, and
// a loaded test machine must not push them into the degraded mode.
func sharedConfig(upstreamURL, redisURL, providerKeys, topKeys string) string {
	return testConfig(upstreamURL) + providerKeys + "redis:\n  url: " + redisURL +
		"\n  command_timeout: 1s\n  lease_ttl: 1s\n  expected_replicas: 3\n" + topKeys
}

// send posts one chat request with the given headers and returns its
// status and queue wait.
func send(t *testing.T, url string, header map[string]string) (int, time.Duration) {
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("POST: %v", err)
		return 0, 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	ms, _ := strconv.Atoi(resp.Header.Get("X-Sluice-Queue-Wait-Ms"))
	return resp.StatusCode, time.Duration(ms) * time.Millisecond
}

// TestReplicasShareTheQuota: three replicas on one Redis, 3× overload
// spread unevenly across them: the upstream never sees more than the
// account's rate (plus its burst) in any window, nor more than its
// concurrency, and every request is served.
func TestReplicasShareTheQuota(t *testing.T) {
	redis := redistest.Start(t)
	up := newArrivals(t, 20*time.Millisecond)
	const rate, burst = 20.0, 10 // per second; request_burst 500ms
	cfg := sharedConfig(up.up.URL, redis.URL(),
		"    limits: {requests_per_minute: 1200, request_burst: 500ms, max_concurrency: 3}\n", "")
	replicas := []*sluice{mustRun(t, cfg), mustRun(t, cfg), mustRun(t, cfg)}
	// 100 requests where about 3 seconds' worth (burst + 3 s of rate = 70)
	// would fit: 70 at one replica, 20 and 10 at the others.
	var wg sync.WaitGroup
	var failed atomic.Int64
	start := time.Now()
	for i, n := range []int{70, 20, 10} {
		for range n {
			wg.Go(func() {
				if code, _ := send(t, replicas[i].URL, nil); code != 200 {
					failed.Add(1)
				}
			})
		}
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Errorf("%d of 100 requests failed; all should have waited their turn", failed.Load())
	}
	ts := up.all()
	for _, w := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second} {
		bound := burst + rate*w.Seconds()
		if got := maxInWindow(ts, w); float64(got) > bound+1 { // +1: the edges of a window
			t.Errorf("%d arrivals within %v; the account allows %.0f", got, w, bound)
		}
	}
	if p := up.peak.Load(); p > 3 {
		t.Errorf("%d requests in flight at the upstream at once, over the account's 3", p)
	}
	span := ts[len(ts)-1].Sub(start)
	allowed := burst + rate*span.Seconds()
	t.Logf("3 replicas: %d requests in %v, %.0f allowed: accuracy (admitted / allowed) %.2f; peak concurrency %d",
		len(ts), span.Round(time.Millisecond), allowed, float64(len(ts))/allowed, up.peak.Load())
}

// TestReplicasKeepPriority: while one replica floods the quota with low
// requests, critical requests at another replica still go promptly: low
// leaves the top of the shared bucket free (headroom).
func TestReplicasKeepPriority(t *testing.T) {
	redis := redistest.Start(t)
	up := newArrivals(t, 0)
	cfg := sharedConfig(up.up.URL, redis.URL(), "    limits: {requests_per_minute: 1200, request_burst: 500ms}\n", "")
	flood, quiet := mustRun(t, cfg), mustRun(t, cfg)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var lowWaits, critWaits []time.Duration
	for range 60 {
		wg.Go(func() {
			_, w := send(t, flood.URL, map[string]string{"X-Priority": "low"})
			mu.Lock()
			lowWaits = append(lowWaits, w)
			mu.Unlock()
		})
	}
	// Wait until the flood holds the quota: low requests queue at flood.
	for deadline := time.Now().Add(5 * time.Second); len(up.all()) < 10; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the flood did not start")
		}
	}
	for range 5 {
		code, w := send(t, quiet.URL, map[string]string{"X-Priority": "critical"})
		if code != 200 {
			t.Errorf("critical at the quiet replica: %d", code)
		}
		critWaits = append(critWaits, w)
		time.Sleep(100 * time.Millisecond) // spread them over the flood
	}
	wg.Wait()
	slices.Sort(lowWaits)
	median := lowWaits[len(lowWaits)/2]
	worst := slices.Max(critWaits)
	if worst > median/3 || worst > 300*time.Millisecond {
		t.Errorf("critical at another replica waited up to %v while low waited %v (median): priority did not hold across replicas", worst, median)
	}
	t.Logf("critical waits %v; low median %v", critWaits, median)
}

// TestReplicasSharePause: a 429 with Retry-After at one replica stops
// every replica until the pause ends.
func TestReplicasSharePause(t *testing.T) {
	redis := redistest.Start(t)
	up := upstreamtest.New(t, upstreamtest.Options{})
	var mu sync.Mutex
	var times []time.Time
	var paused time.Time
	up.Handle(func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		times = append(times, time.Now())
		first := len(times) == 1
		if first {
			paused = time.Now()
		}
		mu.Unlock()
		if first {
			ctx.Response.Header.Set("retry-after-ms", "800")
			ctx.SetStatusCode(429)
			ctx.SetBodyString(`{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limit_exceeded"}}`)
			return
		}
		up.Default(ctx)
	})
	cfg := sharedConfig(up.URL, redis.URL(), "", "")
	a, b, c := mustRun(t, cfg), mustRun(t, cfg), mustRun(t, cfg)
	done := make(chan int, 3)
	go func() { code, _ := send(t, a.URL, nil); done <- code }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		mu.Lock()
		n := len(times)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no request reached the upstream")
		}
	}
	go func() { code, _ := send(t, b.URL, nil); done <- code }()
	go func() { code, _ := send(t, c.URL, nil); done <- code }()
	for range 3 {
		if code := <-done; code != 200 {
			t.Errorf("status %d, want 200 after the pause", code)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, at := range times[1:] {
		if early := paused.Add(800 * time.Millisecond).Sub(at); early > 10*time.Millisecond {
			t.Errorf("a request arrived %v before the pause ended", early)
		}
	}
	if len(times) != 4 {
		t.Errorf("%d upstream arrivals, want 4 (the 429, its retry and two others)", len(times))
	}
}

// TestReplicasShareBreaker: when one replica's breaker opens, another
// replica holds its own open and sends nothing until it probes again.
func TestReplicasShareBreaker(t *testing.T) {
	redis := redistest.Start(t)
	up := upstreamtest.New(t, upstreamtest.Options{})
	up.Handle(func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(500) })
	cfg := sharedConfig(up.URL, redis.URL(),
		"    retry: {max_attempts: 1}\n    breaker: {failure_threshold: 2, open_for: 30s}\n", "")
	a, b := mustRun(t, cfg), mustRun(t, cfg)
	for range 2 {
		send(t, a.URL, nil)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, status := get(t, b.AdminURL+"/admin/status"); strings.Contains(status, `"breaker":"open"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the other replica's breaker did not open within 5s")
		}
	}
	before := up.Count()
	code, _ := send(t, b.URL, map[string]string{"X-Sluice-Max-Wait": "100ms"})
	if code != 503 || up.Count() != before {
		t.Errorf("the other replica answered %d and sent %d requests; want 503 breaker_open without contacting the upstream", code, up.Count()-before)
	}
}

// TestReplicasSurviveRedisOutage: with Redis gone, replicas keep serving
// on their degraded share and sluice_redis_up says so; when it is back,
// they share again. Nothing is lost on the way.
func TestReplicasSurviveRedisOutage(t *testing.T) {
	redis := redistest.Start(t)
	up := upstreamtest.New(t, upstreamtest.Options{})
	cfg := sharedConfig(up.URL, redis.URL(), "    limits: {requests_per_minute: 6000, max_concurrency: 10}\n",
		"")
	a := mustRun(t, cfg)
	redisUp := func() string {
		_, m := get(t, a.AdminURL+"/metrics")
		for _, line := range strings.Split(m, "\n") {
			if v, ok := strings.CutPrefix(line, "sluice_redis_up "); ok {
				return v
			}
		}
		return "absent"
	}
	if v := redisUp(); v != "1" {
		t.Fatalf("sluice_redis_up = %s before the outage, want 1", v)
	}
	redis.Stop(t)
	for i := range 5 {
		if code, _ := send(t, a.URL, nil); code != 200 {
			t.Errorf("request %d during the outage: %d, want 200 on the degraded share", i, code)
		}
	}
	if v := redisUp(); v != "0" {
		t.Errorf("sluice_redis_up = %s during the outage, want 0", v)
	}
	redis.Restart(t)
	for deadline := time.Now().Add(10 * time.Second); redisUp() != "1"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("sluice_redis_up did not return to 1 within 10s of Redis returning")
		}
	}
	if code, _ := send(t, a.URL, nil); code != 200 {
		t.Errorf("after the outage: %d, want 200", code)
	}
	c := redis.Client(t)
	keys, err := c.Keys(context.Background(), "sluice:rl:*").Result()
	if err != nil || len(keys) == 0 {
		t.Errorf("no quota keys in Redis after the re-sync (%v): shared limiting did not resume", err)
	}
}

// TestReplicasShareIdempotencyKeys: the same key sent to two replicas at
// once reaches the upstream once, and both callers get the same answer.
func TestReplicasShareIdempotencyKeys(t *testing.T) {
	redis := redistest.Start(t)
	up := newArrivals(t, 100*time.Millisecond)
	cfg := sharedConfig(up.up.URL, redis.URL(), "", "")
	a, b := mustRun(t, cfg), mustRun(t, cfg)
	bodies := make(chan string, 2)
	for _, s := range []*sluice{a, b} {
		go func() {
			req, _ := http.NewRequest(http.MethodPost, s.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
			req.Header.Set("Idempotency-Key", "order-42")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				bodies <- ""
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("status %d", resp.StatusCode)
			}
			bodies <- string(body)
		}()
	}
	first, second := <-bodies, <-bodies
	if first != second || first == "" {
		t.Errorf("the two callers got different answers:\n%s\n%s", first, second)
	}
	if n := len(up.all()); n != 1 {
		t.Errorf("the upstream saw %d requests for one key, want 1", n)
	}
}
