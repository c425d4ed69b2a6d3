package proxy

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluice-ai/sluice/deadletter"
	"github.com/sluice-ai/sluice/internal/upstreamtest"
)

// chaos answers like a provider having a very bad day: under half of the
// answers are fine; the rest are 500s, 429s with a short Retry-After,
// answers slower than the header timeout, bodies cut off midway, and
// streams that break off after they began.
func chaos(up *upstreamtest.Server, seed uint64) fasthttp.RequestHandler {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, seed))
	return func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		roll := rng.IntN(100)
		mu.Unlock()
		switch {
		case roll < 45:
			up.Default(ctx)
		case roll < 60:
			answer(500, nil)(ctx)
		case roll < 70:
			answer(429, map[string]string{"retry-after-ms": "10"})(ctx)
		case roll < 78:
			time.Sleep(150 * time.Millisecond) // past the header timeout
			up.Default(ctx)
		case roll < 88:
			ctx.HijackSetNoResponse(true)
			ctx.Hijack(func(c net.Conn) {
				c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":"))
			})
		default:
			cutStream(ctx)
		}
	}
}

// allRecords reads every record of store, page by page.
func allRecords(t *testing.T, store deadletter.ReplayStore) []deadletter.Record {
	t.Helper()
	var out []deadletter.Record
	f := deadletter.Filter{Limit: 1000}
	for {
		page, next, err := store.List(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page...)
		if next == "" {
			return out
		}
		f.After = next
	}
}

// TestNothingLost is guarantee 6 under chaos: every request ends as a
// complete success, or as an error with exactly one dead letter, and the
// counts match exactly, in both stores.
func TestNothingLost(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			const n, workers = 200, 16
			up := upstreamtest.New(t, upstreamtest.Options{Chunks: 3})
			up.Handle(chaos(up, 42))
			pc := failingProvider(up.URL, 3)
			pc.Retry.BaseDelay, pc.Retry.MaxDelay = 5*time.Millisecond, 20*time.Millisecond
			pc.ResponseHeaderTimeout = 100 * time.Millisecond
			pc.Breaker = Breaker{FailureThreshold: 4, OpenFor: 30 * time.Millisecond, HalfOpenRequests: 1}
			store := openStore(t, backend)
			px := mustStart(t, Settings{Providers: []Provider{pc}, DeadLetters: store})

			type outcome struct {
				ok     bool   // 2xx, read to its end
				id     string // X-Sluice-Deadletter-Id
				cut    bool   // the body broke off
				status int
			}
			outcomes := make([]outcome, n)
			c := client(t)
			var wg sync.WaitGroup
			next := make(chan int)
			for range workers {
				wg.Go(func() {
					for i := range next {
						body := chatBody
						if i%2 == 0 {
							body = streamBody
						}
						resp, err := c.Post(px.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
						if err != nil {
							// The stream broke off before fasthttp flushed its
							// first bytes: no response at all.
							outcomes[i] = outcome{cut: true}
							continue
						}
						_, err = io.ReadAll(resp.Body)
						resp.Body.Close()
						outcomes[i] = outcome{
							ok:     err == nil && resp.StatusCode/100 == 2,
							id:     resp.Header.Get(HeaderDeadletterID),
							cut:    err != nil,
							status: resp.StatusCode,
						}
					}
				})
			}
			for i := range n {
				next <- i
			}
			close(next)
			wg.Wait()

			var ok, failed, cut int
			ids := map[string]bool{}
			for i, o := range outcomes {
				switch {
				case o.ok && o.id == "":
					ok++
				case o.ok:
					t.Errorf("request %d succeeded and was dead-lettered as %s", i, o.id)
				case o.cut:
					cut++ // its headers had gone: the record is counted below
				case o.id == "":
					t.Errorf("request %d failed with %d and no dead letter", i, o.status)
				case ids[o.id]:
					t.Errorf("request %d shares dead letter %s", i, o.id)
				default:
					ids[o.id] = true
					failed++
				}
			}
			recs := allRecords(t, store)
			for deadline := time.Now().Add(10 * time.Second); len(recs) < failed+cut && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond) // cut streams are recorded as their connection closes
				recs = allRecords(t, store)
			}
			kinds := map[deadletter.Kind]int{}
			for _, r := range recs {
				kinds[r.ErrorKind]++
				if r.ErrorKind != deadletter.StreamCut && !ids[r.ID] {
					t.Errorf("record %s (%s) answers no request", r.ID, r.ErrorKind)
				}
			}
			if ok+failed+cut != n || len(recs) != failed+cut || kinds[deadletter.StreamCut] != cut {
				t.Errorf("%d ok + %d failed + %d cut of %d requests; %d records %v; want every request accounted for once",
					ok, failed, cut, n, len(recs), kinds)
			}
			if ok == 0 || failed == 0 || cut == 0 {
				t.Errorf("%d ok, %d failed, %d cut: the chaos should produce each", ok, failed, cut)
			}
			t.Logf("%d requests, %d upstream attempts: %d ok, %d failed, %d cut; records by kind %v", n, up.Count(), ok, failed, cut, kinds)
		})
	}
}
