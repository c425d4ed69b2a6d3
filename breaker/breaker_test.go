package breaker

import (
	"errors"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
)

type transition struct{ from, to State }

// recorder is an OnStateChange hook that remembers transitions. It takes
// its own lock under gobreaker's: tests must not call the breaker while
// holding r.mu (they never do; transitions copies and returns).
type recorder struct {
	mu  sync.Mutex
	got []transition
}

func (r *recorder) hook(from, to State) {
	r.mu.Lock()
	r.got = append(r.got, transition{from, to})
	r.mu.Unlock()
}

func (r *recorder) transitions() []transition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func mustNew(tb testing.TB, s Settings) *Breaker {
	tb.Helper()
	b, err := New(s)
	if err != nil {
		tb.Fatalf("New(%+v) = %v", s, err)
	}
	return b
}

func mustAllow(tb testing.TB, b *Breaker) Permit {
	tb.Helper()
	p, err := b.Allow()
	if err != nil {
		tb.Fatalf("Allow() = %v in state %v, want a permit", err, b.State())
	}
	return p
}

// checkRefused checks that Allow refuses with ErrOpen and the gobreaker
// error cause.
func checkRefused(tb testing.TB, b *Breaker, cause error) {
	tb.Helper()
	p, err := b.Allow()
	if !errors.Is(err, ErrOpen) || !errors.Is(err, cause) {
		tb.Fatalf("Allow() = %v, want an error matching ErrOpen and %q", err, cause)
	}
	if p.done != nil {
		tb.Errorf("Allow() refused with a non-zero Permit")
	}
	p.Done(Failure) // the zero Permit's Done does nothing
}

// waitHalfOpen waits for the open period to end, by the breaker's own
// account, and for gobreaker to agree.
func waitHalfOpen(tb testing.TB, b *Breaker) {
	tb.Helper()
	until := b.OpenUntil()
	if until.IsZero() {
		tb.Fatalf("OpenUntil() is zero in state %v, want the end of the open period", b.State())
	}
	<-time.NewTimer(time.Until(until)).C
	deadline := time.Now().Add(5 * time.Second)
	for b.State() != HalfOpen {
		if time.Now().After(deadline) {
			tb.Fatalf("State() = %v 5s after OpenUntil %v, want half-open", b.State(), until)
		}
		runtime.Gosched()
	}
}

func parseOutcome(tb testing.TB, c byte) Outcome {
	switch c {
	case 'S':
		return Success
	case 'F':
		return Failure
	case 'X':
		return Excluded
	}
	tb.Fatalf("bad outcome %q", c)
	return 0
}

func TestTrip(t *testing.T) {
	tests := []struct {
		name      string
		threshold int
		outcomes  string // S success, F failure, X excluded
		states    string // c closed, o open: the state after each outcome
	}{
		{"threshold 1", 1, "F", "o"},
		{"threshold 3", 3, "FFF", "cco"},
		{"success resets", 3, "FFSFFSFFF", "cccccccco"},
		{"excluded neither counts nor resets", 3, "FXFXXF", "ccccco"},
		{"excluded only", 1, "XXXXX", "ccccc"},
		{"429 is a success", 1, strings.Repeat("S", 100), strings.Repeat("c", 100)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec recorder
			b := mustNew(t, Settings{
				FailureThreshold: tt.threshold, OpenFor: time.Hour, HalfOpenRequests: 1,
				OnStateChange: rec.hook,
			})
			for i := range len(tt.outcomes) {
				mustAllow(t, b).Done(parseOutcome(t, tt.outcomes[i]))
				want := Closed
				if tt.states[i] == 'o' {
					want = Open
				}
				if got := b.State(); got != want {
					t.Fatalf("after %s: State() = %v, want %v", tt.outcomes[:i+1], got, want)
				}
			}
			var want []transition
			if strings.HasSuffix(tt.states, "o") {
				want = append(want, transition{Closed, Open})
				checkRefused(t, b, gobreaker.ErrOpenState)
			}
			if got := rec.transitions(); !slices.Equal(got, want) {
				t.Errorf("transitions = %v, want %v", got, want)
			}
		})
	}
}

