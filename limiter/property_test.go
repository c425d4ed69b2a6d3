package limiter

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"
)

// event is a change of what the buckets hold at a simulated instant: a
// request's charge when it goes (positive) or a refund (negative).
type event struct {
	at               time.Duration // since epoch
	requests, tokens int64
}

// simulation describes a run of a queue in front of buckets that every
// request is charged on.
type simulation struct {
	name      string
	buckets   []Limits
	duration  time.Duration
	gap       time.Duration // mean time between arrivals (exponential)
	maxTokens int64         // token cost, uniform in [1, maxTokens]
	within    time.Duration // Ask.CommitWithin, uniform in [0, within]
	refunds   bool          // give back a uniform part of each request's tokens, up to 30s after it went
	light     bool          // no throughput check (demand about the limits, or no single binding dimension)
}

var simulations = []simulation{
	{
		name:      "tokens bind",
		buckets:   []Limits{{RequestsPerMinute: 600, RequestBurst: 2 * time.Second, TokensPerMinute: 60000, TokenBurst: 10 * time.Second}},
		duration:  5 * time.Minute,
		gap:       50 * time.Millisecond,
		maxTokens: 3000,
	},
	{
		name:      "requests bind",
		buckets:   []Limits{{RequestsPerMinute: 300, RequestBurst: time.Second, TokensPerMinute: 1e6, TokenBurst: time.Minute}},
		duration:  5 * time.Minute,
		gap:       100 * time.Millisecond,
		maxTokens: 100,
	},
	{
		name:      "fractional rates",
		buckets:   []Limits{{RequestsPerMinute: 7.5, RequestBurst: 10 * time.Second, TokensPerMinute: 7777, TokenBurst: 30 * time.Second}},
		duration:  10 * time.Minute,
		gap:       2 * time.Second,
		maxTokens: 3000,
	},
	{
		name:      "refunds",
		buckets:   []Limits{{RequestsPerMinute: 600, RequestBurst: 2 * time.Second, TokensPerMinute: 60000, TokenBurst: 10 * time.Second}},
		duration:  5 * time.Minute,
		gap:       50 * time.Millisecond,
		maxTokens: 3000,
		refunds:   true,
	},
	{
		// Refunds that arrive while the bucket is nearly full must not
		// make it fuller than full.
		name:      "refunds with idle spells",
		buckets:   []Limits{{TokensPerMinute: 60000, TokenBurst: 10 * time.Second}},
		duration:  5 * time.Minute,
		gap:       2 * time.Second,
		maxTokens: 4000,
		refunds:   true,
		light:     true,
	},
	{
		name:      "committed future slots",
		buckets:   []Limits{{RequestsPerMinute: 120, RequestBurst: 3 * time.Second, TokensPerMinute: 60000, TokenBurst: 10 * time.Second}},
		duration:  5 * time.Minute,
		gap:       100 * time.Millisecond,
		maxTokens: 2000,
		within:    2 * time.Second,
	},
	{
		// Both dimensions bind by turns, so a slot committed for later
		// must be charged as of its send time in the one that did not.
		name:      "committed future slots, mixed",
		buckets:   []Limits{{RequestsPerMinute: 60, RequestBurst: 2 * time.Second, TokensPerMinute: 60000, TokenBurst: 3 * time.Second}},
		duration:  5 * time.Minute,
		gap:       200 * time.Millisecond,
		maxTokens: 2000,
		within:    2 * time.Second,
		light:     true, // taking turns, neither dimension alone reaches its rate
	},
	{
		name: "provider and class ceiling",
		buckets: []Limits{
			{RequestsPerMinute: 600, RequestBurst: time.Second, TokensPerMinute: 90000, TokenBurst: 20 * time.Second},
			scale(Limits{RequestsPerMinute: 600, RequestBurst: time.Second, TokensPerMinute: 90000, TokenBurst: 20 * time.Second}, 0.5),
		},
		duration:  5 * time.Minute,
		gap:       50 * time.Millisecond,
		maxTokens: 1500,
	},
}

// TestQuotaInvariant runs a queue with more demand than the limits allow
// over simulated minutes. The head of the queue asks with ReserveAt and,
// when told to wait, asks again at now+Wait (or after a refund). What the
// buckets admitted must never exceed their burst capacity plus their rate
// over any window, and must reach the rate in the long run.
//
// Each simulation runs twice: without headroom, and with a headroom drawn
// anew for every ask from [-0.1, 1.1), past both ends of [0, 1) where it
// is clamped. Headroom only makes requests wait longer, so the invariant
// must hold alike. It must not stall the queue either (a wait of 0
// without OK would, and Never is a failure), nor cost throughput: a
// request that needs more room than the headroom leaves still goes on a
// full bucket, and the bucket keeps refilling at its rate meanwhile.
func TestQuotaInvariant(t *testing.T) {
	for _, sim := range simulations {
		for _, room := range []bool{false, true} {
			name := sim.name
			if room {
				name += "/random headroom"
			}
			t.Run(name, func(t *testing.T) {
				for seed := range uint64(5) {
					checkSimulation(t, sim, seed, room)
				}
			})
		}
	}
}

