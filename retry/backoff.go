package retry

import "time"

// Backoff returns the wait before retry number n (n = 1 is the first
// retry) with "full jitter": u·min(max, base·2^(n−1)), that is uniform in
// [0, min(max, base·2^(n−1))) for u uniform in [0, 1). Full jitter spreads
// the retries of many replicas that failed together instead of bunching
// them (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015).
//
// The caller supplies u so that tests are deterministic; production passes
// rand.Float64() from math/rand/v2. u ≥ 1 gives the ceiling itself; u ≤ 0
// or NaN gives 0, as do base ≤ 0 and max ≤ 0. n < 1 counts as 1. The
// exponent never overflows: any n for which base·2^(n−1) would pass max
// gives max.
func Backoff(n int, base, max time.Duration, u float64) time.Duration {
	if base <= 0 || max <= 0 || !(u > 0) {
		return 0
	}
	ceiling := max
	// base<<shift ≤ max exactly when base ≤ max>>shift, which checks the
	// growth without computing anything that could overflow.
	if shift := n - 1; shift < 63 && base <= max>>max0(shift) {
		ceiling = base << max0(shift)
	}
	if u >= 1 {
		return ceiling
	}
	// float64(ceiling) may round up (to 2^63 for the largest values), so the
	// product is checked before it is converted back.
	d := u * float64(ceiling)
	if d >= float64(ceiling) {
		return ceiling
	}
	return time.Duration(d)
}

// max0 is n, or 0 when n is negative.
func max0(n int) uint {
	if n < 0 {
		return 0
	}
	return uint(n)
}