// TestStaleOutcomes checks that outcomes of requests admitted before a
// state change are ignored.
func TestStaleOutcomes(t *testing.T) {
	var rec recorder
	b := mustNew(t, Settings{FailureThreshold: 2, OpenFor: time.Hour, HalfOpenRequests: 1, OnStateChange: rec.hook})
	ps := []Permit{mustAllow(t, b), mustAllow(t, b), mustAllow(t, b), mustAllow(t, b)}
	ps[0].Done(Failure)
	ps[1].Done(Failure)
	ps[2].Done(Success)
	ps[3].Done(Failure)
	if got := b.State(); got != Open {
		t.Fatalf("State() = %v, want open", got)
	}
	if got, want := rec.transitions(), []transition{{Closed, Open}}; !slices.Equal(got, want) {
		t.Errorf("transitions = %v, want %v", got, want)
	}
}

func TestOpen(t *testing.T) {
	opened := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	var rec recorder
	b := mustNew(t, Settings{
		Name: "openai", FailureThreshold: 2, OpenFor: 90 * time.Second, HalfOpenRequests: 1,
		OnStateChange: rec.hook,
		Now:           func() time.Time { return opened },
	})
	if got := b.OpenUntil(); !got.IsZero() {
		t.Errorf("closed: OpenUntil() = %v, want zero", got)
	}
	mustAllow(t, b).Done(Failure)
	mustAllow(t, b).Done(Failure)

	if got := b.State(); got != Open {
		t.Errorf("State() = %v, want open", got)
	}
	checkRefused(t, b, gobreaker.ErrOpenState)
	if _, err := b.Allow(); errors.Is(err, gobreaker.ErrTooManyRequests) {
		t.Errorf("Allow() = %v, must not match gobreaker.ErrTooManyRequests while open", err)
	}
	if got, want := b.OpenUntil(), opened.Add(90*time.Second); !got.Equal(want) {
		t.Errorf("OpenUntil() = %v, want %v", got, want)
	}
	if got, want := rec.transitions(), []transition{{Closed, Open}}; !slices.Equal(got, want) {
		t.Errorf("transitions = %v, want %v", got, want)
	}
}

// newOpen returns a breaker on the real clock that has just opened, and
// checks OpenUntil against the moments around the failure that opened it.
func newOpen(t *testing.T, rec *recorder) *Breaker {
	t.Helper()
	const openFor = 100 * time.Millisecond
	b := mustNew(t, Settings{FailureThreshold: 1, OpenFor: openFor, HalfOpenRequests: 2, OnStateChange: rec.hook})
	p := mustAllow(t, b)
	before := time.Now()
	p.Done(Failure)
	after := time.Now()
	checkOpenUntil(t, b, before.Add(openFor), after.Add(openFor))
	return b
}

func checkOpenUntil(t *testing.T, b *Breaker, earliest, latest time.Time) {
	t.Helper()
	if got := b.OpenUntil(); got.Before(earliest) || got.After(latest) {
		t.Errorf("OpenUntil() = %v, want within [%v, %v]", got, earliest, latest)
	}
}

