package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-ai/sluice/cluster"
	"github.com/sluice-ai/sluice/config"
	"github.com/sluice-ai/sluice/limiter"
	"github.com/sluice-ai/sluice/metrics"
	"github.com/sluice-ai/sluice/proxy"
)

// degradedShare is the part of every quota all replicas together use
// while Redis is away: each takes this / redis.expected_replicas.
const degradedShare = 0.9

// sharedMode is what makes replicas act as one through Redis: the shared
// limiter and the breaker sync, with the goroutines that run them.
type sharedMode struct {
	replica string
	limiter *limiter.Shared
	sync    *cluster.BreakerSync
	log     *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newSharedMode(cfg *config.Config, rc redis.UniversalClient, m *metrics.Metrics, log *slog.Logger) (*sharedMode, error) {
	id, err := replicaID()
	if err != nil {
		return nil, err
	}
	lim, err := limiter.NewShared(limiter.SharedSettings{
		Client:        rc,
		Prefix:        cfg.Redis.KeyPrefix,
		Replica:       id,
		Timeout:       cfg.Redis.CommandTimeout,
		LeaseTTL:      cfg.Redis.LeaseTTL,
		DegradedShare: degradedShare / float64(cfg.Redis.ExpectedReplicas),
		OnRedis:       m.RedisUp(),
		Log:           log,
	})
	if err != nil {
		return nil, err
	}
	return &sharedMode{
		replica: id,
		limiter: lim,
		sync:    cluster.NewBreakerSync(rc, cfg.Redis.KeyPrefix, id, cfg.Redis.CommandTimeout, log),
		log:     log,
	}, nil
}

// roundTripHook counts the round trips a Redis client makes for Sluice:
// one per command sent alone, one per pipeline, not the handshake a new
// connection does (HELLO, CLIENT SETINFO).
type roundTripHook struct{ inc func() }

func (h roundTripHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h roundTripHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !handshake(cmd) {
			h.inc()
		}
		return next(ctx, cmd)
	}
}

func (h roundTripHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !handshake(cmds...) {
			h.inc()
		}
		return next(ctx, cmds)
	}
}

func handshake(cmds ...redis.Cmder) bool {
	for _, c := range cmds {
		if n := c.Name(); n != "hello" && n != "client" {
			return false
		}
	}
	return len(cmds) > 0
}

// replicaID names this process among the replicas: host, pid and a random
// part, so that a restarted process never takes over a dead one's leases.
func replicaID() (string, error) {
	host, err := os.Hostname()
	if err != nil {
		host = "sluice"
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("replica id: %w", err)
	}
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:])), nil
}

// announce publishes a breaker that opened here; it is the proxy's
// OnBreakerOpen.
func (s *sharedMode) announce(provider string, until time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.sync.Publish(ctx, provider, until); err != nil {
		s.log.Warn("breaker opening not shared with the other replicas", slog.String("provider", provider), slog.String("error", err.Error()))
	}
}

// start runs the limiter's settling and the breaker sync for px until
// stop.
func (s *sharedMode) start(px *proxy.Proxy, providers []string) {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.log.Info("shared mode: quotas, pauses and breakers shared through redis", slog.String("replica", s.replica))
	s.wg.Go(func() { s.limiter.Run(ctx) })
	s.wg.Go(func() {
		if err := s.sync.Run(ctx, providers, px.HoldBreakerOpen); err != nil && !errors.Is(err, context.Canceled) {
			s.log.Error("breaker sync stopped", slog.String("error", err.Error()))
		}
	})
}

// stop ends the goroutines; the limiter settles what is pending first.
func (s *sharedMode) stop() {
	if s.cancel != nil {
		s.cancel()
		s.wg.Wait()
	}
}
