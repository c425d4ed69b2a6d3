package limiter

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"sync"
	"time"
)

// The arithmetic, per bucket and dimension, which a shared limiter's
// script is to repeat (there in integer microseconds of Redis TIME):
//
//	T = ceil(1 minute / rate)            emission interval, ns per unit
//	τ = burst (requests: max(burst, T))  tolerance
//	never:  c·T > τ
//	headroom h:  τ_h = max(τ − ceil(h·τ), c·T)    (h = 0: τ_h = τ)
//	wait  = max(TAT, now) + c·T − τ_h − now, at least 0
//	commit at s = now + max wait:  TAT ← max(TAT, s) + c·T
//	overage d > 0:  TAT ← max(TAT, now) + d·T
//	refund  d > 0:  TAT ← max(now, TAT − d·T)
//
// Headroom asks that ceil(h·τ) of the tolerance stay unused after the
// charge; a charge too large for what is left of τ fits, with τ_h = c·T,
// on a full bucket (TAT ≤ now) only, so headroom never turns a request
// into a never. The never test and every other formula keep τ: headroom
// only shortens what one reservation may use, it changes no state. It is
// a rate concept: concurrency and pauses ignore it.
//
// Time is int64 nanoseconds since the Local's origin. Every quantity is
// kept within a few horizons of zero so that no sum or difference can
// overflow without a check on each step: instants are clamped to
// ±horizon, a single charge c·T to horizon, an interval and a tolerance to
// maxSpan (below horizon, so a capped charge still exceeds any tolerance),
// and a TAT to 2·horizon. The largest intermediate value, a TAT or send
// time plus a charge, stays below 6·horizon < 2^63. A horizon is about 36
// years, so the clamps never bind in practice.
//
// Headroom is held in whole parts per billion (rounded up, so at least h
// is kept free), at most 10^9, and ceil(h·τ) is computed exactly in 128
// bits: τ ≤ maxSpan = 2^59 and h ≤ 10^9 < 2^30 make the product < 2^89,
// whose high word (< 2^25) stays below the divisor 10^9 as bits.Div64
// requires. The result lies in [0, τ], so τ_h lies in [c·T, τ] (c·T ≤ τ
// past the never test): a tolerance no larger than τ, so every bound
// above still holds.
const (
	horizon = 1 << 60
	maxTAT  = 2 * horizon
	maxSpan = horizon / 2
	// longAgo is the TAT of a bucket that has never been charged: at or
	// before any instant, so the bucket starts full.
	longAgo = -horizon
)

// dimension indexes Bucket.dims and the cost arrays.
const (
	requests = iota
	tokens
	dimensions
)

// Local is an in-process limiter over any number of [Bucket]s. One mutex
// guards the state of all its buckets, so a reservation over several of
// them is atomic. It is safe for concurrent use.
//
// The time arguments of the ...At methods should come from one clock (the
// one given to [NewLocal], or time.Now) and lie within a few decades of
// the Local's creation.
type Local struct {
	now    func() time.Time
	origin time.Time

	mu sync.Mutex // protects every owned Bucket's dims[].tat and inflight
}

// NewLocal returns a limiter reading time from now; nil means time.Now.
func NewLocal(now func() time.Time) *Local {
	if now == nil {
		now = time.Now
	}
	return &Local{now: now, origin: now()}
}

// Bucket is one quota scope's state: a provider, a model of a provider, or
// a class's ceiling inside one of those. It is created by
// [Local.NewBucket], belongs to that Local (passing it to another Local
// panics) and lives as long as it is referenced; there is nothing to close.
// Its state is guarded by the Local's mutex.
type Bucket struct {
	owner    *Local
	maxConc  int64
	inflight int64 // committed reservations not yet released; guarded by owner.mu
	paused   int64 // nothing goes before this instant (the provider said so); guarded by owner.mu
	dims     [dimensions]dim
	key      string
	lim      Limits
	shared   *remote // a Shared limiter's side of its twin; nil for a Local's own bucket
}

