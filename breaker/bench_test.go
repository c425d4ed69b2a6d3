package breaker

import (
	"math"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
)

// BenchmarkAllow measures Allow followed by Done. The "gobreaker" case is
// the same through gobreaker's TwoStepCircuitBreaker directly: the floor
// this package adds to.

func BenchmarkAllow(b *testing.B) {
	b.Run("Success", func(b *testing.B) {
		br := mustNew(b, Settings{FailureThreshold: 1, OpenFor: time.Hour, HalfOpenRequests: 1})
		b.ReportAllocs()
		for b.Loop() {
			p, err := br.Allow()
			if err != nil {
				b.Fatal(err)
			}
			p.Done(Success)
		}
	})
	b.Run("gobreaker", func(b *testing.B) {
		cb := gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{Timeout: time.Hour})
		b.ReportAllocs()
		for b.Loop() {
			done, err := cb.Allow()
			if err != nil {
				b.Fatal(err)
			}
			done(nil)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		br := mustNew(b, Settings{FailureThreshold: math.MaxUint32, OpenFor: time.Hour, HalfOpenRequests: 1})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				p, err := br.Allow()
				if err != nil {
					b.Fatal(err)
				}
				p.Done(Outcome(i % 3))
			}
		})
	})
	b.Run("held", func(b *testing.B) {
		br := mustNew(b, Settings{FailureThreshold: 1, OpenFor: time.Hour, HalfOpenRequests: 1})
		br.HoldOpenUntil(time.Now().Add(time.Hour))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := br.Allow(); err == nil {
				b.Fatal("Allow() succeeded on a held breaker")
			}
		}
	})
	b.Run("refused", func(b *testing.B) {
		br := mustNew(b, Settings{FailureThreshold: 1, OpenFor: time.Hour, HalfOpenRequests: 1})
		mustAllow(b, br).Done(Failure)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := br.Allow(); err == nil {
				b.Fatal("Allow() succeeded on an open breaker")
			}
		}
	})
}
