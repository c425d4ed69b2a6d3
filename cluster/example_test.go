package cluster_test

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/breaker"
	"github.com/sluice-ai/sluice/cluster"
)

// How main wires a replica's breakers to the others' (it needs a Redis, so
// it is only compiled). OnStateChange runs under the breaker's lock: it
// only wakes a goroutine, which reads OpenUntil and publishes.
func ExampleBreakerSync() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{"127.0.0.1:6379"}})
	defer rdb.Close()
	// Replica "": a random id, unique to this process.
	hints := cluster.NewBreakerSync(rdb, "sluice:", "", time.Second, log)

	providers := []string{"openai", "anthropic"}
	breakers := make(map[string]*breaker.Breaker, len(providers))
	var wg sync.WaitGroup
	for _, name := range providers {
		opened := make(chan struct{}, 1)
		b, err := breaker.New(breaker.Settings{
			Name: name, FailureThreshold: 5, OpenFor: 30 * time.Second, HalfOpenRequests: 1,
			OnStateChange: func(from, to breaker.State) {
				if to == breaker.Open {
					select {
					case opened <- struct{}{}:
					default: // a publish is pending; it will read the latest OpenUntil
					}
				}
			},
		})
		if err != nil {
			log.Error("creating breaker", slog.String("provider", name), slog.String("error", err.Error()))
			return
		}
		breakers[name] = b
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-opened:
					if until := b.OpenUntil(); !until.IsZero() {
						if err := hints.Publish(ctx, name, until); err != nil {
							log.Warn("sharing breaker state", slog.String("provider", name), slog.String("error", err.Error()))
						}
					}
				}
			}
		})
	}
	wg.Go(func() {
		_ = hints.Run(ctx, providers, func(provider string, until time.Time) {
			if breakers[provider].HoldOpenUntil(until) {
				log.Warn("circuit breaker held open by another replica",
					slog.String("provider", provider), slog.Time("until", until))
			}
		})
	})
	wg.Wait()
}
