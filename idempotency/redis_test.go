package idempotency

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/internal/redistest"
)

// TestRedisKey pins the key layout: other tools (and operators with
// redis-cli) find entries by it.
func TestRedisKey(t *testing.T) {
	r := NewRedis(nil, "", Settings{}, 0)
	want := "sluice:idem:{openai}:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae" // sha256("foo")
	if got := r.key("openai", "foo"); got != want {
		t.Errorf("key(openai, foo) = %q, want %q", got, want)
	}
	if got := NewRedis(nil, "x:", Settings{}, 0).key("", "foo"); !strings.HasPrefix(got, "x:idem:{}:") {
		t.Errorf("key with prefix x: = %q", got)
	}
}

// TestScriptsDeclareKeys checks statically that every key a script
// touches comes from KEYS, so the scripts run on a Cluster.
func TestScriptsDeclareKeys(t *testing.T) {
	call := regexp.MustCompile(`redis\.p?call\(\s*'([A-Za-z]+)'\s*,\s*([^,)]+)`)
	for name, src := range map[string]string{"begin": beginLua, "complete": completeLua, "abandon": abandonLua, "renew": renewLua} {
		calls := call.FindAllStringSubmatch(src, -1)
		if len(calls) == 0 {
			t.Errorf("%s: found no redis.call", name)
		}
		for _, c := range calls {
			// renew.lua loops over KEYS as k.
			if c[2] != "KEYS[1]" && !(name == "renew" && c[2] == "k") {
				t.Errorf("%s: redis.call(%q, %s): key is not from KEYS", name, c[1], c[2])
			}
		}
	}
}

// newTestRedis returns a store on a fresh Redis, and a client to look
// behind its back.
func newTestRedis(t testing.TB, s Settings) (*Redis, *redis.Client, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	c := srv.Client(t)
	return NewRedis(srv.Client(t), "test:", s, time.Second), c, srv
}

// heldCount returns how many holds r renews.
func (r *Redis) heldCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held)
}

func TestRedisLayout(t *testing.T) {
	r, c, _ := newTestRedis(t, Settings{LockTTL: 10 * time.Second, Retention: time.Hour})
	ctx := t.Context()
	cl, err := r.Begin(ctx, "openai", "k", testHash, true, false)
	if err != nil || cl.State != Acquired {
		t.Fatalf("Begin = %v, %v", cl.State, err)
	}
	rkey := r.key("openai", "k")
	got, err := c.HGetAll(ctx, rkey).Result()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"h": hex.EncodeToString(testHash[:]), "s": "lock", "t": cl.Token, "st": "1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("held entry = %v, want %v", got, want)
	}
	if ttl := c.PTTL(ctx, rkey).Val(); ttl <= 9*time.Second || ttl > 10*time.Second {
		t.Errorf("held entry's TTL = %v, want about LockTTL 10s", ttl)
	}
	o := Outcome{Status: 201, Header: [][2]string{{"A", "1"}, {"B", "\"2\""}}, Body: []byte("body"), Stream: true}
	if err := r.Complete(ctx, "openai", "k", cl.Token, o); err != nil {
		t.Fatal(err)
	}
	got = c.HGetAll(ctx, rkey).Val()
	want = map[string]string{"h": want["h"], "s": "done", "c": "201", "hd": `[["A","1"],["B","\"2\""]]`, "b": "body", "sm": "1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("done entry = %v, want %v", got, want)
	}
	if ttl := c.PTTL(ctx, rkey).Val(); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("done entry's TTL = %v, want about Retention 1h", ttl)
	}
	if n := r.heldCount(); n != 0 {
		t.Errorf("%d holds renewed after Complete, want 0", n)
	}
}

// TestRedisRenew checks one renewal directly: holds are extended in
// batches, those Redis lost are dropped, a key that became another type
// costs only its own hold.
func TestRedisRenew(t *testing.T) {
	r, c, _ := newTestRedis(t, Settings{LockTTL: 10 * time.Second})
	ctx := t.Context()
	scopes := []string{"openai", "anthropic", "", "a{b}"}
	toks := map[string]string{}
	for _, sc := range scopes {
		for i := range renewBatch + 5 {
			k := fmt.Sprint(sc, "/", i)
			cl, err := r.Begin(ctx, sc, k, testHash, false, false)
			if err != nil || cl.State != Acquired {
				t.Fatalf("Begin(%q) = %v, %v", k, cl.State, err)
			}
			toks[k] = cl.Token
		}
	}
	// Behind the store's back: shorten every TTL, lose one key, turn one
	// into a string, and complete one.
	for _, sc := range scopes {
		for i := range renewBatch + 5 {
			c.PExpire(ctx, r.key(sc, fmt.Sprint(sc, "/", i)), time.Second)
		}
	}
	c.Del(ctx, r.key("openai", "openai/0"))
	c.Set(ctx, r.key("openai", "openai/1"), "x", 0)
	if err := r.Complete(ctx, "openai", "openai/2", toks["openai/2"], Outcome{Status: 200}); err != nil {
		t.Fatal(err)
	}
	if err := r.renew(ctx); err != nil {
		t.Fatalf("renew = %v", err)
	}
	if got, want := r.heldCount(), len(toks)-3; got != want {
		t.Errorf("%d holds after renew, want %d", got, want)
	}
	for _, sc := range scopes {
		for i := 3; i < renewBatch+5; i++ {
			k := r.key(sc, fmt.Sprint(sc, "/", i))
			if ttl := c.PTTL(ctx, k).Val(); ttl <= 9*time.Second {
				t.Fatalf("TTL of %s after renew = %v, want about 10s", k, ttl)
			}
		}
	}
}

