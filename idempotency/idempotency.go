// Package idempotency remembers requests by their Idempotency-Key, so that a
// client's retry of an AI call is answered from the first call's outcome
// instead of being paid for twice.
//
// The invariant: while a key's entry lives (its hold, then its outcome for
// [Settings].Retention), the upstream sees at most one request per key and
// scope (the provider name), across every replica sharing the store. The
// first request to [Store.Begin] a key holds it; duplicates see it in flight
// and may [Store.Wait] for the outcome, which [Store.Complete] stores and
// every later duplicate gets replayed. A request that never reached the
// upstream gives its hold back with [Store.Abandon], so a retry may go.
//
// Two stores keep the same semantics behind [Store]: [Memory], in process,
// for a single replica, and [Redis], shared by replicas. The contract tests
// run against both.
//
// What the invariant cannot cover, by design: an entry that is gone before
// its time. A hold lapses when its holder stops renewing it for
// [Settings].LockTTL (the holder crashed, or stalled that long: a stalled
// holder's request may then be sent twice); a [Redis] without persistence
// forgets every entry when it restarts; a [Memory] evicts outcomes beyond
// [Settings].MaxKeys. In each case the next request with the key is sent
// again.
package idempotency

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Errors callers branch on.
var (
	// ErrBadKey is returned by Begin and Wait for an empty key or one
	// longer than [MaxKeyLen] bytes; the proxy answers 400.
	ErrBadKey = errors.New("idempotency: key must be 1 to 255 bytes")
	// ErrNotHeld is returned by Complete and Abandon when the token no
	// longer holds the key: it was completed or abandoned already, or the
	// hold lapsed after LockTTL without renewal (and another request may
	// hold the key now). Nothing was stored.
	ErrNotHeld = errors.New("idempotency: key not held")
)

// MaxKeyLen is the longest Idempotency-Key accepted, in bytes. Stripe's
// limit for the same header is 255 characters.
const MaxKeyLen = 255

// Outcome is a final response kept for duplicates.
//
// Empty Header and Body are returned as nil. Header names and values are
// stored as valid UTF-8: each byte that is not part of a valid UTF-8
// sequence is replaced by U+FFFD (as encoding/json does; the headers worth
// replaying are ASCII).
type Outcome struct {
	Status int         // the HTTP status code, 100 to 999
	Header [][2]string // the headers worth replaying, in order (name, value)
	Body   []byte
	Stream bool // Body is a server-sent event stream, to be replayed as one
}

// State of a key when a request claims it.
type State int

// The states of [Claim].State.
const (
	Acquired  State = iota // the caller now holds the key: send the request, then Complete or Abandon
	InFlight               // another request holds it (on any replica)
	Done                   // a final outcome is stored: Claim.Outcome
	Mismatch               // the key was used with a different body (hash)
	Forgotten              // completed, but its response was larger than the size limit: only the fact is kept
)

var stateNames = [...]string{"acquired", "in_flight", "done", "mismatch", "forgotten"}

// String returns the state's snake_case name, for logs and metric labels.
func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return "state(" + strconv.Itoa(int(s)) + ")"
	}
	return stateNames[s]
}

// Claim is the answer to Begin / Wait.
type Claim struct {
	State State
	// Outcome is the stored outcome when Done. When Forgotten, only its
	// Status is set (the original answer's status, without headers or body).
	Outcome   Outcome
	Streaming bool   // when InFlight: the holder's request is a stream
	Token     string // when Acquired: names this hold for Complete and Abandon
}

// Store keeps idempotency keys. Implementations are safe for concurrent use.
//
// Every Acquired claim (from Begin or Wait) must end in Complete or
// Abandon: Run renews a hold until then, so a forgotten hold would keep its
// key in flight for as long as Run runs. Complete refuses a status outside
// 100 to 999 with an error and keeps the hold. Give Complete a context
// that outlives the client's (context.WithoutCancel): the outcome is worth
// storing precisely when the client went away and will retry.
type Store interface {
	// Begin claims key (scope is the provider name) for a request whose
	// body hash is hash. stream says whether this request is a stream.
	// retryFailed lets a Done key whose stored outcome is not 2xx be claimed
	// again (Acquired), for a dead-letter replay: an operator's explicit retry.
	Begin(ctx context.Context, scope, key string, hash [32]byte, stream, retryFailed bool) (Claim, error)
	// Wait blocks until the key is no longer InFlight (or ctx ends) and returns
	// what Begin would say then (an abandoned key can be Acquired by the waiter).
	Wait(ctx context.Context, scope, key string, hash [32]byte, stream bool) (Claim, error)
	// Complete stores o as the key's final outcome (for Retention), when
	// token still holds the key. A body over MaxBody is not kept: the key
	// becomes Forgotten.
	Complete(ctx context.Context, scope, key, token string, o Outcome) error
	// Abandon releases a hold without an outcome: the request never reached
	// the upstream, so it may be tried again.
	Abandon(ctx context.Context, scope, key, token string) error
	// Run renews the holds of this process until ctx is done, so that long
	// requests keep their keys and a crashed holder's keys free up after
	// LockTTL.
	Run(ctx context.Context)
}

