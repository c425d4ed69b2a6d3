// Package scheduler queues requests by priority class in front of a quota
// limiter and dispatches them as soon as the quota allows.
//
// A [Scope] serves one quota scope (a provider, or a model of a provider
// that has limits of its own). Requests of each class wait in their own FIFO
// queue; one dispatcher goroutine per scope ([Scope.Run]) picks the next
// class by stride scheduling over the class weights, so that a class of
// weight 8 goes out eight times as often as a class of weight 1 while both
// wait, a class that was idle starts level with the others instead of
// cashing in its idle time, and no waiting class ever stops. The dispatcher
// asks the limiter for the head request of the chosen class; when the
// quota says "not yet", the whole scope waits for it (head of line), unless
// only the class's own share ceiling said so, in which case the other
// classes go on.
//
// Each class asks the limiter with its own [limiter.Ask]: lower classes
// keep headroom, leaving the top of every bucket to the classes above
// (which matters most across replicas sharing a bucket, where no local
// order can help), and a class may commit a slot a little ahead so that
// replicas racing for the next slot cannot starve it.
//
// Waiting requests cost a list node each and no goroutine of the
// scheduler's: the caller's goroutine blocks in [Scope.Acquire] on its own
// deadline, and the dispatcher sleeps on a timer or a wake-up signal, never
// spinning.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-ai/sluice/limiter"
)

// Limiter is what a scope needs from a quota limiter: a reservation that
// answers "when may this go" for every bucket at once, adjustments after
// the fact, and concurrency slots. [limiter.Local] implements it.
type Limiter interface {
	Reserve(ctx context.Context, buckets []*limiter.Bucket, c limiter.Cost, a limiter.Ask) (limiter.Decision, error)
	Adjust(ctx context.Context, buckets []*limiter.Bucket, delta limiter.Cost) error
	Release(ctx context.Context, buckets []*limiter.Bucket) error
	Estimate(buckets []*limiter.Bucket, c limiter.Cost) time.Duration
}

var _ Limiter = (*limiter.Local)(nil)

// Errors a request may get instead of a grant. Errors carrying a retry
// estimate are [*RetryError]s wrapping ErrQueueFull, ErrWaitTooLong or
// ErrQueueTimeout.
var (
	// ErrQueueFull: the class's queue holds MaxQueue requests already.
	ErrQueueFull = errors.New("scheduler: queue full")
	// ErrWaitTooLong: the request could not go before its deadline even if
	// nothing else arrived, so it was refused without waiting.
	ErrWaitTooLong = errors.New("scheduler: wait would exceed the deadline")
	// ErrQueueTimeout: the request's deadline passed while it waited.
	ErrQueueTimeout = errors.New("scheduler: deadline passed in the queue")
	// ErrTooLarge: the request's cost exceeds what a bucket can ever admit.
	ErrTooLarge = errors.New("scheduler: request exceeds the quota's burst capacity")
	// ErrClientGone: the client went away while the request waited; no
	// quota was spent on it.
	ErrClientGone = errors.New("scheduler: client went away")
	// ErrStopped: the scope stopped (shutdown) while the request waited.
	ErrStopped = errors.New("scheduler: stopped")
)

// RetryError is a refusal with an estimate of when trying again could
// succeed.
type RetryError struct {
	Err   error         // ErrQueueFull, ErrWaitTooLong or ErrQueueTimeout
	After time.Duration // estimated time until the queue ahead has drained
}

func (e *RetryError) Error() string {
	return fmt.Sprintf("%v (retry in about %v)", e.Err, e.After.Round(time.Millisecond))
}

func (e *RetryError) Unwrap() error { return e.Err }

