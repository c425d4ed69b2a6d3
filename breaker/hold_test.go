package breaker

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
)

// fakeClock is a Settings.Now that moves only when told.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func checkState(tb testing.TB, b *Breaker, want State, wantUntil time.Time) {
	tb.Helper()
	if got := b.State(); got != want {
		tb.Errorf("State() = %v, want %v", got, want)
	}
	if got := b.OpenUntil(); !got.Equal(wantUntil) {
		tb.Errorf("OpenUntil() = %v, want %v", got, wantUntil)
	}
}

func checkHold(tb testing.TB, b *Breaker, until time.Time, want bool) {
	tb.Helper()
	if got := b.HoldOpenUntil(until); got != want {
		tb.Errorf("HoldOpenUntil(%v) = %v, want %v", until, got, want)
	}
}

func TestHoldOpenUntil(t *testing.T) {
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	newHeld := func(t *testing.T, rec *recorder) (*Breaker, *fakeClock) {
		t.Helper()
		clock := newFakeClock(start)
		b := mustNew(t, Settings{
			FailureThreshold: 1, OpenFor: 90 * time.Second, HalfOpenRequests: 1,
			OnStateChange: rec.hook, Now: clock.now,
		})
		return b, clock
	}

	t.Run("refuses like an open breaker", func(t *testing.T) {
		var rec recorder
		b, _ := newHeld(t, &rec)
		until := start.Add(30 * time.Second)
		checkHold(t, b, until, true)
		for range 3 {
			checkRefused(t, b, gobreaker.ErrOpenState)
		}
		if _, err := b.Allow(); errors.Is(err, gobreaker.ErrTooManyRequests) {
			t.Errorf("Allow() = %v, must not match gobreaker.ErrTooManyRequests while held", err)
		}
		checkState(t, b, Open, until)
		if got := rec.transitions(); len(got) != 0 {
			t.Errorf("transitions = %v, want none: holds are not gobreaker's", got)
		}
	})

	t.Run("expires", func(t *testing.T) {
		var rec recorder
		b, clock := newHeld(t, &rec)
		until := start.Add(30 * time.Second)
		checkHold(t, b, until, true)
		clock.advance(30*time.Second - 1)
		checkRefused(t, b, gobreaker.ErrOpenState)
		clock.advance(1)
		checkState(t, b, Closed, time.Time{})
		mustAllow(t, b).Done(Success)
		if got := b.heldUntil.Load(); got != 0 {
			t.Errorf("heldUntil = %d after the hold ended, want it cleared to 0", got)
		}
		// Refusals counted nothing: one failure (threshold 1) still trips.
		mustAllow(t, b).Done(Failure)
		checkState(t, b, Open, clock.now().Add(90*time.Second))
		if got, want := rec.transitions(), []transition{{Closed, Open}}; len(got) != 1 || got[0] != want[0] {
			t.Errorf("transitions = %v, want %v", got, want)
		}
	})

	t.Run("never shortens", func(t *testing.T) {
		var rec recorder
		b, clock := newHeld(t, &rec)
		long := start.Add(30 * time.Second)
		checkHold(t, b, long, true)
		checkHold(t, b, start.Add(10*time.Second), false)
		checkHold(t, b, long, false)
		checkState(t, b, Open, long)
		clock.advance(20 * time.Second)
		checkRefused(t, b, gobreaker.ErrOpenState)
		longer := long.Add(time.Millisecond)
		checkHold(t, b, longer, true)
		checkState(t, b, Open, longer)
	})

	t.Run("ignores the past", func(t *testing.T) {
		var rec recorder
		b, _ := newHeld(t, &rec)
		for _, until := range []time.Time{{}, time.Unix(0, 0), start.Add(-time.Second), start} {
			checkHold(t, b, until, false)
		}
		checkState(t, b, Closed, time.Time{})
		mustAllow(t, b).Done(Success)
	})

	t.Run("a new hold after one ended", func(t *testing.T) {
		var rec recorder
		b, clock := newHeld(t, &rec)
		checkHold(t, b, start.Add(time.Second), true)
		clock.advance(2 * time.Second)
		// The ended hold is still stored (nothing looked at it): a new
		// one that ends before it would not be later, yet it must count.
		later := clock.now().Add(time.Second)
		checkHold(t, b, later, true)
		checkState(t, b, Open, later)
	})

	t.Run("beyond UnixNano", func(t *testing.T) {
		var rec recorder
		b, _ := newHeld(t, &rec)
		checkHold(t, b, time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), true)
		checkState(t, b, Open, time.Unix(0, math.MaxInt64))
		checkHold(t, b, time.Date(4000, 1, 1, 0, 0, 0, 0, time.UTC), false)
	})

	t.Run("OpenUntil is the later of the local open period and the hold", func(t *testing.T) {
		var rec recorder
		b, clock := newHeld(t, &rec)
		mustAllow(t, b).Done(Failure) // open until start+90s
		local := start.Add(90 * time.Second)
		checkHold(t, b, start.Add(30*time.Second), true)
		checkState(t, b, Open, local)
		checkHold(t, b, start.Add(120*time.Second), true)
		checkState(t, b, Open, start.Add(120*time.Second))
		clock.advance(time.Minute)
		checkRefused(t, b, gobreaker.ErrOpenState)
		if got, want := rec.transitions(), []transition{{Closed, Open}}; len(got) != 1 || got[0] != want[0] {
			t.Errorf("transitions = %v, want %v", got, want)
		}
	})
}

