package limiter

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/internal/redistest"
)

// clusterLog is a bytes.Buffer for a logger that goroutines share.
type clusterLog struct {
	mu  sync.Mutex // protects buf
	buf bytes.Buffer
}

func (b *clusterLog) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *clusterLog) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestSharedOnCluster runs every script of the shared limiter on a
// three-node Redis Cluster, from two replicas with their own cluster
// clients: a reservation over a model, its provider and a class ceiling
// (three keys of the {openai} tag in one script), concurrency across
// replicas and its release, a rate wait, a never, corrections and clamps
// settled for two tags owned by different nodes, reads, and a pause. Had
// any script failed (CROSSSLOT, a key not declared), the limiter would
// have fallen back to its twins: the test checks it never did.
func TestSharedOnCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t)
	var logs clusterLog
	tune := func(s *SharedSettings) {
		// Generous: the first call of a cluster client loads the slot map,
		// and -race on two cores is slow.
		s.Timeout = 2 * time.Second
		s.Log = slog.New(slog.NewTextHandler(&logs, nil))
	}
	a, b := newReplica(t, cl.Client(t), "a", tune), newReplica(t, cl.Client(t), "b", tune)
	checkUp := func(when string) {
		t.Helper()
		for _, r := range []*replica{a, b} {
			select {
			case up := <-r.ups:
				t.Fatalf("%s: replica %s reported OnRedis(%v), want no outage; log:\n%s", when, r.replica, up, logs.String())
			default:
			}
			if !r.Up() {
				t.Fatalf("%s: replica %s is down; log:\n%s", when, r.replica, logs.String())
			}
		}
	}

	// Slow rates (a token a second, from a burst of 6000; a request every
	// 10s on the ceiling), so that the checks below hold even if the test
	// runs for seconds.
	model := Limits{RequestsPerMinute: 600, RequestBurst: time.Second, MaxConcurrency: 2} // burst 10
	provider := Limits{TokensPerMinute: 60, TokenBurst: 100 * time.Minute}
	ceiling := Limits{RequestsPerMinute: 6, RequestBurst: 30 * time.Second} // burst 3
	other := Limits{TokensPerMinute: 60, TokenBurst: 100 * time.Minute, MaxConcurrency: 1}
	type buckets struct {
		scope []*Bucket // model, provider, ceiling: all {openai}
		anth  *Bucket
	}
	mk := func(r *replica) buckets {
		return buckets{
			scope: []*Bucket{
				mustShared(t, r, "openai/gpt-4o", model),
				mustShared(t, r, "openai", provider),
				mustShared(t, r, "openai#low", ceiling),
			},
			anth: mustShared(t, r, "anthropic", other),
		}
	}
	ba, bb := mk(a), mk(b)
	call := Cost{Requests: 1, Tokens: 1000}

	// The two tags' keys live on different nodes, so the settles below are
	// two calls to two nodes.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := cl.Client(t)
	openaiKey, anthKey := a.remoteOf(ba.scope[0]).key, a.remoteOf(ba.anth).key
	openaiNode, err := client.MasterForKey(ctx, openaiKey)
	if err != nil {
		t.Fatal(err)
	}
	anthNode, err := client.MasterForKey(ctx, anthKey)
	if err != nil {
		t.Fatal(err)
	}
	if openaiNode.Options().Addr == anthNode.Options().Addr {
		t.Fatalf("%s and %s are both on %s; the test wants two nodes", openaiKey, anthKey, openaiNode.Options().Addr)
	}

	// Concurrency across replicas, on the model's cap of 2.
	for i := range 2 {
		if d := reserve(t, a, ba.scope, call, Ask{}); !d.OK || d.Wait != 0 {
			t.Fatalf("a, request %d: %+v, want OK at once", i, d)
		}
	}
	checkUp("after a's reservations")
	if d := reserve(t, b, bb.scope, call, Ask{}); !d.Busy || d.Bucket != 0 {
		t.Fatalf("b with the model's 2 slots held by a: %+v, want Busy on bucket 0", d)
	}
	if u := b.Usage(bb.scope[0]); u.Inflight != 2 {
		t.Errorf("b reads the model's in-flight count as %d, want 2 (a's)", u.Inflight)
	}
	if err := a.Release(context.Background(), ba.scope); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b gets the slot a released", func() bool {
		return reserve(t, b, bb.scope, call, Ask{}).OK
	})
	checkUp("after the release")

	// The ceiling's burst of 3 is spent: the next request waits up to 10s
	// on it (index 1 here), though the provider has tokens left.
	d := reserve(t, b, bb.scope[1:], Cost{Requests: 1, Tokens: 100}, Ask{})
	if d.OK || d.Busy || d.Never || d.Bucket != 1 || d.Wait <= 0 || d.Wait > 10*time.Second {
		t.Errorf("b on provider+ceiling after 3 requests: %+v, want a wait of at most 10s on bucket 1", d)
	}
	// Estimate asks no Redis (the scheduler calls it under its lock): a
	// lower bound of the real wait.
	if e := a.Estimate(ba.scope, Cost{Requests: 1, Tokens: 100}); e < 0 || e > d.Wait {
		t.Errorf("a.Estimate(scope) = %v, want a lower bound of the real wait %v", e, d.Wait)
	}
	if d := reserve(t, b, bb.scope[1:2], Cost{Tokens: 7000}, Ask{}); !d.Never || d.Bucket != 0 {
		t.Errorf("b asking 7000 tokens of a 6000 burst: %+v, want Never on bucket 0", d)
	}

	// Corrections, returned slots and clamps, settled per tag: a refunds
	// 2000 tokens on {openai}; b charges 500 more on {anthropic}, releases
	// its slot there, and clamps it to what the provider reported left.
	before := b.Usage(bb.scope[1]).Tokens
	if before > 3000+100 {
		t.Errorf("provider tokens left after 3 calls of 1000 = %.0f, want about 3000", before)
	}
	if err := a.Adjust(context.Background(), ba.scope, Cost{Tokens: -2000}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b sees a's refund", func() bool { return b.Usage(bb.scope[1]).Tokens >= before+2000 })
	if d := reserve(t, b, []*Bucket{bb.anth}, call, Ask{}); !d.OK {
		t.Fatalf("b on anthropic: %+v, want OK", d)
	}
	if err := b.Adjust(context.Background(), []*Bucket{bb.anth}, Cost{Tokens: 500}); err != nil {
		t.Fatal(err)
	}
	if err := b.Release(context.Background(), []*Bucket{bb.anth}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a sees b's overage and release on anthropic", func() bool {
		u := a.Usage(ba.anth)
		return u.Inflight == 0 && u.Tokens <= 4500+100
	})
	b.ClampAt(time.Now(), bb.anth, -1, 1000)
	waitFor(t, "a sees b's clamp on anthropic", func() bool { return a.Usage(ba.anth).Tokens <= 1000+100 })
	if d := reserve(t, a, []*Bucket{ba.anth}, Cost{Tokens: 2000}, Ask{}); d.OK || d.Wait < 900*time.Second {
		t.Errorf("a asking 2000 anthropic tokens after a clamp to 1000: %+v, want a wait of about 1000s", d)
	}
	checkUp("after the settles")

	// A pause on the provider holds the other replica's reservations.
	// (The model's two slots are held, one by each replica: leave it out.)
	until := time.Now().Add(time.Hour)
	if !a.PauseAt(time.Now(), ba.scope[1], until) {
		t.Fatal("a.PauseAt(provider, +1h) = false, want the pause set")
	}
	if d := reserve(t, b, bb.scope[1:], call, Ask{}); d.OK || d.Busy || d.Bucket != 0 || d.Wait < 59*time.Minute {
		t.Errorf("b on provider+ceiling during a's pause: %+v, want a wait of about 1h on bucket 0", d)
	}
	if p := b.PausedUntil(time.Now(), bb.scope[1]); p.Sub(until).Abs() > time.Millisecond {
		t.Errorf("b learned the pause until %v, want %v", p, until)
	}
	if e := b.Estimate(bb.scope, Cost{Requests: 1}); e < 59*time.Minute {
		t.Errorf("b.Estimate(scope) during the pause = %v, want about 1h", e)
	}
	if e := b.Estimate([]*Bucket{bb.anth}, Cost{Requests: 1}); e != 0 {
		t.Errorf("b.Estimate(anthropic) = %v, want 0: the pause is openai's", e)
	}
	checkUp("after the pause")

	// Each key is on the node its tag's slot names: a node answers only
	// for its own slots (MOVED otherwise).
	for _, k := range []struct {
		key       string
		node      *redis.Client
		hasFields []string
	}{
		{openaiKey, openaiNode, []string{"r", "c:a", "c:b"}},
		{a.remoteOf(ba.scope[1]).key, openaiNode, []string{"t", "p"}},
		{a.remoteOf(ba.scope[2]).key, openaiNode, []string{"r"}},
		{anthKey, anthNode, []string{"t", "c:b", "e:b"}},
	} {
		for _, f := range k.hasFields {
			if ok, err := k.node.HExists(ctx, k.key, f).Result(); err != nil || !ok {
				t.Errorf("HEXISTS %s %s on %s = %v, %v, want true", k.key, f, k.node.Options().Addr, ok, err)
			}
		}
	}
}
