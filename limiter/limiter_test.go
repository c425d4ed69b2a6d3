package limiter

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// epoch is the fake clock's start in every test: the Locals are created at
// it, so durations since epoch are the limiter's own nanoseconds.
var epoch = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// newLocal returns a Local whose clock stands still at epoch; the tests
// pass time explicitly to the ...At methods.
func newLocal() *Local {
	return NewLocal(func() time.Time { return epoch })
}

// mustBucket returns a new bucket on l or fails the test.
func mustBucket(tb testing.TB, l *Local, key string, lim Limits) *Bucket {
	tb.Helper()
	b, err := l.NewBucket(key, lim)
	if err != nil {
		tb.Fatalf("NewBucket(%q, %+v): %v", key, lim, err)
	}
	return b
}

// scale returns lim with its rates multiplied by share, as a class ceiling
// sees its provider's limits.
func scale(lim Limits, share float64) Limits {
	lim.RequestsPerMinute *= share
	lim.TokensPerMinute *= share
	return lim
}

func req(n int64) Cost { return Cost{Requests: n} }
func tok(n int64) Cost { return Cost{Requests: 1, Tokens: n} }

var (
	rpm60       = Limits{RequestsPerMinute: 60, RequestBurst: time.Second}
	rpm500      = Limits{RequestsPerMinute: 500, RequestBurst: time.Second}
	tpm6000     = Limits{TokensPerMinute: 6000, TokenBurst: time.Minute}
	rpmHalf     = Limits{RequestsPerMinute: 0.5, RequestBurst: time.Second}
	oneInFlight = Limits{RequestsPerMinute: 60, RequestBurst: time.Second, MaxConcurrency: 1}
)

// op is one step of a scenario against a single bucket.
type op struct {
	at     time.Duration // since epoch
	kind   string        // "reserve", "adjust", "release" or "estimate"
	cost   Cost          // reserve, estimate: the cost; adjust: the delta
	within time.Duration // reserve: Ask.CommitWithin
	room   float64       // reserve: Ask.Headroom
	want   Decision      // reserve
	wait   time.Duration // estimate
}

// ok is a committed reservation after wait; notBefore a refusal from the
// first bucket that fits only after d.
func ok(wait time.Duration) Decision     { return Decision{OK: true, Wait: wait, Bucket: -1} }
func notBefore(d time.Duration) Decision { return Decision{Wait: d} }

// run plays ops against one bucket with lim and checks each answer.
func run(t *testing.T, lim Limits, ops []op) {
	t.Helper()
	l := newLocal()
	bs := []*Bucket{mustBucket(t, l, "p", lim)}
	for i, o := range ops {
		now := epoch.Add(o.at)
		switch o.kind {
		case "reserve":
			ask := Ask{CommitWithin: o.within, Headroom: o.room}
			if got := l.ReserveAt(now, bs, o.cost, ask); got != o.want {
				t.Fatalf("step %d: ReserveAt(%v, %+v, %+v) = %+v, want %+v", i, o.at, o.cost, ask, got, o.want)
			}
		case "adjust":
			l.AdjustAt(now, bs, o.cost)
		case "release":
			if err := l.Release(context.Background(), bs); err != nil {
				t.Fatalf("step %d: Release: %v", i, err)
			}
		case "estimate":
			if got := l.EstimateAt(now, bs, o.cost); got != o.wait {
				t.Fatalf("step %d: EstimateAt(%v, %+v) = %v, want %v", i, o.at, o.cost, got, o.wait)
			}
		default:
			t.Fatalf("step %d: unknown op %q", i, o.kind)
		}
	}
}

