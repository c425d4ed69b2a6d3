// Package limiter keeps provider quotas (requests per minute, tokens per
// minute, requests in flight) and answers "when may this request go" over
// several quota scopes at once.
//
// The rate limits use GCRA, the generic cell rate algorithm: a token
// bucket kept as one "theoretical arrival time" (TAT) per dimension. A cost
// of c units fits at the earliest instant s with TAT + c·T − τ ≤ s, where T
// is the emission interval (one unit's worth of time) and τ the burst
// tolerance. The answer is closed-form, so a request that has to wait
// learns for how long, and buckets and dimensions combine by taking the
// longest wait (FIELD-NOTES §1.8, §7.1). A reservation may also ask to
// leave part of every burst unused ([Ask].Headroom), as lower priority
// classes do so that the top of each bucket stays with the classes above
// (FIELD-NOTES §6.4); that only ever admits less. The invariant kept: over
// any interval of length W, a bucket admits at most τ/T + W/T units in
// each dimension (its burst capacity plus its rate over W), net of the
// refunds made in that interval (with one caveat for refunds made while a
// slot committed for later is pending; see [Local.AdjustAt]).
//
// [Local] keeps the state in process. A shared limiter for several replicas
// is to run the same integer arithmetic in one Redis script behind the same
// method set; local.go spells it out.
package limiter

import "time"

// Limits are one bucket's quotas. Rates are paced, not windowed: 60
// requests per minute with a one-second burst admit one request per second,
// never 60 at the start of a minute.
//
// The zero value is a bucket without limits.
type Limits struct {
	// RequestsPerMinute is the request rate. 0 means unlimited. It may be
	// fractional because class ceilings scale limits by a share.
	RequestsPerMinute float64
	// TokensPerMinute is the token rate. 0 means unlimited.
	TokensPerMinute float64
	// MaxConcurrency caps the requests in flight. 0 means unlimited.
	MaxConcurrency int64
	// RequestBurst is how much of the request rate may go at once, as a
	// duration's worth of it: 2s at 60 RPM is a burst of 2 requests. It must
	// be > 0 when RequestsPerMinute is set. A burst shorter than one
	// request's interval counts as one request, so a single request always
	// fits.
	RequestBurst time.Duration
	// TokenBurst is the same for tokens. It must be > 0 when
	// TokensPerMinute is set, and hold at least one token. A request whose
	// tokens exceed it is never admitted ([Decision].Never), so it should
	// cover the largest single request (FIELD-NOTES §1.9: about a minute).
	TokenBurst time.Duration
}

// Cost is what one request charges, or, passed to [Local.Adjust], a change
// to what it charged (negative for a refund). Zero in a dimension means the
// request does not use it.
type Cost struct {
	Requests int64
	Tokens   int64
}

// Decision answers "when may this request go". Exactly one of OK, Busy and
// Never is set, or none of them when the request fits a rate only after
// Wait and Wait is longer than the caller was willing to commit to.
type Decision struct {
	// OK means the reservation is committed on every bucket: the caller
	// owns a concurrency slot on each (to give back with [Local.Release])
	// and the rate charge, and may send the request after Wait.
	OK bool
	// Wait is, when OK, the time until the reserved slot (at most the
	// [Ask].CommitWithin asked for). When none of OK, Busy and Never is set,
	// it is the earliest time the cost would fit, with the headroom asked
	// for, if nothing else changed. When
	// Busy, it is still the rate wait (possibly 0): the caller should ask
	// again after a Release, but not before Wait has passed.
	Wait time.Duration
	// Busy means a bucket's MaxConcurrency is reached: ask again after a
	// [Local.Release]. Nothing was committed.
	Busy bool
	// Never means the cost exceeds a bucket's burst capacity, so it can
	// never be admitted. It takes precedence over Busy and Wait.
	Never bool
	// Bucket is, when not OK, the index into the buckets argument of the
	// bucket that decided: the too-small one (Never), the full one (Busy),
	// or the one with the longest wait. The lowest index wins ties. It is
	// -1 when OK.
	Bucket int
}

// Usage is a bucket's state at one instant, for the status page. The rate
// fields mean nothing in a dimension without a limit and are 0 there.
type Usage struct {
	// Requests and Tokens are the units that could go out right now: the
	// capacity minus what is still owed. They go negative after an overage
	// charge or while a committed reservation lies in the future.
	Requests, Tokens float64
	// RequestCapacity and TokenCapacity are the burst capacities in units.
	RequestCapacity, TokenCapacity float64
	// Inflight is the number of committed reservations not yet released.
	Inflight int64
}
