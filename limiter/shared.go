package limiter

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed scripts/reserve.lua
	reserveLua string
	//go:embed scripts/settle.lua
	settleLua string
	//go:embed scripts/pause.lua
	pauseLua string
	//go:embed scripts/read.lua
	readLua string

	// Script.Run sends EVALSHA and falls back to EVAL on NOSCRIPT, e.g.
	// after a Redis restart.
	reserveScript = redis.NewScript(reserveLua)
	settleScript  = redis.NewScript(settleLua)
	pauseScript   = redis.NewScript(pauseLua)
	readScript    = redis.NewScript(readLua)
)

// SharedSettings configures a [Shared] limiter.
type SharedSettings struct {
	// Client is the Redis every replica shares. Required.
	Client redis.UniversalClient
	// Prefix starts every key. Default "sluice:".
	Prefix string
	// Replica identifies this process among those sharing the Redis; it
	// names its concurrency lease. Required, unique per process.
	Replica string
	// Timeout bounds each Redis call. Default 50ms: an outage must cost a
	// request no more than that before the limiter works locally.
	Timeout time.Duration
	// LeaseTTL is how long the concurrency slots a replica holds outlive
	// its last word: a replica that dies gives its slots back after it.
	// Default 15s; renewed every third of it.
	LeaseTTL time.Duration
	// SettleEvery is how often token corrections, returned concurrency
	// slots and the provider's remaining-quota reports are sent, batched.
	// Default 50ms.
	SettleEvery time.Duration
	// DegradedShare is the fraction of every limit this replica uses on
	// its own while Redis is unreachable. Default 0.9: set it to 0.9 / the
	// number of replicas.
	DegradedShare float64
	// OnRedis, if set, is told when Redis becomes reachable (true) or not
	// (false), for a metric.
	OnRedis func(up bool)
	// Log receives the outage warnings. Required.
	Log *slog.Logger
}

// Shared is a limiter whose buckets live in Redis, so that every replica
// sharing the Redis admits as one: the arithmetic of [Local] (GCRA over
// requests and tokens, concurrency caps, pauses), run as one Lua script per
// decision with Redis TIME as the clock, in integer microseconds.
//
// Round trips: a reservation is one; corrections (Adjust), returned slots
// (Release) and [Shared.ClampAt] are batched per hash tag every
// SettleEvery, and [Shared.Run] renews this replica's concurrency lease in
// the same call. Keys are <prefix>rl:{<tag>}:<bucket key>, where the tag is
// the bucket key up to its first '/' or '#' (the provider, for the keys the
// proxy makes), so the buckets of one reservation hash to one Cluster slot.
//
// When Redis cannot be reached, Shared keeps admitting from in-process
// twins of its buckets holding DegradedShare of each limit, clamped by what
// the provider reports left, and never fails open. It probes Redis while it
// is away; when it returns, this replica's in-flight counts are written
// back, and a bucket Redis lost starts empty rather than full.
//
// A Shared is safe for concurrent use. Its background work runs in
// [Shared.Run].
type Shared struct {
	c       redis.UniversalClient
	prefix  string
	replica string
	timeout time.Duration
	lease   time.Duration
	every   time.Duration
	share   float64
	onRedis func(bool)
	log     *slog.Logger

	local *Local // the twins: degraded limits, and this replica's in-flight counts
	up    atomic.Bool

	mu   sync.Mutex // protects tags and the remotes' pending fields
	tags map[string]*tagState
}

// remote is a bucket's shared side.
type remote struct {
	key  string // the Redis hash
	tag  string
	full Limits
	// iv is the microseconds per unit at the full limits, 0 unlimited. It is
	// fractional for a rate above one unit a microsecond (60M a minute;
	// OpenAI's largest token quotas pass it): Lua numbers are doubles,
	// exact to a quarter of a microsecond at today's Unix time, and the
	// scripts round every TAT they store up to whole microseconds.
	iv   [dimensions]float64
	tol  [dimensions]int64 // us
	conc int64

	// Pending for the next settle; guarded by Shared.mu.
	delta    [dimensions]int64
	released int64
	left     [dimensions]int64 // lowest remaining reported; -1 none
	dirty    bool
}