func TestScenarios(t *testing.T) {
	tests := []struct {
		name string
		lim  Limits
		ops  []op
	}{
		{"60 RPM burst 1s paces one per second", rpm60, []op{
			{kind: "reserve", cost: req(1), want: ok(0)},
			{kind: "reserve", cost: req(1), want: notBefore(time.Second)},
			{at: 500 * time.Millisecond, kind: "reserve", cost: req(1), want: notBefore(500 * time.Millisecond)},
			{at: time.Second, kind: "reserve", cost: req(1), want: ok(0)},
			{at: time.Second, kind: "reserve", cost: req(1), within: time.Second, want: ok(time.Second)},
			{at: time.Second, kind: "reserve", cost: req(1), within: time.Second, want: notBefore(2 * time.Second)},
		}},
		{"a multi-request cost beyond the burst is never admitted", rpm60, []op{
			{kind: "reserve", cost: req(2), want: Decision{Never: true}},
			{kind: "reserve", cost: req(1), want: ok(0)},
		}},
		{"5000 of 6000 TPM spent: 2000 more waits 10s and is not committed", tpm6000, []op{
			{kind: "reserve", cost: tok(5000), want: ok(0)},
			{kind: "reserve", cost: tok(2000), within: 9 * time.Second, want: notBefore(10 * time.Second)},
			{kind: "reserve", cost: tok(2000), want: notBefore(10 * time.Second)},
			{kind: "estimate", cost: tok(2000), wait: 10 * time.Second},
			{at: 4 * time.Second, kind: "reserve", cost: tok(2000), want: notBefore(6 * time.Second)},
			{at: 10 * time.Second, kind: "reserve", cost: tok(2000), want: ok(0)},
		}},
		{"5000 of 6000 TPM spent: 2000 more commits with wait 10s", tpm6000, []op{
			{kind: "reserve", cost: tok(5000), want: ok(0)},
			{kind: "reserve", cost: tok(2000), within: 10 * time.Second, want: ok(10 * time.Second)},
			{kind: "reserve", cost: tok(1), want: notBefore(10*time.Second + 10*time.Millisecond)},
		}},
		{"a slot committed for later is charged as of its send time", Limits{
			RequestsPerMinute: 60, RequestBurst: 3 * time.Second, TokensPerMinute: 6000, TokenBurst: time.Minute,
		}, []op{
			{kind: "reserve", cost: tok(5000), want: ok(0)},
			// The tokens make it wait 10s; by then the request bucket would
			// be full again, but its room goes to this request first.
			{kind: "reserve", cost: tok(2000), within: 10 * time.Second, want: ok(10 * time.Second)},
			{at: 10 * time.Second, kind: "reserve", cost: req(1), want: ok(0)},
			{at: 10 * time.Second, kind: "reserve", cost: req(1), want: ok(0)},
			{at: 10 * time.Second, kind: "reserve", cost: req(1), want: notBefore(time.Second)},
		}},
		{"7000 tokens exceed a 6000 token burst", tpm6000, []op{
			{kind: "reserve", cost: tok(7000), within: time.Hour, want: Decision{Never: true}},
			{kind: "reserve", cost: tok(6000), want: ok(0)},
			{kind: "estimate", cost: tok(7000), wait: 70 * time.Second},
		}},
		{"refunding 3800 tokens lets a pending ask fit", tpm6000, []op{
			{kind: "reserve", cost: tok(5000), want: ok(0)},
			{kind: "reserve", cost: tok(2000), want: notBefore(10 * time.Second)},
			{at: time.Second, kind: "adjust", cost: Cost{Tokens: -3800}},
			{at: time.Second, kind: "reserve", cost: tok(2000), want: ok(0)},
			// 5000 - 3800 + 2000 = 3200 charged, 100 of them regained after 1s.
			{at: time.Second, kind: "estimate", cost: tok(6000), wait: 31 * time.Second},
		}},
		{"a refund never makes the bucket fuller than full", tpm6000, []op{
			{kind: "reserve", cost: tok(1000), want: ok(0)},
			{at: 5 * time.Second, kind: "adjust", cost: Cost{Tokens: -5000}},
			{at: 5 * time.Second, kind: "reserve", cost: tok(6000), want: ok(0)},
			{at: 5 * time.Second, kind: "reserve", cost: tok(1), want: notBefore(10 * time.Millisecond)},
		}},
		{"a refund frees the room in front of a slot committed for later", Limits{TokensPerMinute: 6000, TokenBurst: time.Second}, []op{
			// Pins the caveat documented on AdjustAt: B is placed behind
			// A's charge, A's refund frees A's room for C, and B and C go
			// together at 100ms, 110 tokens against a burst of 100.
			{kind: "reserve", cost: Cost{Tokens: 100}, want: ok(0)},
			{kind: "reserve", cost: Cost{Tokens: 10}, within: 200 * time.Millisecond, want: ok(100 * time.Millisecond)},
			{at: 10 * time.Millisecond, kind: "adjust", cost: Cost{Tokens: -100}},
			{at: 10 * time.Millisecond, kind: "reserve", cost: Cost{Tokens: 100}, within: 200 * time.Millisecond, want: ok(90 * time.Millisecond)},
		}},
		{"a refund after the bucket refilled changes nothing", tpm6000, []op{
			{kind: "reserve", cost: tok(1000), want: ok(0)},
			{at: time.Minute, kind: "adjust", cost: Cost{Tokens: -1000}},
			{at: time.Minute, kind: "reserve", cost: tok(6000), want: ok(0)},
			{at: time.Minute, kind: "reserve", cost: tok(1), want: notBefore(10 * time.Millisecond)},
		}},
		{"an overage pushes later requests back", tpm6000, []op{
			{kind: "reserve", cost: tok(1000), want: ok(0)},
			{kind: "adjust", cost: Cost{Tokens: 4500}},
			{kind: "reserve", cost: tok(1000), want: notBefore(5 * time.Second)},
			{at: time.Second, kind: "estimate", cost: tok(1000), wait: 4 * time.Second},
		}},
		{"Requests -1 undoes a request charge", rpm60, []op{
			{kind: "reserve", cost: req(1), want: ok(0)},
			{kind: "adjust", cost: req(-1)},
			{kind: "reserve", cost: req(1), want: ok(0)},
			{kind: "reserve", cost: req(1), want: notBefore(time.Second)},
		}},
		{"0.5 RPM admits one request, then one per 120s", rpmHalf, []op{
			{kind: "reserve", cost: req(1), want: ok(0)},
			{kind: "reserve", cost: req(1), want: notBefore(120 * time.Second)},
			{at: 119 * time.Second, kind: "reserve", cost: req(1), want: notBefore(time.Second)},
			{at: 120 * time.Second, kind: "reserve", cost: req(1), want: ok(0)},
		}},
		{"zero cost and unlimited dimensions do not constrain", rpm60, []op{
			{kind: "reserve", cost: Cost{Tokens: 1 << 40}, want: ok(0)},
			{kind: "reserve", cost: Cost{}, want: ok(0)},
			{kind: "reserve", cost: req(1), want: ok(0)},
			{kind: "reserve", cost: Cost{}, want: ok(0)},
			{kind: "reserve", cost: req(1), want: notBefore(time.Second)},
		}},
		{"negative costs count as zero", rpm60, []op{
			{kind: "reserve", cost: req(1), want: ok(0)},
			{kind: "reserve", cost: req(-5), want: ok(0)},
			{kind: "reserve", cost: req(1), want: notBefore(time.Second)},
		}},
		{"Busy at the cap, with the rate wait; OK after Release", oneInFlight, []op{
			{kind: "reserve", cost: req(1), want: ok(0)},
			{kind: "reserve", cost: req(1), want: Decision{Busy: true, Wait: time.Second}},
			{at: 2 * time.Second, kind: "reserve", cost: req(1), want: Decision{Busy: true}},
			{at: 2 * time.Second, kind: "estimate", cost: req(1), wait: 0},
			{at: 2 * time.Second, kind: "release"},
			{at: 2 * time.Second, kind: "reserve", cost: req(1), want: ok(0)},
		}},
		{"Never takes precedence over Busy", Limits{MaxConcurrency: 1, TokensPerMinute: 60, TokenBurst: time.Minute}, []op{
			{kind: "reserve", cost: tok(1), want: ok(0)},
			{kind: "reserve", cost: tok(61), want: Decision{Never: true}},
			{kind: "reserve", cost: tok(1), want: Decision{Busy: true}},
		}},
		{"Release never goes below zero", Limits{MaxConcurrency: 1}, []op{
			{kind: "release"},
			{kind: "release"},
			{kind: "reserve", cost: req(1), want: ok(0)},
			{kind: "reserve", cost: req(1), want: Decision{Busy: true}},
			{kind: "release"},
			{kind: "release"},
			{kind: "reserve", cost: req(1), want: ok(0)},
			{kind: "reserve", cost: req(1), want: Decision{Busy: true}},
		}},
		{"a negative CommitWithin counts as zero", rpm60, []op{
			{kind: "reserve", cost: req(1), within: -time.Second, want: ok(0)},
			{kind: "reserve", cost: req(1), within: -time.Second, want: notBefore(time.Second)},
		}},
		{"headroom 0.2 waits while over 80% is used; headroom 0 goes", tpm6000, []op{
			{kind: "reserve", cost: Cost{Tokens: 4900}, want: ok(0)},
			// 1100 of 6000 left: 100 more would leave 1000, less than the
			// 1200 headroom; 200 tokens of refill (2s) fix that.
			{kind: "reserve", cost: Cost{Tokens: 100}, room: 0.2, want: notBefore(2 * time.Second)},
			{kind: "reserve", cost: Cost{Tokens: 100}, room: 0.2, within: 2 * time.Second, want: ok(2 * time.Second)},
			{kind: "adjust", cost: Cost{Tokens: -100}},
			{kind: "reserve", cost: Cost{Tokens: 100}, want: ok(0)},
			{kind: "reserve", cost: Cost{Tokens: 100}, room: 0.2, want: notBefore(3 * time.Second)},
			{kind: "estimate", cost: Cost{Tokens: 100}, wait: 0}, // estimates ignore headroom
			{at: 3 * time.Second, kind: "reserve", cost: Cost{Tokens: 100}, room: 0.2, want: ok(0)},
			{at: 3 * time.Second, kind: "reserve", cost: Cost{Tokens: 100}, room: 0.2, want: notBefore(time.Second)},
			{at: 3 * time.Second, kind: "reserve", cost: Cost{Tokens: 1100}, want: ok(0)},
		}},
		{"a request larger than the burst less the headroom goes on a full bucket", tpm6000, []op{
			// 5000 > 6000 × (1 − 0.2): it fits a full bucket only.
			{kind: "reserve", cost: Cost{Tokens: 5000}, room: 0.2, want: ok(0)},
			{kind: "reserve", cost: Cost{Tokens: 5000}, room: 0.2, want: notBefore(50 * time.Second)},
			{at: 49 * time.Second, kind: "reserve", cost: Cost{Tokens: 5000}, room: 0.2, want: notBefore(time.Second)},
			{at: 50 * time.Second, kind: "reserve", cost: Cost{Tokens: 5000}, room: 0.2, want: ok(0)},
			// The whole burst, with the largest headroom, still goes on a
			// full bucket; one token more is never admitted, with or
			// without headroom.
			{at: 100 * time.Second, kind: "reserve", cost: Cost{Tokens: 6001}, room: 0.5, want: Decision{Never: true}},
			{at: 100 * time.Second, kind: "reserve", cost: Cost{Tokens: 6000}, room: 0.999, want: ok(0)},
			// Headroom 1 and more counts as the largest: only a full
			// bucket will do, even for one token.
			{at: 100 * time.Second, kind: "reserve", cost: Cost{Tokens: 1}, room: 1, within: time.Hour, want: ok(60 * time.Second)},
		}},
		{"headroom on requests: 60 RPM with a 5s burst keeps one request", Limits{RequestsPerMinute: 60, RequestBurst: 5 * time.Second}, []op{
			{kind: "reserve", cost: req(4), want: ok(0)},
			{kind: "reserve", cost: req(1), room: 0.2, want: notBefore(time.Second)},
			{kind: "reserve", cost: req(1), want: ok(0)},
			{kind: "reserve", cost: req(1), room: 0.2, want: notBefore(2 * time.Second)},
		}},
		{"headroom leaves the one request a short burst always holds", rpmHalf, []op{
			{kind: "reserve", cost: req(1), room: 0.9, want: ok(0)},
			{kind: "reserve", cost: req(1), room: 0.9, want: notBefore(120 * time.Second)},
			{at: 120 * time.Second, kind: "reserve", cost: req(1), room: 0.9, want: ok(0)},
		}},
		{"headroom changes neither Busy nor its rate wait at one request's burst", oneInFlight, []op{
			{kind: "reserve", cost: req(1), room: 0.5, want: ok(0)},
			{kind: "reserve", cost: req(1), room: 0.5, want: Decision{Busy: true, Wait: time.Second}},
			{at: time.Second, kind: "reserve", cost: req(1), room: 0.5, want: Decision{Busy: true}},
		}},
		{"a bucket without limits always admits", Limits{}, []op{
			{kind: "reserve", cost: Cost{Requests: 1 << 50, Tokens: 1 << 62}, want: ok(0)},
			{kind: "estimate", cost: Cost{Requests: 1 << 50, Tokens: 1 << 62}, wait: 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { run(t, tt.lim, tt.ops) })
	}
}

// TestHeadroomClamps plays the same random run on pairs of Locals whose
// asks differ only in headroom values that must count the same: zero,
// negative and NaN headroom (that is, a reservation exactly as without
// headroom), and 1 and beyond against the largest headroom below 1.
func TestHeadroomClamps(t *testing.T) {
	lim := Limits{RequestsPerMinute: 120, RequestBurst: 3 * time.Second, TokensPerMinute: 60000, TokenBurst: 10 * time.Second, MaxConcurrency: 4}
	pairs := []struct {
		name string
		a, b float64
	}{
		{"negative", 0, -0.5},
		{"negative zero", 0, math.Copysign(0, -1)},
		{"minus infinity", 0, math.Inf(-1)},
		{"NaN", 0, math.NaN()},
		{"one", 1 - 1e-12, 1},
		{"above one", 1 - 1e-12, 7},
		{"infinity", 1 - 1e-12, math.Inf(1)},
	}
	for _, p := range pairs {
		t.Run(p.name, func(t *testing.T) {
			la, lb := newLocal(), newLocal()
			ba := []*Bucket{mustBucket(t, la, "p", lim), mustBucket(t, la, "c", scale(lim, 0.5))}
			bb := []*Bucket{mustBucket(t, lb, "p", lim), mustBucket(t, lb, "c", scale(lim, 0.5))}
			rng := rand.New(rand.NewPCG(1, 2))
			now := epoch
			for i := range 2000 {
				now = now.Add(time.Duration(rng.Int64N(int64(200 * time.Millisecond))))
				if rng.IntN(4) == 0 {
					la.Release(t.Context(), ba)
					lb.Release(t.Context(), bb)
				}
				c := Cost{Requests: 1, Tokens: rng.Int64N(3000)}
				within := time.Duration(rng.Int64N(int64(time.Second)))
				da := la.ReserveAt(now, ba, c, Ask{CommitWithin: within, Headroom: p.a})
				db := lb.ReserveAt(now, bb, c, Ask{CommitWithin: within, Headroom: p.b})
				if da != db {
					t.Fatalf("step %d: headroom %v gives %+v, headroom %v gives %+v", i, p.a, da, p.b, db)
				}
			}
		})
	}
}

// TestHeadroomIgnoresPauseAndConcurrency: a pause holds every headroom
// alike, and headroom is not asked of a bucket without rates.
func TestHeadroomIgnoresPauseAndConcurrency(t *testing.T) {
	l := newLocal()
	slots := mustBucket(t, l, "slots", Limits{MaxConcurrency: 2})
	rates := mustBucket(t, l, "rates", tpm6000)
	bs := []*Bucket{slots, rates}
	l.PauseAt(epoch, rates, epoch.Add(5*time.Second))
	for _, h := range []float64{0, 0.2, 0.9} {
		if got, want := l.ReserveAt(epoch, bs, Cost{Requests: 1, Tokens: 100}, Ask{Headroom: h}), (Decision{Wait: 5 * time.Second, Bucket: 1}); got != want {
			t.Errorf("headroom %v during a 5s pause: ReserveAt = %+v, want %+v", h, got, want)
		}
	}
	at := epoch.Add(5 * time.Second)
	for i := range 2 {
		if got := l.ReserveAt(at, []*Bucket{slots}, req(1), Ask{Headroom: 0.9}); got != ok(0) {
			t.Errorf("slot %d with headroom 0.9: ReserveAt = %+v, want %+v", i+1, got, ok(0))
		}
	}
	if got, want := l.ReserveAt(at, []*Bucket{slots}, req(1), Ask{Headroom: 0.9}), (Decision{Busy: true}); got != want {
		t.Errorf("third slot: ReserveAt = %+v, want %+v", got, want)
	}
}

// TestReserved pins the headroom arithmetic: parts per billion rounded
// up, and ceil(h·τ) exact up to the largest tolerance.
func TestReserved(t *testing.T) {
	ppb := []struct {
		h    float64
		want uint64
	}{
		{0, 0}, {-1, 0}, {math.NaN(), 0}, {1e-300, 1}, {0.2, 2e8}, {0.25, 25e7},
		{0.3, 3e8}, {1.0 / 3, 333333334}, {1 - 1e-12, 1e9}, {1, 1e9}, {math.Inf(1), 1e9},
	}
	for _, tt := range ppb {
		if got := partsPerBillion(tt.h); got != tt.want {
			t.Errorf("partsPerBillion(%v) = %d, want %d", tt.h, got, tt.want)
		}
	}
	res := []struct {
		tol  int64
		h    uint64
		want int64
	}{
		{0, 2e8, 0},
		{60e9, 2e8, 12e9},
		{7, 1, 1}, // rounded up
		{1e9, 333333334, 333333334},
		{maxSpan, 1e9, maxSpan}, // the largest product
		{maxSpan, 1, maxSpan/billion + 1},
		{maxSpan, 5e8, maxSpan / 2},
	}
	for _, tt := range res {
		if got := reserved(tt.tol, tt.h); got != tt.want {
			t.Errorf("reserved(%d, %d) = %d, want %d", tt.tol, tt.h, got, tt.want)
		}
	}
}

// TestBurst500RPM: a burst of 1s at 500 RPM (one per 120ms) holds 8⅓
// requests. Eight go at once, the ninth once the third it already holds has
// become a whole request, 80ms later, and then one per 120ms.
func TestBurst500RPM(t *testing.T) {
	l := newLocal()
	bs := []*Bucket{mustBucket(t, l, "p", rpm500)}
	for i := range 8 {
		if got := l.ReserveAt(epoch, bs, req(1), Ask{}); got != ok(0) {
			t.Fatalf("request %d at 0: got %+v, want %+v", i+1, got, ok(0))
		}
	}
	now := epoch
	next := 80 * time.Millisecond
	for i := 8; i < 20; i++ {
		if got := l.ReserveAt(now, bs, req(1), Ask{}); got != notBefore(next) {
			t.Fatalf("request %d at %v: got %+v, want %+v", i+1, now.Sub(epoch), got, notBefore(next))
		}
		now = now.Add(next)
		if got := l.ReserveAt(now, bs, req(1), Ask{}); got != ok(0) {
			t.Fatalf("request %d at %v: got %+v, want %+v", i+1, now.Sub(epoch), got, ok(0))
		}
		next = 120 * time.Millisecond
	}
}

// TestMultiBucket puts a provider bucket, a model bucket and a class
// ceiling at half the model's limits in front of each request.
func TestMultiBucket(t *testing.T) {
	provider := Limits{RequestsPerMinute: 600, RequestBurst: time.Second, TokensPerMinute: 120000, TokenBurst: time.Minute}
	model := Limits{RequestsPerMinute: 120, RequestBurst: time.Second, TokensPerMinute: 30000, TokenBurst: time.Minute}
	ceiling := scale(model, 0.5)
	ceiling.MaxConcurrency = 1
	const (
		iProvider = iota
		iModel
		iCeiling
	)
	type charge struct {
		buckets []int
		cost    Cost
		keep    bool // keep the concurrency slot
	}
	tests := []struct {
		name   string
		before []charge
		ask    Cost
		within time.Duration
		want   Decision
		left   [3]float64 // tokens left on each bucket when OK
	}{
		{
			name: "all have room",
			ask:  tok(1000),
			want: ok(0),
			left: [3]float64{119000, 29000, 14000},
		},
		{
			// The ceiling has 15000 tokens per minute (one per 4ms); after
			// 1000 it is 14000 short of full, so 14500 more wait 2s. Its
			// requests (60 RPM) would wait 1s only.
			name:   "the class ceiling's tokens bind",
			before: []charge{{buckets: []int{iProvider, iModel, iCeiling}, cost: tok(1000)}},
			ask:    tok(14500),
			want:   Decision{Wait: 2 * time.Second, Bucket: iCeiling},
		},
		{
			name:   "the class ceiling's requests bind",
			before: []charge{{buckets: []int{iProvider, iModel, iCeiling}, cost: tok(1)}},
			ask:    tok(1),
			want:   Decision{Wait: time.Second, Bucket: iCeiling},
		},
		{
			// Other classes spent 29000 of the model's 30000 tokens (one
			// per 2ms): 2000 more wait 2s there, nothing on the ceiling.
			name:   "the model bucket binds",
			before: []charge{{buckets: []int{iProvider, iModel}, cost: tok(29000)}},
			ask:    tok(2000),
			want:   Decision{Wait: 2 * time.Second, Bucket: iModel},
		},
		{
			// Other models spent 119000 of the provider's 120000 tokens
			// (one per 0.5ms): 3000 more wait 1s.
			name:   "the provider bucket binds",
			before: []charge{{buckets: []int{iProvider}, cost: tok(119000)}},
			ask:    tok(3000),
			want:   Decision{Wait: time.Second, Bucket: iProvider},
		},
		{
			name:   "equal waits report the lowest index",
			before: []charge{{buckets: []int{iProvider}, cost: tok(119000)}, {buckets: []int{iModel}, cost: tok(27500)}},
			ask:    tok(3000),
			want:   Decision{Wait: time.Second, Bucket: iProvider},
		},
		{
			name:   "committing within the wait charges every bucket",
			before: []charge{{buckets: []int{iProvider, iModel}, cost: tok(29000)}},
			ask:    tok(2000),
			within: 2 * time.Second,
			// Charged as arriving 2s later: the ceiling, with room to
			// spare, forfeits the 500 tokens it would regain by then.
			want: ok(2 * time.Second),
			left: [3]float64{91000 - 2000, 1000 - 2000, 15000 - 2000 - 500},
		},
		{
			name: "the ceiling's burst is too small",
			ask:  tok(20000),
			want: Decision{Never: true, Bucket: iCeiling},
		},
		{
			name: "the model's burst is too small first",
			ask:  tok(40000),
			want: Decision{Never: true, Bucket: iModel},
		},
		{
			name:   "the ceiling is busy",
			before: []charge{{buckets: []int{iProvider, iModel, iCeiling}, cost: req(1), keep: true}},
			ask:    req(1),
			want:   Decision{Busy: true, Wait: time.Second, Bucket: iCeiling},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLocal()
			all := []*Bucket{
				mustBucket(t, l, "openai", provider),
				mustBucket(t, l, "openai/gpt-4o", model),
				mustBucket(t, l, "openai/gpt-4o#batch", ceiling),
			}
			for _, c := range tt.before {
				var bs []*Bucket
				for _, i := range c.buckets {
					bs = append(bs, all[i])
				}
				if d := l.ReserveAt(epoch, bs, c.cost, Ask{}); !d.OK {
					t.Fatalf("charging %+v on %v: got %+v, want OK", c.cost, c.buckets, d)
				}
				if !c.keep {
					l.Release(context.Background(), bs)
				}
			}
			var before [3]Usage
			for i, b := range all {
				before[i] = l.UsageAt(epoch, b)
			}
			got := l.ReserveAt(epoch, all, tt.ask, Ask{CommitWithin: tt.within})
			if got != tt.want {
				t.Fatalf("ReserveAt(%+v, %v) = %+v, want %+v", tt.ask, tt.within, got, tt.want)
			}
			for i, b := range all {
				after := l.UsageAt(epoch, b)
				if !got.OK {
					if after != before[i] {
						t.Errorf("bucket %s changed by a refused reservation: usage %+v, want %+v", b.Key(), after, before[i])
					}
					continue
				}
				if after.Inflight != before[i].Inflight+1 || after.Tokens != tt.left[i] {
					t.Errorf("bucket %s after commit: usage %+v, want Inflight %d, Tokens %v", b.Key(), after, before[i].Inflight+1, tt.left[i])
				}
			}
		})
	}
}

func TestUsage(t *testing.T) {
	l := newLocal()
	b := mustBucket(t, l, "p", Limits{
		RequestsPerMinute: 60, RequestBurst: 5 * time.Second,
		TokensPerMinute: 6000, TokenBurst: time.Minute,
		MaxConcurrency: 4,
	})
	bs := []*Bucket{b}
	want := Usage{Requests: 5, Tokens: 6000, RequestCapacity: 5, TokenCapacity: 6000}
	if got := l.UsageAt(epoch, b); got != want {
		t.Fatalf("UsageAt(start) = %+v, want %+v", got, want)
	}
	l.ReserveAt(epoch, bs, tok(4000), Ask{})
	l.ReserveAt(epoch, bs, tok(1000), Ask{})
	want = Usage{Requests: 3, Tokens: 1000, RequestCapacity: 5, TokenCapacity: 6000, Inflight: 2}
	if got := l.UsageAt(epoch, b); got != want {
		t.Fatalf("UsageAt(after 2 requests) = %+v, want %+v", got, want)
	}
	want = Usage{Requests: 4.5, Tokens: 1150, RequestCapacity: 5, TokenCapacity: 6000, Inflight: 2}
	if got := l.UsageAt(epoch.Add(1500*time.Millisecond), b); got != want {
		t.Fatalf("UsageAt(1.5s later) = %+v, want %+v", got, want)
	}
	l.AdjustAt(epoch, bs, Cost{Tokens: 3000})
	want = Usage{Requests: 3, Tokens: -2000, RequestCapacity: 5, TokenCapacity: 6000, Inflight: 2}
	if got := l.UsageAt(epoch, b); got != want {
		t.Fatalf("UsageAt(after overage) = %+v, want %+v", got, want)
	}
	// The shorthand reads the Local's clock, which stands at epoch.
	if got := l.Usage(b); got != want {
		t.Fatalf("Usage() = %+v, want %+v", got, want)
	}
	unlimited := mustBucket(t, l, "free", Limits{})
	if got := l.UsageAt(epoch, unlimited); got != (Usage{}) {
		t.Fatalf("UsageAt(unlimited) = %+v, want zero", got)
	}
}

// TestShorthands checks that the methods without At read the Local's clock.
func TestShorthands(t *testing.T) {
	now := epoch
	l := NewLocal(func() time.Time { return now })
	bs := []*Bucket{mustBucket(t, l, "p", rpm60)}
	ctx := context.Background()
	if d, err := l.Reserve(ctx, bs, req(1), Ask{}); d != ok(0) || err != nil {
		t.Fatalf("Reserve = %+v, %v; want %+v, nil", d, err, ok(0))
	}
	if got := l.Estimate(bs, req(1)); got != time.Second {
		t.Fatalf("Estimate = %v, want 1s", got)
	}
	now = now.Add(400 * time.Millisecond)
	if d, err := l.Reserve(ctx, bs, req(1), Ask{}); d != notBefore(600*time.Millisecond) || err != nil {
		t.Fatalf("Reserve = %+v, %v; want %+v, nil", d, err, notBefore(600*time.Millisecond))
	}
	if err := l.Adjust(ctx, bs, req(-1)); err != nil {
		t.Fatalf("Adjust: %v", err)
	}
	if d, err := l.Reserve(ctx, bs, req(1), Ask{}); d != ok(0) || err != nil {
		t.Fatalf("Reserve after refund = %+v, %v; want %+v, nil", d, err, ok(0))
	}
}

func TestNewLocalDefaultsToTimeNow(t *testing.T) {
	l := NewLocal(nil)
	bs := []*Bucket{mustBucket(t, l, "p", rpm60)}
	if d, _ := l.Reserve(context.Background(), bs, req(1), Ask{}); !d.OK {
		t.Fatalf("Reserve on a fresh bucket = %+v, want OK", d)
	}
	// The next request waits up to a second of real time, less whatever
	// passed since.
	if got := l.Estimate(bs, req(1)); got < 0 || got > time.Second {
		t.Fatalf("Estimate = %v, want a wait in [0, 1s]", got)
	}
}

func TestNewBucketErrors(t *testing.T) {
	tests := []struct {
		name string
		lim  Limits
		want string
	}{
		{"negative RPM", Limits{RequestsPerMinute: -1, RequestBurst: time.Second}, "RequestsPerMinute -1 is negative"},
		{"negative TPM", Limits{TokensPerMinute: -5, TokenBurst: time.Second}, "TokensPerMinute -5 is negative"},
		{"NaN RPM", Limits{RequestsPerMinute: math.NaN(), RequestBurst: time.Second}, "RequestsPerMinute NaN is not a finite number"},
		{"infinite TPM", Limits{TokensPerMinute: math.Inf(1), TokenBurst: time.Second}, "TokensPerMinute +Inf is not a finite number"},
		{"negative concurrency", Limits{MaxConcurrency: -1}, "MaxConcurrency -1 is negative"},
		{"negative request burst", Limits{RequestBurst: -time.Second}, "RequestBurst -1s is negative"},
		{"negative token burst", Limits{TokenBurst: -time.Second}, "TokenBurst -1s is negative"},
		{"RPM without burst", Limits{RequestsPerMinute: 60}, "RequestBurst must be > 0 when RequestsPerMinute is set"},
		{"TPM without burst", Limits{TokensPerMinute: 6000}, "TokenBurst must be > 0 when TokensPerMinute is set"},
		{"token burst below one token", Limits{TokensPerMinute: 30, TokenBurst: time.Second}, "TokenBurst 1s holds less than one token at 30 tokens per minute (one per 2s)"},
		{"rate too small", Limits{RequestsPerMinute: 1e-12, RequestBurst: time.Second}, "RequestsPerMinute 1e-12 is too small"},
		{"burst too long", Limits{TokensPerMinute: 1, TokenBurst: 1 << 62}, "TokenBurst 1281023h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := newLocal().NewBucket("openai/gpt-4o", tt.lim)
			if err == nil {
				t.Fatalf("NewBucket(%+v) = %v, nil; want an error", tt.lim, b)
			}
			const prefix = `limiter: bucket "openai/gpt-4o": `
			if got := err.Error(); !strings.HasPrefix(got, prefix+tt.want) {
				t.Errorf("NewBucket(%+v) error = %q, want prefix %q", tt.lim, got, prefix+tt.want)
			}
		})
	}
}

