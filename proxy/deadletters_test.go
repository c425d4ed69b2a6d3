package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/deadletter"
	"github.com/sluice-ai/sluice/internal/redistest"
	"github.com/sluice-ai/sluice/internal/upstreamtest"
	"github.com/sluice-ai/sluice/limiter"
)

// dlStore is what the tests use of a dead-letter store.
type dlStore interface {
	DeadLetters
	deadletter.ReplayStore
}

// rigStore is a dead-letter store under test.
type rigStore struct {
	dlStore
	// raw returns every byte the store holds, to search for secrets.
	raw func(t *testing.T) string
}

// count returns the number of records stored.
func (s rigStore) count(t *testing.T) int { return len(allRecords(t, s)) }

// backends are the stores every dead-letter test runs against.
var backends = []string{"file", "redis"}

// openStore opens an empty store of the given backend for t: a JSON-lines
// file, or a stream on a redis-server of its own.
func openStore(t *testing.T, backend string) rigStore {
	t.Helper()
	switch backend {
	case "file":
		path := filepath.Join(t.TempDir(), "deadletters.jsonl")
		store, err := deadletter.OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		return rigStore{store, func(t *testing.T) string {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}}
	case "redis":
		c := redistest.Start(t).Client(t)
		const stream = "test:deadletters"
		return rigStore{deadletter.NewRedisStore(c, stream, 0, 2*time.Second), func(t *testing.T) string {
			var all strings.Builder
			entries, err := c.XRange(context.Background(), stream, "-", "+").Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				fmt.Fprint(&all, e.Values)
			}
			for _, key := range []string{stream + ":ids", stream + ":replays"} {
				h, err := c.HGetAll(context.Background(), key).Result()
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprint(&all, h)
			}
			return all.String()
		}}
	}
	t.Fatalf("unknown backend %q", backend)
	return rigStore{}
}

// deadLetterRig is a proxy recording dead letters in a JSON-lines file.
func deadLetterRig(t *testing.T, pc Provider, classes []Class) (*testProxy, rigStore) {
	return deadLetterRigOn(t, "file", pc, classes)
}

// deadLetterRigOn is a proxy recording dead letters in a store of the
// given backend.
func deadLetterRigOn(t *testing.T, backend string, pc Provider, classes []Class) (*testProxy, rigStore) {
	t.Helper()
	store := openStore(t, backend)
	px := mustStart(t, Settings{Providers: []Provider{pc}, Classes: classes, DeadLetters: store, RedactHeaders: []string{"X-Team-Token"}})
	return px, store
}

const streamBody = `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`

// cutStream answers with the start of an event stream and then drops the
// connection, as a provider whose backend died mid-generation does.
func cutStream(ctx *fasthttp.RequestCtx) {
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"d\r\ndata: first\n\n\r\n"))
	})
}

// waitForRecords waits until store holds n records (a cut stream's record
// is written after its client saw the cut) and returns them.
func waitForRecords(t *testing.T, store rigStore, n int) []deadletter.Record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs := allRecords(t, store)
		if len(recs) >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d dead letters after 10s, want %d", len(recs), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// mustRecord returns the dead letter named by resp and checks the
// response's marks.
func mustRecord(t *testing.T, store rigStore, resp *http.Response, kind deadletter.Kind) deadletter.Record {
	t.Helper()
	id := resp.Header.Get(HeaderDeadletterID)
	if id == "" || resp.Header.Get("X-Should-Retry") != "false" {
		t.Fatalf("response lacks %s (%q) or x-should-retry false (%q)", HeaderDeadletterID, id, resp.Header.Get("X-Should-Retry"))
	}
	rec, err := store.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	if rec.ErrorKind != kind || rec.Provider != "openai" || rec.Method != "POST" || rec.Path != "/v1/chat/completions" || rec.Body != chatBody {
		t.Errorf("record %+v: want kind %s for the client's POST /v1/chat/completions with its body", rec, kind)
	}
	return rec
}

func TestDeadLetterKinds(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) { deadLetterKinds(t, backend) })
	}
}

