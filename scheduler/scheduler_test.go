package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/limiter"
)

// fixture is a scope with running dispatcher over a real in-process
// limiter.
type fixture struct {
	tb    testing.TB
	lim   *limiter.Local
	scope *Scope
}

func newFixture(tb testing.TB, classes []Class) *fixture {
	tb.Helper()
	lim := limiter.NewLocal(nil)
	return startScope(tb, lim, classes)
}

func startScope(tb testing.TB, lim *limiter.Local, classes []Class) *fixture {
	tb.Helper()
	sc, err := New(Settings{Name: "test", Classes: classes}, lim, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc.Run(ctx)
	}()
	tb.Cleanup(func() {
		cancel()
		<-done
	})
	return &fixture{tb: tb, lim: lim, scope: sc}
}

func mustBucket(tb testing.TB, lim *limiter.Local, key string, l limiter.Limits) *limiter.Bucket {
	tb.Helper()
	b, err := lim.NewBucket(key, l)
	if err != nil {
		tb.Fatalf("NewBucket(%s): %v", key, err)
	}
	return b
}

// twoClasses returns critical (weight 8) and low (weight 1) over buckets.
func twoClasses(buckets ...*limiter.Bucket) []Class {
	return []Class{
		{Name: "critical", MaxQueue: 100, Weight: 8, Buckets: buckets, Own: len(buckets)},
		{Name: "low", MaxQueue: 100, Weight: 1, Buckets: buckets, Own: len(buckets)},
	}
}

// grant is what a waiting goroutine reports once Acquire returns.
type grant struct {
	id     string
	ticket *Ticket
	err    error
}

// wait starts a goroutine that acquires a ticket of class ci and reports
// on out.
func (f *fixture) wait(id string, ci int, cost limiter.Cost, maxWait time.Duration, out chan<- grant) {
	t := &Ticket{Class: ci, Cost: cost, Deadline: time.Now().Add(maxWait)}
	go func() {
		_, err := f.scope.Acquire(context.Background(), t, time.Now())
		out <- grant{id: id, ticket: t, err: err}
	}()
}

// acquireNow acquires a ticket that must be granted at once.
func (f *fixture) acquireNow(ci int, cost limiter.Cost) *Ticket {
	f.tb.Helper()
	t := &Ticket{Class: ci, Cost: cost, Deadline: time.Now().Add(time.Second)}
	if _, err := f.scope.Acquire(context.Background(), t, time.Now()); err != nil {
		f.tb.Fatalf("Acquire = %v, want an immediate grant", err)
	}
	return t
}

