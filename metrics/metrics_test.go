package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestProviderMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	inflight := 2.0
	p := m.Provider("openai", []string{"critical", "low"}, func() float64 { return inflight },
		func(class int) float64 { return float64(10 * (class + 1)) })
	p.QueueWait(1, 3*time.Second)
	p.Estimated(120)
	p.Used(100, 7)
	p.Request(0, 200, 10*time.Millisecond)
	p.Request(0, 200, 20*time.Millisecond)
	p.Request(1, 429, time.Millisecond)
	p.Request(1, 999, time.Millisecond) // outside the cache: still counted
	p.Upstream(503, time.Second)
	p.UpstreamFailed(true, time.Second)
	p.UpstreamFailed(false, time.Second)

	const want = `
# HELP sluice_requests_total Requests answered by Sluice, by provider, priority class and HTTP status sent to the client.
# TYPE sluice_requests_total counter
sluice_requests_total{class="critical",code="200",provider="openai"} 2
sluice_requests_total{class="low",code="429",provider="openai"} 1
sluice_requests_total{class="low",code="999",provider="openai"} 1
# HELP sluice_upstream_requests_total Attempts sent upstream, by provider and upstream HTTP status (or error / timeout).
# TYPE sluice_upstream_requests_total counter
sluice_upstream_requests_total{code="503",provider="openai"} 1
sluice_upstream_requests_total{code="error",provider="openai"} 1
sluice_upstream_requests_total{code="timeout",provider="openai"} 1
# HELP sluice_inflight_requests Requests currently being proxied upstream (streams count until their last byte).
# TYPE sluice_inflight_requests gauge
sluice_inflight_requests{provider="openai"} 2
# HELP sluice_queue_depth Requests waiting in Sluice's queue for their quota, by provider and priority class.
# TYPE sluice_queue_depth gauge
sluice_queue_depth{class="critical",provider="openai"} 10
sluice_queue_depth{class="low",provider="openai"} 20
# HELP sluice_tokens_total Tokens by provider and kind: estimated before sending (charged to the quota), and prompt and completion as the upstream reported them.
# TYPE sluice_tokens_total counter
sluice_tokens_total{kind="completion",provider="openai"} 7
sluice_tokens_total{kind="estimated",provider="openai"} 120
sluice_tokens_total{kind="prompt",provider="openai"} 100
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"sluice_requests_total", "sluice_upstream_requests_total", "sluice_inflight_requests",
		"sluice_queue_depth", "sluice_tokens_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "sluice_request_duration_seconds"); n != 2 {
		t.Errorf("request duration series = %d, want 2 (one per class)", n)
	}
	if n := testutil.CollectAndCount(reg, "sluice_queue_wait_seconds"); n != 2 {
		t.Errorf("queue wait series = %d, want 2 (one per class)", n)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) != 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}

func BenchmarkRequest(b *testing.B) {
	p := New(prometheus.NewRegistry()).Provider("openai", []string{"default"}, func() float64 { return 0 }, nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p.Request(0, 200, time.Millisecond)
		}
	})
}

func TestDeadLetterMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	depth := 3.0
	m.SpoolDepth(func() float64 { return depth })
	m.Replayed("openai", "delivered")
	m.Replayed("openai", "delivered")
	m.Replayed("openai", "refused")
	const want = `
# HELP sluice_deadletter_replays_total Dead letters replayed, by provider and outcome: delivered, failed (sent and failed again) or refused (nothing sent).
# TYPE sluice_deadletter_replays_total counter
sluice_deadletter_replays_total{outcome="delivered",provider="openai"} 2
sluice_deadletter_replays_total{outcome="refused",provider="openai"} 1
# HELP sluice_deadletter_spool_depth Dead letters spooled to the local file while Redis is unreachable, waiting to be moved to the stream.
# TYPE sluice_deadletter_spool_depth gauge
sluice_deadletter_spool_depth 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "sluice_deadletter_replays_total", "sluice_deadletter_spool_depth"); err != nil {
		t.Error(err)
	}
}