// deadLetterKinds produces each kind by its real cause.
func deadLetterKinds(t *testing.T, backend string) {
	secret := map[string]string{"Authorization": "Bearer sk-secret-123", "X-Team-Token": "team-secret-456", "Idempotency-Key": "job-7"}

	t.Run("retries_exhausted", func(t *testing.T) {
		s := newScript(t, answer(503, nil))
		px, store := deadLetterRigOn(t, backend, failingProvider(s.up.URL, 2), classNames("default"))
		resp := post(t, client(t), px.URL+"/v1/chat/completions", chatBody, secret)
		readAll(t, resp)
		rec := mustRecord(t, store, resp, deadletter.RetriesExhausted)
		if rec.Attempts != 2 || rec.LastStatus != 503 || rec.IdempotencyKey != "job-7" || rec.Class != "default" {
			t.Errorf("record %+v: want 2 attempts, last status 503, the idempotency key and the class", rec)
		}
		raw := store.raw(t)
		for _, s := range []string{"sk-secret-123", "team-secret-456"} {
			if strings.Contains(raw, s) {
				t.Errorf("the dead-letter store holds the secret %q", s)
			}
		}
		if got := testutil.ToFloat64(mustCounter(t, px.reg, "sluice_deadletters_total", "provider", "openai", "reason", "retries_exhausted")); got != 1 {
			t.Errorf("deadletters_total = %v, want 1", got)
		}
	})
	t.Run("upstream_timeout", func(t *testing.T) {
		s := newScript(t, func(ctx *fasthttp.RequestCtx) { time.Sleep(300 * time.Millisecond) }) // slower than the header timeout
		pc := failingProvider(s.up.URL, 1)
		pc.ResponseHeaderTimeout = 50 * time.Millisecond
		px, store := deadLetterRigOn(t, backend, pc, classNames("default"))
		resp := post(t, client(t), px.URL+"/v1/chat/completions", chatBody, nil)
		readAll(t, resp)
		mustRecord(t, store, resp, deadletter.UpstreamTimeout)
	})
	t.Run("queue_timeout", func(t *testing.T) {
		up, g := heldUpstream(t)
		classes := []Class{{Name: "default", MaxWait: 100 * time.Millisecond, MaxQueue: 10}}
		pc := limitedProvider(up, limiter.Limits{MaxConcurrency: 1})
		px, store := deadLetterRigOn(t, backend, pc, classes)
		c := client(t)
		first := make(chan *http.Response, 1)
		go func() { first <- post(t, c, px.URL+"/v1/chat/completions", chatBody, nil) }()
		waitForInflight(t, &g.held, 1)
		resp := post(t, c, px.URL+"/v1/chat/completions", chatBody, nil)
		readAll(t, resp)
		mustRecord(t, store, resp, deadletter.QueueTimeout)
		g.open()
		readAll(t, <-first)
	})
	t.Run("breaker_open", func(t *testing.T) {
		s := newScript(t, answer(503, nil))
		pc := failingProvider(s.up.URL, 1)
		pc.Breaker = Breaker{FailureThreshold: 1, OpenFor: time.Minute, HalfOpenRequests: 1}
		px, store := deadLetterRigOn(t, backend, pc, classNames("default"))
		c := client(t)
		readAll(t, post(t, c, px.URL+"/v1/chat/completions", chatBody, nil))                                      // opens it
		resp := post(t, c, px.URL+"/v1/chat/completions", chatBody, map[string]string{"X-Sluice-Max-Wait": "1s"}) // less than the open minute
		readAll(t, resp)
		mustRecord(t, store, resp, deadletter.BreakerOpen)
	})
	t.Run("shutdown", func(t *testing.T) {
		up, g := heldUpstream(t) // the first request is held past the grace period
		px, store := deadLetterRigOn(t, backend, limitedProvider(up, limiter.Limits{MaxConcurrency: 1}), classNames("default"))
		c := client(t)
		answers := make(chan *http.Response, 2)
		go func() { answers <- post(t, c, px.URL+"/v1/chat/completions", chatBody, nil) }()
		waitForInflight(t, &g.held, 1)
		go func() { answers <- post(t, c, px.URL+"/v1/chat/completions", chatBody, nil) }()
		waitForQueued(t, px, "default", 1)
		grace, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := px.Shutdown(grace); err == nil {
			t.Error("Shutdown reported a clean drain with a request held in flight")
		}
		for range 2 {
			resp := <-answers
			readAll(t, resp)
			if resp.StatusCode != 503 {
				t.Errorf("answer %d, want 503", resp.StatusCode)
			}
			mustRecord(t, store, resp, deadletter.Shutdown)
		}
	})
	t.Run("stream_cut", func(t *testing.T) {
		up := upstreamtest.New(t, upstreamtest.Options{})
		up.Handle(cutStream)
		px, store := deadLetterRigOn(t, backend, failingProvider(up.URL, 3), classNames("default"))
		resp := post(t, client(t), px.URL+"/v1/chat/completions", streamBody, nil)
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil || !strings.Contains(string(got), "first") {
			t.Fatalf("client read %q, %v; want the first event, then an error for the cut", got, err)
		}
		recs := waitForRecords(t, store, 1)
		if r := recs[0]; r.ErrorKind != deadletter.StreamCut || r.LastStatus != 200 || r.Body != streamBody || r.Attempts != 1 {
			t.Errorf("record %+v: want stream_cut of the one attempt, last status 200, with the body", r)
		}
		if up.Count() != 1 {
			t.Errorf("upstream saw %d attempts: a stream that began must not be retried", up.Count())
		}
	})
	t.Run("client leaving mid-stream is not dead-lettered", func(t *testing.T) {
		up := upstreamtest.New(t, upstreamtest.Options{})
		release := make(chan struct{})
		up.Handle(func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("text/event-stream")
			ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
				tick := time.NewTicker(5 * time.Millisecond) // events keep coming until the proxy stops reading
				defer tick.Stop()
				for {
					w.WriteString("data: more\n\n")
					if w.Flush() != nil {
						return
					}
					select {
					case <-tick.C:
					case <-release:
						return
					}
				}
			})
		})
		t.Cleanup(func() { close(release) })
		px, store := deadLetterRigOn(t, backend, failingProvider(up.URL, 1), classNames("default"))
		resp := post(t, client(t), px.URL+"/v1/chat/completions", streamBody, nil)
		buf := make([]byte, 5)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for deadline := time.Now().Add(10 * time.Second); px.upstreams[0].inflight.Load() != 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the stream the client left is still in flight after 10s")
			}
		}
		if store.count(t) != 0 {
			t.Errorf("a stream the client left was dead-lettered")
		}
	})
	t.Run("refused at admission is not dead-lettered", func(t *testing.T) {
		s := newScript(t, answer(200, nil))
		px, store := deadLetterRigOn(t, backend, failingProvider(s.up.URL, 1), classNames("default"))
		resp := post(t, client(t), px.URL+"/v1/chat/completions", chatBody, map[string]string{"X-Priority": "nope"})
		readAll(t, resp)
		if resp.Header.Get(HeaderDeadletterID) != "" || store.count(t) != 0 {
			t.Errorf("a request refused with %d was dead-lettered", resp.StatusCode)
		}
	})
}