// dim is one rate dimension of a bucket.
type dim struct {
	interval  int64 // T: nanoseconds per unit, rounded up; 0 = unlimited
	tolerance int64 // τ: nanoseconds of rate that may go at once
	tat       int64 // theoretical arrival time; guarded by the owner's mu
}

// NewBucket returns a bucket named key with the limits lim, starting full.
// The error names the key and the first invalid limit.
func (l *Local) NewBucket(key string, lim Limits) (*Bucket, error) {
	b := &Bucket{owner: l, key: key, lim: lim, maxConc: lim.MaxConcurrency}
	fail := func(format string, args ...any) (*Bucket, error) {
		return nil, fmt.Errorf("limiter: bucket %q: %s", key, fmt.Sprintf(format, args...))
	}
	if lim.MaxConcurrency < 0 {
		return fail("MaxConcurrency %d is negative", lim.MaxConcurrency)
	}
	rates := [dimensions]struct {
		name, burstName string
		perMinute       float64
		burst           time.Duration
	}{
		requests: {"RequestsPerMinute", "RequestBurst", lim.RequestsPerMinute, lim.RequestBurst},
		tokens:   {"TokensPerMinute", "TokenBurst", lim.TokensPerMinute, lim.TokenBurst},
	}
	for d, r := range rates {
		switch {
		case math.IsNaN(r.perMinute) || math.IsInf(r.perMinute, 0):
			return fail("%s %v is not a finite number", r.name, r.perMinute)
		case r.perMinute < 0:
			return fail("%s %v is negative", r.name, r.perMinute)
		case r.burst < 0:
			return fail("%s %v is negative", r.burstName, r.burst)
		case r.burst > maxSpan:
			return fail("%s %v is longer than %v", r.burstName, r.burst, time.Duration(maxSpan))
		}
		b.dims[d].tat = longAgo
		if r.perMinute == 0 {
			continue // unlimited: the burst does not matter
		}
		if r.burst == 0 {
			return fail("%s must be > 0 when %s is set", r.burstName, r.name)
		}
		t, ok := interval(r.perMinute)
		if !ok {
			return fail("%s %v is too small: one unit per more than %v", r.name, r.perMinute, time.Duration(maxSpan))
		}
		tol := int64(r.burst)
		if d == requests {
			// One request always fits, however short the burst, so a
			// fractional rate (a class's share of 1 RPM) still admits.
			tol = max(tol, t)
		} else if tol < t {
			// Every request costs whole tokens: such a bucket would refuse
			// everything, which is a configuration mistake.
			return fail("%s %v holds less than one token at %v tokens per minute (one per %v)",
				r.burstName, r.burst, r.perMinute, time.Duration(t))
		}
		b.dims[d].interval = t
		b.dims[d].tolerance = tol
	}
	return b, nil
}

// interval returns the emission interval for a rate per minute in whole
// nanoseconds, rounded up so that the bucket never admits more than the
// rate; ok is false when it exceeds maxSpan.
func interval(perMinute float64) (t int64, ok bool) {
	const minute = float64(time.Minute)
	f := math.Ceil(minute / perMinute)
	if f >= maxSpan {
		return 0, false
	}
	// The quotient was rounded to the nearest float before Ceil, which can
	// land just below the true value; FMA tells the sign of f·rate − minute
	// exactly.
	if math.FMA(f, perMinute, -minute) < 0 {
		f++
	}
	return max(int64(f), 1), true
}

// Key returns the name the bucket was created with.
func (b *Bucket) Key() string { return b.key }

// Limits returns the limits the bucket was created with.
func (b *Bucket) Limits() Limits { return b.lim }

// Reserve is [Local.ReserveAt] at the Local's current time. The context is
// unused and the error always nil; they are there for a shared limiter
// behind the same method set.
func (l *Local) Reserve(_ context.Context, buckets []*Bucket, c Cost, a Ask) (Decision, error) {
	return l.ReserveAt(l.now(), buckets, c, a), nil
}

