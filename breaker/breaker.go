// Package breaker keeps one circuit breaker per upstream so that Sluice
// stops sending requests to an upstream that keeps failing, and tells the
// caller how long it will keep refusing.
//
// It is a thin layer over gobreaker's [gobreaker.TwoStepCircuitBreaker]
// (v2.4.0): the proxy learns how a request went long after it was let
// through (streams), so the breaker is asked first ([Breaker.Allow]) and told
// later ([Permit.Done]). The invariants kept are gobreaker's: a closed breaker
// opens after [Settings.FailureThreshold] consecutive failures, counting only
// results of requests admitted since the last state change; an open breaker
// refuses everything for [Settings.OpenFor]; a half-open breaker has at most
// [Settings.HalfOpenRequests] probes in flight and closes after that many
// consecutive successes, or reopens on the first failure. An [Excluded]
// outcome neither counts nor resets anything; it only frees its half-open
// probe slot (FIELD-NOTES §4.4, §7.4).
//
// A breaker can also be held open from outside ([Breaker.HoldOpenUntil]):
// in shared mode another replica that saw the upstream fail says until when
// it opened its own breaker, and this one refuses until then too, without
// needing its own run of failures. A hold is a hint layered over the local
// gobreaker, not a state of it: when the hold ends the breaker is whatever
// its own gobreaker says, normally closed. The replica whose breaker opened
// runs the half-open probes; the others simply resume.
package breaker

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Outcome is how one request went, as far as the breaker is concerned.
type Outcome int

// The outcomes a [Permit] is completed with. Any other value counts as
// [Failure].
const (
	// Success means the upstream answered: 2xx, 3xx, or 4xx including 429,
	// which is a quota signal for the limiter, not a sign of a broken upstream.
	Success Outcome = iota
	// Failure means a 5xx, a timeout or a connection error.
	Failure
	// Excluded means neither: the client cancelled, or the request never
	// really reached the upstream's judgement. It neither counts as a failure
	// nor resets the run of consecutive failures, and it frees its half-open
	// probe slot.
	Excluded
)

// State is the state of a [Breaker]. It mirrors gobreaker's states.
type State int

// The states of a [Breaker].
const (
	// Closed lets every request through and counts failures.
	Closed State = iota
	// HalfOpen lets [Settings.HalfOpenRequests] probes through.
	HalfOpen
	// Open refuses every request until [Breaker.OpenUntil].
	Open
)

// String returns "closed", "half-open" or "open", the values used in logs
// and metrics.
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half-open"
	case Open:
		return "open"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Settings configures a [Breaker]. There are no defaults: every number must
// be set.
type Settings struct {
	// Name identifies the breaker in errors from [New]; gobreaker gets it too.
	// It may be empty.
	Name string
	// FailureThreshold is how many consecutive failures open the breaker.
	// It must be >= 1.
	FailureThreshold int
	// OpenFor is how long the breaker stays open before it lets half-open
	// probes through. It must be > 0.
	OpenFor time.Duration
	// HalfOpenRequests is how many probes a half-open breaker lets through;
	// it closes after that many consecutive successes. It must be >= 1.
	HalfOpenRequests int
	// OnStateChange, when set, is called after every transition of this
	// breaker's own gobreaker. It runs under gobreaker's lock (gobreaker.go,
	// setState): it must only set a gauge or log, and never call the
	// breaker, which would deadlock.
	//
	// It is not called when a hold ([Breaker.HoldOpenUntil]) begins or
	// ends. A hold ends by the clock alone, with no call at which to report
	// it, so a gauge set to "open" when a hold began would keep saying so
	// after the breaker let requests through again, for as long as nobody
	// asked. A gauge fed from OnStateChange therefore shows this replica's
	// own breaker: "open" on the replica that saw the failures, "closed" on
	// the replicas it holds open. [Breaker.State] and [Breaker.OpenUntil]
	// include the hold, and so does every refusal.
	OnStateChange func(from, to State)
	// Now is the clock for [Breaker.OpenUntil] and for holds; nil means
	// time.Now. It is called under gobreaker's lock when the breaker opens,
	// and by [Breaker.Allow] only while a hold is set. gobreaker reads
	// time.Now itself to decide when its open period ends, so a clock other
	// than time.Now only moves what OpenUntil reports and when holds end.
	// Its times must lie within the years 1678–2262 (time.Time.UnixNano).
	Now func() time.Time
}

