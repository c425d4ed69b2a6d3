package proxy

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/deadletter"
	"github.com/sluice-ai/sluice/idempotency"
	"github.com/sluice-ai/sluice/internal/upstreamtest"
)

// idemRig is a proxy with an in-process idempotency store in front of up.
func idemRig(t *testing.T, pc Provider, s idempotency.Settings) *testProxy {
	t.Helper()
	store := idempotency.NewMemory(s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); store.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return mustStart(t, Settings{Providers: []Provider{pc}, Classes: classNames("default"), Idempotency: store})
}

func keyed(key string, more ...string) map[string]string {
	h := map[string]string{"Idempotency-Key": key}
	for i := 0; i+1 < len(more); i += 2 {
		h[more[i]] = more[i+1]
	}
	return h
}

func TestIdempotentDuplicateGetsTheKeptOutcome(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	px := idemRig(t, defaultProvider(up.URL), idempotency.Settings{})
	c := client(t)
	first := post(t, c, px.URL+"/v1/chat/completions", chatBody, keyed("job-1"))
	body1 := readAll(t, first)
	second := post(t, c, px.URL+"/v1/chat/completions", chatBody, keyed("job-1"))
	body2 := readAll(t, second)
	if first.StatusCode != 200 || second.StatusCode != 200 || body1 != body2 {
		t.Fatalf("first %d, second %d; bodies equal %v: want the same 200 twice", first.StatusCode, second.StatusCode, body1 == body2)
	}
	if second.Header.Get(HeaderIdempotentReplay) != "true" || first.Header.Get(HeaderIdempotentReplay) != "" {
		t.Errorf("replay marks: first %q, second %q", first.Header.Get(HeaderIdempotentReplay), second.Header.Get(HeaderIdempotentReplay))
	}
	if second.Header.Get("Content-Type") != first.Header.Get("Content-Type") || second.Header.Get(HeaderRequestID) == first.Header.Get(HeaderRequestID) {
		t.Errorf("the replay's headers: content type %q (want %q), request id %q (want its own)",
			second.Header.Get("Content-Type"), first.Header.Get("Content-Type"), second.Header.Get(HeaderRequestID))
	}
	if up.Count() != 1 {
		t.Errorf("the upstream saw %d requests, want 1", up.Count())
	}
	if got := metricSum(t, px.reg, "sluice_idempotent_replays_total", "outcome", "stored"); got != 1 {
		t.Errorf("idempotent replays (stored) = %v, want 1", got)
	}
	// Another key is another request; the same key with another body is refused.
	readAll(t, post(t, c, px.URL+"/v1/chat/completions", chatBody, keyed("job-2")))
	mismatch := post(t, c, px.URL+"/v1/chat/completions", strings.Replace(chatBody, "hi", "bye", 1), keyed("job-1"))
	if b := readAll(t, mismatch); mismatch.StatusCode != 422 || apiErrorCode(t, b) != "idempotency_key_reused" {
		t.Errorf("reused key with another body: %d %s, want 422 idempotency_key_reused", mismatch.StatusCode, b)
	}
	if up.Count() != 2 {
		t.Errorf("the upstream saw %d requests, want 2 (two keys)", up.Count())
	}
}

func TestIdempotentDuplicateWaitsForTheFirst(t *testing.T) {
	up, g := heldUpstream(t)
	px := idemRig(t, defaultProvider(up.URL), idempotency.Settings{})
	c := client(t)
	type answer struct {
		status int
		body   string
		replay string
	}
	answers := make(chan answer, 2)
	ask := func() {
		resp := post(t, c, px.URL+"/v1/chat/completions", chatBody, keyed("job-1"))
		answers <- answer{resp.StatusCode, readAll(t, resp), resp.Header.Get(HeaderIdempotentReplay)}
	}
	go ask()
	waitForInflight(t, &g.held, 1)
	go ask()
	// The duplicate is in the proxy (claiming the key held by the first).
	for deadline := time.Now().Add(5 * time.Second); px.active.Load() < 2; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the duplicate did not arrive")
		}
	}
	g.open()
	a, b := <-answers, <-answers
	if a.status != 200 || b.status != 200 || a.body != b.body || (a.replay == "") == (b.replay == "") {
		t.Errorf("answers %d/%d, same body %v, replay marks %q/%q: want one sent, one waited for, same 200",
			a.status, b.status, a.body == b.body, a.replay, b.replay)
	}
	if up.Count() != 1 {
		t.Errorf("the upstream saw %d requests, want 1", up.Count())
	}
}