func TestNewBucketAccepts(t *testing.T) {
	tests := []struct {
		name string
		lim  Limits
	}{
		{"zero", Limits{}},
		{"bursts without rates", Limits{RequestBurst: time.Second, TokenBurst: time.Minute}},
		{"request burst below one request", Limits{RequestsPerMinute: 1, RequestBurst: time.Millisecond}},
		{"huge rates", Limits{RequestsPerMinute: 1e15, RequestBurst: time.Nanosecond, TokensPerMinute: 1e300, TokenBurst: time.Nanosecond}},
		{"full", Limits{RequestsPerMinute: 500, RequestBurst: 2 * time.Second, TokensPerMinute: 30000, TokenBurst: time.Minute, MaxConcurrency: 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLocal()
			b, err := l.NewBucket("k", tt.lim)
			if err != nil {
				t.Fatalf("NewBucket(%+v): %v", tt.lim, err)
			}
			if b.Key() != "k" || b.Limits() != tt.lim {
				t.Errorf("Key(), Limits() = %q, %+v; want %q, %+v", b.Key(), b.Limits(), "k", tt.lim)
			}
		})
	}
}

// TestInterval pins the rounding: up to whole nanoseconds, never down.
func TestInterval(t *testing.T) {
	tests := []struct {
		perMinute float64
		want      int64
	}{
		{60, 1e9},
		{500, 120e6},
		{0.5, 120e9},
		{7, 8571428572},       // 8571428571.43
		{6000, 10e6},          // exact
		{7777, 7715058},       // 7715057.22
		{3, 20e9},             // exact
		{6e10, 1},             // exact
		{1e12, 1},             // 0.06, never 0
		{59.999999, 1e9 + 17}, // 1000000016.67
	}
	for _, tt := range tests {
		got, ok := interval(tt.perMinute)
		if !ok || got != tt.want {
			t.Errorf("interval(%v) = %d, %v; want %d, true", tt.perMinute, got, ok, tt.want)
		}
		if float64(got)*tt.perMinute < float64(time.Minute) {
			t.Errorf("interval(%v) = %d admits more than the rate", tt.perMinute, got)
		}
	}
}

