package idempotency

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed scripts/begin.lua
	beginLua string
	//go:embed scripts/complete.lua
	completeLua string
	//go:embed scripts/abandon.lua
	abandonLua string
	//go:embed scripts/renew.lua
	renewLua string

	// Script.Run sends EVALSHA and falls back to EVAL on NOSCRIPT, e.g.
	// after a Redis restart.
	beginScript    = redis.NewScript(beginLua)
	completeScript = redis.NewScript(completeLua)
	abandonScript  = redis.NewScript(abandonLua)
	renewScript    = redis.NewScript(renewLua)
)

const (
	// defaultPrefix starts every key when NewRedis is given "".
	defaultPrefix = "sluice:"
	// defaultTimeout bounds each Redis call when NewRedis is given 0: Begin
	// is on every keyed request's path, and Complete writes up to MaxBody.
	defaultTimeout = 250 * time.Millisecond
	// renewBatch bounds the keys one renewal call takes, so one script
	// stays short (it blocks the Redis server).
	renewBatch = 100
	// Wait polls Begin from waitFirst, doubling to waitMax.
	waitFirst = 20 * time.Millisecond
	waitMax   = 200 * time.Millisecond
)

// Values of the state field s.
const (
	stateLock      = "lock"
	stateDone      = "done"
	stateForgotten = "forgotten"
)

// Redis is a [Store] in Redis, shared by every replica using the same
// Redis and prefix.
//
// Each idempotency key is one Redis hash,
// <prefix>idem:{<scope>}:<hex SHA-256 of the key>: hashing keeps arbitrary
// client strings out of key names, and the {scope} hash tag puts all of a
// provider's keys in one Cluster slot, which lets [Redis.Run] renew them in
// one call. Its fields:
//
//	h   the request body's hash, hex
//	s   "lock" while held, then "done" or "forgotten"
//	t   the hold's token, while held
//	st  "1" if the holder streams, while held
//	c   the outcome's status, 3 digits (done and forgotten)
//	hd  the outcome's headers, a JSON array of [name, value] pairs (done)
//	b   the outcome's body, raw (done)
//	sm  "1" if the body is an event stream (done)
//
// A hold expires after LockTTL (PEXPIRE, on Redis's clock) unless renewed,
// an outcome after Retention. Every transition is one Lua script on one
// key, so replicas racing for a key see exactly one winner.
//
// Each Redis call runs under its own timeout. While Redis is unreachable
// every method returns an error; what Redis loses (a restart without
// persistence) is forgotten, and the next request with such a key is sent.
// A Begin whose reply was lost (a timeout) may have taken a hold that
// nobody renews: the key frees after LockTTL.
// A Redis is safe for concurrent use; it does not own the client.
type Redis struct {
	c       redis.UniversalClient
	prefix  string
	s       Settings
	timeout time.Duration

	mu   sync.Mutex      // protects held
	held map[string]hold // this process's holds by token, for Run
}

// hold is a key this process holds.
type hold struct {
	scope string
	rkey  string // the Redis key
}

// NewRedis returns a store on c. Keys start with prefix ("" means
// "sluice:"); timeout bounds each Redis call (0 or less means 250ms).
// s.MaxKeys is unused: Redis expires entries itself.
func NewRedis(c redis.UniversalClient, prefix string, s Settings, timeout time.Duration) *Redis {
	if prefix == "" {
		prefix = defaultPrefix
	}
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	return &Redis{
		c:       c,
		prefix:  prefix,
		s:       s.withDefaults(),
		timeout: timeout,
		held:    make(map[string]hold),
	}
}

// key returns the Redis key of an idempotency key.
func (r *Redis) key(scope, key string) string {
	sum := sha256.Sum256([]byte(key))
	var b strings.Builder
	b.Grow(len(r.prefix) + len(scope) + 8 + 2*len(sum))
	b.WriteString(r.prefix)
	b.WriteString("idem:{")
	b.WriteString(scope)
	b.WriteString("}:")
	b.WriteString(hex.EncodeToString(sum[:]))
	return b.String()
}

