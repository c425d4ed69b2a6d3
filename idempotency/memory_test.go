package idempotency

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

var testHash = sha256.Sum256([]byte("body"))

// fakeClock is a settable clock for a Memory's now.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// newTestMemory returns a Memory on a fake clock.
func newTestMemory(s Settings) (*Memory, *fakeClock) {
	clk := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	m := NewMemory(s)
	m.now = clk.now
	return m, clk
}

// keys returns the keys m has, outcomes from most to least recently used,
// then holds sorted.
func (m *Memory) keys() (done, held []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for el := m.lru.Front(); el != nil; el = el.Next() {
		done = append(done, el.Value.(*entry).k.key)
	}
	for e := range m.held {
		held = append(held, e.k.key)
	}
	slices.Sort(held)
	if len(done)+len(held) != len(m.entries) {
		panic(fmt.Sprintf("%d entries, %d in the LRU list and %d held", len(m.entries), len(done), len(held)))
	}
	return done, held
}

func memBegin(t *testing.T, m *Memory, key string, retryFailed bool, want State) Claim {
	t.Helper()
	c, err := m.Begin(t.Context(), "p", key, testHash, false, retryFailed)
	if err != nil || c.State != want {
		t.Fatalf("Begin(%q) = %v, %v, want %v", key, c.State, err, want)
	}
	return c
}

func memDone(t *testing.T, m *Memory, keys ...string) {
	t.Helper()
	for _, k := range keys {
		tok := memBegin(t, m, k, false, Acquired).Token
		if err := m.Complete(t.Context(), "p", k, tok, Outcome{Status: 200}); err != nil {
			t.Fatalf("Complete(%q) = %v", k, err)
		}
	}
}

func wantKeys(t *testing.T, m *Memory, done, held []string) {
	t.Helper()
	gotDone, gotHeld := m.keys()
	if !slices.Equal(gotDone, done) || !slices.Equal(gotHeld, held) {
		t.Errorf("keys = done %q held %q, want done %q held %q", gotDone, gotHeld, done, held)
	}
}

func TestMemoryLRU(t *testing.T) {
	t.Run("oldest outcome goes first", func(t *testing.T) {
		m, _ := newTestMemory(Settings{MaxKeys: 3})
		memDone(t, m, "a", "b", "c")
		wantKeys(t, m, []string{"c", "b", "a"}, nil)
		memDone(t, m, "d")
		wantKeys(t, m, []string{"d", "c", "b"}, nil)
		memBegin(t, m, "a", false, Acquired) // evicted: forgotten entirely
	})
	t.Run("a duplicate makes an outcome recent", func(t *testing.T) {
		m, _ := newTestMemory(Settings{MaxKeys: 3})
		memDone(t, m, "a", "b", "c")
		memBegin(t, m, "a", false, Done)
		memDone(t, m, "d")
		wantKeys(t, m, []string{"d", "a", "c"}, nil)
	})
	t.Run("holds are never evicted", func(t *testing.T) {
		m, _ := newTestMemory(Settings{MaxKeys: 3})
		memDone(t, m, "a")
		toks := map[string]string{}
		for _, k := range []string{"h1", "h2", "h3", "h4"} {
			toks[k] = memBegin(t, m, k, false, Acquired).Token
		}
		// Over MaxKeys: the outcome went, every hold stayed.
		wantKeys(t, m, nil, []string{"h1", "h2", "h3", "h4"})
		for k := range toks {
			memBegin(t, m, k, false, InFlight)
		}
		memBegin(t, m, "h5", false, Acquired)
		wantKeys(t, m, nil, []string{"h1", "h2", "h3", "h4", "h5"})
		// As holds complete, the map shrinks back to MaxKeys, the oldest
		// outcomes going first.
		for _, k := range []string{"h1", "h2", "h3", "h4"} {
			if err := m.Complete(t.Context(), "p", k, toks[k], Outcome{Status: 200}); err != nil {
				t.Fatal(err)
			}
		}
		wantKeys(t, m, []string{"h4", "h3"}, []string{"h5"})
	})
	t.Run("a retried outcome leaves the list", func(t *testing.T) {
		m, _ := newTestMemory(Settings{MaxKeys: 3})
		tok := memBegin(t, m, "a", false, Acquired).Token
		if err := m.Complete(t.Context(), "p", "a", tok, Outcome{Status: 500}); err != nil {
			t.Fatal(err)
		}
		memBegin(t, m, "a", true, Acquired)
		wantKeys(t, m, nil, []string{"a"})
		memDone(t, m, "b", "c", "d")
		wantKeys(t, m, []string{"d", "c"}, []string{"a"})
	})
}

