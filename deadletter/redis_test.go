package deadletter

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sluice-ai/sluice/internal/redistest"
)

// TestScriptsDeclareKeys checks statically that every key a script
// touches comes from KEYS, and only the three keys every call passes, so
// the scripts run on a Cluster once the stream name has a hash tag.
func TestScriptsDeclareKeys(t *testing.T) {
	call := regexp.MustCompile(`redis\.p?call\(\s*'([A-Za-z]+)'\s*,\s*([^,)]+)`)
	anyKey := regexp.MustCompile(`KEYS\[([^\]]*)\]`)
	s := NewRedisStore(nil, testStream, 0, 0)
	for name, src := range map[string]string{"add": addLua, "get": getLua, "mark": markLua, "delete": deleteLua} {
		t.Run(name, func(t *testing.T) {
			calls := call.FindAllStringSubmatch(src, -1)
			if len(calls) == 0 {
				t.Fatal("found no redis.call")
			}
			for _, c := range calls {
				if !regexp.MustCompile(`^KEYS\[[1-3]\]$`).MatchString(c[2]) {
					t.Errorf("redis.call(%q, %s): key is not KEYS[1..3]", c[1], c[2])
				}
			}
			for _, k := range anyKey.FindAllStringSubmatch(src, -1) {
				if k[1] != "1" && k[1] != "2" && k[1] != "3" {
					t.Errorf("script uses KEYS[%s]; calls pass %d keys", k[1], len(s.keys))
				}
			}
		})
	}
	want := []string{testStream, testStream + ":ids", testStream + ":replays"}
	if fmt.Sprint(s.keys) != fmt.Sprint(want) {
		t.Errorf("keys = %v, want %v", s.keys, want)
	}
	if got := NewRedisStore(nil, "", 0, 0).Stream(); got != DefaultStream {
		t.Errorf("default stream = %q, want %q", got, DefaultStream)
	}
}

func TestRedisMaxLen(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	s := NewRedisStore(c, testStream, 10, 5*time.Second)
	for i := range 300 {
		mustAdd(t, s, Record{ID: fmt.Sprintf("r%03d", i)})
	}
	n, err := c.XLen(t.Context(), testStream).Result()
	if err != nil {
		t.Fatal(err)
	}
	// MAXLEN ~ trims whole stream nodes (100 entries by default), so the
	// length is approximate, but far below what was added.
	if n >= 300 || n < 10 {
		t.Errorf("XLEN after 300 adds with MAXLEN ~10 = %d, want in [10, 300)", n)
	}
	if _, err := s.Get(t.Context(), "r000"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(trimmed) = %v, want ErrNotFound", err)
	}
	if _, err := s.Get(t.Context(), "r299"); err != nil {
		t.Errorf("Get(newest) = %v", err)
	}
}

// TestRedisListBudget checks that a filter matching nothing in a stream
// longer than the scan budget ends in bounded pages that still reach the
// match at the end.
func TestRedisListBudget(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	s := NewRedisStore(c, testStream, 0, 5*time.Second)
	const n = scanBudget + 50
	pipe := c.Pipeline()
	for i := range n {
		pipe.XAdd(t.Context(), &redis.XAddArgs{Stream: testStream, Values: []any{"id", fmt.Sprintf("x%d", i), "provider", "openai"}})
	}
	if _, err := pipe.Exec(t.Context()); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, s, Record{ID: "needle", Provider: "anthropic"})
	f := Filter{Provider: "anthropic"}
	var found []string
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatal("List did not end")
		}
		recs, next, err := s.List(t.Context(), f)
		if err != nil {
			t.Fatal(err)
		}
		found = append(found, ids(recs)...)
		if next == "" {
			break
		}
		f.After = next
	}
	if fmt.Sprint(found) != "[needle]" {
		t.Errorf("found %v, want [needle]", found)
	}
}

func TestSpool(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	rs := NewRedisStore(c, testStream, 0, 200*time.Millisecond)
	fs := MustOpenFile(t, filepath.Join(t.TempDir(), "spool.jsonl"))
	sp := NewSpool(rs, fs, nil)
	sp.Interval = 10 * time.Millisecond

	// Redis is up: records go straight there.
	mustAdd(t, sp, fullRecord(0))
	if d := sp.Depth(); d != 0 {
		t.Fatalf("Depth with Redis up = %d, want 0", d)
	}

	srv.Stop(t)
	const n = 5
	for i := 1; i <= n; i++ {
		if err := sp.Add(t.Context(), fullRecord(i)); err != nil {
			t.Fatalf("Add with Redis down: %v", err)
		}
		if d := sp.Depth(); d != i {
			t.Fatalf("Depth after %d spooled adds = %d", i, d)
		}
	}
	// The record added before the outage is gone with the restart (the
	// test server keeps nothing); the spooled ones must all arrive.
	srv.Restart(t)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- sp.Run(ctx) }()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for sp.Depth() != 0 {
		select {
		case <-deadline.C:
			t.Fatalf("Depth = %d after 10s of Run, want 0", sp.Depth())
		case <-tick.C:
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}

	checkOnce := func(t *testing.T, want int64) {
		t.Helper()
		if n, err := c.XLen(t.Context(), testStream).Result(); err != nil || n != want {
			t.Errorf("XLEN = %d, %v; want %d", n, err, want)
		}
		if n, err := c.HLen(t.Context(), testStream+":ids").Result(); err != nil || n != want {
			t.Errorf("HLEN ids = %d, %v; want %d", n, err, want)
		}
	}
	checkOnce(t, n)
	for i := 1; i <= n; i++ {
		r := fullRecord(i)
		if got := mustGet(t, sp, r.ID); got.Body != r.Body || !got.FailedAt.Equal(r.FailedAt) {
			t.Errorf("moved record %s = %+v", r.ID, got)
		}
	}

	// A crash between the Redis add and the spool delete leaves a record
	// in both: flushing it (twice) must not store it again.
	dup := fullRecord(1)
	mustAdd(t, fs, dup)
	for range 2 {
		if err := sp.Flush(t.Context()); err != nil {
			t.Fatalf("Flush: %v", err)
		}
	}
	if d := sp.Depth(); d != 0 {
		t.Errorf("Depth after flush = %d, want 0", d)
	}
	checkOnce(t, n)
}

// TestSpoolBothFail checks that Add reports an error only when neither
// store took the record.
func TestSpoolBothFail(t *testing.T) {
	srv := redistest.Start(t)
	rs := NewRedisStore(srv.Client(t), testStream, 0, 200*time.Millisecond)
	fs := MustOpenFile(t, filepath.Join(t.TempDir(), "spool.jsonl"))
	sp := NewSpool(rs, fs, nil)
	srv.Stop(t)
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sp.Add(t.Context(), fullRecord(1)); err == nil {
		t.Error("Add with Redis down and spool closed = nil, want an error")
	}
}