// tagState groups the buckets settled in one call.
type tagState struct {
	buckets  []*Bucket
	settled  time.Time // when its changes were last sent; guarded by Shared.mu
	reserved time.Time // when a reservation last went to Redis; guarded by Shared.mu
}

// NewShared returns a limiter over s.Client. Run its background work with
// [Shared.Run].
func NewShared(s SharedSettings) (*Shared, error) {
	if s.Client == nil || s.Replica == "" || s.Log == nil {
		return nil, errors.New("limiter: a shared limiter needs a Redis client, a replica id and a logger")
	}
	if s.DegradedShare < 0 || s.DegradedShare > 1 {
		return nil, fmt.Errorf("limiter: degraded share %v is not in [0, 1]", s.DegradedShare)
	}
	sh := &Shared{
		c:       s.Client,
		prefix:  s.Prefix,
		replica: s.Replica,
		timeout: s.Timeout,
		lease:   s.LeaseTTL,
		every:   s.SettleEvery,
		share:   s.DegradedShare,
		onRedis: s.OnRedis,
		log:     s.Log,
		local:   NewLocal(nil),
		tags:    make(map[string]*tagState),
	}
	if sh.prefix == "" {
		sh.prefix = "sluice:"
	}
	if sh.timeout <= 0 {
		sh.timeout = 50 * time.Millisecond
	}
	if sh.lease <= 0 {
		sh.lease = 15 * time.Second
	}
	if sh.every <= 0 {
		sh.every = 50 * time.Millisecond
	}
	if sh.share == 0 {
		sh.share = 0.9
	}
	if sh.onRedis == nil {
		sh.onRedis = func(bool) {}
	}
	sh.up.Store(true)
	return sh, nil
}

// NewBucket returns a shared bucket named key with the limits lim. Its
// Limits are lim; its in-process twin holds DegradedShare of them.
func (s *Shared) NewBucket(key string, lim Limits) (*Bucket, error) {
	if _, err := NewLocal(nil).NewBucket(key, lim); err != nil {
		return nil, err // the full limits must be valid on their own
	}
	twin, err := s.local.NewBucket(key, scaleLimits(lim, s.share))
	if err != nil {
		return nil, fmt.Errorf("limiter: bucket %q at the degraded share %v: %w", key, s.share, err)
	}
	twin.lim = lim
	r := &remote{full: lim, conc: lim.MaxConcurrency, left: [dimensions]int64{-1, -1}}
	r.tag, _, _ = strings.Cut(key, "/")
	r.tag, _, _ = strings.Cut(r.tag, "#")
	r.key = s.prefix + "rl:{" + r.tag + "}:" + key
	for d, rate := range [dimensions]struct {
		perMinute float64
		burst     time.Duration
	}{{lim.RequestsPerMinute, lim.RequestBurst}, {lim.TokensPerMinute, lim.TokenBurst}} {
		if rate.perMinute == 0 {
			continue
		}
		r.iv[d] = 60e6 / rate.perMinute
		r.tol[d] = rate.burst.Microseconds()
		if d == requests {
			r.tol[d] = max(r.tol[d], int64(math.Ceil(r.iv[d])))
		}
	}
	s.mu.Lock()
	twin.shared = r // set before the bucket is shared; never changed
	ts := s.tags[r.tag]
	if ts == nil {
		ts = &tagState{}
		s.tags[r.tag] = ts
	}
	ts.buckets = append(ts.buckets, twin)
	s.mu.Unlock()
	return twin, nil
}

// scaleLimits is a replica's part of lim while it works alone.
func scaleLimits(l Limits, share float64) Limits {
	out := l
	out.RequestsPerMinute *= share
	out.TokensPerMinute *= share
	if l.MaxConcurrency > 0 {
		out.MaxConcurrency = max(1, int64(float64(l.MaxConcurrency)*share))
	}
	return out
}

func (s *Shared) remoteOf(b *Bucket) *remote {
	if b.owner != s.local || b.shared == nil {
		panic("limiter: bucket " + b.key + " does not belong to this shared limiter")
	}
	return b.shared
}

// Up reports whether Redis answered the last call.
func (s *Shared) Up() bool { return s.up.Load() }