// flag encodes a bool as Lua scripts read it.
func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Begin implements [Store.Begin] in one script call.
func (r *Redis) Begin(ctx context.Context, scope, key string, hash [32]byte, stream, retryFailed bool) (Claim, error) {
	if err := checkKey(key); err != nil {
		return Claim{}, err
	}
	rkey := r.key(scope, key)
	token := newToken()
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	res, err := beginScript.Run(ctx, r.c, []string{rkey},
		hex.EncodeToString(hash[:]), token, flag(stream), r.s.LockTTL.Milliseconds(), flag(retryFailed)).Slice()
	if err != nil {
		return Claim{}, fmt.Errorf("idempotency: claiming a key in %s: %w", scope, err)
	}
	c, err := decodeBegin(res)
	if err != nil {
		return Claim{}, fmt.Errorf("idempotency: claiming a key in %s: %w", scope, err)
	}
	if c.State == Acquired {
		c.Token = token
		r.mu.Lock()
		r.held[token] = hold{scope: scope, rkey: rkey}
		r.mu.Unlock()
	}
	return c, nil
}

// decodeBegin reads begin.lua's reply.
func decodeBegin(res []any) (Claim, error) {
	str := func(i int) string {
		if i >= len(res) {
			return ""
		}
		s, _ := res[i].(string)
		return s
	}
	switch tag := str(0); tag {
	case "acquired":
		return Claim{State: Acquired}, nil
	case stateLock:
		return Claim{State: InFlight, Streaming: str(1) == "1"}, nil
	case "mismatch":
		return Claim{State: Mismatch}, nil
	case stateForgotten:
		status, err := parseStatus(str(1))
		if err != nil {
			return Claim{}, err
		}
		return Claim{State: Forgotten, Outcome: Outcome{Status: status}}, nil
	case stateDone:
		status, err := parseStatus(str(1))
		if err != nil {
			return Claim{}, err
		}
		h, err := decodeHeaders(str(2))
		if err != nil {
			return Claim{}, err
		}
		o := Outcome{Status: status, Header: h, Stream: str(4) == "1"}
		if b := str(3); b != "" {
			o.Body = []byte(b)
		}
		return Claim{State: Done, Outcome: o}, nil
	case "corrupt":
		return Claim{}, errors.New("stored entry is not a valid idempotency record")
	default:
		return Claim{}, fmt.Errorf("unexpected script reply %q", tag)
	}
}

// Wait implements [Store.Wait] by polling Begin, every 20ms at first and
// at most every 200ms. Duplicates are rare, so polling costs little, and
// unlike a pub/sub notification it cannot be missed: a Redis restart
// (which loses the hold) or a lapsed hold is seen at the next poll. An
// error from Begin ends the wait.
func (r *Redis) Wait(ctx context.Context, scope, key string, hash [32]byte, stream bool) (Claim, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for delay := waitFirst; ; delay = min(2*delay, waitMax) {
		c, err := r.Begin(ctx, scope, key, hash, stream, false)
		if err != nil || c.State != InFlight {
			return c, err
		}
		if timer == nil {
			timer = time.NewTimer(delay)
		} else {
			timer.Reset(delay)
		}
		select {
		case <-timer.C:
		case <-ctx.Done():
			return Claim{}, fmt.Errorf("idempotency: waiting for a key in %s: %w", scope, context.Cause(ctx))
		}
	}
}

