package cluster

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed scripts/breaker.lua
	breakerLua string
	// Script.Run sends EVALSHA and falls back to EVAL on NOSCRIPT, e.g.
	// after a Redis restart emptied the script cache.
	breakerScript = redis.NewScript(breakerLua)
)

const (
	// defaultPrefix starts keys and the channel when NewBreakerSync is given
	// no prefix.
	defaultPrefix = "sluice:"
	// defaultTimeout bounds each Redis call when NewBreakerSync is given no
	// timeout. Nothing waits on these calls but the caller's goroutine.
	defaultTimeout = time.Second
	// retryMin and retryMax bound the wait before Run reads the keys again
	// after a failed read; the wait doubles from one to the other.
	retryMin = 250 * time.Millisecond
	retryMax = 30 * time.Second
	// drainTimeout bounds how long Run waits, as it returns, for go-redis's
	// receiving goroutine to end after the subscription is closed.
	drainTimeout = 5 * time.Second
	// refreshEvery is how often Run reads the keys again while subscribed,
	// for the hints a subscription that died silently did not deliver.
	refreshEvery = 30 * time.Second
)

// The log messages Run writes on (re)subscription, after reading the keys.
const (
	msgSubscribed   = "breaker hints: subscribed"
	msgResubscribed = "breaker hints: resubscribed after a lost connection"
)

// BreakerSync shares breakers' open-until hints between the replicas of one
// Redis: [BreakerSync.Publish] says this replica's breaker for a provider is
// open until a moment, and [BreakerSync.Run] passes on what the other
// replicas said. Keys, channel and format are in the package doc.
//
// Publish is safe for concurrent use, and with Run.
type BreakerSync struct {
	c         redis.UniversalClient
	keyPrefix string // "<prefix>breaker:{"; the provider and "}" follow
	channel   string // "<prefix>breaker"
	replica   string
	timeout   time.Duration
	log       *slog.Logger
	refresh   time.Duration // refreshEvery; tests shorten it
}

// NewBreakerSync returns a BreakerSync over c, which may be a standalone,
// Sentinel or Cluster client; the caller keeps it and closes it after Run
// has returned.
//
// prefix starts every key and the channel; empty means "sluice:". replica
// identifies this process among those sharing the Redis, so that Run can
// ignore this replica's own hints: it must be unique per process (not just
// per host: a restarted process has a fresh breaker and must learn its
// predecessor's hints); empty means a random one. timeout bounds each Redis
// call; zero or negative means one second. log receives the lifecycle
// lines (Info), failed reads (Warn) and ignored messages (Debug); nil
// means none.
func NewBreakerSync(c redis.UniversalClient, prefix string, replica string, timeout time.Duration, log *slog.Logger) *BreakerSync {
	if prefix == "" {
		prefix = defaultPrefix
	}
	if replica == "" {
		replica = randomReplica()
	}
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &BreakerSync{
		c:         c,
		keyPrefix: prefix + "breaker:{",
		channel:   prefix + "breaker",
		replica:   replica,
		timeout:   timeout,
		log:       log,
		refresh:   refreshEvery,
	}
}

// randomReplica returns "<host>-<pid>-<random hex>".
func randomReplica() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "sluice"
	}
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// key returns the provider's hint key, "<prefix>breaker:{<provider>}".
func (s *BreakerSync) key(provider string) string {
	return s.keyPrefix + provider + "}"
}

// Publish says that this replica's breaker for provider is open until
// until. Unless a hint for the provider ending no earlier is stored
// already, it stores this one in the provider's key, expiring when the hint
// ends, and publishes it on the channel, in one script run under the
// BreakerSync's timeout (and ctx). A hint already over by Redis's clock is
// neither stored nor published; neither case is an error.
//
// Publish does I/O: never call it from a breaker's OnStateChange, which runs
// under the breaker's lock. Signal a goroutine that calls
// Breaker.OpenUntil and then Publish (see the example).
func (s *BreakerSync) Publish(ctx context.Context, provider string, until time.Time) error {
	h := hint{Provider: provider, UntilMs: untilMillis(until), Replica: s.replica}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	stored, err := breakerScript.Run(ctx, s.c, []string{s.key(provider)}, h.UntilMs, h.encode(), s.channel).Int()
	if err != nil {
		return fmt.Errorf("cluster: publishing breaker hint for %s: %w", provider, err)
	}
	if stored == 0 {
		s.log.LogAttrs(ctx, slog.LevelDebug, "breaker hint not published: a hint ending no earlier stands, or it is over",
			slog.String("provider", provider), slog.Time("until", h.until()))
	}
	return nil
}