func TestHalfOpen(t *testing.T) {
	t.Run("admits HalfOpenRequests probes", func(t *testing.T) {
		t.Parallel()
		var rec recorder
		b := newOpen(t, &rec)
		waitHalfOpen(t, b)
		if got := b.OpenUntil(); !got.IsZero() {
			t.Errorf("half-open: OpenUntil() = %v, want zero", got)
		}
		mustAllow(t, b)
		mustAllow(t, b)
		checkRefused(t, b, gobreaker.ErrTooManyRequests)
		if _, err := b.Allow(); errors.Is(err, gobreaker.ErrOpenState) {
			t.Errorf("Allow() = %v, must not match gobreaker.ErrOpenState while half-open", err)
		}
		if got := b.State(); got != HalfOpen {
			t.Errorf("State() = %v, want half-open", got)
		}
		if got := b.OpenUntil(); !got.IsZero() {
			t.Errorf("half-open, full: OpenUntil() = %v, want zero", got)
		}
		want := []transition{{Closed, Open}, {Open, HalfOpen}}
		if got := rec.transitions(); !slices.Equal(got, want) {
			t.Errorf("transitions = %v, want %v", got, want)
		}
	})
	t.Run("successes close it", func(t *testing.T) {
		t.Parallel()
		var rec recorder
		b := newOpen(t, &rec)
		waitHalfOpen(t, b)
		p1, p2 := mustAllow(t, b), mustAllow(t, b)
		p1.Done(Success)
		if got := b.State(); got != HalfOpen {
			t.Errorf("after 1 of 2 successes: State() = %v, want half-open", got)
		}
		p2.Done(Success)
		if got := b.State(); got != Closed {
			t.Errorf("after 2 of 2 successes: State() = %v, want closed", got)
		}
		if got := b.OpenUntil(); !got.IsZero() {
			t.Errorf("closed: OpenUntil() = %v, want zero", got)
		}
		mustAllow(t, b).Done(Success)
		want := []transition{{Closed, Open}, {Open, HalfOpen}, {HalfOpen, Closed}}
		if got := rec.transitions(); !slices.Equal(got, want) {
			t.Errorf("transitions = %v, want %v", got, want)
		}
	})
	t.Run("a failure reopens it", func(t *testing.T) {
		t.Parallel()
		var rec recorder
		b := newOpen(t, &rec)
		waitHalfOpen(t, b)
		p1, p2 := mustAllow(t, b), mustAllow(t, b)
		before := time.Now()
		p1.Done(Failure)
		after := time.Now()
		p2.Done(Success) // admitted before the reopening: ignored
		if got := b.State(); got != Open {
			t.Errorf("State() = %v, want open", got)
		}
		checkOpenUntil(t, b, before.Add(100*time.Millisecond), after.Add(100*time.Millisecond))
		checkRefused(t, b, gobreaker.ErrOpenState)
		want := []transition{{Closed, Open}, {Open, HalfOpen}, {HalfOpen, Open}}
		if got := rec.transitions(); !slices.Equal(got, want) {
			t.Errorf("transitions = %v, want %v", got, want)
		}
	})
	t.Run("an excluded probe frees its slot", func(t *testing.T) {
		t.Parallel()
		var rec recorder
		b := newOpen(t, &rec)
		waitHalfOpen(t, b)
		p1, p2 := mustAllow(t, b), mustAllow(t, b)
		p1.Done(Excluded)
		p3 := mustAllow(t, b)
		checkRefused(t, b, gobreaker.ErrTooManyRequests)
		p2.Done(Success)
		p3.Done(Success)
		if got := b.State(); got != Closed {
			t.Errorf("State() = %v, want closed", got)
		}
	})
}

func TestNew(t *testing.T) {
	valid := Settings{Name: "openai", FailureThreshold: 5, OpenFor: 30 * time.Second, HalfOpenRequests: 2}
	tests := []struct {
		name   string
		modify func(*Settings)
		want   []string // substrings of the error; none: valid
	}{
		{"valid", func(*Settings) {}, nil},
		{"smallest", func(s *Settings) { *s = Settings{FailureThreshold: 1, OpenFor: 1, HalfOpenRequests: 1} }, nil},
		{"FailureThreshold 0", func(s *Settings) { s.FailureThreshold = 0 },
			[]string{`breaker "openai": FailureThreshold 0: must be in [1, 4294967295]`}},
		{"FailureThreshold negative", func(s *Settings) { s.FailureThreshold = -1 }, []string{"FailureThreshold -1"}},
		{"OpenFor 0", func(s *Settings) { s.OpenFor = 0 }, []string{`breaker "openai": OpenFor 0s: must be > 0`}},
		{"OpenFor negative", func(s *Settings) { s.OpenFor = -time.Second }, []string{"OpenFor -1s"}},
		{"HalfOpenRequests 0", func(s *Settings) { s.HalfOpenRequests = 0 },
			[]string{`breaker "openai": HalfOpenRequests 0: must be in [1, 4294967295]`}},
		{"zero Settings", func(s *Settings) { *s = Settings{} },
			[]string{`breaker "": FailureThreshold 0`, "OpenFor 0s", "HalfOpenRequests 0"}},
	}
	if math.MaxInt > math.MaxUint32 {
		tests = append(tests,
			struct {
				name   string
				modify func(*Settings)
				want   []string
			}{"beyond uint32", func(s *Settings) {
				s.FailureThreshold, s.HalfOpenRequests = math.MaxInt, math.MaxInt
			}, []string{"FailureThreshold 9223372036854775807", "HalfOpenRequests 9223372036854775807"}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := valid
			tt.modify(&s)
			b, err := New(s)
			if tt.want == nil {
				if err != nil || b == nil {
					t.Fatalf("New(%+v) = %v, %v; want a breaker", s, b, err)
				}
				if got := b.State(); got != Closed {
					t.Errorf("new breaker: State() = %v, want closed", got)
				}
				return
			}
			if err == nil || b != nil {
				t.Fatalf("New(%+v) = %v, %v; want an error", s, b, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New(%+v) = %q, want it to contain %q", s, err, w)
				}
			}
		})
	}
}