// mustBeginEventually calls Begin until it succeeds, for at most 10s.
func mustBeginEventually(t *testing.T, r *Redis, key string) Claim {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := r.Begin(t.Context(), "p", key, testHash, false, false)
		if err == nil {
			return c
		}
		select {
		case <-deadline.C:
			t.Fatalf("Begin(%q) still failing after 10s: %v", key, err)
		case <-tick.C:
		}
	}
}

// TestRedisRestart: a store returns errors while Redis is down, never
// panics, and works again once it is back (having forgotten everything).
func TestRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	// A short timeout: every call fails while Redis is down.
	r := NewRedis(srv.Client(t), "test:", Settings{LockTTL: 300 * time.Millisecond}, 200*time.Millisecond)
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		r.Run(ctx)
	}()
	defer func() { cancel(); <-stopped }()

	held, err := r.Begin(t.Context(), "p", "held", testHash, false, false)
	if err != nil || held.State != Acquired {
		t.Fatalf("Begin(held) = %v, %v", held.State, err)
	}
	srv.Stop(t)
	if _, err := r.Begin(t.Context(), "p", "k", testHash, false, false); err == nil {
		t.Error("Begin while Redis is down = nil error")
	}
	if _, err := r.Wait(t.Context(), "p", "held", testHash, false); err == nil {
		t.Error("Wait while Redis is down = nil error")
	}
	if err := r.Complete(t.Context(), "p", "held", held.Token, Outcome{Status: 200}); err == nil || errors.Is(err, ErrNotHeld) {
		t.Errorf("Complete while Redis is down = %v, want Redis's error", err)
	}
	if err := r.Abandon(t.Context(), "p", "held", held.Token); err == nil || errors.Is(err, ErrNotHeld) {
		t.Errorf("Abandon while Redis is down = %v, want Redis's error", err)
	}
	if err := r.renew(t.Context()); err != nil {
		t.Errorf("renew with no holds = %v, want nil", err)
	}
	srv.Restart(t)

	// go-redis's pool keeps failing fast for up to a second after failed
	// dials, until its background dial succeeds: Begin errors until then.
	// The restart lost the hold: the key is free (the documented cost of
	// Redis without persistence).
	c := mustBeginEventually(t, r, "held")
	if c.State != Acquired {
		t.Fatalf("Begin(held) after restart = %v, want Acquired", c.State)
	}
	if err := r.Complete(t.Context(), "p", "held", c.Token, Outcome{Status: 200, Body: []byte("x")}); err != nil {
		t.Fatalf("Complete after restart = %v", err)
	}
	if c, err := r.Begin(t.Context(), "p", "held", testHash, false, false); err != nil || c.State != Done {
		t.Errorf("Begin after Complete = %v, %v, want Done", c.State, err)
	}
}

// TestRedisRenewAcrossRestart: a hold that Redis lost while down is
// dropped at the first renewal after it is back.
func TestRedisRenewAcrossRestart(t *testing.T) {
	r, _, srv := newTestRedis(t, Settings{LockTTL: time.Minute})
	if _, err := r.Begin(t.Context(), "p", "k", testHash, false, false); err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	if err := r.renew(t.Context()); err == nil {
		t.Error("renew while Redis is down = nil error")
	}
	if n := r.heldCount(); n != 1 {
		t.Errorf("%d holds after a failed renewal, want 1 (retried at the next)", n)
	}
	srv.Restart(t)
	mustBeginEventually(t, r, "other")
	if err := r.renew(t.Context()); err != nil {
		t.Fatalf("renew after restart = %v", err)
	}
	if n := r.heldCount(); n != 1 {
		t.Errorf("%d holds after renewing on an empty Redis, want 1 (the one taken since)", n)
	}
}