// ReserveAt decides whether a request costing c may go on every one of
// buckets, as of now, and commits it when it may go within a.CommitWithin:
// then every bucket is charged as if the request arrived at now+Wait and
// holds one more request in flight, and the caller must eventually call
// [Local.Release] with the same buckets. Otherwise nothing changes (see
// [Decision]). A negative CommitWithin counts as zero; negative costs
// count as zero (use [Local.AdjustAt] for refunds). Each bucket should
// appear at most once, or it is charged twice. With no buckets the answer
// is OK at once.
//
// With a.Headroom h > 0 the request fits a rate dimension of a bucket only
// while, after its charge, h of the dimension's burst stays unused, or,
// when the charge is larger than (1−h) of the burst, only when the bucket
// is full: it waits longer, never forever (Never is decided on the whole
// burst). Concurrency caps and pauses are the same for every headroom. h
// is taken in whole parts per billion, rounded up; values from 1 up count
// as the largest headroom (only a full bucket will do), and NaN and
// negative values as zero, which is exactly a reservation without
// headroom.
//
// It does not allocate.
func (l *Local) ReserveAt(now time.Time, buckets []*Bucket, c Cost, a Ask) Decision {
	t := l.nanos(now)
	cost := [dimensions]int64{max(c.Requests, 0), max(c.Tokens, 0)}
	limit := max(int64(a.CommitWithin), 0)
	h := partsPerBillion(a.Headroom)

	l.mu.Lock()
	var wait int64
	worst, busy := -1, -1
	for i, b := range buckets {
		l.own(b)
		if w := b.paused - t; w > wait {
			wait, worst = w, i
		}
		for d := range b.dims {
			m := &b.dims[d]
			if m.interval == 0 || cost[d] == 0 {
				continue
			}
			ch := charge(cost[d], m.interval)
			if ch > m.tolerance {
				l.mu.Unlock()
				return Decision{Never: true, Bucket: i}
			}
			tol := m.tolerance
			if h != 0 {
				tol = max(tol-reserved(tol, h), ch)
			}
			// The cost fits once TAT + c·T − τ_h ≤ now + wait.
			if w := max(m.tat, t) - t + ch - tol; w > wait {
				wait, worst = w, i
			}
		}
		if busy < 0 && b.maxConc > 0 && b.inflight >= b.maxConc {
			busy = i
		}
	}
	if busy >= 0 {
		l.mu.Unlock()
		return Decision{Busy: true, Wait: time.Duration(wait), Bucket: busy}
	}
	if wait > limit {
		l.mu.Unlock()
		return Decision{Wait: time.Duration(wait), Bucket: worst}
	}
	// Charge as an arrival at the send time s: dimensions with room to
	// spare at now do not get to keep the credit they would earn until s.
	s := t + wait
	for _, b := range buckets {
		for d := range b.dims {
			m := &b.dims[d]
			if m.interval == 0 || cost[d] == 0 {
				continue
			}
			m.tat = min(max(m.tat, s)+charge(cost[d], m.interval), maxTAT)
		}
		b.inflight++
	}
	l.mu.Unlock()
	return Decision{OK: true, Wait: time.Duration(wait), Bucket: -1}
}

// Adjust is [Local.AdjustAt] at the Local's current time. The context is
// unused and the error always nil.
func (l *Local) Adjust(_ context.Context, buckets []*Bucket, delta Cost) error {
	l.AdjustAt(l.now(), buckets, delta)
	return nil
}

