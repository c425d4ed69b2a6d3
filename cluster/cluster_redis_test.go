package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/redistest"
)

// TestBreakerSyncOnCluster runs breaker hints on a three-node Redis
// Cluster, each replica with its own cluster client. The subscribers sit on
// the node of the channel's slot; a hint for anthropic is stored and
// published by the script on another node, so it reaches them only through
// the cluster bus. A replica that starts late reads both providers' keys,
// on two nodes, in one pipeline.
func TestBreakerSyncOnCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t)
	probe := cl.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()

	a, b := newReplica(t, cl.Client(t), "a"), newReplica(t, cl.Client(t), "b")
	chanNode, err := probe.MasterForKey(ctx, a.channel)
	if err != nil {
		t.Fatal(err)
	}
	anthNode, err := probe.MasterForKey(ctx, a.key("anthropic"))
	if err != nil {
		t.Fatal(err)
	}
	if chanNode.Options().Addr == anthNode.Options().Addr {
		t.Fatalf("channel %s and key %s are both on %s; the test wants two nodes", a.channel, a.key("anthropic"), chanNode.Options().Addr)
	}
	a.run(t, "openai", "anthropic")
	b.run(t, "openai", "anthropic")
	// PUBSUB NUMSUB counts a node's own subscribers only.
	if n, err := chanNode.PubSubNumSub(ctx, a.channel).Result(); err != nil || n[a.channel] != 2 {
		t.Fatalf("PUBSUB NUMSUB %s on %s = %v, %v, want both replicas there", a.channel, chanNode.Options().Addr, n, err)
	}

	// Across nodes: the script runs on anthropic's node, B listens on the
	// channel's.
	anthropic := time.Now().Add(time.Hour)
	a.mustPublish(t, "anthropic", anthropic)
	b.expect(t, "anthropic", anthropic)
	// And back. A's own hint came first on the channel: had A applied it,
	// A's next hint would be anthropic, not openai.
	openai := time.Now().Add(2 * time.Hour)
	b.mustPublish(t, "openai", openai)
	a.expect(t, "openai", openai)

	h, ttl := storedHint(t, probe, "anthropic")
	if want := (hint{Provider: "anthropic", UntilMs: untilMillis(anthropic), Replica: "a"}); h != want {
		t.Errorf("stored anthropic hint = %+v, want %+v", h, want)
	}
	if ttl <= 0 || ttl > time.Hour+time.Second {
		t.Errorf("PTTL of anthropic's hint = %v, want about 1h", ttl)
	}
	// A shorter hint is neither stored nor published (the script read the
	// stored one): the next hint A sees is B's longer one for openai.
	b.mustPublish(t, "anthropic", anthropic.Add(-time.Minute))
	if h, _ := storedHint(t, probe, "anthropic"); h.UntilMs != untilMillis(anthropic) || h.Replica != "a" {
		t.Errorf("stored anthropic hint after a shorter one = %+v, want A's until %d", h, untilMillis(anthropic))
	}
	longer := openai.Add(time.Hour)
	b.mustPublish(t, "openai", longer)
	a.expect(t, "openai", longer)

	late := newReplica(t, cl.Client(t), "late")
	late.run(t, "openai", "anthropic", "absent")
	got := map[string]time.Time{}
	for range 2 {
		x := late.next(t)
		got[x.provider] = x.until
	}
	if !got["anthropic"].Equal(time.UnixMilli(untilMillis(anthropic))) || !got["openai"].Equal(time.UnixMilli(untilMillis(longer))) {
		t.Errorf("late replica applied %v, want anthropic until %v and openai until %v", got, anthropic, longer)
	}
	if rec := late.log.waitFor(t, msgSubscribed, 1); rec.hints != 2 {
		t.Errorf("late replica subscribed with %d hints, want 2", rec.hints)
	}
}
