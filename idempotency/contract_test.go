package idempotency_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/idempotency"
	"github.com/sluice-ai/sluice/internal/redistest"
)

// opener returns n stores that share their state, as n replicas would: the
// same Memory n times, or n Redis stores on one Redis.
type opener func(t *testing.T, s idempotency.Settings, n int) []idempotency.Store

// stores are the implementations every contract case runs against.
var stores = []struct {
	name string
	open opener
}{
	{"memory", func(t *testing.T, s idempotency.Settings, n int) []idempotency.Store {
		m := idempotency.NewMemory(s)
		out := make([]idempotency.Store, n)
		for i := range out {
			out[i] = m
		}
		return out
	}},
	{"redis", func(t *testing.T, s idempotency.Settings, n int) []idempotency.Store {
		srv := redistest.Start(t)
		out := make([]idempotency.Store, n)
		for i := range out {
			// A client each, as separate processes would have.
			out[i] = idempotency.NewRedis(srv.Client(t), "test:", s, 2*time.Second)
		}
		return out
	}},
}

const scope = "openai"

var (
	bodyA = sha256.Sum256([]byte(`{"model":"gpt","messages":[]}`))
	bodyB = sha256.Sum256([]byte(`{"model":"gpt","messages":[{}]}`))
	ok200 = idempotency.Outcome{
		Status: 200,
		Header: [][2]string{{"Content-Type", "application/json"}, {"X-Request-Id", "req_1"}, {"Openai-Processing-Ms", "12"}, {"X-Request-Id", "req_2"}},
		Body:   []byte(`{"id":"chatcmpl-1","choices":[]}`),
	}
	sse200 = idempotency.Outcome{
		Status: 200,
		Header: [][2]string{{"Content-Type", "text/event-stream"}},
		Body:   []byte("data: {\"x\":1}\n\ndata: [DONE]\n\n"),
		Stream: true,
	}
	bad502 = idempotency.Outcome{Status: 502, Body: []byte(`{"error":{"message":"bad gateway"}}`)}
)

func mustBegin(t *testing.T, s idempotency.Store, key string, hash [32]byte, stream, retryFailed bool, want idempotency.State) idempotency.Claim {
	t.Helper()
	c, err := s.Begin(t.Context(), scope, key, hash, stream, retryFailed)
	if err != nil {
		t.Fatalf("Begin(%q) = %v", key, err)
	}
	if c.State != want {
		t.Fatalf("Begin(%q).State = %v, want %v", key, c.State, want)
	}
	if (c.Token != "") != (want == idempotency.Acquired) {
		t.Fatalf("Begin(%q) = %v with token %q: a token comes with Acquired only", key, c.State, c.Token)
	}
	return c
}

func mustAcquire(t *testing.T, s idempotency.Store, key string) string {
	t.Helper()
	return mustBegin(t, s, key, bodyA, false, false, idempotency.Acquired).Token
}

func mustComplete(t *testing.T, s idempotency.Store, key, token string, o idempotency.Outcome) {
	t.Helper()
	if err := s.Complete(t.Context(), scope, key, token, o); err != nil {
		t.Fatalf("Complete(%q) = %v, want nil", key, err)
	}
}

func wantOutcome(t *testing.T, c idempotency.Claim, want idempotency.Outcome) {
	t.Helper()
	if !reflect.DeepEqual(c.Outcome, want) {
		t.Errorf("Outcome = %+v, want %+v", c.Outcome, want)
	}
}

// after returns a channel that is closed once d has passed. Expiry is
// timed by the stores' clocks, so its tests let real time pass; the 5ms
// cover Redis's millisecond rounding.
func after(d time.Duration) <-chan time.Time {
	return time.After(d + 5*time.Millisecond)
}

// waitResult is what a Wait in a goroutine returned.
type waitResult struct {
	c   idempotency.Claim
	err error
}

