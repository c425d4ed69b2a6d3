//go:build !race

package breaker

import (
	"math"
	"testing"
	"time"
)

// allowDoneAllocs is the allocation budget of Allow followed by Done:
// gobreaker's TwoStepCircuitBreaker.Allow returns a closure, and Permit
// carries it without wrapping it in another.
const allowDoneAllocs = 1

func TestAllocs(t *testing.T) {
	b := mustNew(t, Settings{FailureThreshold: math.MaxUint32, OpenFor: time.Hour, HalfOpenRequests: 1})
	for _, o := range []Outcome{Success, Failure, Excluded} {
		if got := testing.AllocsPerRun(1000, func() { mustAllow(t, b).Done(o) }); got != allowDoneAllocs {
			t.Errorf("Allow+Done(%d): %v allocations, want %d", o, got, allowDoneAllocs)
		}
	}
	// A hold that has ended leaves the admitted path as it was.
	clock := newFakeClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	ended := mustNew(t, Settings{FailureThreshold: math.MaxUint32, OpenFor: time.Hour, HalfOpenRequests: 1, Now: clock.now})
	ended.HoldOpenUntil(clock.now().Add(time.Second))
	clock.advance(time.Second)
	if got := testing.AllocsPerRun(1000, func() { mustAllow(t, ended).Done(Success) }); got != allowDoneAllocs {
		t.Errorf("Allow+Done after a hold ended: %v allocations, want %d", got, allowDoneAllocs)
	}

	open := mustNew(t, Settings{FailureThreshold: 1, OpenFor: time.Hour, HalfOpenRequests: 1})
	mustAllow(t, open).Done(Failure)
	held := mustNew(t, Settings{FailureThreshold: 1, OpenFor: time.Hour, HalfOpenRequests: 1})
	until := time.Now().Add(time.Hour)
	held.HoldOpenUntil(until)
	calls := []struct {
		name string
		call func()
	}{
		{"refused Allow", func() {
			if _, err := open.Allow(); err == nil {
				t.Fatal("Allow() succeeded on an open breaker")
			}
		}},
		{"State", func() { open.State() }},
		{"OpenUntil", func() { open.OpenUntil() }},
		{"zero Permit Done", func() { Permit{}.Done(Failure) }},
		{"held Allow", func() {
			if _, err := held.Allow(); err == nil {
				t.Fatal("Allow() succeeded on a held breaker")
			}
		}},
		{"held State", func() { held.State() }},
		{"held OpenUntil", func() { held.OpenUntil() }},
		{"HoldOpenUntil", func() { held.HoldOpenUntil(until) }},
	}
	for _, c := range calls {
		if got := testing.AllocsPerRun(1000, c.call); got != 0 {
			t.Errorf("%s: %v allocations, want 0", c.name, got)
		}
	}
}