var (
	_ Store = (*Memory)(nil)
	_ Store = (*Redis)(nil)
)

// Settings configures a store. Zero or negative values mean the default.
type Settings struct {
	Retention time.Duration // how long outcomes are kept; default 24h
	LockTTL   time.Duration // how long a hold outlives its holder's last renewal; default 30s (renewed every third of it)
	MaxBody   int           // the largest body kept, in bytes; default 1 MiB
	MaxKeys   int           // memory store only: LRU size; default 100000
}

// Defaults of [Settings].
const (
	DefaultRetention = 24 * time.Hour
	DefaultLockTTL   = 30 * time.Second
	DefaultMaxBody   = 1 << 20
	DefaultMaxKeys   = 100000
)

// withDefaults returns s with its zero and negative fields set to the
// defaults.
func (s Settings) withDefaults() Settings {
	if s.Retention <= 0 {
		s.Retention = DefaultRetention
	}
	if s.LockTTL <= 0 {
		s.LockTTL = DefaultLockTTL
	}
	if s.MaxBody <= 0 {
		s.MaxBody = DefaultMaxBody
	}
	if s.MaxKeys <= 0 {
		s.MaxKeys = DefaultMaxKeys
	}
	return s
}

// renewEvery is how often Run renews holds: a third of LockTTL, so two
// renewals in a row may fail before a live holder loses its key.
func (s Settings) renewEvery() time.Duration {
	return max(s.LockTTL/3, time.Millisecond)
}

// checkKey returns ErrBadKey for a key the stores refuse.
func checkKey(key string) error {
	if key == "" || len(key) > MaxKeyLen {
		return ErrBadKey
	}
	return nil
}

// checkStatus refuses a status that could not be stored and read back.
func checkStatus(status int) error {
	if status < 100 || status > 999 {
		return fmt.Errorf("idempotency: completing with status %d, want 100 to 999", status)
	}
	return nil
}

// parseStatus reads a stored status: exactly three digits, 100 to 999.
func parseStatus(s string) (int, error) {
	if len(s) != 3 || s[0] < '1' || s[0] > '9' || s[1] < '0' || s[1] > '9' || s[2] < '0' || s[2] > '9' {
		return 0, fmt.Errorf("stored status %q is not a 3-digit code", s)
	}
	return int(s[0]-'0')*100 + int(s[1]-'0')*10 + int(s[2]-'0'), nil
}

// failed reports whether a stored outcome may be claimed again by a
// dead-letter replay (retryFailed): anything but 2xx.
func failed(status int) bool { return status < 200 || status > 299 }

// newToken returns a random hold token, 16 bytes in hex. crypto/rand.Read
// does not fail (it crashes the program on a broken random source instead).
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// kept returns the copy of o a store keeps: its slices are the store's own
// (the caller's may be pooled buffers), empty ones nil, header strings
// cloned (they may alias pooled bytes) and made valid UTF-8, so both
// stores return the same outcome.
func kept(o Outcome) Outcome {
	if len(o.Header) == 0 {
		o.Header = nil
	} else {
		h := make([][2]string, len(o.Header))
		for i, kv := range o.Header {
			h[i] = [2]string{validUTF8(kv[0]), validUTF8(kv[1])}
		}
		o.Header = h
	}
	o.Body = cloneBytes(o.Body)
	return o
}

// cloneBytes copies b, nil when empty.
func cloneBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// validUTF8 returns a copy of s with each byte outside a valid UTF-8
// sequence replaced by U+FFFD, exactly what encoding/json writes for it.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return strings.Clone(s)
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// encodeHeaders writes headers as a JSON array of [name, value] pairs,
// readable with redis-cli. Empty is "[]".
func encodeHeaders(h [][2]string) string {
	if len(h) == 0 {
		return "[]"
	}
	// Marshalling strings cannot fail.
	b, _ := json.Marshal(h)
	return string(b)
}

// decodeHeaders reads what encodeHeaders wrote: a JSON array (or null) of
// arrays of exactly two strings. Empty is nil. Invalid UTF-8 in the strings
// comes back as U+FFFD.
func decodeHeaders(s string) ([][2]string, error) {
	var pairs [][]string
	if err := json.Unmarshal([]byte(s), &pairs); err != nil {
		return nil, fmt.Errorf("decoding stored headers: %w", err)
	}
	if len(pairs) == 0 {
		return nil, nil
	}
	h := make([][2]string, len(pairs))
	for i, p := range pairs {
		if len(p) != 2 {
			return nil, fmt.Errorf("decoding stored headers: pair %d has %d elements, want 2", i, len(p))
		}
		h[i] = [2]string{p[0], p[1]}
	}
	return h, nil
}