func TestStrings(t *testing.T) {
	if got, want := ErrOpen.Error(), "breaker: open"; got != want {
		t.Errorf("ErrOpen = %q, want %q", got, want)
	}
	for _, tt := range []struct {
		s    State
		gs   gobreaker.State
		want string
	}{
		{Closed, gobreaker.StateClosed, "closed"},
		{HalfOpen, gobreaker.StateHalfOpen, "half-open"},
		{Open, gobreaker.StateOpen, "open"},
	} {
		if got := tt.s.String(); got != tt.want || got != tt.gs.String() {
			t.Errorf("%d.String() = %q, want %q (gobreaker: %q)", int(tt.s), got, tt.want, tt.gs.String())
		}
		if got := fromGobreaker(tt.gs); got != tt.s {
			t.Errorf("fromGobreaker(%v) = %v, want %v", tt.gs, got, tt.s)
		}
	}
	if got, want := State(7).String(), "State(7)"; got != want {
		t.Errorf("State(7).String() = %q, want %q", got, want)
	}
}

// TestConcurrent runs Allow and Done from many goroutines through many
// transitions (run it with -race) and checks that the transitions the hook
// saw form a legal sequence.
func TestConcurrent(t *testing.T) {
	var rec recorder
	b := mustNew(t, Settings{FailureThreshold: 3, OpenFor: time.Millisecond, HalfOpenRequests: 2, OnStateChange: rec.hook})
	const workers, perWorker = 8, 3000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if s := b.State(); s != Open && s != HalfOpen && s != Closed {
				t.Errorf("State() = %v", s)
			}
			b.OpenUntil()
		}
	}()
	for w := range workers {
		wg.Go(func() {
			var held []Permit
			for i := range perWorker {
				p, err := b.Allow()
				if err != nil {
					if !errors.Is(err, ErrOpen) {
						t.Errorf("Allow() = %v, want ErrOpen", err)
					}
					continue
				}
				held = append(held, p)
				if (i+w)%3 != 0 { // hold some permits across the next Allow
					continue
				}
				for j, p := range held {
					switch (i*7 + j*13 + w) % 10 {
					case 0, 1, 2, 3:
						p.Done(Failure)
					case 4:
						p.Done(Excluded)
					default:
						p.Done(Success)
					}
				}
				held = held[:0]
			}
			for _, p := range held {
				p.Done(Success)
			}
		})
	}
	wg.Wait()
	close(stop)
	<-readerDone

	got := rec.transitions()
	if len(got) == 0 {
		t.Fatal("no transitions, want the breaker to open at least once")
	}
	legal := map[transition]bool{{Closed, Open}: true, {Open, HalfOpen}: true, {HalfOpen, Open}: true, {HalfOpen, Closed}: true}
	prev := Closed
	for i, tr := range got {
		if tr.from != prev || !legal[tr] {
			t.Fatalf("transition %d of %d: %v → %v after %v, want a legal transition from %v", i, len(got), tr.from, tr.to, prev, prev)
		}
		prev = tr.to
	}
	t.Logf("%d transitions", len(got))
}