func TestIdempotentStreams(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{Chunks: 3})
	gate := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(open)
	up.SetGate(gate)
	px := idemRig(t, defaultProvider(up.URL), idempotency.Settings{})
	c := client(t)
	first := post(t, c, px.URL+"/v1/chat/completions", streamBody, keyed("stream-1"))
	if first.StatusCode != 200 {
		t.Fatalf("first stream: %d", first.StatusCode)
	}
	dup := post(t, c, px.URL+"/v1/chat/completions", streamBody, keyed("stream-1"))
	if b := readAll(t, dup); dup.StatusCode != 409 || apiErrorCode(t, b) != "idempotency_key_in_flight" || dup.Header.Get("Retry-After") == "" {
		t.Errorf("duplicate of a running stream: %d %s (Retry-After %q), want 409 with Retry-After", dup.StatusCode, b, dup.Header.Get("Retry-After"))
	}
	open()
	body1 := readAll(t, first)
	if !strings.Contains(body1, "data: [DONE]") {
		t.Fatalf("first stream ended with %q", body1)
	}
	// The stream is kept once it is over; wait for the relay to settle it.
	var replayed *http.Response
	var body2 string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		replayed = post(t, c, px.URL+"/v1/chat/completions", streamBody, keyed("stream-1"))
		body2 = readAll(t, replayed)
		if replayed.StatusCode == 200 || time.Now().After(deadline) {
			break
		}
	}
	if replayed.StatusCode != 200 || body2 != body1 || !strings.HasPrefix(replayed.Header.Get("Content-Type"), "text/event-stream") ||
		replayed.Header.Get(HeaderIdempotentReplay) != "true" {
		t.Errorf("a finished stream's duplicate: %d %q, content type %q; want the same event stream, replayed",
			replayed.StatusCode, body2, replayed.Header.Get("Content-Type"))
	}
	if up.Count() != 1 {
		t.Errorf("the upstream saw %d requests, want 1", up.Count())
	}
}

// TestIdempotentFinalErrorAndReplay: an answer Sluice gave up on is kept,
// so the caller's retry does not start another storm; a dead-letter replay
// may send it again, and its success is then what duplicates get.
func TestIdempotentFinalErrorAndReplay(t *testing.T) {
	up, serve := failThenServe(t)
	pc := failingProvider(up.URL, 2)
	pc.APIKey = "sk-from-config"
	dl, store := openStore(t, "file"), idempotency.NewMemory(idempotency.Settings{})
	px := mustStart(t, Settings{Providers: []Provider{pc}, Classes: classNames("default"), DeadLetters: dl, Idempotency: store})
	c := client(t)
	first := post(t, c, px.URL+"/v1/chat/completions", chatBody, keyed("job-9"))
	readAll(t, first)
	id := first.Header.Get(HeaderDeadletterID)
	if first.StatusCode != 503 || id == "" {
		t.Fatalf("first: %d with dead letter %q; want 503, dead-lettered", first.StatusCode, id)
	}
	attempts := up.Count()
	retry := post(t, c, px.URL+"/v1/chat/completions", chatBody, keyed("job-9"))
	readAll(t, retry)
	if retry.StatusCode != 503 || retry.Header.Get(HeaderDeadletterID) != id || up.Count() != attempts {
		t.Errorf("the caller's retry: %d, dead letter %q, %d more upstream attempts; want the kept 503 naming %s and none",
			retry.StatusCode, retry.Header.Get(HeaderDeadletterID), up.Count()-attempts, id)
	}

	serve()
	res, err := deadletter.NewReplayer(dl, px, nil).Replay(context.Background(), id, "", false)
	if err != nil || !res.Delivered {
		t.Fatalf("replay: %+v, %v; want delivered despite the kept failure", res, err)
	}
	after := post(t, c, px.URL+"/v1/chat/completions", chatBody, keyed("job-9"))
	if b := readAll(t, after); after.StatusCode != 200 || b != res.Body {
		t.Errorf("after the replay the key answers %d %q, want the replay's 200", after.StatusCode, b)
	}
	// And a replay of a key that completed returns the kept outcome.
	count := up.Count()
	again, err := deadletter.NewReplayer(dl, px, nil).Replay(context.Background(), id, "", true)
	if err != nil || !again.Delivered || up.Count() != count {
		t.Errorf("forced replay of a completed key: %+v, %v, %d upstream calls; want the kept 200 without a call", again, err, up.Count()-count)
	}
}