// AdjustAt corrects what was charged on every one of buckets by delta,
// usually actual minus estimated cost once the response says how many
// tokens it used. A positive delta (an overage) is charged at once,
// whatever the bucket holds, and pushes later requests back. A negative one
// (a refund, or Requests: -1 to undo a request's charge) gives the units
// back, but never makes a bucket fuller than full: what the bucket regained
// with time in the meantime is not given twice.
//
// A refund is counted when it is made, not when the refunded request went:
// the package invariant holds net of refunds over each interval. It pulls
// the TAT back whichever request it is for, so when a slot was committed
// for later ([Ask].CommitWithin > 0) behind the refunded charge, the
// refund also frees the room in front of that slot, and the bucket can
// briefly admit up to about that slot's charge more than its burst. Short
// commit windows keep that small; a refund that arrives after the slot's
// send time is unaffected.
func (l *Local) AdjustAt(now time.Time, buckets []*Bucket, delta Cost) {
	t := l.nanos(now)
	cost := [dimensions]int64{delta.Requests, delta.Tokens}
	l.mu.Lock()
	for _, b := range buckets {
		l.own(b)
		for d := range b.dims {
			m := &b.dims[d]
			switch {
			case m.interval == 0 || cost[d] == 0:
			case cost[d] > 0:
				m.tat = min(max(m.tat, t)+charge(cost[d], m.interval), maxTAT)
			case m.tat > t: // a bucket that is full already stays as it is
				ch := charge(-max(cost[d], -math.MaxInt64), m.interval)
				if ch == horizon {
					// Saturated: more than any debt real traffic builds.
					m.tat = t
				} else {
					m.tat = max(t, m.tat-ch)
				}
			}
		}
	}
	l.mu.Unlock()
}

// Release gives back the concurrency slot a committed reservation holds on
// every one of buckets. A bucket's count never goes below zero, so a
// spurious Release is harmless (but lets one more request in while a real
// one is still out). The context is unused and the error always nil.
func (l *Local) Release(_ context.Context, buckets []*Bucket) error {
	l.mu.Lock()
	for _, b := range buckets {
		l.own(b)
		if b.inflight > 0 {
			b.inflight--
		}
	}
	l.mu.Unlock()
	return nil
}

// Estimate is [Local.EstimateAt] at the Local's current time.
func (l *Local) Estimate(buckets []*Bucket, c Cost) time.Duration {
	return l.EstimateAt(l.now(), buckets, c)
}

// EstimateAt returns how long a request costing c would wait on buckets if
// it asked at now, ignoring concurrency and burst capacity: the cost may be
// larger than a burst, such as everything queued ahead of a request, to
// estimate how long a queue takes to drain. It changes nothing.
func (l *Local) EstimateAt(now time.Time, buckets []*Bucket, c Cost) time.Duration {
	t := l.nanos(now)
	cost := [dimensions]int64{max(c.Requests, 0), max(c.Tokens, 0)}
	var wait int64
	l.mu.Lock()
	for _, b := range buckets {
		l.own(b)
		wait = max(wait, b.paused-t)
		for d := range b.dims {
			m := &b.dims[d]
			if m.interval == 0 || cost[d] == 0 {
				continue
			}
			wait = max(wait, max(m.tat, t)-t+charge(cost[d], m.interval)-m.tolerance)
		}
	}
	l.mu.Unlock()
	return time.Duration(wait)
}

// Pause is [Local.PauseAt] at the Local's current time. The context is
// unused and the error always nil.
func (l *Local) Pause(_ context.Context, b *Bucket, until time.Time) error {
	l.PauseAt(l.now(), b, until)
	return nil
}

// PauseAt stops b from admitting anything before until, as a provider's
// 429 with Retry-After asks: every reservation that includes b waits for
// it. A pause only ever extends; a shorter one than the current one
// changes nothing. It returns whether the pause was extended.
func (l *Local) PauseAt(now time.Time, b *Bucket, until time.Time) bool {
	u := l.nanos(until)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.own(b)
	if u <= b.paused {
		return false
	}
	b.paused = u
	return true
}

// PausedUntil returns when b's pause ends; the zero time when it is not
// paused at now.
func (l *Local) PausedUntil(now time.Time, b *Bucket) time.Time {
	t := l.nanos(now)
	l.mu.Lock()
	p := b.paused
	l.mu.Unlock()
	if p <= t {
		return time.Time{}
	}
	return l.origin.Add(time.Duration(p))
}