// Class configures one priority class of a scope.
type Class struct {
	// Name labels logs and status.
	Name string
	// MaxQueue caps the requests of this class waiting in the scope. Must
	// be > 0.
	MaxQueue int
	// Weight is the class's share of dispatches while several classes
	// wait. Must be > 0.
	Weight int
	// Buckets are charged for every request of this class, all at once:
	// the scope's shared buckets first, then the class's own share ceilings
	// from index Own on. At least one.
	Buckets []*limiter.Bucket
	// Own is the index of the first bucket that belongs to this class
	// alone; len(Buckets) when there is none. A head request held back only
	// by those lets the other classes go first.
	Own int
	// Headroom is the fraction of every rate bucket's burst a request of
	// this class must leave unused ([limiter.Ask].Headroom), so that the
	// top of each bucket stays free for the classes above, on this replica
	// and on every other one sharing the bucket. It applies to all of
	// Buckets; on the class's own ceilings it only trims the class's own
	// burst. It does not change the stride order: when the class's turn
	// comes and its headroom holds its head request back, the scope waits
	// for it like for any head of line, so the class keeps its share of
	// dispatches; a backlog of the classes above then waits, besides that
	// request's own charge, for the bucket to refill the headroom (up to
	// Headroom × the burst). Zero: none. Must be in [0, 1).
	Headroom float64
	// CommitWithin lets the limiter commit a reservation this far in the
	// future for a request of this class the dispatcher has chosen; the
	// dispatcher waits out the rest before it grants the request
	// ([limiter.Ask].CommitWithin). With a shared limiter the top class
	// sets a few hundred milliseconds, so that it keeps its place while
	// other replicas race for the next slot. A request granted without
	// queueing (nothing waited) never commits ahead. Zero: only
	// reservations that may go now are committed. Must be >= 0.
	CommitWithin time.Duration
}

// Settings configures a [Scope].
type Settings struct {
	// Name labels logs.
	Name string
	// Classes, highest priority first. At least one.
	Classes []Class
}

// Scope queues and dispatches the requests of one quota scope. Create it
// with [New] and run its dispatcher with [Scope.Run]; all methods are safe
// for concurrent use.
type Scope struct {
	name string
	lim  Limiter
	log  *slog.Logger
	wake chan struct{} // capacity 1: a pending "look again"

	mu      sync.Mutex // protects classes' queues and passes, vtime; writes of waiting, stopped
	classes []class
	vtime   float64 // the pass of the last dispatch: where idle classes restart
	// waiting and stopped are read without mu on the fast paths: a stale
	// read only costs a needless hand-off or wake-up, never a lost one,
	// because the slow paths check again under mu.
	waiting atomic.Int64
	stopped atomic.Bool
}

type class struct {
	Class
	stride     float64
	pass       float64
	head, tail *Ticket
	queued     int
	ahead      limiter.Cost // total cost of the queued tickets
	// fast is how a request asks when nothing waits, ask how the
	// dispatcher asks for the class's head request.
	fast, ask limiter.Ask

	inflight atomic.Int64 // granted and not yet finished
}

// New returns a scope over lim.
func New(s Settings, lim Limiter, log *slog.Logger) (*Scope, error) {
	if len(s.Classes) == 0 {
		return nil, fmt.Errorf("scheduler: scope %s: at least one class is required", s.Name)
	}
	sc := &Scope{
		name:    s.Name,
		lim:     lim,
		log:     log,
		wake:    make(chan struct{}, 1),
		classes: make([]class, len(s.Classes)),
	}
	for i, c := range s.Classes {
		if c.MaxQueue <= 0 || c.Weight <= 0 || len(c.Buckets) == 0 || c.Own < 0 || c.Own > len(c.Buckets) {
			return nil, fmt.Errorf("scheduler: scope %s: class %s: need max queue > 0, weight > 0 and at least one bucket", s.Name, c.Name)
		}
		// Written so that NaN fails too.
		if !(c.Headroom >= 0 && c.Headroom < 1) {
			return nil, fmt.Errorf("scheduler: scope %s: class %s: Headroom must be in [0, 1), got %v", s.Name, c.Name, c.Headroom)
		}
		if c.CommitWithin < 0 {
			return nil, fmt.Errorf("scheduler: scope %s: class %s: CommitWithin must be >= 0, got %v", s.Name, c.Name, c.CommitWithin)
		}
		sc.classes[i] = class{
			Class:  c,
			stride: 1 / float64(c.Weight),
			fast:   limiter.Ask{Headroom: c.Headroom},
			ask:    limiter.Ask{Headroom: c.Headroom, CommitWithin: c.CommitWithin},
		}
	}
	return sc, nil
}

// Prober tells whether a waiting request's client has gone away.
type Prober interface {
	// Gone reports whether the client can no longer receive the response.
	// It must be cheap and must not block.
	Gone() bool
}