func TestForeignBucketPanics(t *testing.T) {
	a, b := newLocal(), newLocal()
	theirs := mustBucket(t, b, "theirs", rpm60)
	mine := mustBucket(t, a, "mine", rpm60)
	calls := map[string]func(){
		"ReserveAt":  func() { a.ReserveAt(epoch, []*Bucket{mine, theirs}, req(1), Ask{}) },
		"AdjustAt":   func() { a.AdjustAt(epoch, []*Bucket{theirs}, req(1)) },
		"Release":    func() { a.Release(context.Background(), []*Bucket{theirs}) },
		"EstimateAt": func() { a.EstimateAt(epoch, []*Bucket{theirs}, req(1)) },
		"UsageAt":    func() { a.UsageAt(epoch, theirs) },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			defer func() {
				const want = `limiter: bucket "theirs" belongs to another Local`
				if got := recover(); got != want {
					t.Errorf("%s with another Local's bucket: panic %v, want %q", name, got, want)
				}
			}()
			call()
		})
	}
	// The recovered panics left the Local usable.
	if got := a.ReserveAt(epoch, []*Bucket{mine}, req(1), Ask{}); got != ok(0) {
		t.Fatalf("ReserveAt after the panics = %+v, want %+v", got, ok(0))
	}
}

// TestExtremes checks that huge costs, far instants and huge waits
// saturate instead of overflowing.
func TestExtremes(t *testing.T) {
	l := newLocal()
	bs := []*Bucket{mustBucket(t, l, "p", Limits{RequestsPerMinute: 1, RequestBurst: time.Hour, TokensPerMinute: 1e-3, TokenBurst: 1 << 58})}
	far := time.Duration(1<<62 + 12345)
	if got := l.ReserveAt(epoch, bs, Cost{Tokens: 1 << 62}, Ask{CommitWithin: far}); !got.Never {
		t.Fatalf("ReserveAt(1<<62 tokens) = %+v, want Never", got)
	}
	if got := l.EstimateAt(epoch, bs, Cost{Tokens: 1 << 62}); got <= 0 {
		t.Fatalf("EstimateAt(1<<62 tokens) = %v, want a positive saturated wait", got)
	}
	for range 100 {
		l.AdjustAt(epoch, bs, Cost{Requests: 1 << 62, Tokens: 1 << 62})
	}
	if got := l.ReserveAt(epoch, bs, req(1), Ask{CommitWithin: far}); !got.OK || got.Wait <= 0 {
		t.Fatalf("ReserveAt after huge overages = %+v, want OK with a positive wait", got)
	}
	l.AdjustAt(epoch, bs, Cost{Requests: -1 << 63, Tokens: -1 << 63})
	if got := l.ReserveAt(epoch, bs, req(1), Ask{}); got != ok(0) {
		t.Fatalf("ReserveAt after a huge refund = %+v, want %+v", got, ok(0))
	}
	// Instants centuries away are clamped, not wrapped.
	for _, at := range []time.Time{{}, epoch.AddDate(-300, 0, 0), epoch.AddDate(300, 0, 0)} {
		d := l.ReserveAt(at, bs, req(1), Ask{CommitWithin: far})
		if d.Wait < 0 {
			t.Errorf("ReserveAt(%v) = %+v, want a wait >= 0", at, d)
		}
	}
}