// maxBuckets bounds the buckets of one reservation (a model, its provider
// and their class ceilings); more fall back to the heap.
const maxBuckets = 8

// Reserve decides on every one of buckets whether a request costing c may
// go (see [Local.ReserveAt]) for every replica sharing the Redis. A
// concurrency refusal is Busy with a Wait to ask again after, since slots
// other replicas return wake nobody here. While Redis is unreachable it
// decides on the degraded twins. The error is always nil: an outage is
// handled here, not by the caller.
func (s *Shared) Reserve(ctx context.Context, buckets []*Bucket, c Cost, a Ask) (Decision, error) {
	if len(buckets) == 0 {
		return Decision{OK: true, Bucket: -1}, nil
	}
	if !s.up.Load() {
		return s.local.ReserveAt(time.Now(), buckets, c, a), nil
	}
	var keyBuf [maxBuckets]string
	var argBuf [7 + 5*maxBuckets]any
	keys, args := keyBuf[:0], argBuf[:0]
	args = append(args, s.replica, max(c.Requests, 0), max(c.Tokens, 0),
		max(a.CommitWithin, 0).Microseconds(), headroom(a.Headroom), s.lease.Milliseconds(), s.ttl().Milliseconds())
	for _, b := range buckets {
		r := s.remoteOf(b)
		keys = append(keys, r.key)
		args = append(args, r.iv[requests], r.tol[requests], r.iv[tokens], r.tol[tokens], r.conc)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	res, err := s.reserve(ctx, s.remoteOf(buckets[0]).tag, keys, args)
	cancel()
	if err != nil || len(res) != 5 {
		s.down(fmt.Errorf("reserving on %s: %w", keys[0], err))
		return s.local.ReserveAt(time.Now(), buckets, c, a), nil
	}
	if res[4] >= 0 && int(res[4]) < len(buckets) {
		s.local.PauseAt(time.Now(), buckets[res[4]], time.UnixMicro(res[3]))
	}
	d := Decision{Wait: time.Duration(res[1]) * time.Microsecond, Bucket: int(res[2])}
	switch res[0] {
	case 0:
		d.OK, d.Bucket = true, -1
		s.local.hold(buckets, c)
	case 2:
		d.Busy = true
		d.Wait = max(d.Wait, busyRecheck)
	case 3:
		d.Never = true
	}
	return d, nil
}

// headroom clamps an Ask's headroom as [Local] does: NaN and negatives are
// none, 1 or more leaves everything but a full bucket.
func headroom(h float64) float64 {
	switch {
	case !(h > 0):
		return 0
	case h >= 1:
		return 0.999999999
	}
	return h
}

// reserve runs reserve.lua; when tag's batched changes are due it sends
// settle.lua ahead of it in the same pipeline, so that steady traffic
// costs one round trip per request and no settle calls of its own.
func (s *Shared) reserve(ctx context.Context, tag string, keys []string, args []any) ([]int64, error) {
	c, ok := s.dueSettle(tag, time.Now(), true)
	if !ok {
		return reserveScript.Run(ctx, s.c, keys, args...).Int64Slice()
	}
	pipe := s.c.Pipeline()
	settled := settleScript.EvalSha(ctx, pipe, c.keys, c.args...)
	reserved := reserveScript.EvalSha(ctx, pipe, keys, args...)
	_, _ = pipe.Exec(ctx)
	// A script Redis does not have cached (never run there, or a restart
	// emptied the cache) answers NOSCRIPT and did nothing: run that one
	// again the slow way, which loads it. The other one ran.
	err := settled.Err()
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		err = settleScript.Run(ctx, s.c, c.keys, c.args...).Err()
	}
	if err != nil {
		// The changes are lost the conservative way (see settle); the
		// reservation may still have been decided.
		s.down(fmt.Errorf("settling %s: %w", c.keys[0], err))
	}
	if redis.HasErrorPrefix(reserved.Err(), "NOSCRIPT") {
		return reserveScript.Run(ctx, s.c, keys, args...).Int64Slice()
	}
	return reserved.Int64Slice()
}

// busyRecheck is how soon a replica asks again for a concurrency slot:
// another replica's release does not wake it.
const busyRecheck = 20 * time.Millisecond

