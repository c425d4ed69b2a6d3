package deadletter

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/internal/redistest"
)

// TestRedisStoreOnCluster runs every RedisStore operation on a three-node
// Redis Cluster, with the stream named with a hash tag as the RedisStore
// doc asks: Add (idempotent, and trimming at the maximum length), Get,
// List with paging, MarkReplayed and Delete. Without the hash tag the
// scripts' three keys span slots, and the cluster refuses them.
func TestRedisStoreOnCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t)
	c := cl.Client(t)
	ctx := t.Context()

	// The stream and its companions share the {sluice} slot's node.
	var node string
	for _, key := range []string{testStream, testStream + idsSuffix, testStream + replaysSuffix} {
		n, err := c.MasterForKey(ctx, key)
		if err != nil {
			t.Fatalf("MasterForKey(%s) = %v", key, err)
		}
		if node == "" {
			node = n.Options().Addr
		} else if n.Options().Addr != node {
			t.Errorf("%s is on %s, want %s with the stream", key, n.Options().Addr, node)
		}
	}

	s := NewRedisStore(c, testStream, 3, 5*time.Second)
	first := fullRecord(1)
	mustAdd(t, s, first)
	if got, w := mustGet(t, s, first.ID), want(first); !reflect.DeepEqual(got, w) {
		t.Errorf("Get = %#v\nwant %#v", got, w)
	}
	changed := first
	changed.Body = "different"
	mustAdd(t, s, changed)
	if got := mustGet(t, s, first.ID); got.Body != first.Body {
		t.Errorf("Get after adding %s again = body %q, want the first body %q", first.ID, got.Body, first.Body)
	}

	// Five records at a maximum of three: the first two are trimmed with
	// their index fields and replay marks.
	for i := 1; i <= 5; i++ {
		r := fullRecord(i)
		mustAdd(t, s, r)
		if err := s.MarkReplayed(ctx, r.ID, t0, 200+i); err != nil {
			t.Fatalf("MarkReplayed(%s): %v", r.ID, err)
		}
	}
	checkSizes := func(wantStream, wantIDs, wantReplays int64) {
		t.Helper()
		n, err := c.XLen(ctx, testStream).Result()
		if err != nil {
			t.Fatal(err)
		}
		nids, err := c.HLen(ctx, testStream+idsSuffix).Result()
		if err != nil {
			t.Fatal(err)
		}
		nmarks, err := c.HLen(ctx, testStream+replaysSuffix).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n != wantStream || nids != wantIDs || nmarks != wantReplays {
			t.Errorf("XLEN %d, HLEN ids %d, HLEN replays %d; want %d, %d, %d", n, nids, nmarks, wantStream, wantIDs, wantReplays)
		}
	}
	checkSizes(3, 3, 3)
	for _, id := range []string{"rec-001", "rec-002"} {
		if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(trimmed %s) = %v, want ErrNotFound", id, err)
		}
	}
	got := mustGet(t, s, "rec-004")
	if w := want(fullRecord(4)); got.ReplayStatus != 204 || !got.ReplayedAt.Equal(t0) || got.Body != w.Body || !got.FailedAt.Equal(w.FailedAt) {
		t.Errorf("Get(rec-004) = replay %d at %v, body %q, failed at %v; want 204 at %v, %q, %v",
			got.ReplayStatus, got.ReplayedAt, got.Body, got.FailedAt, t0, w.Body, w.FailedAt)
	}

	// Paging: two, then the rest.
	page, next, err := s.List(ctx, Filter{Limit: 2})
	if err != nil || next == "" {
		t.Fatalf("List(limit 2) = next %q, %v; want a cursor", next, err)
	}
	rest, last, err := s.List(ctx, Filter{After: next, Limit: 2})
	if err != nil || last != "" {
		t.Fatalf("List(after %q) = next %q, %v; want the end", next, last, err)
	}
	if got, w := fmt.Sprint(ids(page), ids(rest)), "[rec-003 rec-004] [rec-005]"; got != w {
		t.Errorf("List pages = %s, want %s", got, w)
	}
	for i, r := range append(page, rest...) {
		if r.ReplayStatus != 203+i {
			t.Errorf("List: %s has replay status %d, want %d", r.ID, r.ReplayStatus, 203+i)
		}
	}
	if recs, _, err := s.List(ctx, Filter{After: "rec-004"}); err != nil || fmt.Sprint(ids(recs)) != "[rec-005]" {
		t.Errorf("List(after rec-004) = %v, %v; want [rec-005]", ids(recs), err)
	}

	if err := s.Delete(ctx, "rec-003"); err != nil {
		t.Fatalf("Delete(rec-003) = %v", err)
	}
	checkSizes(2, 2, 2)
	if _, err := s.Get(ctx, "rec-003"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(deleted) = %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "rec-003"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete(deleted) = %v, want ErrNotFound", err)
	}
	if err := s.MarkReplayed(ctx, "rec-003", t0, 200); !errors.Is(err, ErrNotFound) {
		t.Errorf("MarkReplayed(deleted) = %v, want ErrNotFound", err)
	}

	// The default name has no hash tag: its three keys span slots.
	untagged := NewRedisStore(c, DefaultStream, 0, 5*time.Second)
	if err := untagged.Add(ctx, Record{ID: "x"}); !redis.HasErrorPrefix(err, "CROSSSLOT") {
		t.Errorf("Add to %q on a cluster = %v, want a CROSSSLOT error", DefaultStream, err)
	}
}