// waitQueued waits until class ci has n requests queued. Enqueueing has no
// event of its own to wait on, so this polls the scope's state.
func (f *fixture) waitQueued(ci, n int) {
	f.tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.scope.Queued(ci) != n {
		if time.Now().After(deadline) {
			f.tb.Fatalf("class %d has %d queued, want %d", ci, f.scope.Queued(ci), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func one() limiter.Cost { return limiter.Cost{Requests: 1} }

func TestPriorityAndNoStarvation(t *testing.T) {
	lim := limiter.NewLocal(nil)
	slot := mustBucket(t, lim, "p", limiter.Limits{MaxConcurrency: 1})
	f := startScope(t, lim, twoClasses(slot))

	holder := f.acquireNow(1, one())
	out := make(chan grant, 64)
	for i := range 20 {
		f.wait(fmt.Sprintf("low%d", i), 1, one(), time.Minute, out)
	}
	f.waitQueued(1, 20)
	for i := range 5 {
		f.wait(fmt.Sprintf("critical%d", i), 0, one(), time.Minute, out)
	}
	f.waitQueued(0, 5)

	// One slot: each Finish lets exactly one waiting request go.
	var order []string
	for range 25 {
		f.scope.Finish(context.Background(), holder, limiter.Cost{})
		g := <-out
		if g.err != nil {
			t.Fatalf("%s: Acquire = %v", g.id, g.err)
		}
		order = append(order, g.id[:1])
		holder = g.ticket
	}
	f.scope.Finish(context.Background(), holder, limiter.Cost{})

	// Stride over weights 8:1 from equal passes: critical, one low, then
	// the rest of critical; every low request still goes.
	want := "cl" + "cccc" + "llllllllllllllllllll"[:19]
	got := ""
	for _, o := range order {
		got += o
	}
	if got != want {
		t.Errorf("dispatch order = %s, want %s", got, want)
	}
}

func TestLowProgressesUnderSustainedCritical(t *testing.T) {
	lim := limiter.NewLocal(nil)
	slot := mustBucket(t, lim, "p", limiter.Limits{MaxConcurrency: 1})
	f := startScope(t, lim, twoClasses(slot))

	holder := f.acquireNow(0, one())
	out := make(chan grant, 64)
	for i := range 10 {
		f.wait(fmt.Sprintf("low%d", i), 1, one(), time.Minute, out)
	}
	f.waitQueued(1, 10)
	for i := range 8 {
		f.wait("critical", 0, one(), time.Minute, out)
		_ = i
	}
	f.waitQueued(0, 8)

	lows := 0
	const rounds = 90
	for range rounds {
		f.scope.Finish(context.Background(), holder, limiter.Cost{})
		g := <-out
		if g.err != nil {
			t.Fatalf("Acquire = %v", g.err)
		}
		if g.id == "critical" {
			f.wait("critical", 0, one(), time.Minute, out) // keep critical saturated
			f.waitQueued(0, 8)
		} else {
			lows++
		}
		holder = g.ticket
	}
	// Weights 8:1: one dispatch in nine is low's.
	if lows < rounds/9-1 || lows > rounds/9+1 {
		t.Errorf("low got %d of %d dispatches under sustained critical load, want about %d", lows, rounds, rounds/9)
	}
}

func TestShareCeilingLetsOthersGo(t *testing.T) {
	lim := limiter.NewLocal(nil)
	shared := mustBucket(t, lim, "p", limiter.Limits{MaxConcurrency: 4})
	lowCeiling := mustBucket(t, lim, "p#low", limiter.Limits{MaxConcurrency: 1})
	classes := []Class{
		{Name: "critical", MaxQueue: 10, Weight: 1, Buckets: []*limiter.Bucket{shared}, Own: 1},
		{Name: "low", MaxQueue: 10, Weight: 100, Buckets: []*limiter.Bucket{shared, lowCeiling}, Own: 1},
	}
	f := startScope(t, lim, classes)

	f.acquireNow(1, one()) // low's only slot
	out := make(chan grant, 4)
	f.wait("low", 1, one(), time.Minute, out)
	f.waitQueued(1, 1)
	// low's weight puts it first, but only its own ceiling holds it back:
	// critical must not wait behind it.
	f.wait("critical", 0, one(), time.Minute, out)
	g := <-out
	if g.id != "critical" || g.err != nil {
		t.Fatalf("first grant = %s (%v), want critical", g.id, g.err)
	}
	if n := f.scope.Queued(1); n != 1 {
		t.Errorf("low queued = %d, want 1: its ceiling is full", n)
	}
}

func TestDeadlinePassesInQueue(t *testing.T) {
	lim := limiter.NewLocal(nil)
	slot := mustBucket(t, lim, "p", limiter.Limits{MaxConcurrency: 1})
	f := startScope(t, lim, twoClasses(slot))
	holder := f.acquireNow(0, one())

	out := make(chan grant, 1)
	f.wait("late", 1, one(), 20*time.Millisecond, out)
	g := <-out
	var re *RetryError
	if !errors.Is(g.err, ErrQueueTimeout) || !errors.As(g.err, &re) {
		t.Fatalf("Acquire = %v, want ErrQueueTimeout as a RetryError", g.err)
	}
	if n := f.scope.Queued(1); n != 0 {
		t.Errorf("queued after timeout = %d, want 0", n)
	}
	// The slot was never taken by the expired request.
	f.scope.Finish(context.Background(), holder, limiter.Cost{})
	f.acquireNow(0, one())
}

func TestRefusedUpFront(t *testing.T) {
	lim := limiter.NewLocal(nil)
	rpm := mustBucket(t, lim, "p", limiter.Limits{RequestsPerMinute: 60, RequestBurst: time.Second})
	f := startScope(t, lim, twoClasses(rpm))
	f.acquireNow(0, one())

	// The next request fits in a second; a caller who waits 100ms at most
	// is told so at once rather than after 100ms.
	t0 := time.Now()
	_, err := f.scope.Acquire(context.Background(), &Ticket{Class: 0, Cost: one(), Deadline: t0.Add(100 * time.Millisecond)}, t0)
	var re *RetryError
	if !errors.Is(err, ErrWaitTooLong) || !errors.As(err, &re) {
		t.Fatalf("Acquire = %v, want ErrWaitTooLong", err)
	}
	if re.After < 800*time.Millisecond || re.After > time.Second {
		t.Errorf("RetryAfter = %v, want about 1s", re.After)
	}
}

func TestRefusedUpFrontBehindQueue(t *testing.T) {
	lim := limiter.NewLocal(nil)
	rpm := mustBucket(t, lim, "p", limiter.Limits{RequestsPerMinute: 60, RequestBurst: time.Second})
	f := startScope(t, lim, twoClasses(rpm))
	f.acquireNow(0, one())
	out := make(chan grant, 8)
	for range 5 {
		f.wait("q", 0, one(), time.Minute, out)
	}
	f.waitQueued(0, 5)
	// Five ahead at one per second: a 3s bound cannot be met.
	t0 := time.Now()
	_, err := f.scope.Acquire(context.Background(), &Ticket{Class: 0, Cost: one(), Deadline: t0.Add(3 * time.Second)}, t0)
	var re *RetryError
	if !errors.As(err, &re) || !errors.Is(err, ErrWaitTooLong) {
		t.Fatalf("Acquire = %v, want ErrWaitTooLong", err)
	}
	if re.After < 5*time.Second || re.After > 6*time.Second {
		t.Errorf("RetryAfter = %v, want 5s..6s (five ahead, then this one)", re.After)
	}
}

func TestQueueFull(t *testing.T) {
	lim := limiter.NewLocal(nil)
	slot := mustBucket(t, lim, "p", limiter.Limits{MaxConcurrency: 1})
	classes := twoClasses(slot)
	classes[1].MaxQueue = 2
	f := startScope(t, lim, classes)
	f.acquireNow(0, one())
	out := make(chan grant, 2)
	f.wait("a", 1, one(), time.Minute, out)
	f.wait("b", 1, one(), time.Minute, out)
	f.waitQueued(1, 2)
	_, err := f.scope.Acquire(context.Background(), &Ticket{Class: 1, Cost: one(), Deadline: time.Now().Add(time.Minute)}, time.Now())
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Acquire = %v, want ErrQueueFull", err)
	}
	// Critical has its own queue.
	f.wait("c", 0, one(), time.Minute, out)
	f.waitQueued(0, 1)
}

type goneProbe struct{ gone atomic.Bool }

func (p *goneProbe) Gone() bool { return p.gone.Load() }

func TestClientGoneSpendsNoQuota(t *testing.T) {
	lim := limiter.NewLocal(nil)
	slot := mustBucket(t, lim, "p", limiter.Limits{MaxConcurrency: 1})
	f := startScope(t, lim, twoClasses(slot))
	holder := f.acquireNow(0, one())

	probe := &goneProbe{}
	left := &Ticket{Class: 0, Cost: one(), Deadline: time.Now().Add(time.Minute), Probe: probe}
	out := make(chan grant, 2)
	go func() {
		_, err := f.scope.Acquire(context.Background(), left, time.Now())
		out <- grant{id: "left", ticket: left, err: err}
	}()
	f.waitQueued(0, 1)
	f.wait("stays", 0, one(), time.Minute, out)
	f.waitQueued(0, 2)

	probe.gone.Store(true)
	f.scope.Finish(context.Background(), holder, limiter.Cost{})
	answers := map[string]error{}
	for range 2 {
		g := <-out
		answers[g.id] = g.err
	}
	if err := answers["left"]; !errors.Is(err, ErrClientGone) {
		t.Errorf("left: %v, want ErrClientGone", err)
	}
	if err, ok := answers["stays"]; !ok || err != nil {
		t.Errorf("stays: %v, want granted: the slot was not spent on the gone client", err)
	}
}

func TestTooLarge(t *testing.T) {
	lim := limiter.NewLocal(nil)
	tpm := mustBucket(t, lim, "p", limiter.Limits{TokensPerMinute: 1000, TokenBurst: time.Minute})
	f := startScope(t, lim, twoClasses(tpm))
	_, err := f.scope.Acquire(context.Background(), &Ticket{Class: 0, Cost: limiter.Cost{Requests: 1, Tokens: 5000}, Deadline: time.Now().Add(time.Hour)}, time.Now())
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Acquire = %v, want ErrTooLarge", err)
	}
}

func TestRefundLetsQueuedGoSooner(t *testing.T) {
	lim := limiter.NewLocal(nil)
	tpm := mustBucket(t, lim, "p", limiter.Limits{TokensPerMinute: 6000, TokenBurst: time.Minute})
	f := startScope(t, lim, twoClasses(tpm))
	first := f.acquireNow(0, limiter.Cost{Requests: 1, Tokens: 6000})

	// The next 3000 tokens need 30s of refill; a refund of 4000 unused
	// tokens makes them fit now.
	out := make(chan grant, 1)
	f.wait("next", 0, limiter.Cost{Requests: 1, Tokens: 3000}, time.Minute, out)
	f.waitQueued(0, 1)
	f.scope.Finish(context.Background(), first, limiter.Cost{Tokens: -4000})
	select {
	case g := <-out:
		if g.err != nil {
			t.Fatalf("Acquire = %v", g.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("refund did not let the queued request go")
	}
}

func TestStopRefusesWaiting(t *testing.T) {
	lim := limiter.NewLocal(nil)
	slot := mustBucket(t, lim, "p", limiter.Limits{MaxConcurrency: 1})
	sc, err := New(Settings{Name: "test", Classes: twoClasses(slot)}, lim, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sc.Run(ctx) }()
	f := &fixture{tb: t, lim: lim, scope: sc}
	f.acquireNow(0, one())
	out := make(chan grant, 1)
	f.wait("w", 1, one(), time.Minute, out)
	f.waitQueued(1, 1)
	cancel()
	<-done
	if g := <-out; !errors.Is(g.err, ErrStopped) {
		t.Errorf("Acquire = %v, want ErrStopped", g.err)
	}
	if _, err := sc.Acquire(context.Background(), &Ticket{Class: 0, Cost: one(), Deadline: time.Now().Add(time.Second)}, time.Now()); !errors.Is(err, ErrStopped) {
		t.Errorf("Acquire after stop = %v, want ErrStopped", err)
	}
}

func TestNewRejectsBadSettings(t *testing.T) {
	lim := limiter.NewLocal(nil)
	b := mustBucket(t, lim, "p", limiter.Limits{MaxConcurrency: 1})
	for name, classes := range map[string][]Class{
		"none":              nil,
		"no buckets":        {{Name: "c", MaxQueue: 1, Weight: 1}},
		"no weight":         {{Name: "c", MaxQueue: 1, Buckets: []*limiter.Bucket{b}, Own: 1}},
		"no queue":          {{Name: "c", Weight: 1, Buckets: []*limiter.Bucket{b}, Own: 1}},
		"own beyond":        {{Name: "c", MaxQueue: 1, Weight: 1, Buckets: []*limiter.Bucket{b}, Own: 2}},
		"headroom negative": {{Name: "c", MaxQueue: 1, Weight: 1, Buckets: []*limiter.Bucket{b}, Own: 1, Headroom: -0.1}},
		"headroom 1":        {{Name: "c", MaxQueue: 1, Weight: 1, Buckets: []*limiter.Bucket{b}, Own: 1, Headroom: 1}},
		"headroom NaN":      {{Name: "c", MaxQueue: 1, Weight: 1, Buckets: []*limiter.Bucket{b}, Own: 1, Headroom: math.NaN()}},
		"commit negative":   {{Name: "c", MaxQueue: 1, Weight: 1, Buckets: []*limiter.Bucket{b}, Own: 1, CommitWithin: -time.Second}},
	} {
		if _, err := New(Settings{Name: "s", Classes: classes}, lim, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("New(%s) = nil error", name)
		}
	}
}

// BenchmarkAcquireIdle is the cost of the quota check when nothing waits:
// the path every request takes while quotas are not binding.
func BenchmarkAcquireIdle(b *testing.B) {
	lim := limiter.NewLocal(nil)
	bk := mustBucket(b, lim, "p", limiter.Limits{RequestsPerMinute: 1e12, TokensPerMinute: 1e15,
		RequestBurst: time.Second, TokenBurst: time.Minute, MaxConcurrency: 1 << 40})
	f := startScope(b, lim, twoClasses(bk))
	t := &Ticket{Class: 0, Cost: limiter.Cost{Requests: 1, Tokens: 500}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		now := time.Now()
		t.Deadline = now.Add(time.Second)
		if _, err := f.scope.Acquire(ctx, t, now); err != nil {
			b.Fatal(err)
		}
		f.scope.Finish(ctx, t, limiter.Cost{})
	}
}

// BenchmarkDispatch is the cost per request of queueing and dispatching
// with n requests waiting: one concurrency slot, n goroutines that each
// acquire and finish in a loop, so that every request waits and is handed
// over by the dispatcher.
func BenchmarkDispatch(b *testing.B) {
	for _, n := range []int{1, 4, 64} {
		b.Run(fmt.Sprintf("queued=%d", n), func(b *testing.B) {
			lim := limiter.NewLocal(nil)
			bk := mustBucket(b, lim, "p", limiter.Limits{MaxConcurrency: 1})
			classes := twoClasses(bk)
			classes[0].MaxQueue, classes[1].MaxQueue = 1000, 1000
			f := startScope(b, lim, classes)
			ctx := context.Background()
			var left atomic.Int64
			left.Store(int64(b.N))
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			for i := range n + 1 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					t := &Ticket{Class: i % 2, Cost: one()}
					for left.Add(-1) >= 0 {
						now := time.Now()
						t.Deadline = now.Add(time.Minute)
						if _, err := f.scope.Acquire(ctx, t, now); err != nil {
							b.Error(err)
							return
						}
						f.scope.Finish(ctx, t, limiter.Cost{})
					}
				}()
			}
			wg.Wait()
		})
	}
}

func TestRetryKeepsItsPlaceByAge(t *testing.T) {
	lim := limiter.NewLocal(nil)
	slot := mustBucket(t, lim, "p", limiter.Limits{MaxConcurrency: 1})
	f := startScope(t, lim, twoClasses(slot))
	holder := f.acquireNow(1, one())

	out := make(chan grant, 4)
	f.wait("young", 1, one(), time.Minute, out)
	f.waitQueued(1, 1)
	// A retry of a request that arrived an hour ago goes ahead of it.
	old := &Ticket{Class: 1, Cost: one(), Deadline: time.Now().Add(time.Minute), Arrived: time.Now().Add(-time.Hour)}
	go func() {
		_, err := f.scope.Acquire(context.Background(), old, time.Now())
		out <- grant{id: "old", ticket: old, err: err}
	}()
	f.waitQueued(1, 2)
	f.scope.Finish(context.Background(), holder, limiter.Cost{})
	if g := <-out; g.id != "old" || g.err != nil {
		t.Fatalf("first grant = %s (%v), want the older retry", g.id, g.err)
	} else {
		f.scope.Finish(context.Background(), g.ticket, limiter.Cost{})
	}
	if g := <-out; g.id != "young" {
		t.Errorf("second grant = %s, want young", g.id)
	}
}

// askRecorder is the in-process limiter, recording how each reservation
// asked, for which class (by the key of its last bucket) and whether it
// came from a caller of Acquire (its context carries callerKey) or from
// the dispatcher.
type askRecorder struct {
	*limiter.Local
	mu   sync.Mutex // protects asks
	asks []recordedAsk
}

type recordedAsk struct {
	key    string
	caller bool
	ask    limiter.Ask
}

type callerKey struct{}

func (r *askRecorder) Reserve(ctx context.Context, buckets []*limiter.Bucket, c limiter.Cost, a limiter.Ask) (limiter.Decision, error) {
	r.mu.Lock()
	r.asks = append(r.asks, recordedAsk{key: buckets[len(buckets)-1].Key(), caller: ctx.Value(callerKey{}) != nil, ask: a})
	r.mu.Unlock()
	return r.Local.Reserve(ctx, buckets, c, a)
}

func (r *askRecorder) recorded() []recordedAsk {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recordedAsk(nil), r.asks...)
}

// TestClassAsks checks how each class asks the limiter: on the fast path
// (nothing waits) with its headroom and no commit window, from the
// dispatcher with both.
func TestClassAsks(t *testing.T) {
	lim := limiter.NewLocal(nil)
	rec := &askRecorder{Local: lim}
	slot := mustBucket(t, lim, "p", limiter.Limits{MaxConcurrency: 1})
	lowOwn := mustBucket(t, lim, "p#low", limiter.Limits{}) // tells low's asks apart
	classes := []Class{
		{Name: "critical", MaxQueue: 10, Weight: 8, Buckets: []*limiter.Bucket{slot}, Own: 1, CommitWithin: 250 * time.Millisecond},
		{Name: "low", MaxQueue: 10, Weight: 1, Buckets: []*limiter.Bucket{slot, lowOwn}, Own: 1, Headroom: 0.3, CommitWithin: time.Second},
	}
	sc, err := New(Settings{Name: "test", Classes: classes}, rec, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	f := &fixture{tb: t, lim: lim, scope: sc}

	caller := context.WithValue(context.Background(), callerKey{}, true)
	acquire := func(ci int) (*Ticket, error) {
		tk := &Ticket{Class: ci, Cost: one(), Deadline: time.Now().Add(time.Minute)}
		_, err := sc.Acquire(caller, tk, time.Now())
		return tk, err
	}
	// Fast path for both classes: the slot is free.
	for _, ci := range []int{0, 1} {
		tk, err := acquire(ci)
		if err != nil {
			t.Fatalf("Acquire(class %d) = %v, want a grant", ci, err)
		}
		sc.Finish(context.Background(), tk, limiter.Cost{})
	}
	holder, err := acquire(1)
	if err != nil {
		t.Fatalf("Acquire = %v, want a grant", err)
	}
	// Queued: low (its fast path finds the slot taken), then critical
	// (no fast path while something waits).
	out := make(chan grant, 2)
	for _, ci := range []int{1, 0} {
		go func() {
			tk, err := acquire(ci)
			out <- grant{ticket: tk, err: err}
		}()
		f.waitQueued(ci, 1)
	}
	for range 2 {
		sc.Finish(context.Background(), holder, limiter.Cost{})
		g := <-out
		if g.err != nil {
			t.Fatalf("queued Acquire = %v", g.err)
		}
		holder = g.ticket
	}
	sc.Finish(context.Background(), holder, limiter.Cost{})

	want := map[string]struct{ fast, dispatched limiter.Ask }{
		"p":     {fast: limiter.Ask{}, dispatched: limiter.Ask{CommitWithin: 250 * time.Millisecond}},
		"p#low": {fast: limiter.Ask{Headroom: 0.3}, dispatched: limiter.Ask{Headroom: 0.3, CommitWithin: time.Second}},
	}
	count := map[string]int{}
	for _, r := range rec.recorded() {
		w := want[r.key].dispatched
		if r.caller {
			w = want[r.key].fast
		}
		if r.ask != w {
			t.Errorf("class with bucket %s asked %+v (from a caller: %v), want %+v", r.key, r.ask, r.caller, w)
		}
		count[fmt.Sprint(r.key, " caller=", r.caller)]++
	}
	// Fast path: critical once, low three times (granted twice, then
	// busy); the dispatcher at least once for each queued request.
	if count["p caller=true"] != 1 || count["p#low caller=true"] != 3 || count["p caller=false"] < 1 || count["p#low caller=false"] < 1 {
		t.Errorf("asks by class and origin = %v, want 1 and 3 from callers, at least 1 each from the dispatcher", count)
	}
}

// TestHeadroomKeepsTopForHigherClass: with 90% of the token burst spent,
// a low request (headroom 0.2) waits while a critical one (headroom 0)
// goes at once; a refund that refills the bucket lets low go too.
func TestHeadroomKeepsTopForHigherClass(t *testing.T) {
	lim := limiter.NewLocal(nil)
	// 600k tokens a minute with a minute's burst: one token per 100µs.
	tpm := mustBucket(t, lim, "p", limiter.Limits{TokensPerMinute: 600000, TokenBurst: time.Minute})
	classes := twoClasses(tpm)
	classes[1].Headroom = 0.2
	f := startScope(t, lim, classes)
	tokens := func(n int64) limiter.Cost { return limiter.Cost{Requests: 1, Tokens: n} }
	holder := f.acquireNow(0, tokens(540000))

	// 60000 of 600000 left: low's 100 tokens must leave 120000, which
	// takes 6s of refill.
	out := make(chan grant, 2)
	f.wait("low", 1, tokens(100), time.Minute, out)
	f.waitQueued(1, 1)
	f.wait("critical", 0, tokens(100), time.Minute, out)
	if g := <-out; g.id != "critical" || g.err != nil {
		t.Fatalf("first grant = %s (%v), want critical", g.id, g.err)
	} else {
		f.scope.Finish(context.Background(), g.ticket, limiter.Cost{})
	}
	if n := f.scope.Queued(1); n != 1 {
		t.Fatalf("low queued = %d, want 1: its headroom holds it back", n)
	}
	f.scope.Finish(context.Background(), holder, limiter.Cost{Tokens: -540000})
	if g := <-out; g.id != "low" || g.err != nil {
		t.Fatalf("after the refund: grant = %s (%v), want low", g.id, g.err)
	}
}
