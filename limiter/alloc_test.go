//go:build !race

package limiter

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestHotPathAllocs pins the budget of the calls a scheduler makes per
// request: none of them allocates, over any number of buckets.
func TestHotPathAllocs(t *testing.T) {
	ctx := context.Background()
	for n := 1; n <= 4; n++ {
		t.Run(fmt.Sprintf("buckets=%d", n), func(t *testing.T) {
			now := epoch
			l := NewLocal(func() time.Time { return now })
			bs := steadyBuckets(t, l, n)
			c := Cost{Requests: 1, Tokens: 100}
			calls := []struct {
				name string
				call func()
			}{
				{"ReserveAt", func() {
					now = now.Add(benchStep)
					if d := l.ReserveAt(now, bs, c, Ask{}); !d.OK {
						t.Fatalf("ReserveAt = %+v, want OK", d)
					}
					l.Release(ctx, bs)
				}},
				{"ReserveAt with headroom", func() {
					now = now.Add(benchStep)
					if d := l.ReserveAt(now, bs, c, Ask{Headroom: 0.2}); !d.OK {
						t.Fatalf("ReserveAt with headroom = %+v, want OK", d)
					}
					l.Release(ctx, bs)
				}},
				{"Reserve", func() {
					if d, _ := l.Reserve(ctx, bs, c, Ask{CommitWithin: time.Hour}); !d.OK {
						t.Fatalf("Reserve = %+v, want OK", d)
					}
					l.Adjust(ctx, bs, Cost{Requests: -1, Tokens: -100})
					l.Release(ctx, bs)
				}},
				{"refused", func() { l.ReserveAt(now, bs, Cost{Tokens: 1 << 40}, Ask{}) }},
				{"Estimate", func() { l.Estimate(bs, Cost{Requests: 100, Tokens: 1e6}) }},
				{"Usage", func() { l.Usage(bs[0]) }},
			}
			for _, c := range calls {
				if got := testing.AllocsPerRun(1000, c.call); got != 0 {
					t.Errorf("%s over %d buckets: %v allocations per call, want 0", c.name, n, got)
				}
			}
		})
	}
}
