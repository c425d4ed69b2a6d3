package retry

import (
	"math"
	"testing"
	"time"
)

// justBelowOne is the largest float64 below 1, the top of rand.Float64.
var justBelowOne = math.Nextafter(1, 0)

func TestBackoff(t *testing.T) {
	const base, maxWait = 500 * time.Millisecond, 8 * time.Second
	tests := []struct {
		name          string
		n             int
		base, maxWait time.Duration
		u             float64
		want          time.Duration
	}{
		{"first retry, u=0", 1, base, maxWait, 0, 0},
		{"first retry, u=0.5", 1, base, maxWait, 0.5, 250 * time.Millisecond},
		{"second retry doubles", 2, base, maxWait, 0.5, 500 * time.Millisecond},
		{"third retry doubles", 3, base, maxWait, 0.5, time.Second},
		{"fifth retry reaches the cap", 5, base, maxWait, 0.5, 4 * time.Second},
		{"sixth retry is capped", 6, base, maxWait, 0.5, 4 * time.Second},
		{"u→1 stays under the ceiling", 1, base, maxWait, justBelowOne, base - 1},
		{"u→1 at the cap", 10, base, maxWait, justBelowOne, maxWait - 1},
		{"u=1 is the ceiling", 3, base, maxWait, 1, 2 * time.Second},
		{"u>1 is the ceiling", 3, base, maxWait, 7, 2 * time.Second},
		{"negative u", 3, base, maxWait, -0.5, 0},
		{"NaN u", 3, base, maxWait, math.NaN(), 0},
		{"+Inf u is the ceiling", 3, base, maxWait, math.Inf(1), 2 * time.Second},
		{"n=0 counts as 1", 0, base, maxWait, 0.5, 250 * time.Millisecond},
		{"negative n counts as 1", -5, base, maxWait, 0.5, 250 * time.Millisecond},
		{"n=63", 63, base, maxWait, 0.5, 4 * time.Second},
		{"n=64", 64, base, maxWait, 0.5, 4 * time.Second},
		{"huge n", math.MaxInt, base, maxWait, 0.5, 4 * time.Second},
		{"base over max", 1, time.Minute, maxWait, 0.5, 4 * time.Second},
		{"base 0", 3, 0, maxWait, 0.5, 0},
		{"negative base", 3, -time.Second, maxWait, 0.5, 0},
		{"max 0", 3, base, 0, 0.5, 0},
		{"negative max", 3, base, -time.Second, 0.5, 0},
		{"1ns base", 3, 1, maxWait, justBelowOne, 3},
		{"largest durations", math.MaxInt, math.MaxInt64, math.MaxInt64, justBelowOne, time.Duration(math.MaxInt64 - 1023)},
		{"largest durations, u=1", 200, 1, math.MaxInt64, 1, math.MaxInt64},
		{"no overflow at 2^62", 63, 1, math.MaxInt64, 0.5, 1 << 61},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Backoff(tt.n, tt.base, tt.maxWait, tt.u); got != tt.want {
				t.Errorf("Backoff(%d, %v, %v, %v) = %v, want %v", tt.n, tt.base, tt.maxWait, tt.u, got, tt.want)
			}
		})
	}
}

// TestBackoffBounds checks the contract over many attempts and draws: the
// wait is in [0, min(max, base·2^(n−1))], computed here in float64, which
// cannot overflow.
func TestBackoffBounds(t *testing.T) {
	us := []float64{0, 1e-9, 0.25, 0.5, 0.75, 0.999, justBelowOne}
	bases := []time.Duration{1, time.Millisecond, 500 * time.Millisecond, time.Hour}
	maxes := []time.Duration{1, time.Second, 8 * time.Second, time.Hour, math.MaxInt64}
	for _, base := range bases {
		for _, maxWait := range maxes {
			prev := time.Duration(0)
			for n := 1; n <= 130; n++ {
				ceiling := math.Min(float64(maxWait), float64(base)*math.Pow(2, float64(n-1)))
				for _, u := range us {
					got := Backoff(n, base, maxWait, u)
					if got < 0 || float64(got) > ceiling {
						t.Fatalf("Backoff(%d, %v, %v, %v) = %v, want in [0, %v]", n, base, maxWait, u, got, ceiling)
					}
				}
				// Growth: with the same draw, a later attempt never waits less.
				got := Backoff(n, base, maxWait, 0.5)
				if got < prev {
					t.Fatalf("Backoff(%d, %v, %v, 0.5) = %v < Backoff(%d) = %v", n, base, maxWait, got, n-1, prev)
				}
				prev = got
			}
		}
	}
}
