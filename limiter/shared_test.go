package limiter

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/internal/redistest"
)

// replica is one Shared limiter as a replica would run it.
type replica struct {
	*Shared
	cancel context.CancelFunc
	done   chan struct{}
	ups    chan bool // OnRedis reports
}

// newReplica starts a Shared on c, running until the test ends or stop.
func newReplica(t *testing.T, c redis.UniversalClient, id string, tune func(*SharedSettings)) *replica {
	t.Helper()
	r := &replica{done: make(chan struct{}), ups: make(chan bool, 16)}
	s := SharedSettings{Client: c, Prefix: "test:", Replica: id, Log: slog.New(slog.DiscardHandler),
		Timeout: 200 * time.Millisecond, SettleEvery: 10 * time.Millisecond, OnRedis: func(up bool) { r.ups <- up }}
	if tune != nil {
		tune(&s)
	}
	sh, err := NewShared(s)
	if err != nil {
		t.Fatal(err)
	}
	r.Shared = sh
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { defer close(r.done); sh.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.cancel()
	<-r.done
}

func mustShared(t *testing.T, r *replica, key string, l Limits) *Bucket {
	t.Helper()
	b, err := r.NewBucket(key, l)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func reserve(t *testing.T, r *replica, b []*Bucket, c Cost, a Ask) Decision {
	t.Helper()
	d, err := r.Reserve(context.Background(), b, c, a)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// waitFor polls cond until it holds or 5s pass: the conditions here are
// about Redis state other goroutines change.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSharedRateAcrossReplicas: three replicas hammering one shared bucket
// admit, together, no more than its burst plus its rate.
func TestSharedRateAcrossReplicas(t *testing.T) {
	c := redistest.Start(t).Client(t)
	lim := Limits{RequestsPerMinute: 1200, RequestBurst: 500 * time.Millisecond} // 20/s, burst 10
	var admitted atomic.Int64
	start := time.Now()
	const run = 1500 * time.Millisecond
	var wg sync.WaitGroup
	for _, id := range []string{"a", "b", "c"} {
		r := newReplica(t, c, id, nil)
		b := mustShared(t, r, "openai", lim)
		for range 2 {
			wg.Go(func() {
				for time.Since(start) < run {
					if d := reserve(t, r, []*Bucket{b}, Cost{Requests: 1}, Ask{}); d.OK {
						admitted.Add(1)
					} else {
						time.Sleep(min(d.Wait, 10*time.Millisecond))
					}
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	bound := 10 + 20*elapsed.Seconds()
	got := float64(admitted.Load())
	if got > bound+1 || got < 0.8*(10+20*run.Seconds()) {
		t.Errorf("admitted %v in %v across 3 replicas; want at most %.1f (burst + rate) and close to it", got, elapsed, bound)
	}
	t.Logf("admitted %v of at most %.1f (%.0f%%)", got, bound, 100*got/bound)
}

// TestSharedConcurrencyAndLeases: a concurrency cap holds across replicas,
// a release reaches the others with the next settle, and the slots of a
// replica that stops talking come back when its lease expires.
func TestSharedConcurrencyAndLeases(t *testing.T) {
	c := redistest.Start(t).Client(t)
	lim := Limits{MaxConcurrency: 2}
	tune := func(s *SharedSettings) { s.LeaseTTL = 300 * time.Millisecond }
	a, b := newReplica(t, c, "a", tune), newReplica(t, c, "b", tune)
	ba, bb := mustShared(t, a, "openai", lim), mustShared(t, b, "openai", lim)
	for range 2 {
		if d := reserve(t, a, []*Bucket{ba}, Cost{Requests: 1}, Ask{}); !d.OK {
			t.Fatalf("a: %+v, want OK", d)
		}
	}
	d := reserve(t, b, []*Bucket{bb}, Cost{Requests: 1}, Ask{})
	if !d.Busy || d.Wait < busyRecheck {
		t.Fatalf("b with both slots held by a: %+v, want Busy with a recheck wait", d)
	}
	a.Release(context.Background(), []*Bucket{ba})
	waitFor(t, "b gets a's released slot", func() bool {
		return reserve(t, b, []*Bucket{bb}, Cost{Requests: 1}, Ask{}).OK
	})
	// a dies holding one slot: no release, no renewal.
	a.stop()
	if d := reserve(t, b, []*Bucket{bb}, Cost{Requests: 1}, Ask{}); !d.Busy {
		t.Fatalf("b while a's lease lives: %+v, want Busy", d)
	}
	waitFor(t, "a's slot comes back when its lease expires", func() bool {
		return reserve(t, b, []*Bucket{bb}, Cost{Requests: 1}, Ask{}).OK
	})
}

// TestSharedRefundAndPause: a refund on one replica makes room on another,
// and a pause set by one holds the others until it ends.
func TestSharedRefundAndPause(t *testing.T) {
	c := redistest.Start(t).Client(t)
	lim := Limits{TokensPerMinute: 6000, TokenBurst: time.Minute} // burst 6000 tokens
	a, b := newReplica(t, c, "a", nil), newReplica(t, c, "b", nil)
	ba, bb := mustShared(t, a, "openai", lim), mustShared(t, b, "openai", lim)
	if d := reserve(t, a, []*Bucket{ba}, Cost{Tokens: 5000}, Ask{}); !d.OK {
		t.Fatalf("a: %+v", d)
	}
	if d := reserve(t, b, []*Bucket{bb}, Cost{Tokens: 5000}, Ask{}); d.OK || d.Wait < 30*time.Second {
		t.Fatalf("b after a took 5000 of 6000: %+v, want a wait of about 40s", d)
	}
	a.Adjust(context.Background(), []*Bucket{ba}, Cost{Tokens: -4000}) // it used 1000
	waitFor(t, "b sees a's refund", func() bool {
		return reserve(t, b, []*Bucket{bb}, Cost{Tokens: 4000}, Ask{}).OK
	})

	until := time.Now().Add(400 * time.Millisecond)
	if !a.PauseAt(time.Now(), ba, until) {
		t.Fatal("the pause was not set")
	}
	d := reserve(t, b, []*Bucket{bb}, Cost{Tokens: 1}, Ask{})
	if d.OK || d.Wait < 200*time.Millisecond {
		t.Fatalf("b during a's pause: %+v, want a wait until it ends", d)
	}
	if p := b.PausedUntil(time.Now(), bb); p.Sub(until).Abs() > 5*time.Millisecond {
		t.Errorf("b learned the pause until %v, want %v", p, until)
	}
	if a.PauseAt(time.Now(), ba, until.Add(-time.Second)) {
		t.Error("a shorter pause replaced a longer one")
	}
}

// TestSharedHeadroom: a request asking for headroom leaves the top of the
// bucket to others, across replicas.
func TestSharedHeadroom(t *testing.T) {
	c := redistest.Start(t).Client(t)
	lim := Limits{RequestsPerMinute: 60, RequestBurst: 10 * time.Second} // burst 10
	a, b := newReplica(t, c, "a", nil), newReplica(t, c, "b", nil)
	ba, bb := mustShared(t, a, "openai", lim), mustShared(t, b, "openai", lim)
	low := 0
	for reserve(t, a, []*Bucket{ba}, Cost{Requests: 1}, Ask{Headroom: 0.3}).OK {
		low++
	}
	if low != 7 {
		t.Errorf("a low class with headroom 0.3 took %d of 10, want 7", low)
	}
	for i := range 3 {
		if d := reserve(t, b, []*Bucket{bb}, Cost{Requests: 1}, Ask{}); !d.OK {
			t.Fatalf("the top class on another replica, request %d: %+v, want OK from the headroom", i, d)
		}
	}
}

// TestSharedRedisOutage: with Redis gone the limiter keeps admitting at the
// degraded share, never fully open; when Redis is back it re-syncs its
// in-flight counts and limits as one again.
func TestSharedRedisOutage(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	lim := Limits{RequestsPerMinute: 60, RequestBurst: 10 * time.Second, MaxConcurrency: 10}
	a := newReplica(t, c, "a", func(s *SharedSettings) { s.DegradedShare = 0.5 })
	b := mustShared(t, a, "openai", lim)
	if d := reserve(t, a, []*Bucket{b}, Cost{Requests: 1}, Ask{}); !d.OK {
		t.Fatalf("before the outage: %+v", d)
	}
	srv.Stop(t)
	admitted := 0
	for reserve(t, a, []*Bucket{b}, Cost{Requests: 1}, Ask{}).OK {
		admitted++
	}
	if a.Up() || <-a.ups {
		t.Fatal("the outage was not noticed")
	}
	// The twin holds half of the limits: a burst of 5 requests and 5
	// slots, one of them taken before the outage.
	if admitted != 4 {
		t.Errorf("admitted %d during the outage, want 4: half the concurrency, less the request in flight", admitted)
	}
	srv.Restart(t)
	select {
	case up := <-a.ups:
		if !up {
			t.Fatal("OnRedis(false) again instead of true")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Redis back, but the limiter did not notice within 5s")
	}
	n, err := c.HGet(context.Background(), "test:rl:{openai}:openai", "c:a").Int64()
	if err != nil || n != 5 {
		t.Errorf("in-flight count in Redis after the re-sync = %d, %v; want 5", n, err)
	}
	// Redis lost the bucket: it starts empty, not with a full burst.
	if d := reserve(t, a, []*Bucket{b}, Cost{Requests: 1}, Ask{}); d.OK || d.Wait < 500*time.Millisecond {
		t.Errorf("right after the re-sync: %+v, want a wait (the bucket starts empty)", d)
	}
}

// TestSharedKeysShareASlot: every key one reservation can touch carries
// the provider's hash tag, so the scripts run on a Redis Cluster.
func TestSharedKeysShareASlot(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	defer c.Close()
	r, err := NewShared(SharedSettings{Client: c, Replica: "a", Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"openai", "openai/gpt-4o", "openai#low", "openai/gpt-4o#low"} {
		b, err := r.NewBucket(key, Limits{RequestsPerMinute: 60, RequestBurst: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		k := r.remoteOf(b).key
		if open, close := strings.Index(k, "{"), strings.Index(k, "}"); k[open:close+1] != "{openai}" {
			t.Errorf("key %q: hash tag %q, want {openai}", k, k[open:close+1])
		}
	}
}

// BenchmarkSharedReserve measures one shared reservation and its settle
// over loopback to a real redis-server, and reports the Redis CPU each
// script call costs (INFO commandstats).
func BenchmarkSharedReserve(b *testing.B) {
	c := redistest.Start(b).Client(b)
	sh, err := NewShared(SharedSettings{Client: c, Prefix: "bench:", Replica: "a", Log: slog.New(slog.DiscardHandler), Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	lim := Limits{RequestsPerMinute: 1e9, RequestBurst: time.Second, TokensPerMinute: 1e12, TokenBurst: time.Minute, MaxConcurrency: 1 << 20}
	provider, err := sh.NewBucket("openai", lim)
	if err != nil {
		b.Fatal(err)
	}
	model, err := sh.NewBucket("openai/gpt-4o", lim)
	if err != nil {
		b.Fatal(err)
	}
	buckets := []*Bucket{model, provider}
	ctx := context.Background()
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		d, err := sh.Reserve(ctx, buckets, Cost{Requests: 1, Tokens: 500}, Ask{})
		if err != nil || !d.OK {
			b.Fatalf("%+v %v", d, err)
		}
		sh.Adjust(ctx, buckets, Cost{Tokens: -100})
		sh.Release(ctx, buckets)
		if i%64 == 63 {
			sh.settle(false, false) // as Run does every SettleEvery
		}
	}
	b.StopTimer()
	stats, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(stats, "\r\n") {
		// cmdstat_evalsha:calls=N,usec=U,usec_per_call=X,...
		if strings.HasPrefix(line, "cmdstat_evalsha:") {
			for _, kv := range strings.Split(strings.TrimPrefix(line, "cmdstat_evalsha:"), ",") {
				if v, ok := strings.CutPrefix(kv, "usec_per_call="); ok {
					var f float64
					if _, err := fmt.Sscan(v, &f); err == nil {
						b.ReportMetric(f, "redis-µs/call")
					}
				}
			}
		}
	}
}

// roundTrips counts the network round trips a client makes for its
// callers: one per command sent alone, one per pipeline; not the
// handshake of a new connection (HELLO, CLIENT SETINFO).
type roundTrips struct {
	n    atomic.Int64
	mu   sync.Mutex
	seen []string
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if handshake(cmd) {
			return next(ctx, cmd)
		}
		h.n.Add(1)
		h.mu.Lock()
		h.seen = append(h.seen, cmd.Name())
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if handshake(cmds...) {
			return next(ctx, cmds)
		}
		h.n.Add(1)
		h.mu.Lock()
		h.seen = append(h.seen, fmt.Sprintf("pipeline(%d)", len(cmds)))
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

// handshake reports whether cmds are a new connection's HELLO and CLIENT
// SETINFO, which go-redis runs through the hooks too.
func handshake(cmds ...redis.Cmder) bool {
	for _, c := range cmds {
		if n := c.Name(); n != "hello" && n != "client" {
			return false
		}
	}
	return len(cmds) > 0
}

// TestSharedOneRoundTripPerRequest: under steady traffic the batched
// corrections and releases ride along with reservations, so a request
// costs one round trip, and they still reach Redis.
func TestSharedOneRoundTripPerRequest(t *testing.T) {
	c := redistest.Start(t).Client(t)
	var rt roundTrips
	c.AddHook(&rt)
	// Settles come due every 100ms; the timer settles a tag only after
	// 100ms without a reservation, which a loaded machine's pauses do not
	// reach between requests a millisecond apart.
	r := newReplica(t, c, "a", func(s *SharedSettings) { s.SettleEvery = 100 * time.Millisecond })
	b := mustShared(t, r, "openai", Limits{TokensPerMinute: 6e6, TokenBurst: time.Minute, MaxConcurrency: 1000})
	ctx := context.Background()
	// Warm the script cache, as a replica's first requests do.
	if d := reserve(t, r, []*Bucket{b}, Cost{Tokens: 100}, Ask{}); !d.OK {
		t.Fatalf("%+v", d)
	}
	r.Release(ctx, []*Bucket{b})
	r.settle(false, false)
	before := rt.n.Load()
	const n = 300
	for range n {
		time.Sleep(time.Millisecond) // steady traffic: a request every millisecond or so
		if d := reserve(t, r, []*Bucket{b}, Cost{Tokens: 100}, Ask{}); !d.OK {
			t.Fatalf("%+v", d)
		}
		r.Adjust(ctx, []*Bucket{b}, Cost{Tokens: -50})
		r.Release(ctx, []*Bucket{b})
	}
	if got := rt.n.Load() - before; got != n {
		t.Errorf("%d round trips for %d requests, want exactly one each (all: %v)", got, n, rt.seen)
	}
	// The releases went along: Redis counts no more in flight than were
	// released since the last reservation carried them.
	inflight, err := c.HGet(ctx, "test:rl:{openai}:openai", "c:a").Int64()
	if err != nil || inflight > 150 {
		t.Errorf("in flight in Redis after %d requests and their releases = %d, %v; want the releases carried along", n, inflight, err)
	}
	waitFor(t, "the timer settles the rest once the traffic stops", func() bool {
		v, err := c.HGet(ctx, "test:rl:{openai}:openai", "c:a").Int64()
		return err == nil && v == 0
	})
}

// TestSharedAboveOneUnitPerMicrosecond: a token rate above 60M a minute
// (OpenAI's largest quotas) is neither capped nor rounded into admitting
// more than it should.
func TestSharedAboveOneUnitPerMicrosecond(t *testing.T) {
	c := redistest.Start(t).Client(t)
	r := newReplica(t, c, "a", nil)
	b := mustShared(t, r, "openai", Limits{TokensPerMinute: 150e6, TokenBurst: time.Second}) // 2.5M a second
	if d := reserve(t, r, []*Bucket{b}, Cost{Tokens: 2_400_000}, Ask{}); !d.OK {
		t.Fatalf("2.4M tokens of a 2.5M burst: %+v, want OK", d)
	}
	d := reserve(t, r, []*Bucket{b}, Cost{Tokens: 2_400_000}, Ask{})
	if d.OK || d.Never || d.Wait < 850*time.Millisecond || d.Wait > 960*time.Millisecond {
		t.Errorf("the next 2.4M: %+v, want a wait of about 0.92s (2.3M at 2.5M a second)", d)
	}
	if u := r.Usage(b); u.TokenCapacity < 2.49e6 || u.TokenCapacity > 2.51e6 {
		t.Errorf("token capacity %v, want 2.5M", u.TokenCapacity)
	}
}
