package limiter_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sluice-ai/sluice/limiter"
)

// A provider allows 60 requests and 6000 tokens a minute; a class may use
// half of it. A request goes when every bucket on its path lets it.
func Example() {
	start := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	l := limiter.NewLocal(func() time.Time { return start })
	provider, err := l.NewBucket("openai", limiter.Limits{
		RequestsPerMinute: 60, RequestBurst: 5 * time.Second,
		TokensPerMinute: 6000, TokenBurst: time.Minute,
	})
	if err != nil {
		panic(err)
	}
	batch, err := l.NewBucket("openai#batch", limiter.Limits{
		RequestsPerMinute: 30, RequestBurst: 5 * time.Second,
		TokensPerMinute: 3000, TokenBurst: time.Minute,
	})
	if err != nil {
		panic(err)
	}
	path := []*limiter.Bucket{provider, batch}
	ctx := context.Background()

	d, _ := l.Reserve(ctx, path, limiter.Cost{Requests: 1, Tokens: 2500}, limiter.Ask{})
	fmt.Printf("first: ok=%v wait=%v\n", d.OK, d.Wait)
	d, _ = l.Reserve(ctx, path, limiter.Cost{Requests: 1, Tokens: 1000}, limiter.Ask{})
	fmt.Printf("second: ok=%v wait=%v bucket=%s\n", d.OK, d.Wait, path[d.Bucket].Key())

	// The first response used 1000 tokens only: refund the rest, give the
	// concurrency slot back, and the second request fits.
	l.Adjust(ctx, path, limiter.Cost{Tokens: 1000 - 2500})
	l.Release(ctx, path)
	d, _ = l.Reserve(ctx, path, limiter.Cost{Requests: 1, Tokens: 1000}, limiter.Ask{})
	fmt.Printf("after the refund: ok=%v wait=%v\n", d.OK, d.Wait)
	// Output:
	// first: ok=true wait=0s
	// second: ok=false wait=10s bucket=openai#batch
	// after the refund: ok=true wait=0s
}