// hold charges a request admitted through Redis to the twins too, as an
// arrival now, and counts it in flight there. The twins then always know
// this replica's own recent use: when Redis goes away, a replica that was
// sending fast starts its degraded share in debt rather than with a fresh
// burst on top of what it just sent.
func (l *Local) hold(buckets []*Bucket, c Cost) {
	cost := [dimensions]int64{max(c.Requests, 0), max(c.Tokens, 0)}
	t := l.nanos(time.Now())
	l.mu.Lock()
	for _, b := range buckets {
		l.own(b)
		for d := range b.dims {
			if m := &b.dims[d]; m.interval > 0 && cost[d] > 0 {
				m.tat = min(max(m.tat, t)+charge(cost[d], m.interval), maxTAT)
			}
		}
		b.inflight++
	}
	l.mu.Unlock()
}

// ttl is how long an idle bucket key lives: past any tolerance, pause or
// lease it could still hold.
func (s *Shared) ttl() time.Duration { return 10*time.Minute + s.lease }

// Adjust corrects what was charged on every one of buckets (see
// [Local.AdjustAt]): on the twins at once, and in Redis with the next
// settle while it is reachable.
func (s *Shared) Adjust(_ context.Context, buckets []*Bucket, delta Cost) error {
	s.local.AdjustAt(time.Now(), buckets, delta) // the twins follow this replica's use either way
	if !s.up.Load() {
		return nil
	}
	s.mu.Lock()
	for _, b := range buckets {
		r := s.remoteOf(b)
		r.delta[requests] += delta.Requests
		r.delta[tokens] += delta.Tokens
		r.dirty = true
	}
	s.mu.Unlock()
	return nil
}

// Release returns a concurrency slot on every one of buckets: at once on
// the twins, with the next settle in Redis.
func (s *Shared) Release(ctx context.Context, buckets []*Bucket) error {
	_ = s.local.Release(ctx, buckets)
	s.mu.Lock()
	for _, b := range buckets {
		if r := s.remoteOf(b); r.conc > 0 {
			r.released++
			r.dirty = true
		}
	}
	s.mu.Unlock()
	return nil
}

// PauseAt pauses b for every replica until until (see [Local.PauseAt]),
// and on its twin. It reports whether the pause was extended.
func (s *Shared) PauseAt(now time.Time, b *Bucket, until time.Time) bool {
	extended := s.local.PauseAt(now, b, until)
	if !s.up.Load() {
		return extended
	}
	r := s.remoteOf(b)
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	n, err := pauseScript.Run(ctx, s.c, []string{r.key}, until.UnixMicro(), s.ttl().Milliseconds()).Int64()
	if err != nil {
		s.down(fmt.Errorf("pausing %s: %w", r.key, err))
		return extended
	}
	return n == 1
}

// PausedUntil returns when b's pause ends, as this replica last learned
// it: its own pauses and those its reservations met.
func (s *Shared) PausedUntil(now time.Time, b *Bucket) time.Time {
	return s.local.PausedUntil(now, b)
}

// ClampAt lowers b to what the provider reported left (see
// [Local.ClampAt]): at once on the twin, with the next settle in Redis.
// The report describes the whole account, so it is what keeps the twins
// honest while Redis is away.
func (s *Shared) ClampAt(now time.Time, b *Bucket, remainingRequests, remainingTokens int64) {
	s.local.ClampAt(now, b, scaledLeft(remainingRequests, s.share), scaledLeft(remainingTokens, s.share))
	s.mu.Lock()
	r := s.remoteOf(b)
	for d, left := range [dimensions]int64{remainingRequests, remainingTokens} {
		if left >= 0 && (r.left[d] < 0 || left < r.left[d]) {
			r.left[d], r.dirty = left, true
		}
	}
	s.mu.Unlock()
}

// scaledLeft is this replica's part of what the account has left.
func scaledLeft(left int64, share float64) int64 {
	if left < 0 {
		return left
	}
	return int64(float64(left) * share)
}