// ErrOpen is returned by [Breaker.Allow] while the breaker is open or held
// open ([Breaker.HoldOpenUntil]), and while it is half-open with all probes
// in flight. The errors returned also match gobreaker.ErrOpenState (open or
// held open) or gobreaker.ErrTooManyRequests (probes in flight) under
// errors.Is.
var ErrOpen = errors.New("breaker: open")

// The refusals, built once so that refusing allocates nothing.
var (
	errOpenState   = fmt.Errorf("%w (%w)", ErrOpen, gobreaker.ErrOpenState)
	errProbesTaken = fmt.Errorf("%w: half-open probes in flight (%w)", ErrOpen, gobreaker.ErrTooManyRequests)
)

// The errors [Permit.Done] hands to gobreaker; they never leave the package.
var (
	errFailure  = errors.New("breaker: upstream failed")
	errExcluded = errors.New("breaker: outcome excluded")
)

// Breaker is a circuit breaker for one upstream. It is safe for concurrent
// use. The zero value is not usable; create one with [New].
type Breaker struct {
	cb       *gobreaker.TwoStepCircuitBreaker[struct{}]
	openFor  time.Duration
	now      func() time.Time
	onChange func(from, to State)
	// openedAt is when the breaker last opened, in Unix nanoseconds from
	// now, or 0 while it is not open. Written only by stateChanged, under
	// gobreaker's lock; read without it.
	openedAt atomic.Int64
	// heldUntil is when the hold set by HoldOpenUntil ends, in Unix
	// nanoseconds, or 0 when there is none. It only grows, except that a
	// reader that finds it over swaps it back to 0 (compare-and-swap, so a
	// newer hold is never lost).
	heldUntil atomic.Int64
}

// New returns a closed breaker. Its error names every invalid setting.
func New(s Settings) (*Breaker, error) {
	var errs []error
	if s.FailureThreshold < 1 || uint64(s.FailureThreshold) > math.MaxUint32 {
		errs = append(errs, fmt.Errorf("breaker %q: FailureThreshold %d: must be in [1, %d]", s.Name, s.FailureThreshold, uint32(math.MaxUint32)))
	}
	if s.OpenFor <= 0 {
		errs = append(errs, fmt.Errorf("breaker %q: OpenFor %v: must be > 0", s.Name, s.OpenFor))
	}
	if s.HalfOpenRequests < 1 || uint64(s.HalfOpenRequests) > math.MaxUint32 {
		errs = append(errs, fmt.Errorf("breaker %q: HalfOpenRequests %d: must be in [1, %d]", s.Name, s.HalfOpenRequests, uint32(math.MaxUint32)))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	b := &Breaker{openFor: s.OpenFor, now: s.Now, onChange: s.OnStateChange}
	if b.now == nil {
		b.now = time.Now
	}
	threshold := uint32(s.FailureThreshold)
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        s.Name,
		MaxRequests: uint32(s.HalfOpenRequests),
		// Interval 0: counts are cleared only on state changes, which is all
		// a run of consecutive failures needs.
		Timeout: s.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= threshold
		},
		OnStateChange: b.stateChanged,
		IsSuccessful:  func(err error) bool { return err == nil },
		IsExcluded:    func(err error) bool { return errors.Is(err, errExcluded) },
	})
	return b, nil
}

// stateChanged is gobreaker's OnStateChange; it runs under gobreaker's lock.
func (b *Breaker) stateChanged(_ string, from, to gobreaker.State) {
	if to == gobreaker.StateOpen {
		b.openedAt.Store(b.now().UnixNano())
	} else {
		b.openedAt.Store(0)
	}
	if b.onChange != nil {
		b.onChange(fromGobreaker(from), fromGobreaker(to))
	}
}

func fromGobreaker(s gobreaker.State) State {
	switch s {
	case gobreaker.StateHalfOpen:
		return HalfOpen
	case gobreaker.StateOpen:
		return Open
	}
	return Closed
}

// Permit is the breaker's leave to send one request. The caller must call
// [Permit.Done] exactly once, when it knows the request's [Outcome]. A
// Permit is a small value: copy it freely, but complete only one copy.
//
// The zero Permit, which [Breaker.Allow] returns on refusal, is not leave to
// send anything; its Done does nothing.
type Permit struct {
	done func(error)
}

