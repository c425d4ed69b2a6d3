package cluster

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// waitTimeout bounds every wait of these tests for something to happen.
// Nothing sleeps: the waits end as soon as the event arrives.
const waitTimeout = 15 * time.Second

// callTimeout bounds the Redis calls the tests make themselves.
const callTimeout = 5 * time.Second

// logRecorder is a slog.Handler that keeps every record's level, message
// and "hints" attribute, and wakes waiters when one arrives.
type logRecorder struct {
	mu      sync.Mutex // protects records, wake
	records []logRecord
	wake    chan struct{} // closed and replaced on every record
}

type logRecord struct {
	level slog.Level
	msg   string
	hints int64 // the "hints" attribute, -1 if absent
}

func newLogRecorder() *logRecorder { return &logRecorder{wake: make(chan struct{})} }

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	lr := logRecord{level: rec.Level, msg: rec.Message, hints: -1}
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "hints" {
			lr.hints = a.Value.Int64()
		}
		return true
	})
	r.mu.Lock()
	r.records = append(r.records, lr)
	close(r.wake)
	r.wake = make(chan struct{})
	r.mu.Unlock()
	return nil
}

// matching returns the records with message msg, and a channel closed at
// the next record.
func (r *logRecorder) matching(msg string) ([]logRecord, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logRecord
	for _, rec := range r.records {
		if rec.msg == msg {
			out = append(out, rec)
		}
	}
	return out, r.wake
}

// waitFor waits until n records with message msg were logged, and returns
// the nth.
func (r *logRecorder) waitFor(tb testing.TB, msg string, n int) logRecord {
	tb.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		got, wake := r.matching(msg)
		if len(got) >= n {
			return got[n-1]
		}
		select {
		case <-wake:
		case <-timer.C:
			tb.Fatalf("log %q: %d records after %v, want %d", msg, len(got), waitTimeout, n)
		}
	}
}

// count returns how many records with message msg were logged.
func (r *logRecorder) count(msg string) int {
	got, _ := r.matching(msg)
	return len(got)
}

// applied is one call of Run's apply.
type applied struct {
	provider string
	until    time.Time
}

// replica is one BreakerSync under test, with what its Run applied.
type replica struct {
	*BreakerSync
	log     *logRecorder
	applied chan applied
}

// newReplica returns a BreakerSync named name over c, with prefix "test:".
func newReplica(tb testing.TB, c redis.UniversalClient, name string) *replica {
	tb.Helper()
	log := newLogRecorder()
	return &replica{
		BreakerSync: NewBreakerSync(c, "test:", name, callTimeout, slog.New(log)),
		log:         log,
		applied:     make(chan applied, 100),
	}
}

// run starts r's Run for providers, and waits for its first subscription
// (the keys read). The test's cleanup stops it and checks it returned
// ctx's error.
func (r *replica) run(tb testing.TB, providers ...string) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- r.Run(ctx, providers, func(provider string, until time.Time) {
			r.applied <- applied{provider, until}
		})
	}()
	tb.Cleanup(func() {
		cancel()
		timer := time.NewTimer(waitTimeout)
		defer timer.Stop()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				tb.Errorf("Run() = %v after cancel, want context.Canceled", err)
			}
		case <-timer.C:
			tb.Errorf("Run() still running %v after cancel", waitTimeout)
		}
	})
	r.log.waitFor(tb, msgSubscribed, 1)
}

// next returns the next hint r's Run applied.
func (r *replica) next(tb testing.TB) applied {
	tb.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case a := <-r.applied:
		return a
	case <-timer.C:
		tb.Fatalf("replica %s: no hint applied within %v", r.replica, waitTimeout)
		return applied{}
	}
}

// expect checks that the next hint r's Run applied is for provider, until
// the moment untilMillis(until) names.
func (r *replica) expect(tb testing.TB, provider string, until time.Time) {
	tb.Helper()
	want := applied{provider, time.UnixMilli(untilMillis(until))}
	if got := r.next(tb); got.provider != want.provider || !got.until.Equal(want.until) {
		tb.Fatalf("replica %s applied (%s, %v), want (%s, %v)", r.replica, got.provider, got.until, want.provider, want.until)
	}
}

// mustPublish publishes a hint and fails tb on error.
func (r *replica) mustPublish(tb testing.TB, provider string, until time.Time) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := r.Publish(ctx, provider, until); err != nil {
		tb.Fatalf("replica %s: Publish(%s, %v) = %v", r.replica, provider, until, err)
	}
}

// storedHint reads and parses the hint key of provider.
func storedHint(tb testing.TB, c redis.UniversalClient, provider string) (hint, time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	key := "test:breaker:{" + provider + "}"
	v, err := c.Get(ctx, key).Result()
	if err != nil {
		tb.Fatalf("GET %s = %v", key, err)
	}
	h, err := parseHint(v)
	if err != nil {
		tb.Fatalf("GET %s = %q: %v", key, v, err)
	}
	ttl, err := c.PTTL(ctx, key).Result()
	if err != nil {
		tb.Fatalf("PTTL %s = %v", key, err)
	}
	return h, ttl
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