// Estimate returns how long a request costing c would wait on buckets,
// ignoring concurrency and burst (see [Local.EstimateAt]). It makes no
// Redis call: the scheduler asks under its lock, for every request that
// has to queue. It knows the pauses this replica has seen and the time the
// cost takes at the full rate beyond a full burst, not what other replicas
// used, so it is a lower bound: a request it lets queue may still time out
// in the queue, but none is refused up front that could have gone.
func (s *Shared) Estimate(buckets []*Bucket, c Cost) time.Duration {
	now := time.Now()
	cost := [dimensions]int64{max(c.Requests, 0), max(c.Tokens, 0)}
	var wait time.Duration
	for _, b := range buckets {
		if p := s.local.PausedUntil(now, b); !p.IsZero() {
			wait = max(wait, p.Sub(now))
		}
		r := s.remoteOf(b)
		for d := range cost {
			if r.iv[d] == 0 || cost[d] == 0 {
				continue
			}
			us := int64(math.Ceil(float64(cost[d])*r.iv[d])) - r.tol[d]
			wait = max(wait, time.Duration(us)*time.Microsecond)
		}
	}
	return wait
}

// Usage returns b's shared state (see [Local.UsageAt]), or its twin's
// while Redis is away.
func (s *Shared) Usage(b *Bucket) Usage {
	now, st, ok := s.read([]*Bucket{b})
	if !ok {
		return s.local.Usage(b)
	}
	r := s.remoteOf(b)
	u := Usage{Inflight: st[0].inflight}
	var left, capacity [dimensions]float64
	for d := range left {
		if r.iv[d] == 0 {
			continue
		}
		owed := max(st[0].tat[d], now) - now
		left[d] = float64(r.tol[d]-owed) / r.iv[d]
		capacity[d] = float64(r.tol[d]) / r.iv[d]
	}
	u.Requests, u.Tokens = left[requests], left[tokens]
	u.RequestCapacity, u.TokenCapacity = capacity[requests], capacity[tokens]
	return u
}

// bucketState is one bucket as read.lua returns it.
type bucketState struct {
	tat      [dimensions]int64
	paused   int64
	inflight int64
}

func (s *Shared) read(buckets []*Bucket) (now int64, st []bucketState, ok bool) {
	if !s.up.Load() || len(buckets) == 0 {
		return 0, nil, false
	}
	keys := make([]string, len(buckets))
	for i, b := range buckets {
		keys[i] = s.remoteOf(b).key
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	res, err := readScript.Run(ctx, s.c, keys).Int64Slice()
	if err != nil || len(res) != 1+4*len(buckets) {
		s.down(fmt.Errorf("reading %s: %w", keys[0], err))
		return 0, nil, false
	}
	st = make([]bucketState, len(buckets))
	for i := range st {
		v := res[1+4*i:]
		st[i] = bucketState{tat: [dimensions]int64{v[0], v[1]}, paused: v[2], inflight: v[3]}
	}
	return res[0], st, true
}

// down switches to the twins after a failed Redis call.
func (s *Shared) down(err error) {
	if s.up.CompareAndSwap(true, false) {
		s.log.Warn("redis unreachable: limiting on this replica alone at the degraded share until it is back",
			slog.Float64("share", s.share), slog.String("error", fmt.Sprint(err)))
		s.onRedis(false)
	}
}

// Run settles batched changes every SettleEvery, renews this replica's
// leases, and while Redis is away probes it and re-syncs when it returns.
// It returns when ctx is done, after a last settle.
func (s *Shared) Run(ctx context.Context) {
	settle := time.NewTicker(s.every)
	defer settle.Stop()
	renew := time.NewTicker(s.lease / 3)
	defer renew.Stop()
	probe := time.NewTicker(500 * time.Millisecond)
	defer probe.Stop()
	for {
		select {
		case <-ctx.Done():
			if s.up.Load() {
				s.settle(false, false)
			}
			return
		case <-settle.C:
			// Tags with traffic have had their changes carried by
			// reservations; this sends the rest.
			if s.up.Load() {
				s.settleDue()
			}
		case <-renew.C:
			if s.up.Load() {
				s.settle(true, false)
			}
		case <-probe.C:
			if !s.up.Load() {
				s.recover()
			}
		}
	}
}

// recover re-syncs with a Redis that answers again: this replica's
// in-flight counts are written outright, and buckets Redis lost start
// empty (settle.lua).
func (s *Shared) recover() {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	err := s.c.Ping(ctx).Err()
	cancel()
	if err != nil {
		return
	}
	if !s.settle(true, true) {
		return
	}
	if s.up.CompareAndSwap(false, true) {
		s.log.Info("redis reachable again: limits shared across replicas")
		s.onRedis(true)
	}
}

// settle sends the pending changes of every hash tag, one call per tag:
// those with changes, or all of them when renew is set (the lease
// renewal), with the in-flight counts written outright when resync is set.
// It reports whether every call succeeded; pending changes of a failed
// call are lost, the conservative way (refunds not given back, overages
// not charged; a missed release is cured by the next resync).
func (s *Shared) settle(renew, resync bool) bool {
	var calls []settleCall
	s.mu.Lock()
	now := time.Now()
	for _, ts := range s.tags {
		if c, ok := s.settleCallLocked(ts, now, renew, resync); ok {
			calls = append(calls, c)
		}
	}
	s.mu.Unlock()
	for _, c := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		err := settleScript.Run(ctx, s.c, c.keys, c.args...).Err()
		cancel()
		if err != nil {
			s.down(fmt.Errorf("settling %s: %w", c.keys[0], err))
			return false
		}
	}
	return true
}