// TestRedisWrongType: a key that is not a hash is an error for every
// operation, not a panic.
func TestRedisWrongType(t *testing.T) {
	r, c, _ := newTestRedis(t, Settings{})
	ctx := t.Context()
	c.Set(ctx, r.key("p", "k"), "not a hash", 0)
	if _, err := r.Begin(ctx, "p", "k", testHash, false, false); err == nil {
		t.Error("Begin = nil error")
	}
	if err := r.Complete(ctx, "p", "k", "t", Outcome{Status: 200}); err == nil || errors.Is(err, ErrNotHeld) {
		t.Errorf("Complete = %v, want Redis's error", err)
	}
	if err := r.Abandon(ctx, "p", "k", "t"); err == nil || errors.Is(err, ErrNotHeld) {
		t.Errorf("Abandon = %v, want Redis's error", err)
	}
}

// checkClaim fails t unless c is a claim a caller can act on.
func checkClaim(t *testing.T, c Claim) {
	t.Helper()
	switch c.State {
	case Acquired:
		if len(c.Token) != 32 {
			t.Fatalf("Acquired with token %q", c.Token)
		}
	case InFlight, Mismatch:
		if c.Token != "" || c.Outcome.Status != 0 {
			t.Fatalf("%v with %+v", c.State, c)
		}
	case Done, Forgotten:
		if c.Outcome.Status < 100 || c.Outcome.Status > 999 {
			t.Fatalf("%v with status %d", c.State, c.Outcome.Status)
		}
		if c.State == Forgotten && (c.Outcome.Header != nil || c.Outcome.Body != nil) {
			t.Fatalf("Forgotten with an outcome %+v", c.Outcome)
		}
	default:
		t.Fatalf("state %v", c.State)
	}
}

// FuzzRedisCorruptEntry writes arbitrary values into a key's fields (a
// field is left out when its value is "-") and checks that Begin answers
// with an error or a sane claim, and that a key it hands out works.
func FuzzRedisCorruptEntry(f *testing.F) {
	r, c, _ := newTestRedis(f, Settings{LockTTL: time.Minute})
	ours := hex.EncodeToString(testHash[:])
	f.Add(ours, "done", "-", "-", "200", `[["A","b"]]`, "body", "1", false)
	f.Add(ours, "done", "-", "-", "502", `[]`, "", "0", true)
	f.Add(ours, "forgotten", "-", "-", "413", "-", "-", "-", true)
	f.Add(ours, "lock", "tok", "1", "-", "-", "-", "-", false)
	f.Add(ours, "done", "-", "-", "abc", `[["A","b"]]`, "body", "1", true)
	f.Add(ours, "done", "-", "-", "20", `[["A","b"]]`, "body", "1", true)
	f.Add(ours, "done", "-", "-", "5e2", "-", "-", "-", true)
	f.Add(ours, "done", "-", "-", "200", `{"A":"b"}`, "body", "1", false)
	f.Add(ours, "done", "-", "-", "200", `[["A"]]`, "-", "-", false)
	f.Add(ours, "done", "-", "-", "200", `[["A","b","c"]]`, "-", "-", false)
	f.Add(ours, "done", "-", "-", "-", "-", "-", "-", false)
	f.Add(ours, "nonsense", "-", "-", "200", "-", "-", "-", true)
	f.Add(ours, "-", "-", "-", "-", "-", "-", "-", false)
	f.Add("-", "done", "-", "-", "200", "[]", "-", "-", false)
	f.Add("other", "done", "-", "-", "200", "[]", "-", "-", false)
	f.Add("-", "-", "-", "-", "-", "-", "-", "-", false)
	f.Fuzz(func(t *testing.T, h, s, tok, st, code, hd, b, sm string, retryFailed bool) {
		ctx := context.Background()
		rkey := r.key("p", "k")
		if err := c.Del(ctx, rkey).Err(); err != nil {
			t.Fatal(err)
		}
		var fields []any
		for i, v := range []string{h, s, tok, st, code, hd, b, sm} {
			if v != "-" {
				fields = append(fields, []string{"h", "s", "t", "st", "c", "hd", "b", "sm"}[i], v)
			}
		}
		if len(fields) > 0 {
			if err := c.HSet(ctx, rkey, fields...).Err(); err != nil {
				t.Fatal(err)
			}
		}
		cl, err := r.Begin(ctx, "p", "k", testHash, false, retryFailed)
		if err != nil {
			if errors.Is(err, ErrBadKey) || errors.Is(err, ErrNotHeld) {
				t.Fatalf("Begin = %v", err)
			}
			return
		}
		checkClaim(t, cl)
		if cl.State != Acquired {
			return
		}
		o := Outcome{Status: 200, Header: [][2]string{{"A", "b"}}, Body: []byte("fresh")}
		if err := r.Complete(ctx, "p", "k", cl.Token, o); err != nil {
			t.Fatalf("Complete after Acquired = %v", err)
		}
		got, err := r.Begin(ctx, "p", "k", testHash, false, false)
		if err != nil || got.State != Done || string(got.Outcome.Body) != "fresh" {
			t.Fatalf("Begin after Complete = %+v, %v, want Done with the fresh outcome", got, err)
		}
	})
}