// Run passes on the other replicas' hints for providers until ctx is done,
// then returns ctx's error. It subscribes to the channel and calls apply
// for each hint published by another replica for one of providers; and when
// the subscription is confirmed, at start and after every reconnection, it
// reads the providers' keys (one pipelined GET each) and calls apply for
// each hint found there, so that the hints published while this replica was
// not listening are not lost. It reads them again every 30s, and a read
// that fails is retried with a backoff (250ms doubling to 30s) until one
// succeeds or the next subscription.
//
// apply runs on Run's goroutine, one call at a time; it should only hold
// the breaker open (Breaker.HoldOpenUntil) and perhaps log. It may see a
// hint more than once, and hints out of order: holds only ever extend, so
// neither matters. It is called only with an until after now by this
// replica's clock. Messages that do not parse, or name another provider,
// are logged at debug level and ignored.
//
// go-redis's PubSub reconnects by itself: when a read from the connection
// fails (a Redis restart or CLIENT KILL closes it) it redials every 100ms or
// so and subscribes again, and it PINGs an idle subscription every 3s,
// reconnecting if the PING cannot be written. It does not wait for the
// answer, so a connection that died silently (a network partition) is only
// noticed when TCP gives up, which can take minutes: hence the periodic
// reads. Messages published while the subscription is down are lost, which
// is why each new subscription reads the keys; a Redis restart without
// persistence loses the keys too, and replicas keep the holds they had.
//
// Run returns an error other than ctx's only if the subscription is closed
// under it (the client was closed).
func (s *BreakerSync) Run(ctx context.Context, providers []string, apply func(provider string, until time.Time)) error {
	watched := make(map[string]bool, len(providers))
	for _, p := range providers {
		watched[p] = true
	}

	// Subscribe's own error is dropped by go-redis: the receiving goroutine
	// dials and subscribes again until it succeeds.
	subCtx, cancel := context.WithTimeout(ctx, s.timeout)
	ps := s.c.Subscribe(subCtx, s.channel)
	cancel()
	msgs := ps.ChannelWithSubscriptions()
	defer s.close(ps, msgs)

	retry := time.NewTimer(retryMin)
	retry.Stop()
	defer retry.Stop()
	refresh := time.NewTicker(s.refresh)
	defer refresh.Stop()
	var (
		retryC     <-chan time.Time // retry.C while a failed read waits to be retried, else nil
		backoff    time.Duration
		subscribed bool
	)
	// readKeys reads the keys, arms the retry if that failed, and returns
	// how many hints it applied.
	readKeys := func() int {
		n, err := s.readKeys(ctx, providers, watched, apply)
		if err == nil {
			retryC, backoff = nil, 0
			return n
		}
		if ctx.Err() != nil {
			return n
		}
		if backoff == 0 {
			backoff = retryMin
			s.log.LogAttrs(ctx, slog.LevelWarn, "breaker hints: reading the keys from redis failed; retrying",
				slog.String("error", err.Error()), slog.Duration("retry_in", backoff))
		} else {
			backoff = min(2*backoff, retryMax)
			s.log.LogAttrs(ctx, slog.LevelDebug, "breaker hints: reading the keys from redis failed again",
				slog.String("error", err.Error()), slog.Duration("retry_in", backoff))
		}
		retry.Reset(backoff)
		retryC = retry.C
		return n
	}

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-retryC:
			retryC = nil
			readKeys()
		case <-refresh.C:
			if subscribed && retryC == nil {
				readKeys()
			}
		case m, ok := <-msgs:
			if !ok {
				return errors.New("cluster: breaker hint subscription closed")
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind != "subscribe" {
					continue
				}
				// A new subscription replaces any pending retry.
				retry.Stop()
				retryC, backoff = nil, 0
				n := readKeys()
				msg := msgSubscribed
				if subscribed {
					msg = msgResubscribed
				}
				subscribed = true
				s.log.LogAttrs(ctx, slog.LevelInfo, msg, slog.String("channel", m.Channel),
					slog.String("replica", s.replica), slog.Int("hints", n))
			case *redis.Message:
				s.handle(ctx, m.Payload, "", watched, apply)
			}
		}
	}
}

// readKeys reads the keys of providers in one pipeline and applies the
// hints found. It returns how many it applied and the first error of a
// GET; missing keys are not errors.
func (s *BreakerSync) readKeys(ctx context.Context, providers []string, watched map[string]bool, apply func(string, time.Time)) (int, error) {
	if len(providers) == 0 {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	pipe := s.c.Pipeline()
	cmds := make([]*redis.StringCmd, len(providers))
	for i, p := range providers {
		cmds[i] = pipe.Get(ctx, s.key(p))
	}
	// Exec's error is the first command's error, redis.Nil included: look
	// at each command instead.
	_, _ = pipe.Exec(ctx)
	var (
		applied  int
		firstErr error
	)
	for i, cmd := range cmds {
		v, err := cmd.Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			if firstErr == nil {
				firstErr = fmt.Errorf("cluster: reading breaker hint for %s: %w", providers[i], err)
			}
		default:
			if s.handle(ctx, v, providers[i], watched, apply) {
				applied++
			}
		}
	}
	return applied, firstErr
}

// handle parses a hint from the channel, or from the key of provider when
// provider is not empty, and applies it unless it is this replica's own, is
// for a provider not watched, or is over. It reports whether it applied it.
func (s *BreakerSync) handle(ctx context.Context, payload, provider string, watched map[string]bool, apply func(string, time.Time)) bool {
	h, err := parseHint(payload)
	if err == nil && provider != "" && h.Provider != provider {
		err = fmt.Errorf("%w: provider %q in the key of %q", errBadHint, h.Provider, provider)
	}
	if err != nil {
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.LogAttrs(ctx, slog.LevelDebug, "breaker hints: ignoring a malformed hint",
				slog.String("error", err.Error()), slog.String("payload", truncate(payload, 256)))
		}
		return false
	}
	switch {
	case h.Replica == s.replica:
		return false
	case !watched[h.Provider]:
		s.log.LogAttrs(ctx, slog.LevelDebug, "breaker hints: ignoring a hint for a provider not configured here",
			slog.String("provider", h.Provider), slog.String("from", h.Replica))
		return false
	case !h.until().After(time.Now()):
		return false
	}
	apply(h.Provider, h.until())
	return true
}

// close closes the subscription and waits (a while) for go-redis's
// receiving goroutine to end, draining what it still delivers.
func (s *BreakerSync) close(ps *redis.PubSub, msgs <-chan any) {
	_ = ps.Close()
	t := time.NewTimer(drainTimeout)
	defer t.Stop()
	for {
		select {
		case _, ok := <-msgs:
			if !ok {
				return
			}
		case <-t.C:
			s.log.Warn("breaker hints: the subscription did not end in time", slog.Duration("waited", drainTimeout))
			return
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
