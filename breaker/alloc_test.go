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

	open := mustNew(t, Settings{FailureThreshold: 1, OpenFor: time.Hour, HalfOpenRequests: 1})
	mustAllow(t, open).Done(Failure)
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
	}
	for _, c := range calls {
		if got := testing.AllocsPerRun(1000, c.call); got != 0 {
			t.Errorf("%s: %v allocations, want 0", c.name, got)
		}
	}
}