// TestHoldHalfOpen holds a half-open breaker open: no probe goes until the
// hold ends, then the breaker is half-open again with all its probes. The
// breaker's own open period runs on the real clock (gobreaker's); the hold
// on a fake one.
func TestHoldHalfOpen(t *testing.T) {
	var rec recorder
	clock := newFakeClock(time.Now())
	b := mustNew(t, Settings{FailureThreshold: 1, OpenFor: 100 * time.Millisecond, HalfOpenRequests: 2, OnStateChange: rec.hook, Now: clock.now})
	mustAllow(t, b).Done(Failure)
	waitHalfOpen(t, b)

	until := clock.now().Add(time.Minute)
	checkHold(t, b, until, true)
	checkRefused(t, b, gobreaker.ErrOpenState)
	checkState(t, b, Open, until)

	clock.advance(time.Minute)
	checkState(t, b, HalfOpen, time.Time{})
	p1, p2 := mustAllow(t, b), mustAllow(t, b)
	checkRefused(t, b, gobreaker.ErrTooManyRequests)
	p1.Done(Success)
	p2.Done(Success)
	checkState(t, b, Closed, time.Time{})
	want := []transition{{Closed, Open}, {Open, HalfOpen}, {HalfOpen, Closed}}
	if got := rec.transitions(); len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("transitions = %v, want %v", got, want)
	}
}

// TestHoldConcurrent sets holds from many goroutines while others ask the
// breaker (run it with -race): the hold that stands is the latest asked
// for, and the goroutine that asked for it was told it set it.
func TestHoldConcurrent(t *testing.T) {
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := newFakeClock(start)
	b := mustNew(t, Settings{FailureThreshold: 1, OpenFor: time.Hour, HalfOpenRequests: 1, Now: clock.now})
	const workers, perWorker = 8, 2000
	var wg sync.WaitGroup
	var latest atomic.Int64 // the largest offset told true
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				off := time.Duration(1 + (i*workers+w)%(perWorker*workers/2))
				if b.HoldOpenUntil(start.Add(off)) {
					for {
						cur := latest.Load()
						if int64(off) <= cur || latest.CompareAndSwap(cur, int64(off)) {
							break
						}
					}
				}
				if _, err := b.Allow(); !errors.Is(err, ErrOpen) {
					t.Errorf("Allow() = %v while held, want ErrOpen", err)
				}
				b.State()
				b.OpenUntil()
			}
		})
	}
	wg.Wait()
	maxOff := time.Duration(perWorker * workers / 2)
	if got := time.Duration(latest.Load()); got != maxOff {
		t.Errorf("largest hold reported set = %v, want %v", got, maxOff)
	}
	checkState(t, b, Open, start.Add(maxOff))
	clock.advance(maxOff)
	checkState(t, b, Closed, time.Time{})
}