// ClampAt lowers what b could admit at once to what the provider reported
// left (x-ratelimit-remaining-*), when that is less than b believes: other
// consumers of the same account, or the provider's own accounting, may
// have used more. It only ever moves the state down, never up. A negative
// value leaves that dimension alone.
func (l *Local) ClampAt(now time.Time, b *Bucket, remainingRequests, remainingTokens int64) {
	t := l.nanos(now)
	left := [dimensions]int64{remainingRequests, remainingTokens}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.own(b)
	for d := range b.dims {
		m := &b.dims[d]
		if m.interval == 0 || left[d] < 0 {
			continue
		}
		// Available now = (τ − (TAT − now)) / T; at most left[d] means
		// TAT ≥ now + τ − left·T.
		floor := t + m.tolerance - charge(left[d], m.interval)
		if floor > m.tat {
			m.tat = min(floor, maxTAT)
		}
	}
}

// Usage is [Local.UsageAt] at the Local's current time.
func (l *Local) Usage(b *Bucket) Usage {
	return l.UsageAt(l.now(), b)
}

// UsageAt returns the state of b at now.
func (l *Local) UsageAt(now time.Time, b *Bucket) Usage {
	t := l.nanos(now)
	var u Usage
	var left, capacity [dimensions]float64
	l.mu.Lock()
	l.own(b)
	for d := range b.dims {
		m := &b.dims[d]
		if m.interval == 0 {
			continue
		}
		owed := max(m.tat, t) - t
		left[d] = float64(m.tolerance-owed) / float64(m.interval)
		capacity[d] = float64(m.tolerance) / float64(m.interval)
	}
	u.Inflight = b.inflight
	l.mu.Unlock()
	u.Requests, u.Tokens = left[requests], left[tokens]
	u.RequestCapacity, u.TokenCapacity = capacity[requests], capacity[tokens]
	return u
}

// nanos converts an instant to the limiter's clamped nanoseconds. Sub uses
// the monotonic clock readings when both instants have one, so a step of
// the wall clock does not refill or drain the buckets.
func (l *Local) nanos(now time.Time) int64 {
	return min(max(int64(now.Sub(l.origin)), -horizon), horizon)
}

// own panics unless b belongs to l: another Local's mutex guards it.
// Requires l.mu held; it unlocks before panicking, so that a recovered
// panic leaves l usable.
func (l *Local) own(b *Bucket) {
	if b.owner != l {
		l.foreign(b)
	}
}

// foreign is own's cold path, kept apart so that own inlines.
func (l *Local) foreign(b *Bucket) {
	l.mu.Unlock()
	panic("limiter: bucket " + strconv.Quote(b.key) + " belongs to another Local")
}

// billion is the denominator of a headroom in parts per billion.
const billion = 1_000_000_000

// partsPerBillion returns the headroom h in whole parts per billion,
// rounded up, in [0, billion]; NaN counts as 0.
func partsPerBillion(h float64) uint64 {
	switch {
	case !(h > 0):
		return 0
	case h >= 1:
		return billion
	}
	// h·1e9 lies in (0, 1e9]: its ceiling converts exactly.
	return uint64(math.Ceil(h * billion))
}

// reserved returns ceil(tol·h / 10^9), the part of a tolerance tol ≥ 0
// that headroom h (parts per billion, ≤ 10^9) keeps free; it is at most
// tol. tol ≤ maxSpan keeps the high word of the product below the
// divisor, as bits.Div64 requires.
func reserved(tol int64, h uint64) int64 {
	hi, lo := bits.Mul64(uint64(tol), h)
	q, r := bits.Div64(hi, lo, billion)
	if r != 0 {
		q++
	}
	return int64(q)
}

// charge returns c·T for c ≥ 0, T ≥ 1, capped at the horizon. A capped
// charge is larger than any tolerance (≤ maxSpan), so it still reads as
// Never.
func charge(c, t int64) int64 {
	hi, lo := bits.Mul64(uint64(c), uint64(t))
	if hi != 0 || lo > horizon {
		return horizon
	}
	return int64(lo)
}
