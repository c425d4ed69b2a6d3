package limiter

import (
	"cmp"
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentUse has goroutines reserve, refund and release on shared
// buckets (a provider and one class's ceiling in it) at the same time,
// reading a shared fake clock. The clock moves only between rounds, while
// no goroutine runs, so every operation of a round happens at one instant
// and what the goroutines record is in the order the buckets saw it; the
// quota invariant can then be checked on the record, under -race.
func TestConcurrentUse(t *testing.T) {
	var clock atomic.Int64 // nanoseconds since epoch
	l := NewLocal(func() time.Time { return epoch.Add(time.Duration(clock.Load())) })
	providerLimits := Limits{
		RequestsPerMinute: 600, RequestBurst: time.Second,
		TokensPerMinute: 60000, TokenBurst: 10 * time.Second,
		MaxConcurrency: 6,
	}
	ceilingLimits := scale(providerLimits, 0.5)
	ceilingLimits.MaxConcurrency = 2
	provider := mustBucket(t, l, "p", providerLimits)
	ceiling := mustBucket(t, l, "p#low", ceilingLimits)
	classes := [][]*Bucket{{provider}, {provider, ceiling}}

	type held struct {
		class  int
		tokens int64
		until  int // round to finish in
	}
	type worker struct {
		rng    *rand.Rand
		held   []held
		events [2][]event // what the class-0 and the class-1 requests did
		counts struct{ ok, busy, wait int }
	}
	const (
		workers   = 8
		rounds    = 600
		perRound  = 6
		roundTime = 50 * time.Millisecond
	)
	ws := make([]*worker, workers)
	for i := range ws {
		ws[i] = &worker{rng: rand.New(rand.NewPCG(uint64(i), 7))}
	}
	ctx := context.Background()

	finish := func(w *worker, h held, now time.Duration) {
		bs := classes[h.class]
		if back := w.rng.Int64N(h.tokens + 1); back > 0 {
			if err := l.Adjust(ctx, bs, Cost{Tokens: -back}); err != nil {
				t.Errorf("Adjust: %v", err)
			}
			w.events[h.class] = append(w.events[h.class], event{at: now, tokens: -back})
		}
		if err := l.Release(ctx, bs); err != nil {
			t.Errorf("Release: %v", err)
		}
	}
	step := func(w *worker, round int) {
		now := time.Duration(clock.Load())
		for range perRound {
			kept := w.held[:0]
			for _, h := range w.held {
				if h.until <= round {
					finish(w, h, now)
				} else {
					kept = append(kept, h)
				}
			}
			w.held = kept
			class := w.rng.IntN(2)
			c := Cost{Requests: 1, Tokens: 1 + w.rng.Int64N(400)}
			d, err := l.Reserve(ctx, classes[class], c, Ask{})
			switch {
			case err != nil:
				t.Errorf("Reserve: %v", err)
			case d.Never:
				t.Errorf("Reserve(%+v) = %+v, want it to fit the bursts", c, d)
			case d.OK:
				w.counts.ok++
				w.events[class] = append(w.events[class], event{at: now, requests: c.Requests, tokens: c.Tokens})
				w.held = append(w.held, held{class: class, tokens: c.Tokens, until: round + w.rng.IntN(4)})
			case d.Busy:
				w.counts.busy++
			default:
				w.counts.wait++
			}
		}
	}

	for round := range rounds {
		var wg sync.WaitGroup
		for _, w := range ws {
			wg.Go(func() { step(w, round) })
		}
		wg.Wait()
		var holding int64
		for _, w := range ws {
			holding += int64(len(w.held))
		}
		if got := l.Usage(provider).Inflight; got != holding || got > providerLimits.MaxConcurrency {
			t.Fatalf("round %d: provider Inflight = %d, want %d held, at most %d", round, got, holding, providerLimits.MaxConcurrency)
		}
		if got := l.Usage(ceiling).Inflight; got > ceilingLimits.MaxConcurrency {
			t.Fatalf("round %d: ceiling Inflight = %d, want at most %d", round, got, ceilingLimits.MaxConcurrency)
		}
		clock.Add(int64(time.Duration(ws[0].rng.Int64N(int64(2 * roundTime)))))
	}
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() {
			now := time.Duration(clock.Load())
			for _, h := range w.held {
				finish(w, h, now)
			}
		})
	}
	wg.Wait()

	for _, b := range []*Bucket{provider, ceiling} {
		if got := l.Usage(b).Inflight; got != 0 {
			t.Errorf("bucket %s: Inflight = %d after every Release, want 0", b.Key(), got)
		}
	}
	var all, low []event
	var ok, busy, wait int
	for _, w := range ws {
		all = append(all, w.events[0]...)
		all = append(all, w.events[1]...)
		low = append(low, w.events[1]...)
		ok, busy, wait = ok+w.counts.ok, busy+w.counts.busy, wait+w.counts.wait
	}
	if ok == 0 || busy == 0 || wait == 0 {
		t.Errorf("answers: %d OK, %d Busy, %d to wait; want some of each", ok, busy, wait)
	}
	byTime := func(a, b event) int { return cmp.Compare(a.at, b.at) }
	slices.SortStableFunc(all, byTime)
	slices.SortStableFunc(low, byTime)
	duration := time.Duration(clock.Load())
	checkQuota(t, 0, providerLimits, all, duration)
	checkQuota(t, 0, ceilingLimits, low, duration)
}