// TestIdempotentKeyFreedWhenNotSent: a request that never reached the
// upstream, or got an answer that is not final, leaves its key free.
func TestIdempotentKeyFreedWhenNotSent(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	up.Handle(answer(400, nil))
	px := idemRig(t, defaultProvider(up.URL), idempotency.Settings{})
	c := client(t)
	for range 2 {
		resp := post(t, c, px.URL+"/v1/chat/completions", chatBody, keyed("bad-1"))
		readAll(t, resp)
		if resp.StatusCode != 400 || resp.Header.Get(HeaderIdempotentReplay) != "" {
			t.Errorf("%d (replay %q), want the upstream's own 400 each time", resp.StatusCode, resp.Header.Get(HeaderIdempotentReplay))
		}
	}
	if up.Count() != 2 {
		t.Errorf("the upstream saw %d requests, want 2: a 400 is not kept", up.Count())
	}
	long := post(t, c, px.URL+"/v1/chat/completions", chatBody, keyed(strings.Repeat("k", 256)))
	if b := readAll(t, long); long.StatusCode != 400 || apiErrorCode(t, b) != "invalid_idempotency_key" {
		t.Errorf("a 256-byte key: %d %s, want 400 invalid_idempotency_key", long.StatusCode, b)
	}
}

func TestIdempotentLargeResponseNotKept(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	up.Handle(func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"data":"` + strings.Repeat("x", 4096) + `"}`)
	})
	px := idemRig(t, defaultProvider(up.URL), idempotency.Settings{MaxBody: 1024})
	c := client(t)
	readAll(t, post(t, c, px.URL+"/v1/chat/completions", chatBody, keyed("big-1")))
	dup := post(t, c, px.URL+"/v1/chat/completions", chatBody, keyed("big-1"))
	if b := readAll(t, dup); dup.StatusCode != 409 || apiErrorCode(t, b) != "idempotency_response_not_kept" {
		t.Errorf("duplicate of a response over the limit: %d %s, want 409 idempotency_response_not_kept", dup.StatusCode, b)
	}
	if up.Count() != 1 {
		t.Errorf("the upstream saw %d requests, want 1", up.Count())
	}
}

func TestIdempotentRetention(t *testing.T) {
	up := upstreamtest.New(t, upstreamtest.Options{})
	px := idemRig(t, defaultProvider(up.URL), idempotency.Settings{Retention: 200 * time.Millisecond})
	c := client(t)
	readAll(t, post(t, c, px.URL+"/v1/chat/completions", chatBody, keyed("old-1")))
	time.Sleep(250 * time.Millisecond) // the retention is what is tested
	resp := post(t, c, px.URL+"/v1/chat/completions", chatBody, keyed("old-1"))
	readAll(t, resp)
	if resp.Header.Get(HeaderIdempotentReplay) != "" || up.Count() != 2 {
		t.Errorf("after the retention: replay %q, %d upstream requests; want a new request", resp.Header.Get(HeaderIdempotentReplay), up.Count())
	}
}