// Ticket is one request's place in a scope. The caller fills the exported
// fields, passes the ticket to [Scope.Acquire] and, after a grant, to
// [Scope.Finish]. A ticket may be reused after Finish, or after Acquire
// returned an error.
type Ticket struct {
	// Class indexes the scope's classes.
	Class int
	// Cost is the request's estimated cost.
	Cost limiter.Cost
	// Deadline is when the request stops waiting.
	Deadline time.Time
	// Probe, when set, is asked before a request that waited is granted.
	Probe Prober
	// Arrived is when the request first arrived; a retried request queues
	// ahead of everything of its class that arrived after it, keeping its
	// place by age. Zero: the time it is queued.
	Arrived time.Time

	prev, next *Ticket
	state      state // guarded by the scope's mu while the ticket is queued
	// expire is set by the ticket's own deadline while the dispatcher was
	// deciding on it; the dispatcher then answers it with a timeout.
	expire   bool
	enqueued time.Time
	done     chan struct{} // capacity 1: the dispatcher's answer
	err      error         // the answer, written before done is signalled
	timer    *time.Timer
}

type state uint8

const (
	idle state = iota
	queued
	// deciding: the dispatcher is asking the limiter about it. It stays in
	// its queue, and its owner may not take it out: the dispatcher answers
	// it or puts it back, so the ticket (and whatever embeds it) stays
	// valid while the dispatcher reads it without the lock.
	deciding
	answered // granted or refused by the dispatcher
	expired  // removed by its own deadline
)

// Acquire waits until the ticket's request may go, its deadline passes,
// its client is found gone or the scope stops. It returns how long the
// request waited. On success the caller owns the reservation and must call
// [Scope.Finish] once the request is over.
func (s *Scope) Acquire(ctx context.Context, t *Ticket, now time.Time) (time.Duration, error) {
	c := &s.classes[t.Class]
	if s.stopped.Load() {
		return 0, ErrStopped
	}
	if s.waiting.Load() == 0 {
		// Nobody waits: ask directly, without a hand-off to the dispatcher,
		// for a slot that is free now (a wait goes through the queue).
		d, err := s.lim.Reserve(ctx, c.Buckets, t.Cost, c.fast)
		if err != nil {
			return 0, fmt.Errorf("reserving quota for scope %s: %w", s.name, err)
		}
		switch {
		case d.OK:
			c.inflight.Add(1)
			return 0, nil
		case d.Never:
			return 0, ErrTooLarge
		case !d.Busy && d.Wait > t.Deadline.Sub(now):
			return 0, &RetryError{Err: ErrWaitTooLong, After: d.Wait}
		}
	}

	s.mu.Lock()
	if s.stopped.Load() {
		s.mu.Unlock()
		return 0, ErrStopped
	}
	if c.queued >= c.MaxQueue {
		after := s.drainTime(t.Class, limiter.Cost{})
		s.mu.Unlock()
		return 0, &RetryError{Err: ErrQueueFull, After: after}
	}
	if wait := s.drainTime(t.Class, t.Cost); wait > t.Deadline.Sub(now) {
		s.mu.Unlock()
		return 0, &RetryError{Err: ErrWaitTooLong, After: wait}
	}
	s.enqueue(t, now)
	s.mu.Unlock()
	s.notify()

	if t.timer == nil {
		t.timer = time.NewTimer(t.Deadline.Sub(now))
	} else {
		t.timer.Reset(t.Deadline.Sub(now))
	}
	select {
	case <-t.done:
	case <-t.timer.C:
		s.mu.Lock()
		switch t.state {
		case queued:
			s.remove(t)
			t.state = expired
			after := s.drainTime(t.Class, limiter.Cost{})
			s.mu.Unlock()
			s.notify() // the head may have changed
			return time.Since(t.enqueued), &RetryError{Err: ErrQueueTimeout, After: after}
		case deciding:
			t.expire = true // the dispatcher answers, grant or timeout
		}
		s.mu.Unlock()
		<-t.done
	}
	t.timer.Stop()
	t.state = idle
	return time.Since(t.enqueued), t.err
}

