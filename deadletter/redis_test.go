package deadletter

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
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

// streamSizes returns the lengths of the stream and of its two hashes.
func streamSizes(t *testing.T, c *redis.Client) (stream, ids, replays int64) {
	t.Helper()
	ctx := t.Context()
	var err error
	if stream, err = c.XLen(ctx, testStream).Result(); err != nil {
		t.Fatal(err)
	}
	if ids, err = c.HLen(ctx, testStream+idsSuffix).Result(); err != nil {
		t.Fatal(err)
	}
	if replays, err = c.HLen(ctx, testStream+replaysSuffix).Result(); err != nil {
		t.Fatal(err)
	}
	return stream, ids, replays
}

// TestRedisMaxLen checks that trimming is exact and takes the trimmed
// records' index fields and replay marks with it.
func TestRedisMaxLen(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	s := NewRedisStore(c, testStream, 5, 5*time.Second)
	id := func(i int) string { return fmt.Sprintf("r%03d", i) }
	for i := range 20 {
		mustAdd(t, s, Record{ID: id(i)})
		if err := s.MarkReplayed(t.Context(), id(i), t0, 200+i); err != nil {
			t.Fatalf("MarkReplayed(%s): %v", id(i), err)
		}
	}
	if n, nids, nmarks := streamSizes(t, c); n != 5 || nids != 5 || nmarks != 5 {
		t.Errorf("after 20 adds with maxLen 5: XLEN %d, HLEN ids %d, HLEN replays %d; want 5, 5, 5", n, nids, nmarks)
	}
	for i := range 15 {
		if _, err := s.Get(t.Context(), id(i)); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(trimmed %s) = %v, want ErrNotFound", id(i), err)
		}
	}
	if err := s.MarkReplayed(t.Context(), id(0), t0, 200); !errors.Is(err, ErrNotFound) {
		t.Errorf("MarkReplayed(trimmed) = %v, want ErrNotFound", err)
	}
	if _, _, err := s.List(t.Context(), Filter{After: id(0)}); !errors.Is(err, ErrNotFound) {
		t.Errorf("List(after trimmed id) = %v, want ErrNotFound", err)
	}
	recs, next, err := s.List(t.Context(), Filter{})
	if err != nil || next != "" {
		t.Fatalf("List = next %q, %v", next, err)
	}
	if got, want := fmt.Sprint(ids(recs)), "[r015 r016 r017 r018 r019]"; got != want {
		t.Errorf("List after trimming = %s, want %s", got, want)
	}
	for _, r := range recs {
		i, err := strconv.Atoi(strings.TrimPrefix(r.ID, "r"))
		if err != nil {
			t.Fatal(err)
		}
		if r.ReplayStatus != 200+i {
			t.Errorf("%s has replay status %d, want %d", r.ID, r.ReplayStatus, 200+i)
		}
	}

	// With its index field gone, a trimmed id is stored again: as the
	// newest entry, without its old mark, trimming the oldest one.
	mustAdd(t, s, Record{ID: id(0), Body: "again"})
	if got := mustGet(t, s, id(0)); got.Body != "again" || got.ReplayStatus != 0 {
		t.Errorf("re-added trimmed record = body %q, replay status %d; want \"again\", 0", got.Body, got.ReplayStatus)
	}
	recs, _, err = s.List(t.Context(), Filter{})
	if got, want := fmt.Sprint(ids(recs)), "[r016 r017 r018 r019 r000]"; err != nil || got != want {
		t.Errorf("List after re-adding r000 = %s, %v; want %s", got, err, want)
	}
	if n, nids, nmarks := streamSizes(t, c); n != 5 || nids != 5 || nmarks != 4 {
		t.Errorf("after re-add: XLEN %d, HLEN ids %d, HLEN replays %d; want 5, 5, 4", n, nids, nmarks)
	}
}

// TestRedisMaxLenLowered checks that a stream far above a lowered maximum
// shrinks by at most trimBatch entries per Add, the hashes with it, until
// it fits.
func TestRedisMaxLenLowered(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	const before, maxLen = 2*trimBatch + 50, 10
	unbounded := NewRedisStore(c, testStream, 0, 5*time.Second)
	for i := range before {
		mustAdd(t, unbounded, Record{ID: fmt.Sprintf("old%03d", i)})
	}
	// Mark the newest records: their marks must survive.
	for i := before - maxLen; i < before; i++ {
		if err := unbounded.MarkReplayed(t.Context(), fmt.Sprintf("old%03d", i), t0, 200); err != nil {
			t.Fatal(err)
		}
	}
	s := NewRedisStore(c, testStream, maxLen, 5*time.Second)
	n := int64(before)
	for i := 0; n > maxLen || i < 2; i++ {
		if i > before/trimBatch+2 {
			t.Fatalf("stream still holds %d entries after %d adds", n, i)
		}
		mustAdd(t, s, Record{ID: fmt.Sprintf("new%03d", i)})
		want := n + 1 - min(n-(maxLen-1), trimBatch)
		got, nids, _ := streamSizes(t, c)
		if got != want || nids != want {
			t.Fatalf("add %d from XLEN %d: XLEN %d, HLEN ids %d; want %d", i, n, got, nids, want)
		}
		n = got
	}
	// The replay hash holds exactly the marks of the records left.
	recs, _, err := s.List(t.Context(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var marked int64
	for _, r := range recs {
		if r.ReplayStatus == 200 {
			marked++
		}
	}
	if _, _, nmarks := streamSizes(t, c); nmarks != marked || marked == 0 {
		t.Errorf("HLEN replays = %d, records left with a mark = %d; want equal and > 0", nmarks, marked)
	}
}

// TestRedisTrimForeignEntries checks that trimming entries Add did not
// write (no id field, or the id of a record stored at another entry)
// leaves the index of the stored records alone.
func TestRedisTrimForeignEntries(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	s := NewRedisStore(c, testStream, 3, 5*time.Second)
	xadd := func(values ...any) {
		t.Helper()
		if err := c.XAdd(t.Context(), &redis.XAddArgs{Stream: testStream, Values: values}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	xadd("id", "a", "body", "written by hand")
	xadd("provider", "no id field")
	mustAdd(t, s, Record{ID: "a", Body: "stored"})
	// Trims the hand-written "a", then the entry without an id.
	mustAdd(t, s, Record{ID: "b"}, Record{ID: "c"})
	if got := mustGet(t, s, "a"); got.Body != "stored" {
		t.Errorf("Get(a) = body %q, want \"stored\"", got.Body)
	}
	if n, nids, _ := streamSizes(t, c); n != 3 || nids != 3 {
		t.Errorf("XLEN %d, HLEN ids %d; want 3, 3", n, nids)
	}
	mustAdd(t, s, Record{ID: "d"})
	if _, err := s.Get(t.Context(), "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(a) after its entry was trimmed = %v, want ErrNotFound", err)
	}
	if n, nids, _ := streamSizes(t, c); n != 3 || nids != 3 {
		t.Errorf("XLEN %d, HLEN ids %d; want 3, 3", n, nids)
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