func TestPause(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := NewLocal(func() time.Time { return t0 })
	b, err := l.NewBucket("p", Limits{RequestsPerMinute: 600, RequestBurst: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !l.PauseAt(t0, b, t0.Add(5*time.Second)) {
		t.Fatal("PauseAt = false, want the pause set")
	}
	if l.PauseAt(t0, b, t0.Add(2*time.Second)) {
		t.Error("a shorter pause shortened the current one")
	}
	d := l.ReserveAt(t0.Add(time.Second), []*Bucket{b}, Cost{Requests: 1}, Ask{})
	if d.OK || d.Wait != 4*time.Second || d.Bucket != 0 {
		t.Errorf("ReserveAt during the pause = %+v, want a 4s wait", d)
	}
	if got := l.EstimateAt(t0.Add(time.Second), []*Bucket{b}, Cost{Requests: 1}); got != 4*time.Second {
		t.Errorf("EstimateAt during the pause = %v, want 4s", got)
	}
	if got := l.PausedUntil(t0, b); !got.Equal(t0.Add(5 * time.Second)) {
		t.Errorf("PausedUntil = %v, want %v", got, t0.Add(5*time.Second))
	}
	if d := l.ReserveAt(t0.Add(5*time.Second), []*Bucket{b}, Cost{Requests: 1}, Ask{}); !d.OK {
		t.Errorf("ReserveAt when the pause ends = %+v, want OK", d)
	}
	if got := l.PausedUntil(t0.Add(6*time.Second), b); !got.IsZero() {
		t.Errorf("PausedUntil after the pause = %v, want zero", got)
	}
}

func TestClamp(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := NewLocal(func() time.Time { return t0 })
	b, err := l.NewBucket("p", Limits{TokensPerMinute: 6000, TokenBurst: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	l.ClampAt(t0, b, -1, 1000) // the provider says 1000 tokens left of our 6000
	if u := l.UsageAt(t0, b); u.Tokens < 999 || u.Tokens > 1000 {
		t.Errorf("tokens available after clamp = %v, want 1000", u.Tokens)
	}
	l.ClampAt(t0, b, -1, 5000) // more than we believe: never moves up
	if u := l.UsageAt(t0, b); u.Tokens > 1000 {
		t.Errorf("tokens available after a higher report = %v, want still 1000", u.Tokens)
	}
	if d := l.ReserveAt(t0, []*Bucket{b}, Cost{Tokens: 2000}, Ask{}); d.OK || d.Wait != 10*time.Second {
		t.Errorf("2000 tokens after the clamp = %+v, want a 10s wait", d)
	}
}
