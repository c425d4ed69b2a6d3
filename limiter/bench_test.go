package limiter

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// benchStep is how far the fake clock moves per reservation in the
// benchmarks: exactly what one request of cost {1, 100} charges on
// steadyBuckets, so they stay level and every reservation commits.
const benchStep = 10 * time.Microsecond

// steadyBuckets returns n buckets of 6M requests and 600M tokens a minute
// (one request per 10µs, one token per 100ns) with a second of burst.
func steadyBuckets(tb testing.TB, l *Local, n int) []*Bucket {
	tb.Helper()
	bs := make([]*Bucket, n)
	for i := range bs {
		bs[i] = mustBucket(tb, l, fmt.Sprintf("b%d", i), Limits{
			RequestsPerMinute: 6e6, RequestBurst: time.Second,
			TokensPerMinute: 6e8, TokenBurst: time.Second,
			MaxConcurrency: 1 << 40,
		})
	}
	return bs
}

// BenchmarkReserve measures ReserveAt that commits, over 1, 2 and 4
// buckets, with the fake clock moving so that the buckets stay level.
func BenchmarkReserve(b *testing.B) {
	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("buckets=%d", n), func(b *testing.B) {
			l := newLocal()
			bs := steadyBuckets(b, l, n)
			c := Cost{Requests: 1, Tokens: 100}
			now := epoch
			b.ReportAllocs()
			for b.Loop() {
				now = now.Add(benchStep)
				if d := l.ReserveAt(now, bs, c, Ask{}); !d.OK {
					b.Fatalf("ReserveAt = %+v, want OK", d)
				}
			}
		})
	}
}

// BenchmarkReserveHeadroom is BenchmarkReserve over two buckets for a
// request that asks for headroom: the 128-bit product per dimension.
func BenchmarkReserveHeadroom(b *testing.B) {
	l := newLocal()
	bs := steadyBuckets(b, l, 2)
	c := Cost{Requests: 1, Tokens: 100}
	now := epoch
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(benchStep)
		if d := l.ReserveAt(now, bs, c, Ask{Headroom: 0.2}); !d.OK {
			b.Fatalf("ReserveAt = %+v, want OK", d)
		}
	}
}

// BenchmarkReserveParallel measures Reserve (real clock) plus Release from
// all Ps on two shared buckets, the contended case of one busy scope.
func BenchmarkReserveParallel(b *testing.B) {
	l := NewLocal(nil)
	bs := make([]*Bucket, 2)
	for i := range bs {
		// One unit per nanosecond in both dimensions: more than the
		// machine can ask for, so every reservation commits.
		bs[i] = mustBucket(b, l, fmt.Sprintf("b%d", i), Limits{
			RequestsPerMinute: 6e10, RequestBurst: time.Second,
			TokensPerMinute: 6e10, TokenBurst: time.Second,
			MaxConcurrency: 1 << 40,
		})
	}
	ctx := context.Background()
	c := Cost{Requests: 1, Tokens: 100}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d, _ := l.Reserve(ctx, bs, c, Ask{CommitWithin: time.Second}); !d.OK {
				b.Errorf("Reserve = %+v, want OK", d)
				return
			}
			l.Release(ctx, bs)
		}
	})
}

// BenchmarkEstimate measures EstimateAt over two buckets, as the scheduler
// calls it for the queue's drain time.
func BenchmarkEstimate(b *testing.B) {
	l := newLocal()
	bs := steadyBuckets(b, l, 2)
	l.ReserveAt(epoch, bs, Cost{Requests: 1000, Tokens: 1000}, Ask{})
	c := Cost{Requests: 500, Tokens: 1e7}
	b.ReportAllocs()
	for b.Loop() {
		if l.EstimateAt(epoch, bs, c) <= 0 {
			b.Fatal("EstimateAt = 0, want a wait")
		}
	}
}