func goWait(t *testing.T, s idempotency.Store, key string, hash [32]byte) <-chan waitResult {
	t.Helper()
	ch := make(chan waitResult, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	go func() {
		defer cancel()
		c, err := s.Wait(ctx, scope, key, hash, false)
		ch <- waitResult{c, err}
	}()
	return ch
}

// notYet fails t if the Wait has returned already: the key is still held.
func notYet(t *testing.T, ch <-chan waitResult) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("Wait returned %+v, %v while the key is held", r.c, r.err)
	default:
	}
}

func TestContract(t *testing.T) {
	cases := []struct {
		name string
		set  idempotency.Settings
		run  func(t *testing.T, st []idempotency.Store)
	}{
		{"first acquires, second is in flight", idempotency.Settings{}, func(t *testing.T, st []idempotency.Store) {
			mustBegin(t, st[0], "k", bodyA, false, false, idempotency.Acquired)
			if c := mustBegin(t, st[1], "k", bodyA, true, false, idempotency.InFlight); c.Streaming {
				t.Errorf("Begin(k).Streaming = true, want false: the holder does not stream")
			}
			mustBegin(t, st[0], "s", bodyA, true, false, idempotency.Acquired)
			if c := mustBegin(t, st[1], "s", bodyA, false, false, idempotency.InFlight); !c.Streaming {
				t.Errorf("Begin(s).Streaming = false, want true: the holder streams")
			}
		}},
		{"complete then done", idempotency.Settings{}, func(t *testing.T, st []idempotency.Store) {
			for key, o := range map[string]idempotency.Outcome{"json": ok200, "sse": sse200, "empty": {Status: 204}} {
				tok := mustAcquire(t, st[0], key)
				mustComplete(t, st[0], key, tok, o)
				for _, s := range st {
					c := mustBegin(t, s, key, bodyA, false, false, idempotency.Done)
					wantOutcome(t, c, o)
					// A second read is the same: nothing consumed it.
					c = mustBegin(t, s, key, bodyA, true, false, idempotency.Done)
					wantOutcome(t, c, o)
				}
			}
		}},
		{"outcome is copied", idempotency.Settings{}, func(t *testing.T, st []idempotency.Store) {
			o := idempotency.Outcome{Status: 200, Header: [][2]string{{"A", "1"}}, Body: []byte("abc")}
			tok := mustAcquire(t, st[0], "k")
			mustComplete(t, st[0], "k", tok, o)
			o.Body[0], o.Header[0][1] = 'X', "2" // the caller reuses its buffers
			c := mustBegin(t, st[1], "k", bodyA, false, false, idempotency.Done)
			wantOutcome(t, c, idempotency.Outcome{Status: 200, Header: [][2]string{{"A", "1"}}, Body: []byte("abc")})
			c.Outcome.Body[0] = 'Y' // and so may a reader
			c = mustBegin(t, st[1], "k", bodyA, false, false, idempotency.Done)
			wantOutcome(t, c, idempotency.Outcome{Status: 200, Header: [][2]string{{"A", "1"}}, Body: []byte("abc")})
		}},
		{"headers become valid UTF-8", idempotency.Settings{}, func(t *testing.T, st []idempotency.Store) {
			tok := mustAcquire(t, st[0], "k")
			mustComplete(t, st[0], "k", tok, idempotency.Outcome{Status: 200, Header: [][2]string{{"X-\xff", "a\xc3\x28b<&>\u2028é"}}})
			c := mustBegin(t, st[1], "k", bodyA, false, false, idempotency.Done)
			wantOutcome(t, c, idempotency.Outcome{Status: 200, Header: [][2]string{{"X-\uFFFD", "a\uFFFD(b<&>\u2028é"}}})
		}},
		{"mismatch", idempotency.Settings{MaxBody: 8}, func(t *testing.T, st []idempotency.Store) {
			mustAcquire(t, st[0], "held")
			mustBegin(t, st[1], "held", bodyB, false, false, idempotency.Mismatch)
			mustBegin(t, st[1], "held", bodyB, false, true, idempotency.Mismatch)
			tok := mustAcquire(t, st[0], "done")
			mustComplete(t, st[0], "done", tok, idempotency.Outcome{Status: 502, Body: []byte("small")})
			mustBegin(t, st[1], "done", bodyB, false, false, idempotency.Mismatch)
			mustBegin(t, st[1], "done", bodyB, false, true, idempotency.Mismatch)
			tok = mustAcquire(t, st[0], "forgotten")
			mustComplete(t, st[0], "forgotten", tok, ok200)
			mustBegin(t, st[1], "forgotten", bodyB, false, false, idempotency.Mismatch)
			// The mismatch changed nothing.
			mustBegin(t, st[1], "held", bodyA, false, false, idempotency.InFlight)
			mustBegin(t, st[1], "done", bodyA, false, false, idempotency.Done)
			mustBegin(t, st[1], "forgotten", bodyA, false, false, idempotency.Forgotten)
		}},
		{"scopes are apart", idempotency.Settings{}, func(t *testing.T, st []idempotency.Store) {
			for _, sc := range []string{"openai", "anthropic", "", "a{b}c"} {
				c, err := st[0].Begin(t.Context(), sc, "k", bodyA, false, false)
				if err != nil || c.State != idempotency.Acquired {
					t.Errorf("Begin(%q, k) = %v, %v, want Acquired", sc, c.State, err)
				}
			}
		}},
		{"abandon frees the key", idempotency.Settings{}, func(t *testing.T, st []idempotency.Store) {
			tok := mustAcquire(t, st[0], "k")
			if err := st[0].Abandon(t.Context(), scope, "k", tok); err != nil {
				t.Fatalf("Abandon = %v, want nil", err)
			}
			tok2 := mustBegin(t, st[1], "k", bodyB, true, false, idempotency.Acquired).Token
			if tok2 == tok {
				t.Errorf("the new hold's token = the abandoned one's %q", tok)
			}
			if err := st[0].Abandon(t.Context(), scope, "k", tok); !errors.Is(err, idempotency.ErrNotHeld) {
				t.Errorf("Abandon with the abandoned token = %v, want ErrNotHeld", err)
			}
			mustBegin(t, st[0], "k", bodyB, false, false, idempotency.InFlight)
		}},
		{"a token that does not hold stores nothing", idempotency.Settings{}, func(t *testing.T, st []idempotency.Store) {
			ctx := t.Context()
			tok := mustAcquire(t, st[0], "k")
			for _, bad := range []string{"", "0123456789abcdef0123456789abcdef", tok + "x"} {
				if err := st[1].Complete(ctx, scope, "k", bad, ok200); !errors.Is(err, idempotency.ErrNotHeld) {
					t.Errorf("Complete(token %q) = %v, want ErrNotHeld", bad, err)
				}
				if err := st[1].Abandon(ctx, scope, "k", bad); !errors.Is(err, idempotency.ErrNotHeld) {
					t.Errorf("Abandon(token %q) = %v, want ErrNotHeld", bad, err)
				}
			}
			if err := st[1].Complete(ctx, scope, "other", tok, ok200); !errors.Is(err, idempotency.ErrNotHeld) {
				t.Errorf("Complete(another key) = %v, want ErrNotHeld", err)
			}
			mustBegin(t, st[1], "k", bodyA, false, false, idempotency.InFlight)
			mustBegin(t, st[1], "other", bodyA, false, false, idempotency.Acquired)

			mustComplete(t, st[0], "k", tok, sse200)
			if err := st[0].Complete(ctx, scope, "k", tok, ok200); !errors.Is(err, idempotency.ErrNotHeld) {
				t.Errorf("second Complete = %v, want ErrNotHeld", err)
			}
			if err := st[0].Abandon(ctx, scope, "k", tok); !errors.Is(err, idempotency.ErrNotHeld) {
				t.Errorf("Abandon after Complete = %v, want ErrNotHeld", err)
			}
			wantOutcome(t, mustBegin(t, st[1], "k", bodyA, false, false, idempotency.Done), sse200)
		}},
		{"complete refuses a bad status", idempotency.Settings{}, func(t *testing.T, st []idempotency.Store) {
			tok := mustAcquire(t, st[0], "k")
			for _, status := range []int{0, 99, 1000, -200} {
				err := st[0].Complete(t.Context(), scope, "k", tok, idempotency.Outcome{Status: status})
				if err == nil || errors.Is(err, idempotency.ErrNotHeld) {
					t.Errorf("Complete(status %d) = %v, want an error", status, err)
				}
			}
			mustBegin(t, st[1], "k", bodyA, false, false, idempotency.InFlight)
			mustComplete(t, st[0], "k", tok, idempotency.Outcome{Status: 100})
		}},
		{"bad keys", idempotency.Settings{}, func(t *testing.T, st []idempotency.Store) {
			for _, key := range []string{"", strings.Repeat("k", 256)} {
				if _, err := st[0].Begin(t.Context(), scope, key, bodyA, false, false); !errors.Is(err, idempotency.ErrBadKey) {
					t.Errorf("Begin(%d bytes) = %v, want ErrBadKey", len(key), err)
				}
				if _, err := st[0].Wait(t.Context(), scope, key, bodyA, false); !errors.Is(err, idempotency.ErrBadKey) {
					t.Errorf("Wait(%d bytes) = %v, want ErrBadKey", len(key), err)
				}
			}
			for _, key := range []string{strings.Repeat("k", 255), "\x00", "a b\r\n{}:*", "é"} {
				mustAcquire(t, st[0], key)
				mustBegin(t, st[1], key, bodyA, false, false, idempotency.InFlight)
			}
		}},
		{"forgotten over MaxBody", idempotency.Settings{MaxBody: 10}, func(t *testing.T, st []idempotency.Store) {
			tok := mustAcquire(t, st[0], "big")
			mustComplete(t, st[0], "big", tok, idempotency.Outcome{Status: 200, Header: [][2]string{{"A", "b"}}, Body: []byte("12345678901"), Stream: true})
			c := mustBegin(t, st[1], "big", bodyA, false, false, idempotency.Forgotten)
			wantOutcome(t, c, idempotency.Outcome{Status: 200})
			mustBegin(t, st[1], "big", bodyA, false, true, idempotency.Forgotten) // 200: never again

			tok = mustAcquire(t, st[0], "fits")
			o := idempotency.Outcome{Status: 200, Body: []byte("1234567890")}
			mustComplete(t, st[0], "fits", tok, o)
			wantOutcome(t, mustBegin(t, st[1], "fits", bodyA, false, false, idempotency.Done), o)

			tok = mustAcquire(t, st[0], "big502")
			mustComplete(t, st[0], "big502", tok, bad502)
			mustBegin(t, st[1], "big502", bodyA, false, false, idempotency.Forgotten)
			mustBegin(t, st[1], "big502", bodyA, false, true, idempotency.Acquired)
		}},
		{"retry failed", idempotency.Settings{}, func(t *testing.T, st []idempotency.Store) {
			tok := mustAcquire(t, st[0], "k")
			mustComplete(t, st[0], "k", tok, bad502)
			wantOutcome(t, mustBegin(t, st[1], "k", bodyA, false, false, idempotency.Done), bad502)
			tok = mustBegin(t, st[1], "k", bodyA, true, true, idempotency.Acquired).Token
			// The replay holds it like any request.
			if c := mustBegin(t, st[0], "k", bodyA, false, true, idempotency.InFlight); !c.Streaming {
				t.Errorf("Begin during the replay: Streaming = false, want true")
			}
			mustComplete(t, st[1], "k", tok, ok200)
			wantOutcome(t, mustBegin(t, st[0], "k", bodyA, false, true, idempotency.Done), ok200)

			for _, status := range []int{200, 201, 299} {
				key := fmt.Sprint("ok", status)
				tok := mustAcquire(t, st[0], key)
				mustComplete(t, st[0], key, tok, idempotency.Outcome{Status: status})
				mustBegin(t, st[1], key, bodyA, false, true, idempotency.Done)
			}
			for _, status := range []int{199, 300, 429, 500} {
				key := fmt.Sprint("failed", status)
				tok := mustAcquire(t, st[0], key)
				mustComplete(t, st[0], key, tok, idempotency.Outcome{Status: status})
				mustBegin(t, st[1], key, bodyA, false, false, idempotency.Done)
				mustBegin(t, st[1], key, bodyA, false, true, idempotency.Acquired)
			}
		}},
		{"wait returns done", idempotency.Settings{}, func(t *testing.T, st []idempotency.Store) {
			tok := mustAcquire(t, st[0], "k")
			ch := goWait(t, st[1], "k", bodyA)
			notYet(t, ch)
			mustComplete(t, st[0], "k", tok, sse200)
			r := <-ch
			if r.err != nil || r.c.State != idempotency.Done {
				t.Fatalf("Wait = %v, %v, want Done", r.c.State, r.err)
			}
			wantOutcome(t, r.c, sse200)
		}},
		{"wait acquires an abandoned key", idempotency.Settings{}, func(t *testing.T, st []idempotency.Store) {
			tok := mustAcquire(t, st[0], "k")
			ch := goWait(t, st[1], "k", bodyA)
			notYet(t, ch)
			if err := st[0].Abandon(t.Context(), scope, "k", tok); err != nil {
				t.Fatal(err)
			}
			r := <-ch
			if r.err != nil || r.c.State != idempotency.Acquired || r.c.Token == "" {
				t.Fatalf("Wait = %+v, %v, want Acquired with a token", r.c, r.err)
			}
			mustBegin(t, st[0], "k", bodyA, false, false, idempotency.InFlight)
			mustComplete(t, st[1], "k", r.c.Token, ok200)
			wantOutcome(t, mustBegin(t, st[0], "k", bodyA, false, false, idempotency.Done), ok200)
		}},
		{"many waiters", idempotency.Settings{}, func(t *testing.T, st []idempotency.Store) {
			tok := mustAcquire(t, st[0], "k")
			var chs []<-chan waitResult
			for i := range 10 {
				chs = append(chs, goWait(t, st[i%len(st)], "k", bodyA))
			}
			mustComplete(t, st[0], "k", tok, ok200)
			for _, ch := range chs {
				if r := <-ch; r.err != nil || r.c.State != idempotency.Done {
					t.Errorf("Wait = %v, %v, want Done", r.c.State, r.err)
				}
			}
		}},
		{"wait answers at once when not in flight", idempotency.Settings{}, func(t *testing.T, st []idempotency.Store) {
			ctx := t.Context()
			c, err := st[0].Wait(ctx, scope, "free", bodyA, false)
			if err != nil || c.State != idempotency.Acquired || c.Token == "" {
				t.Fatalf("Wait(free key) = %+v, %v, want Acquired", c, err)
			}
			if c, err := st[1].Wait(ctx, scope, "free", bodyB, false); err != nil || c.State != idempotency.Mismatch {
				t.Errorf("Wait(held key, other body) = %v, %v, want Mismatch", c.State, err)
			}
			mustComplete(t, st[0], "free", c.Token, ok200)
			if c, err := st[1].Wait(ctx, scope, "free", bodyA, false); err != nil || c.State != idempotency.Done {
				t.Errorf("Wait(done key) = %v, %v, want Done", c.State, err)
			}
		}},
		{"wait ends with ctx", idempotency.Settings{}, func(t *testing.T, st []idempotency.Store) {
			mustAcquire(t, st[0], "k")
			ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
			defer cancel()
			if _, err := st[1].Wait(ctx, scope, "k", bodyA, false); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Wait = %v, want DeadlineExceeded", err)
			}
			ctx, cancel = context.WithCancel(t.Context())
			cancel()
			if _, err := st[1].Wait(ctx, scope, "k", bodyA, false); !errors.Is(err, context.Canceled) {
				t.Errorf("Wait(cancelled ctx) = %v, want Canceled", err)
			}
		}},
		{"retention expiry", idempotency.Settings{Retention: 200 * time.Millisecond}, func(t *testing.T, st []idempotency.Store) {
			tok := mustAcquire(t, st[0], "k")
			mustComplete(t, st[0], "k", tok, ok200)
			expired := after(200 * time.Millisecond)
			mustBegin(t, st[1], "k", bodyA, false, false, idempotency.Done)
			<-expired
			mustBegin(t, st[1], "k", bodyB, false, false, idempotency.Acquired)
		}},
		{"hold lapses without Run", idempotency.Settings{LockTTL: 300 * time.Millisecond}, func(t *testing.T, st []idempotency.Store) {
			tok := mustAcquire(t, st[0], "k")
			lapsed := after(300 * time.Millisecond)
			mustBegin(t, st[1], "k", bodyA, false, false, idempotency.InFlight)
			<-lapsed
			tok2 := mustAcquire(t, st[1], "k")
			if err := st[0].Complete(t.Context(), scope, "k", tok, ok200); !errors.Is(err, idempotency.ErrNotHeld) {
				t.Errorf("Complete after the hold lapsed = %v, want ErrNotHeld", err)
			}
			mustComplete(t, st[1], "k", tok2, sse200)
			wantOutcome(t, mustBegin(t, st[0], "k", bodyA, false, false, idempotency.Done), sse200)
		}},
		{"wait acquires a lapsed key", idempotency.Settings{LockTTL: 100 * time.Millisecond}, func(t *testing.T, st []idempotency.Store) {
			mustAcquire(t, st[0], "k")
			r := <-goWait(t, st[1], "k", bodyA)
			if r.err != nil || r.c.State != idempotency.Acquired {
				t.Fatalf("Wait = %v, %v, want Acquired once the hold lapsed", r.c.State, r.err)
			}
		}},
		{"Run keeps holds", idempotency.Settings{LockTTL: 300 * time.Millisecond}, func(t *testing.T, st []idempotency.Store) {
			ctx, cancel := context.WithCancel(t.Context())
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				st[0].Run(ctx)
			}()
			defer func() { cancel(); <-stopped }()
			tok := mustAcquire(t, st[0], "k")
			<-after(600 * time.Millisecond)
			mustBegin(t, st[1], "k", bodyA, false, false, idempotency.InFlight)
			mustComplete(t, st[0], "k", tok, ok200)
			// A completed hold is not renewed: its outcome stays.
			<-after(300 * time.Millisecond)
			wantOutcome(t, mustBegin(t, st[1], "k", bodyA, false, false, idempotency.Done), ok200)
		}},
		{"concurrent begins, one winner", idempotency.Settings{}, func(t *testing.T, st []idempotency.Store) {
			const n = 50
			start := make(chan struct{})
			claims := make(chan idempotency.Claim, n)
			errs := make(chan error, n)
			var wg sync.WaitGroup
			for i := range n {
				s := st[i%len(st)]
				wg.Go(func() {
					<-start
					c, err := s.Begin(t.Context(), scope, "k", bodyA, false, false)
					if err != nil {
						errs <- err
						return
					}
					claims <- c
				})
			}
			close(start)
			wg.Wait()
			close(claims)
			close(errs)
			for err := range errs {
				t.Errorf("Begin = %v", err)
			}
			count := map[idempotency.State]int{}
			for c := range claims {
				count[c.State]++
			}
			if count[idempotency.Acquired] != 1 || count[idempotency.InFlight] != n-1 {
				t.Errorf("states = %v, want 1 acquired and %d in flight", count, n-1)
			}
		}},
	}
	for _, kind := range stores {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.run(t, kind.open(t, tc.set, 2))
				})
			}
		})
	}
}

// TestErrorStrings pins the exported errors' messages: the proxy logs them.
func TestErrorStrings(t *testing.T) {
	for err, want := range map[error]string{
		idempotency.ErrBadKey:  "idempotency: key must be 1 to 255 bytes",
		idempotency.ErrNotHeld: "idempotency: key not held",
	} {
		if err.Error() != want {
			t.Errorf("error = %q, want %q", err, want)
		}
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[idempotency.State]string{
		idempotency.Acquired: "acquired", idempotency.InFlight: "in_flight", idempotency.Done: "done",
		idempotency.Mismatch: "mismatch", idempotency.Forgotten: "forgotten", 7: "state(7)", -1: "state(-1)",
	} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}