// checkSimulation runs sim with one seed and checks what went out.
func checkSimulation(t *testing.T, sim simulation, seed uint64, room bool) {
	t.Helper()
	events := simulate(t, sim, seed, room)
	best := 0.0
	for _, lim := range sim.buckets {
		best = max(best, checkQuota(t, seed, lim, events, sim.duration))
	}
	if !sim.light && best < 0.95 {
		t.Errorf("seed %d: throughput reached %.1f%% of the binding rate, want at least 95%%", seed, 100*best)
	}
}

// simulate runs sim with the given seed and returns what went out. With
// room, every ask draws a random headroom.
func simulate(t *testing.T, sim simulation, seed uint64, room bool) []event {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 42))
	l := newLocal()
	var bs []*Bucket
	for _, lim := range sim.buckets {
		bs = append(bs, mustBucket(t, l, "p", lim))
	}
	var (
		queue       []Cost
		refunds     []event // by time
		events      []event
		now         time.Duration
		nextArrival time.Duration
	)
	const never = time.Duration(1<<63 - 1)
	for now < sim.duration {
		for len(refunds) > 0 && refunds[0].at <= now {
			r := refunds[0]
			refunds = refunds[1:]
			l.AdjustAt(epoch.Add(now), bs, Cost{Tokens: r.tokens})
			events = append(events, event{at: now, tokens: r.tokens})
		}
		for nextArrival <= now {
			queue = append(queue, Cost{Requests: 1, Tokens: 1 + rng.Int64N(sim.maxTokens)})
			nextArrival += time.Duration(rng.ExpFloat64() * float64(sim.gap))
		}
		retry := never
		for len(queue) > 0 {
			c := queue[0]
			var ask Ask
			if sim.within > 0 {
				ask.CommitWithin = time.Duration(rng.Int64N(int64(sim.within) + 1))
			}
			if room {
				ask.Headroom = -0.1 + 1.2*rng.Float64()
			}
			d := l.ReserveAt(epoch.Add(now), bs, c, ask)
			if d.Never || d.Busy || (!d.OK && d.Wait <= 0) {
				t.Fatalf("seed %d at %v: ReserveAt(%+v, %+v) = %+v, want OK or a positive wait", seed, now, c, ask, d)
			}
			if !d.OK {
				retry = now + d.Wait
				break
			}
			queue = queue[1:]
			sent := now + d.Wait
			events = append(events, event{at: sent, requests: c.Requests, tokens: c.Tokens})
			l.Release(t.Context(), bs)
			if back := rng.Int64N(c.Tokens + 1); sim.refunds && back > 0 {
				r := event{at: sent + time.Duration(rng.Int64N(int64(30*time.Second))), tokens: -back}
				i := sort.Search(len(refunds), func(i int) bool { return refunds[i].at > r.at })
				refunds = slices.Insert(refunds, i, r)
			}
		}
		next := min(nextArrival, retry)
		if len(refunds) > 0 {
			next = min(next, refunds[0].at)
		}
		now = next
	}
	if !sim.light && len(queue) < 10 {
		t.Fatalf("seed %d: %d requests left waiting at the end; demand must exceed the limits", seed, len(queue))
	}
	slices.SortStableFunc(events, func(a, b event) int { return cmp.Compare(a.at, b.at) })
	return events
}

// windows are the window lengths the invariant is checked over.
var windows = []time.Duration{
	time.Millisecond, 100 * time.Millisecond, time.Second, 3 * time.Second, 7 * time.Second,
	10 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute,
}

// checkQuota checks events (sorted by time) against lim in every limited
// dimension: net units in any window [t, t+W) at most capacity + W·rate.
// It returns the highest throughput over the run as a fraction of the rate.
func checkQuota(t *testing.T, seed uint64, lim Limits, events []event, duration time.Duration) float64 {
	t.Helper()
	dims := []struct {
		name      string
		perMinute float64
		burst     time.Duration
		units     func(event) int64
	}{
		{"requests", lim.RequestsPerMinute, lim.RequestBurst, func(e event) int64 { return e.requests }},
		{"tokens", lim.TokensPerMinute, lim.TokenBurst, func(e event) int64 { return e.tokens }},
	}
	best := 0.0
	for _, d := range dims {
		if d.perMinute == 0 {
			continue
		}
		perNano := d.perMinute / float64(time.Minute)
		capacity := float64(d.burst) * perNano
		if d.name == "requests" {
			capacity = max(capacity, 1) // one request always fits
		}
		sums := make([]int64, len(events)+1)
		total := int64(0)
		for i, e := range events {
			sums[i+1] = sums[i] + d.units(e)
			if e.at < duration {
				total += d.units(e)
			}
		}
		best = max(best, float64(total)/(perNano*float64(duration)))
		// The sum over [s, s+W) only changes where an event enters or
		// leaves, so the starts worth checking are each event's instant and
		// the instant W before each event, shifted to include it.
		for _, w := range windows {
			limit := capacity + float64(w)*perNano
			for _, e := range events {
				for _, s := range [2]time.Duration{e.at, e.at - w + 1} {
					lo := sort.Search(len(events), func(i int) bool { return events[i].at >= s })
					hi := sort.Search(len(events), func(i int) bool { return events[i].at >= s+w })
					if got := float64(sums[hi] - sums[lo]); got > limit*(1+1e-12) {
						t.Fatalf("seed %d, %s at %v/min with a %v burst: %v %s in [%v, %v), want at most %v",
							seed, d.name, d.perMinute, d.burst, got, d.name, s, s+w, limit)
					}
				}
			}
		}
	}
	return best
}
