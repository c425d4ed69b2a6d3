package deadletter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// errSpooling is why Add skipped Redis: earlier records are still spooled.
var errSpooling = errors.New("deadletter: earlier records still spooled")

// DefaultSpoolInterval is how often [Spool.Run] tries to move spooled
// records to Redis when [Spool.Interval] is zero.
const DefaultSpoolInterval = time.Second

// Spool is the store of shared mode: it adds records to Redis and, while
// Redis is away, to a local [FileStore] instead, so a record is safe on
// disk once Add returns nil either way. [Spool.Run] moves the spooled
// records to Redis when it is back.
//
// Moving is exactly-once by construction: a record is added to Redis
// (idempotent by id) before its delete line is appended to the spool, so a
// crash or error between the two only makes the next flush add it again,
// which changes nothing.
//
// Get, List, MarkReplayed and Delete go to Redis only: the spool holds
// records only while Redis is unreachable, when those calls could not
// answer for the other replicas' records anyway, and a spooled record
// shows up once moved. Operators therefore see spooled records after the
// outage, not during it.
//
// A Spool is safe for concurrent use. It owns neither store: Close closes
// nothing and the caller closes both after Run has returned.
type Spool struct {
	// Interval is how often Run tries to move spooled records; zero means
	// [DefaultSpoolInterval]. Set it before calling Run.
	Interval time.Duration

	redis *RedisStore
	spool *FileStore
	log   *slog.Logger

	flushMu sync.Mutex // serialises flushes, so two never move one record at once
	down    sync.Mutex // protects warned
	warned  bool       // an outage was logged and its end was not
}

// NewSpool returns a Spool that adds to redis and falls back to spool.
// log receives a warning when records start being spooled and an info
// line when they were moved; nil discards them.
func NewSpool(redis *RedisStore, spool *FileStore, log *slog.Logger) *Spool {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Spool{redis: redis, spool: spool, log: log}
}

// Add stores r in Redis, or in the spool file when Redis fails. While the
// spool holds records, Add appends to it without trying Redis: during an
// outage each Redis call would wait out its whole timeout (go-redis keeps
// redialling until the deadline), and new records should not overtake the
// spooled ones. Run moves them all once Redis is back. Add returns an error
// only when the record could be stored nowhere; the caller must then keep
// it (or log it).
func (s *Spool) Add(ctx context.Context, r Record) error {
	var rerr error
	if s.spool.Len() > 0 {
		rerr = errSpooling
	} else if rerr = s.redis.Add(ctx, r); rerr == nil {
		return nil
	}
	// ctx is not passed on: the caller's deadline may be what failed the
	// Redis call, and the local append must happen regardless.
	if err := s.spool.Add(context.WithoutCancel(ctx), r); err != nil {
		return fmt.Errorf("deadletter: spooling record %q after Redis failed (%v): %w", r.ID, rerr, err)
	}
	s.down.Lock()
	first := !s.warned
	s.warned = true
	s.down.Unlock()
	if first {
		s.log.LogAttrs(ctx, slog.LevelWarn, "dead letters spooled to disk while Redis is unreachable",
			slog.String("error", rerr.Error()), slog.String("record_id", r.ID))
	}
	return nil
}

// Get returns the record with the given id from Redis.
func (s *Spool) Get(ctx context.Context, id string) (Record, error) { return s.redis.Get(ctx, id) }

// List lists records in Redis.
func (s *Spool) List(ctx context.Context, f Filter) ([]Record, string, error) {
	return s.redis.List(ctx, f)
}

// MarkReplayed marks a record in Redis.
func (s *Spool) MarkReplayed(ctx context.Context, id string, at time.Time, status int) error {
	return s.redis.MarkReplayed(ctx, id, at, status)
}

// Delete deletes a record from Redis.
func (s *Spool) Delete(ctx context.Context, id string) error { return s.redis.Delete(ctx, id) }

// Close returns nil; the stores belong to the caller.
func (s *Spool) Close() error { return nil }

// Depth returns the number of records waiting in the spool.
func (s *Spool) Depth() int { return s.spool.Len() }

// Run moves spooled records to Redis every Interval until ctx is done,
// then returns ctx's error. A failed attempt is retried at the next tick.
// Run once per Spool.
func (s *Spool) Run(ctx context.Context) error {
	iv := s.Interval
	if iv <= 0 {
		iv = DefaultSpoolInterval
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		// Failures are expected while Redis is away; Add already warned
		// once, so each retry logs at debug level only.
		if err := s.Flush(ctx); err != nil && ctx.Err() == nil {
			s.log.LogAttrs(ctx, slog.LevelDebug, "moving spooled dead letters failed; retrying",
				slog.String("error", err.Error()), slog.Int("depth", s.Depth()))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Flush moves every spooled record to Redis now, oldest first, and
// returns the first error, leaving the rest spooled. Shutdown calls it
// once more after Run returned.
func (s *Spool) Flush(ctx context.Context) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	moved := 0
	defer func() {
		if moved > 0 {
			s.log.LogAttrs(ctx, slog.LevelInfo, "moved spooled dead letters to Redis",
				slog.Int("moved", moved), slog.Int("depth", s.Depth()))
		}
	}()
	for {
		// Each page starts at the oldest record left: the ones moved are
		// deleted, and a cursor naming one of them would not survive a
		// compaction of the spool file in between.
		recs, next, err := s.spool.List(ctx, Filter{Limit: defaultLimit})
		if err != nil {
			return fmt.Errorf("deadletter: reading spool: %w", err)
		}
		for _, r := range recs {
			if err := s.redis.Add(ctx, r); err != nil {
				return fmt.Errorf("deadletter: moving spooled record: %w", err)
			}
			// Redis holds it now; a failed delete only means the next
			// flush adds it again, which the idempotent Add ignores.
			if err := s.spool.Delete(ctx, r.ID); err != nil && !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("deadletter: removing moved record from spool: %w", err)
			}
			moved++
		}
		if next == "" {
			break
		}
	}
	if s.spool.Len() == 0 {
		s.down.Lock()
		s.warned = false
		s.down.Unlock()
	}
	return nil
}

// The three types share one method set; the proxy and the admin API take
// whichever main builds.
type store interface {
	Add(ctx context.Context, r Record) error
	Get(ctx context.Context, id string) (Record, error)
	List(ctx context.Context, f Filter) ([]Record, string, error)
	MarkReplayed(ctx context.Context, id string, at time.Time, status int) error
	Delete(ctx context.Context, id string) error
	Close() error
}

var (
	_ store = (*FileStore)(nil)
	_ store = (*RedisStore)(nil)
	_ store = (*Spool)(nil)
)
