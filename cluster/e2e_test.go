package cluster_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/sluice-ai/sluice/breaker"
	"github.com/sluice-ai/sluice/cluster"
	"github.com/sluice-ai/sluice/internal/redistest"
)

// waitTimeout bounds every wait for something to happen; nothing sleeps.
const waitTimeout = 15 * time.Second

// offsetClock is the real clock moved forward on demand, so that a hold
// can end without waiting for it.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) now() time.Time     { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *offsetClock) setNow(t time.Time) { c.off.Store(int64(time.Until(t))) }

// node is one replica: a breaker for "openai", wired to a BreakerSync the
// way main wires them.
type node struct {
	brk      *breaker.Breaker
	sync     *cluster.BreakerSync
	changes  atomic.Int32  // OnStateChange calls
	held     chan struct{} // a hold was set by a hint
	clock    offsetClock
	runErr   chan error
	pumpDone chan struct{}
}

func startNode(t *testing.T, srv *redistest.Server, replica string) *node {
	t.Helper()
	n := &node{held: make(chan struct{}, 10), runErr: make(chan error, 1), pumpDone: make(chan struct{})}
	// opened is signalled under gobreaker's lock: a non-blocking send, and
	// nothing else. The pump below does the I/O.
	opened := make(chan struct{}, 1)
	b, err := breaker.New(breaker.Settings{
		Name: "openai", FailureThreshold: 2, OpenFor: time.Minute, HalfOpenRequests: 1,
		Now: n.clock.now,
		OnStateChange: func(from, to breaker.State) {
			n.changes.Add(1)
			if to == breaker.Open {
				select {
				case opened <- struct{}{}:
				default:
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	n.brk = b
	n.sync = cluster.NewBreakerSync(srv.Client(t), "sluice:", replica, 5*time.Second, slog.New(slog.DiscardHandler))

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		n.runErr <- n.sync.Run(ctx, []string{"openai"}, func(provider string, until time.Time) {
			if provider == "openai" && n.brk.HoldOpenUntil(until) {
				n.held <- struct{}{}
			}
		})
	}()
	go func() {
		defer close(n.pumpDone)
		for {
			select {
			case <-ctx.Done():
				return
			case <-opened:
				if until := n.brk.OpenUntil(); !until.IsZero() {
					if err := n.sync.Publish(ctx, "openai", until); err != nil {
						t.Errorf("replica %s: %v", replica, err)
					}
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-n.pumpDone
		if err := <-n.runErr; !errors.Is(err, context.Canceled) {
			t.Errorf("replica %s: Run() = %v, want context.Canceled", replica, err)
		}
	})
	return n
}

// TestBreakersShareOpening: A's breaker opens after failures and publishes
// from a goroutine its OnStateChange wakes; B's breaker, which saw no
// failure, refuses until the same moment, then lets requests through again
// (its own breaker closed), without a state change of its own.
func TestBreakersShareOpening(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a := startNode(t, srv, "a")
	// B may or may not be subscribed yet when A publishes: it learns the
	// hint from the channel, or from the key when its subscription is
	// confirmed.
	b := startNode(t, srv, "b")

	for range 2 {
		p, err := a.brk.Allow()
		if err != nil {
			t.Fatal(err)
		}
		p.Done(breaker.Failure)
	}
	if got := a.brk.State(); got != breaker.Open {
		t.Fatalf("A: State() = %v after 2 failures, want open", got)
	}
	until := a.brk.OpenUntil()

	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case <-b.held:
	case <-timer.C:
		t.Fatalf("B's breaker not held open %v after A's opened", waitTimeout)
	}

	_, err := b.brk.Allow()
	if !errors.Is(err, breaker.ErrOpen) || !errors.Is(err, gobreaker.ErrOpenState) {
		t.Errorf("B: Allow() = %v, want ErrOpen and gobreaker.ErrOpenState", err)
	}
	if got := b.brk.State(); got != breaker.Open {
		t.Errorf("B: State() = %v, want open", got)
	}
	got := b.brk.OpenUntil()
	if got.Before(until) || got.Sub(until) >= time.Millisecond {
		t.Errorf("B: OpenUntil() = %v, want A's %v (rounded up to the millisecond)", got, until)
	}

	b.clock.setNow(got.Add(-time.Millisecond))
	if _, err := b.brk.Allow(); !errors.Is(err, breaker.ErrOpen) {
		t.Errorf("B, 1ms before the hint ends: Allow() = %v, want ErrOpen", err)
	}
	b.clock.setNow(got.Add(time.Millisecond))
	p, err := b.brk.Allow()
	if err != nil {
		t.Fatalf("B, after the hint ended: Allow() = %v, want a permit", err)
	}
	p.Done(breaker.Success)
	if got := b.brk.State(); got != breaker.Closed {
		t.Errorf("B: State() = %v after the hint ended, want closed", got)
	}
	if n := b.changes.Load(); n != 0 {
		t.Errorf("B: OnStateChange called %d times, want 0 (holds are not transitions)", n)
	}
	if n := a.changes.Load(); n != 1 {
		t.Errorf("A: OnStateChange called %d times, want 1 (closed → open)", n)
	}
}