// Finish ends a granted request: it returns the concurrency slot and
// corrects the charge by delta (actual minus estimated cost; negative for a
// refund), which may let waiting requests go sooner.
func (s *Scope) Finish(ctx context.Context, t *Ticket, delta limiter.Cost) {
	c := &s.classes[t.Class]
	c.inflight.Add(-1)
	if delta != (limiter.Cost{}) {
		if err := s.lim.Adjust(ctx, c.Buckets, delta); err != nil {
			s.log.Warn("adjusting quota", slog.String("scope", s.name), slog.String("error", err.Error()))
		}
	}
	if err := s.lim.Release(ctx, c.Buckets); err != nil {
		s.log.Warn("releasing concurrency slot", slog.String("scope", s.name), slog.String("error", err.Error()))
	}
	if s.waiting.Load() > 0 {
		s.notify() // capacity came back: someone may fit now
	}
}

// drainTime estimates how long until a request of class ci with cost c
// could go: everything queued in its class and the classes above it goes
// first. It is a lower bound (later arrivals of higher classes and the
// lower classes' share of dispatches only add to it). Requires s.mu held.
func (s *Scope) drainTime(ci int, c limiter.Cost) time.Duration {
	for i := 0; i <= ci; i++ {
		c.Requests += s.classes[i].ahead.Requests
		c.Tokens += s.classes[i].ahead.Tokens
	}
	if c == (limiter.Cost{}) {
		return 0
	}
	return s.lim.Estimate(s.classes[ci].Buckets, c)
}

// enqueue appends t to its class's queue. Requires s.mu held.
func (s *Scope) enqueue(t *Ticket, now time.Time) {
	c := &s.classes[t.Class]
	if c.queued == 0 && c.pass < s.vtime {
		c.pass = s.vtime // no credit for time spent idle
	}
	if t.done == nil {
		t.done = make(chan struct{}, 1)
	}
	t.state, t.err, t.enqueued, t.expire = queued, nil, now, false
	if t.Arrived.IsZero() {
		t.Arrived = now
	}
	// Find the last ticket that arrived no later than t: almost always the
	// tail, since only retries arrive out of order.
	after := c.tail
	for after != nil && after.Arrived.After(t.Arrived) {
		after = after.prev
	}
	t.prev = after
	if after != nil {
		t.next = after.next
		after.next = t
	} else {
		t.next = c.head
		c.head = t
	}
	if t.next != nil {
		t.next.prev = t
	} else {
		c.tail = t
	}
	c.queued++
	c.ahead.Requests += t.Cost.Requests
	c.ahead.Tokens += t.Cost.Tokens
	s.waiting.Add(1)
}

// remove unlinks a queued ticket. Requires s.mu held.
func (s *Scope) remove(t *Ticket) {
	c := &s.classes[t.Class]
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		c.head = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else {
		c.tail = t.prev
	}
	t.prev, t.next = nil, nil
	c.queued--
	c.ahead.Requests -= t.Cost.Requests
	c.ahead.Tokens -= t.Cost.Tokens
	s.waiting.Add(-1)
}

// answer removes a queued ticket and hands it its result; it reports false
// when the ticket had already left by its deadline.
func (s *Scope) answer(t *Ticket, err error) bool {
	s.mu.Lock()
	if t.state != queued && t.state != deciding {
		s.mu.Unlock()
		return false
	}
	s.remove(t)
	t.state = answered
	t.err = err
	if err == nil {
		c := &s.classes[t.Class]
		c.inflight.Add(1)
		s.vtime = c.pass
		c.pass += c.stride
	}
	s.mu.Unlock()
	t.done <- struct{}{}
	return true
}