// settleCall is one settle.lua call: the pending changes of one tag.
type settleCall struct {
	keys []string
	args []any
}

// settleCallLocked takes the pending changes of ts (every bucket when
// renew is set) into a call and clears them; ok is false when there is
// nothing to send. Requires s.mu.
func (s *Shared) settleCallLocked(ts *tagState, now time.Time, renew, resync bool) (c settleCall, ok bool) {
	var counts []any
	for _, b := range ts.buckets {
		r := s.remoteOf(b)
		if !r.dirty && !renew {
			continue
		}
		c.keys = append(c.keys, r.key)
		c.args = append(c.args, r.iv[requests], r.tol[requests], r.iv[tokens], r.tol[tokens],
			r.delta[requests], r.delta[tokens], r.released, r.left[requests], r.left[tokens])
		set := int64(-1)
		if resync && r.conc > 0 {
			set = s.local.inflightOf(b)
		}
		counts = append(counts, set)
		r.delta, r.released, r.left, r.dirty = [dimensions]int64{}, 0, [dimensions]int64{-1, -1}, false
	}
	if len(c.keys) == 0 {
		return c, false
	}
	flag := 0
	if resync {
		flag = 1
	}
	c.args = append(append([]any{s.replica, s.lease.Milliseconds(), s.ttl().Milliseconds(), flag}, c.args...), counts...)
	ts.settled = now
	return c, true
}

// dueSettle takes the pending changes of tag when they have waited
// SettleEvery, so that a reservation can carry them in its round trip.
//
// A reservation (reserving) marks the tag busy; the timer (not reserving)
// leaves a busy tag to the reservations, so that steady traffic sends no
// settle calls of its own.
func (s *Shared) dueSettle(tag string, now time.Time, reserving bool) (settleCall, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.tags[tag]
	if ts == nil {
		return settleCall{}, false
	}
	if reserving {
		ts.reserved = now
	} else if now.Sub(ts.reserved) < s.every {
		return settleCall{}, false
	}
	if now.Sub(ts.settled) < s.every {
		return settleCall{}, false
	}
	return s.settleCallLocked(ts, now, false, false)
}

// settleDue sends the pending changes of every tag that has been neither
// settled nor reserved on for SettleEvery.
func (s *Shared) settleDue() {
	now := time.Now()
	s.mu.Lock()
	tags := make([]string, 0, len(s.tags))
	for tag := range s.tags {
		tags = append(tags, tag)
	}
	s.mu.Unlock()
	for _, tag := range tags {
		c, ok := s.dueSettle(tag, now, false)
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		err := settleScript.Run(ctx, s.c, c.keys, c.args...).Err()
		cancel()
		if err != nil {
			s.down(fmt.Errorf("settling %s: %w", c.keys[0], err))
			return
		}
	}
}

// inflightOf returns b's count of requests in flight.
func (l *Local) inflightOf(b *Bucket) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.own(b)
	return b.inflight
}