// Done reports the outcome of the request. Outcomes of requests admitted
// before the breaker last changed state are ignored (gobreaker's
// generations), so a slow failure cannot reopen a breaker that has since
// closed. Calling Done more than once (on one Permit or on copies of it)
// counts the outcome more than once.
func (p Permit) Done(o Outcome) {
	if p.done == nil {
		return
	}
	switch o {
	case Success:
		p.done(nil)
	case Excluded:
		p.done(errExcluded)
	default:
		p.done(errFailure)
	}
}

// Allow asks to send one request. On success the caller must call
// [Permit.Done] on the result exactly once. On refusal it returns the zero
// Permit and an error matching [ErrOpen]; [Breaker.OpenUntil] then says when
// the open period or the hold ends (zero when the breaker is half-open with
// all probes in flight, or has just turned half-open).
//
// A hold ([Breaker.HoldOpenUntil]) is checked first, with one atomic load
// when there is none, and refuses without asking gobreaker.
//
// Allow returns a Permit rather than a done func(Outcome) because wrapping
// gobreaker's done callback in a second closure would cost a second
// allocation per request; a Permit costs only gobreaker's one.
func (b *Breaker) Allow() (Permit, error) {
	if b.held() {
		return Permit{}, errOpenState
	}
	done, err := b.cb.Allow()
	if err != nil {
		if errors.Is(err, gobreaker.ErrTooManyRequests) {
			return Permit{}, errProbesTaken
		}
		return Permit{}, errOpenState
	}
	return Permit{done: done}, nil
}

// State returns the breaker's state: [Open] while a hold lasts
// ([Breaker.HoldOpenUntil]), otherwise its own gobreaker's. An open breaker
// whose open period has passed reports (and becomes) [HalfOpen].
func (b *Breaker) State() State {
	if b.held() {
		return Open
	}
	return fromGobreaker(b.cb.State())
}

// OpenUntil returns when the breaker lets requests through again: the later
// of the end of its own open period (the moment it opened, by
// [Settings.Now], plus [Settings.OpenFor]) and the end of a hold. It returns
// the zero time unless the breaker is open or held open.
func (b *Breaker) OpenUntil() time.Time {
	// gobreaker turns open into half-open lazily, on the next call that looks
	// at the state; State makes that happen, and stateChanged clears openedAt.
	b.cb.State()
	var until time.Time
	if ns := b.openedAt.Load(); ns != 0 {
		until = time.Unix(0, ns).Add(b.openFor)
	}
	if h := b.heldUntil.Load(); h != 0 && b.now().UnixNano() < h {
		if held := time.Unix(0, h); held.After(until) {
			until = held
		}
	}
	return until
}

// maxTime is the latest time whose UnixNano is defined.
var maxTime = time.Unix(0, math.MaxInt64)

// HoldOpenUntil holds the breaker open until the given moment, by
// [Settings.Now]: until then [Breaker.Allow] refuses with the same errors as
// an open breaker, [Breaker.State] reports [Open] and [Breaker.OpenUntil]
// reports at least until. It is meant for a hint from another replica whose
// own breaker for the same upstream opened (package cluster).
//
// A hold only ever extends: HoldOpenUntil reports whether it moved the end
// of the hold later. An until not after now, or not after the current
// hold's end, changes nothing. The breaker's own open period is not
// compared: a hold that ends before it is kept, and changes nothing.
//
// A hold does not touch gobreaker: nothing is counted, the breaker does not
// trip, and when the hold ends the breaker is whatever its own state is,
// normally closed, so this replica resumes sending at once while the one
// that opened its breaker probes. [Settings.OnStateChange] is not called
// for holds (see there). HoldOpenUntil allocates nothing.
func (b *Breaker) HoldOpenUntil(until time.Time) bool {
	now := b.now()
	if !until.After(now) {
		return false
	}
	ns := int64(math.MaxInt64)
	if until.Before(maxTime) {
		ns = until.UnixNano()
	}
	for {
		cur := b.heldUntil.Load()
		if ns <= cur {
			return false
		}
		if b.heldUntil.CompareAndSwap(cur, ns) {
			return true
		}
	}
}

// held reports whether a hold lasts. It costs one atomic load when there is
// none, so that Allow stays cheap; a hold found over is cleared so that the
// next call costs only that load again.
func (b *Breaker) held() bool {
	h := b.heldUntil.Load()
	if h == 0 {
		return false
	}
	if b.now().UnixNano() < h {
		return true
	}
	b.heldUntil.CompareAndSwap(h, 0)
	return false
}
