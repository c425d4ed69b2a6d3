package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/redistest"
)

func TestNames(t *testing.T) {
	for _, tt := range []struct {
		prefix, wantKey, wantChannel string
	}{
		{"sluice:", "sluice:breaker:{openai}", "sluice:breaker"},
		{"", "sluice:breaker:{openai}", "sluice:breaker"},
		{"prod/", "prod/breaker:{openai}", "prod/breaker"},
	} {
		s := NewBreakerSync(nil, tt.prefix, "a", 0, nil)
		if got := s.key("openai"); got != tt.wantKey {
			t.Errorf("prefix %q: key(openai) = %q, want %q", tt.prefix, got, tt.wantKey)
		}
		if s.channel != tt.wantChannel {
			t.Errorf("prefix %q: channel = %q, want %q", tt.prefix, s.channel, tt.wantChannel)
		}
	}
	s := NewBreakerSync(nil, "", "", -time.Second, nil)
	if s.replica == "" || s.timeout != defaultTimeout {
		t.Errorf("NewBreakerSync(replica \"\", timeout -1s): replica %q, timeout %v; want a random replica and %v", s.replica, s.timeout, defaultTimeout)
	}
	if other := NewBreakerSync(nil, "", "", 0, nil); other.replica == s.replica {
		t.Errorf("two random replicas are both %q", s.replica)
	}
}

// TestPublishReachesOtherReplicas: A publishes, B applies the same until at
// once; A's own Run does not apply A's hint; the key holds it and expires
// with it.
func TestPublishReachesOtherReplicas(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client(t)
	a, b := newReplica(t, c, "a"), newReplica(t, c, "b")
	a.run(t, "openai", "anthropic")
	b.run(t, "openai", "anthropic")

	until := time.Now().Add(time.Hour + 123456*time.Nanosecond)
	a.mustPublish(t, "openai", until)
	b.expect(t, "openai", until)
	if got := time.UnixMilli(untilMillis(until)); got.Before(until) || got.Sub(until) >= time.Millisecond {
		t.Errorf("until %v travels as %v, want it rounded up to the millisecond", until, got)
	}

	h, ttl := storedHint(t, c, "openai")
	if want := (hint{Provider: "openai", UntilMs: untilMillis(until), Replica: "a"}); h != want {
		t.Errorf("stored hint = %+v, want %+v", h, want)
	}
	if ttl <= 0 || ttl > time.Hour+time.Second {
		t.Errorf("PTTL = %v, want the hint's remaining time (about 1h)", ttl)
	}

	// Messages reach A in publishing order: had A applied its own hint, it
	// would come before B's.
	marker := time.Now().Add(time.Minute)
	b.mustPublish(t, "anthropic", marker)
	a.expect(t, "anthropic", marker)
}

// TestPublishNeverShortens: a hint ending no later than the stored one is
// neither stored nor published, from any replica; a later one is both.
func TestPublishNeverShortens(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client(t)
	a, b, other := newReplica(t, c, "a"), newReplica(t, c, "b"), newReplica(t, c, "c")
	b.run(t, "openai", "anthropic")

	long := time.Now().Add(time.Hour)
	a.mustPublish(t, "openai", long)
	b.expect(t, "openai", long)

	a.mustPublish(t, "openai", long.Add(-30*time.Minute))
	a.mustPublish(t, "openai", long)
	other.mustPublish(t, "openai", long.Add(-time.Minute))
	if h, _ := storedHint(t, c, "openai"); h.UntilMs != untilMillis(long) || h.Replica != "a" {
		t.Errorf("stored hint = %+v, want A's until %d", h, untilMillis(long))
	}
	// None of them was published: the next hint B sees is the marker.
	marker := time.Now().Add(time.Minute)
	other.mustPublish(t, "anthropic", marker)
	b.expect(t, "anthropic", marker)

	longer := long.Add(time.Second)
	other.mustPublish(t, "openai", longer)
	b.expect(t, "openai", longer)
	if h, _ := storedHint(t, c, "openai"); h.UntilMs != untilMillis(longer) || h.Replica != "c" {
		t.Errorf("stored hint = %+v, want C's until %d", h, untilMillis(longer))
	}
}

