package redistest_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/internal/redistest"
)

// callTimeout bounds each Redis call of these tests.
const callTimeout = 5 * time.Second

func mustPing(tb testing.TB, c *redis.Client) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if got, err := c.Ping(ctx).Result(); err != nil || got != "PONG" {
		tb.Fatalf("Ping() = %q, %v, want PONG, nil", got, err)
	}
}

func TestStartServesCommands(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") {
		t.Errorf("Addr = %q, want 127.0.0.1:port", s.Addr)
	}
	c := s.Client(t)
	mustPing(t, c)

	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("Set(k, v) = %v, want nil", err)
	}
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Errorf("Get(k) = %q, %v, want %q, nil", got, err, "v")
	}
	// Persistence is off: an outage test must not find old data on restart.
	for _, tt := range []struct{ param, want string }{
		{"save", ""},
		{"appendonly", "no"},
		{"bind", "127.0.0.1"},
	} {
		got, err := c.ConfigGet(ctx, tt.param).Result()
		if err != nil {
			t.Fatalf("ConfigGet(%s) = %v", tt.param, err)
		}
		if got[tt.param] != tt.want {
			t.Errorf("CONFIG GET %s = %q, want %q", tt.param, got[tt.param], tt.want)
		}
	}
}

func TestURL(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	opts, err := redis.ParseURL(s.URL())
	if err != nil {
		t.Fatalf("ParseURL(%q) = %v", s.URL(), err)
	}
	if opts.Addr != s.Addr {
		t.Errorf("ParseURL(%q).Addr = %q, want %q", s.URL(), opts.Addr, s.Addr)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	mustPing(t, c)
}

func TestStopRestart(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	addr := s.Addr
	c := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("Set(k, v) = %v, want nil", err)
	}

	s.Stop(t)
	s.Stop(t) // idempotent
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("Ping() after Stop = nil, want an error")
	}

	s.Restart(t)
	if s.Addr != addr {
		t.Errorf("Addr after Restart = %q, want %q", s.Addr, addr)
	}
	mustPing(t, c)
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("Get(k) after Restart = %v, want redis.Nil (no persistence)", err)
	}

	// Restart of a running server stops it first.
	s.Restart(t)
	mustPing(t, c)
}

func TestParallelServersGetDistinctPorts(t *testing.T) {
	t.Parallel()
	const n = 4
	servers := make([]*redistest.Server, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { servers[i] = redistest.Start(t) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	seen := make(map[string]bool)
	for _, s := range servers {
		if seen[s.Addr] {
			t.Errorf("two servers on %s", s.Addr)
		}
		seen[s.Addr] = true
		mustPing(t, s.Client(t))
	}
}

// fatalTB records Fatalf and ends the calling goroutine, as testing.T does,
// so a test can check how Start fails. Skipping panics: Start must not skip.
type fatalTB struct {
	testing.TB
	mu  sync.Mutex // protects msg
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.msg = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fatalTB) Fatal(args ...any)    { f.Fatalf("%s", fmt.Sprint(args...)) }
func (f *fatalTB) Skip(...any)          { panic("Skip called, want Fatalf") }
func (f *fatalTB) Skipf(string, ...any) { panic("Skipf called, want Fatalf") }
func (f *fatalTB) SkipNow()             { panic("SkipNow called, want Fatalf") }

func (f *fatalTB) message() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.msg
}

func TestStartFailsWithoutBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	tb := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		redistest.Start(tb)
		t.Error("Start returned without redis-server on PATH, want Fatalf")
	}()
	<-done
	msg := tb.message()
	for _, want := range []string{"redis-server", "apt-get install redis-server", "make test"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Start failure = %q, want it to mention %q", msg, want)
		}
	}
}