// TestMemoryExpiryAt checks the exact expiry instants on a fake clock.
func TestMemoryExpiryAt(t *testing.T) {
	m, clk := newTestMemory(Settings{Retention: time.Hour, LockTTL: 30 * time.Second})
	tok := memBegin(t, m, "k", false, Acquired).Token
	clk.advance(30*time.Second - 1)
	memBegin(t, m, "k", false, InFlight)
	m.renew(clk.now()) // extends to now + LockTTL
	clk.advance(30*time.Second - 1)
	memBegin(t, m, "k", false, InFlight)
	clk.advance(1)
	if err := m.Complete(t.Context(), "p", "k", tok, Outcome{Status: 200}); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Complete after the hold lapsed = %v, want ErrNotHeld", err)
	}
	wantKeys(t, m, nil, nil)

	tok = memBegin(t, m, "k", false, Acquired).Token
	if err := m.Complete(t.Context(), "p", "k", tok, Outcome{Status: 200}); err != nil {
		t.Fatal(err)
	}
	m.renew(clk.now()) // an outcome is not a hold: untouched
	clk.advance(time.Hour - 1)
	memBegin(t, m, "k", false, Done)
	clk.advance(1)
	memBegin(t, m, "k", false, Acquired)
}

// TestMemoryRenewDropsLapsed checks that Run does not revive a hold that
// lapsed before it ran, as Redis would not, and wakes its waiters.
func TestMemoryRenewDropsLapsed(t *testing.T) {
	m, clk := newTestMemory(Settings{LockTTL: time.Second})
	memBegin(t, m, "k", false, Acquired)
	m.mu.Lock()
	changed := m.entries[memKey{"p", "k"}].changed
	m.mu.Unlock()
	clk.advance(time.Second)
	m.renew(clk.now())
	wantKeys(t, m, nil, nil)
	select {
	case <-changed:
	default:
		t.Error("the lapsed hold's channel is still open")
	}
}

func BenchmarkMemoryBeginDone(b *testing.B) {
	m := NewMemory(Settings{})
	ctx := b.Context()
	o := Outcome{Status: 200, Header: [][2]string{{"Content-Type", "application/json"}}, Body: make([]byte, 2048)}
	c, _ := m.Begin(ctx, "p", "k", testHash, false, false)
	if err := m.Complete(ctx, "p", "k", c.Token, o); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if c, err := m.Begin(ctx, "p", "k", testHash, false, false); err != nil || c.State != Done {
				b.Fatalf("Begin = %v, %v", c.State, err)
			}
		}
	})
}

func BenchmarkMemoryAcquireComplete(b *testing.B) {
	m := NewMemory(Settings{MaxKeys: 1000})
	ctx := b.Context()
	o := Outcome{Status: 200, Body: make([]byte, 2048)}
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = fmt.Sprint("key-", i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		k := keys[i%len(keys)]
		c, err := m.Begin(ctx, "p", k, testHash, false, true)
		if err != nil {
			b.Fatal(err)
		}
		if c.State == Acquired {
			if err := m.Complete(ctx, "p", k, c.Token, o); err != nil {
				b.Fatal(err)
			}
		}
	}
}