func (s *Scope) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run dispatches queued requests until ctx is done, then refuses the
// requests still waiting with [ErrStopped] and returns.
func (s *Scope) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		sleep := s.dispatch(ctx)
		if sleep > 0 {
			timer.Reset(sleep)
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			s.stop()
			return
		case <-s.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// stop refuses every waiting request and every later one.
func (s *Scope) stop() {
	s.mu.Lock()
	s.stopped.Store(true)
	var all []*Ticket
	for i := range s.classes {
		for t := s.classes[i].head; t != nil; t = t.next {
			all = append(all, t)
		}
	}
	s.mu.Unlock()
	for _, t := range all {
		s.answer(t, ErrStopped)
	}
}

// retryBackoff is how long the dispatcher waits after the limiter failed
// (a shared limiter's Redis call, say) before asking again.
const retryBackoff = 50 * time.Millisecond

// dispatch grants every head request the quota allows now and returns how
// long to sleep before looking again; zero means until woken.
func (s *Scope) dispatch(ctx context.Context) time.Duration {
	var skip uint64 // classes held back by their own ceiling this round
	var sleep time.Duration
	for {
		s.mu.Lock()
		t := s.pick(skip)
		s.mu.Unlock()
		if t == nil {
			return sleep
		}
		// t is deciding: its owner waits for our answer, so its fields
		// hold still until answer or putBack.
		ci, cost := t.Class, t.Cost
		c := &s.classes[ci]
		if t.Probe != nil && t.Probe.Gone() {
			s.answer(t, ErrClientGone)
			continue
		}
		d, err := s.lim.Reserve(ctx, c.Buckets, cost, c.ask)
		if err != nil {
			s.log.Warn("reserving quota", slog.String("scope", s.name), slog.String("error", err.Error()))
			s.putBack(t)
			return retryBackoff
		}
		switch {
		case d.OK:
			if d.Wait > 0 {
				// A committed future slot: the request waits it out itself.
				sleepCtx(ctx, d.Wait)
			}
			if !s.answer(t, nil) {
				s.undo(ctx, c, cost)
			}
			continue
		case d.Never:
			s.answer(t, ErrTooLarge)
			continue
		}
		if s.putBack(t) {
			continue // its deadline passed meanwhile: answered, look again
		}
		wait := d.Wait // zero when only a concurrency slot is missing: a Finish wakes us
		if !d.Busy && wait <= 0 {
			wait = time.Millisecond // cannot happen with a consistent limiter; never stall on it
		}
		if wait > 0 && (sleep == 0 || wait < sleep) {
			sleep = wait
		}
		if d.Bucket >= c.Own && ci < 64 {
			skip |= 1 << ci // only its own ceiling: let the others go
			continue
		}
		return sleep
	}
}

// putBack returns a ticket the dispatcher decided not to grant yet to its
// queue, or, when its deadline passed while the dispatcher was deciding,
// answers it with a timeout and reports true.
func (s *Scope) putBack(t *Ticket) bool {
	s.mu.Lock()
	if !t.expire {
		t.state = queued
		s.mu.Unlock()
		return false
	}
	s.remove(t)
	t.state = answered
	t.err = &RetryError{Err: ErrQueueTimeout, After: s.drainTime(t.Class, limiter.Cost{})}
	s.mu.Unlock()
	t.done <- struct{}{}
	return true
}

// undo takes back a reservation made for a request that no longer wants it.
func (s *Scope) undo(ctx context.Context, c *class, cost limiter.Cost) {
	if err := s.lim.Adjust(ctx, c.Buckets, limiter.Cost{Requests: -cost.Requests, Tokens: -cost.Tokens}); err != nil {
		s.log.Warn("refunding quota", slog.String("scope", s.name), slog.String("error", err.Error()))
	}
	if err := s.lim.Release(ctx, c.Buckets); err != nil {
		s.log.Warn("releasing concurrency slot", slog.String("scope", s.name), slog.String("error", err.Error()))
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// pick returns the head request of the class with the lowest pass among
// those with requests waiting and not skipped; ties go to the higher
// class. Requires s.mu held.
func (s *Scope) pick(skip uint64) *Ticket {
	best := -1
	for i := range s.classes {
		c := &s.classes[i]
		if c.head == nil || i < 64 && skip&(1<<i) != 0 {
			continue
		}
		if best < 0 || c.pass < s.classes[best].pass {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	t := s.classes[best].head
	t.state = deciding
	return t
}

// ClassStatus is one class's state in a scope.
type ClassStatus struct {
	Name     string `json:"name"`
	Queued   int    `json:"queued"`
	Inflight int64  `json:"inflight"`
}

// Status reports every class's queue depth and requests in flight.
func (s *Scope) Status() []ClassStatus {
	out := make([]ClassStatus, len(s.classes))
	s.mu.Lock()
	for i := range s.classes {
		out[i] = ClassStatus{Name: s.classes[i].Name, Queued: s.classes[i].queued}
	}
	s.mu.Unlock()
	for i := range s.classes {
		out[i].Inflight = s.classes[i].inflight.Load()
	}
	return out
}

// Queued returns how many requests of class ci are waiting.
func (s *Scope) Queued(ci int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.classes[ci].queued
}