// TestPublishOverBadValue: a key whose value is not a hint is replaced.
func TestPublishOverBadValue(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client(t)
	a := newReplica(t, c, "a")
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	for _, v := range []string{"garbage", `{"until_ms":"99999999999999"}`, `[1,2]`, "99999999999999"} {
		if err := c.Set(ctx, "test:breaker:{openai}", v, 0).Err(); err != nil {
			t.Fatal(err)
		}
		until := time.Now().Add(time.Minute)
		a.mustPublish(t, "openai", until)
		if h, _ := storedHint(t, c, "openai"); h.UntilMs != untilMillis(until) {
			t.Errorf("over %q: stored hint = %+v, want until %d", v, h, untilMillis(until))
		}
	}
}

// TestPublishOver: a hint already over by Redis's clock is dropped.
func TestPublishOver(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client(t)
	a := newReplica(t, c, "a")
	for _, until := range []time.Time{{}, time.Unix(1, 0), time.Now().Add(-time.Second)} {
		a.mustPublish(t, "openai", until)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if n, err := c.Exists(ctx, "test:breaker:{openai}").Result(); err != nil || n != 0 {
		t.Errorf("EXISTS = %d, %v after hints in the past, want 0", n, err)
	}
}

// TestLateReplicaReadsKeys: a replica that starts while hints stand learns
// them from the keys, except its own and those of other providers.
func TestLateReplicaReadsKeys(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client(t)
	a, b := newReplica(t, c, "a"), newReplica(t, c, "b")
	openai, anthropic := time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
	a.mustPublish(t, "openai", openai)
	a.mustPublish(t, "anthropic", anthropic)
	b.mustPublish(t, "mistral", time.Now().Add(time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := c.Set(ctx, "test:breaker:{broken}", "not a hint", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "test:breaker:{gemini}", hint{Provider: "openai", UntilMs: untilMillis(openai), Replica: "x"}.encode(), 0).Err(); err != nil {
		t.Fatal(err)
	}

	late := newReplica(t, c, "late")
	late.run(t, "openai", "anthropic", "broken", "gemini", "absent")
	got := map[string]time.Time{}
	for range 2 {
		a := late.next(t)
		got[a.provider] = a.until
	}
	if !got["openai"].Equal(time.UnixMilli(untilMillis(openai))) || !got["anthropic"].Equal(time.UnixMilli(untilMillis(anthropic))) {
		t.Errorf("late replica applied %v, want openai until %v and anthropic until %v", got, openai, anthropic)
	}
	if rec := late.log.waitFor(t, msgSubscribed, 1); rec.hints != 2 {
		t.Errorf("subscribed with %d hints, want 2", rec.hints)
	}
	if n := late.log.count("breaker hints: ignoring a malformed hint"); n != 2 {
		t.Errorf("%d malformed hints logged, want 2 (broken, and gemini's key naming openai)", n)
	}

	// A's own hints are not applied to A (a restarted process must use a
	// new replica id).
	again := newReplica(t, c, "a")
	again.run(t, "openai", "anthropic")
	if rec := again.log.waitFor(t, msgSubscribed, 1); rec.hints != 0 {
		t.Errorf("replica a subscribed with %d hints, want 0: both are its own", rec.hints)
	}
}

// TestRedisRestart: B keeps listening across Redis restarts. A hint
// published after B subscribed again reaches it by the channel; one
// published as soon as Redis is back reaches it by the channel or the key,
// whichever comes first. While Redis is down, Publish fails.
func TestRedisRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, b := newReplica(t, srv.Client(t), "a"), newReplica(t, srv.Client(t), "b")
	b.run(t, "openai", "anthropic")

	srv.Stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := a.Publish(ctx, "openai", time.Now().Add(time.Hour)); err == nil || !strings.Contains(err.Error(), "publishing breaker hint for openai") {
		t.Errorf("Publish() with Redis down = %v, want an error naming the provider", err)
	}
	srv.Restart(t)
	if rec := b.log.waitFor(t, msgResubscribed, 1); rec.hints != 0 {
		t.Errorf("resubscribed with %d hints, want 0 (the restarted Redis is empty)", rec.hints)
	}
	// B read the keys already: this one can only come by the channel. The
	// script is not cached any more: Script.Run falls back to EVAL.
	until := time.Now().Add(time.Hour)
	a.mustPublish(t, "openai", until)
	b.expect(t, "openai", until)

	srv.Restart(t)
	until = time.Now().Add(2 * time.Hour)
	a.mustPublish(t, "anthropic", until)
	b.expect(t, "anthropic", until)
	b.log.waitFor(t, msgResubscribed, 2)
}

// TestBadMessagesIgnored: what is not a hint for a watched provider from
// another replica, still in force, is ignored; malformed messages are
// logged at debug level.
func TestBadMessagesIgnored(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client(t)
	b := newReplica(t, c, "b")
	b.run(t, "openai")

	future := untilMillis(time.Now().Add(time.Hour))
	malformed := []string{
		"",
		"junk",
		"{}",
		"null",
		`{"provider":"openai","until_ms":` + itoa(future) + `}`,
		`{"provider":"openai","replica":"c"}`,
		`{"provider":"openai","until_ms":"` + itoa(future) + `","replica":"c"}`,
		`{"provider":"openai","until_ms":-5,"replica":"c"}`,
		`{"provider":"openai","until_ms":99999999999999999,"replica":"c"}`,
		`{"provider":"openai","until_ms":1.5,"replica":"c"}`,
		`{"provider":"openai","until_ms":` + itoa(future) + `,"replica":"c"} trailing`,
		`{"provider":"openai","until_ms":` + itoa(future) + `,"replica":"` + strings.Repeat("x", maxHintLen) + `"}`,
	}
	ignored := []string{
		hint{Provider: "gemini", UntilMs: future, Replica: "c"}.encode(),                 // not watched
		hint{Provider: "openai", UntilMs: future, Replica: "b"}.encode(),                 // B's own
		hint{Provider: "openai", UntilMs: 1000, Replica: "c"}.encode(),                   // over
		hint{Provider: "openai", UntilMs: time.Now().UnixMilli(), Replica: "c"}.encode(), // over by now
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	for _, m := range append(malformed, ignored...) {
		if err := c.Publish(ctx, "test:breaker", m).Err(); err != nil {
			t.Fatal(err)
		}
	}
	until := time.Now().Add(time.Hour)
	newReplica(t, c, "c").mustPublish(t, "openai", until)
	b.expect(t, "openai", until)
	if n := b.log.count("breaker hints: ignoring a malformed hint"); n != len(malformed) {
		t.Errorf("%d malformed hints logged, want %d", n, len(malformed))
	}
}

// TestRunStopsOnCancel: Run returns ctx's error at once, even while Redis
// is unreachable.
func TestRunStopsOnCancel(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client(t)
	b := newReplica(t, c, "b")
	b.run(t, "openai") // its cleanup checks that Run returns context.Canceled
	srv.Stop(t)
}

// TestSubscriptionKilled: when Redis drops B's subscriber connection and
// stays up, go-redis dials and subscribes again, B reads the keys again,
// and hints reach it by the channel as before.
func TestSubscriptionKilled(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client(t)
	a, b := newReplica(t, c, "a"), newReplica(t, c, "b")
	b.run(t, "openai", "anthropic")
	first := time.Now().Add(time.Hour)
	a.mustPublish(t, "openai", first)
	b.expect(t, "openai", first)

	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if n, err := c.ClientKillByFilter(ctx, "TYPE", "pubsub").Result(); err != nil || n != 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v; want 1 connection killed", n, err)
	}
	if rec := b.log.waitFor(t, msgResubscribed, 1); rec.hints != 1 {
		t.Errorf("resubscribed with %d hints, want 1 (openai's key)", rec.hints)
	}
	b.expect(t, "openai", first) // read again from the key: holds only extend, so no harm

	until := time.Now().Add(2 * time.Hour)
	a.mustPublish(t, "anthropic", until)
	b.expect(t, "anthropic", until)
}

// TestRefresh: a hint stored while B was subscribed, whose message B never
// got, reaches B at the next periodic read of the keys.
func TestRefresh(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c := srv.Client(t)
	b := newReplica(t, c, "b")
	b.refresh = 20 * time.Millisecond
	b.run(t, "openai")

	until := time.Now().Add(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	h := hint{Provider: "openai", UntilMs: untilMillis(until), Replica: "c"}
	if err := c.Set(ctx, "test:breaker:{openai}", h.encode(), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	b.expect(t, "openai", until)
}