// Complete implements [Store.Complete] in one script call. Whatever it
// returns, Run no longer renews the hold: after an error the key lapses
// after LockTTL at the latest.
func (r *Redis) Complete(ctx context.Context, scope, key, token string, o Outcome) error {
	if err := checkStatus(o.Status); err != nil {
		return err
	}
	r.forget(token)
	status := strconv.Itoa(o.Status)
	var fields []any
	if len(o.Body) > r.s.MaxBody {
		fields = []any{"s", stateForgotten, "c", status}
	} else {
		o = kept(o)
		fields = []any{"s", stateDone, "c", status, "hd", encodeHeaders(o.Header), "b", o.Body, "sm", flag(o.Stream)}
	}
	args := append([]any{token, r.s.Retention.Milliseconds()}, fields...)
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	n, err := completeScript.Run(ctx, r.c, []string{r.key(scope, key)}, args...).Int64()
	if err != nil {
		return fmt.Errorf("idempotency: completing a key in %s: %w", scope, err)
	}
	if n == 0 {
		return ErrNotHeld
	}
	return nil
}

// Abandon implements [Store.Abandon] in one script call. Whatever it
// returns, Run no longer renews the hold.
func (r *Redis) Abandon(ctx context.Context, scope, key, token string) error {
	r.forget(token)
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	n, err := abandonScript.Run(ctx, r.c, []string{r.key(scope, key)}, token).Int64()
	if err != nil {
		return fmt.Errorf("idempotency: abandoning a key in %s: %w", scope, err)
	}
	if n == 0 {
		return ErrNotHeld
	}
	return nil
}

// forget stops renewing the hold of token.
func (r *Redis) forget(token string) {
	r.mu.Lock()
	delete(r.held, token)
	r.mu.Unlock()
}

// Run implements [Store.Run]: every third of LockTTL it extends this
// process's holds by LockTTL, one call per provider (and per 100 keys). A
// failed call is retried at the next tick; a hold Redis no longer has
// (lapsed, or lost in a restart) is dropped. It returns when ctx is done.
func (r *Redis) Run(ctx context.Context) {
	t := time.NewTicker(r.s.renewEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// Errors are retried at the next tick, and a hold that
			// lapses meanwhile is reported to its holder by Complete.
			_ = r.renew(ctx)
		}
	}
}

// renew extends this process's holds once, and returns the first error.
func (r *Redis) renew(ctx context.Context) error {
	type batch struct {
		keys   []string
		args   []any // LockTTL, then the tokens
		tokens []string
	}
	ttl := r.s.LockTTL.Milliseconds()
	var batches []*batch
	open := make(map[string]*batch) // the batch still filling, by scope
	r.mu.Lock()
	for token, h := range r.held {
		b := open[h.scope]
		if b == nil || len(b.keys) == renewBatch {
			b = &batch{args: []any{ttl}}
			batches = append(batches, b)
			// A scope that is empty or holds a brace does not make
			// its own hash tag: its keys may lie in different slots,
			// so each goes alone.
			if tagSafe(h.scope) {
				open[h.scope] = b
			}
		}
		b.keys = append(b.keys, h.rkey)
		b.args = append(b.args, token)
		b.tokens = append(b.tokens, token)
	}
	r.mu.Unlock()

	var first error
	for _, b := range batches {
		cctx, cancel := context.WithTimeout(ctx, r.timeout)
		renewed, err := renewScript.Run(cctx, r.c, b.keys, b.args...).Int64Slice()
		cancel()
		if err == nil && len(renewed) != len(b.keys) {
			err = fmt.Errorf("renewal returned %d answers for %d keys", len(renewed), len(b.keys))
		}
		if err != nil {
			if first == nil {
				first = fmt.Errorf("idempotency: renewing holds: %w", err)
			}
			continue
		}
		r.mu.Lock()
		for i, ok := range renewed {
			if ok == 0 {
				delete(r.held, b.tokens[i])
			}
		}
		r.mu.Unlock()
	}
	return first
}

// tagSafe reports whether the key tag {scope} is the hash tag Redis
// Cluster uses: the scope is not empty and has no braces.
func tagSafe(scope string) bool {
	return scope != "" && !strings.ContainsAny(scope, "{}")
}
