// Package deadletter keeps the requests Sluice could not deliver, so that an
// operator can inspect and replay them. Every accepted request ends as an
// upstream response or as a Sluice error response plus a [Record] here; the
// invariant the stores keep is that an accepted [Record] is never lost and
// never stored twice: adding is idempotent by [Record.ID].
//
// Two stores share one method set: [FileStore], an append-only JSON-lines
// file for single-replica mode, and [RedisStore], a Redis stream for shared
// mode. [Spool] puts a [FileStore] in front of a [RedisStore] while Redis is
// away and moves the spooled records to Redis when it returns. The field
// names of a record are a contract with operators' tooling (SPEC "Dead
// letters") and are the same in both stores; see [FieldNames].
//
// The stores do not read secrets out of records: callers build
// [Record.Headers] and [Record.ErrorMessage] through a [Redactor].
package deadletter

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Kind is why a request was dead-lettered. It is stored as the error_kind
// field; the constants below are the values Sluice writes, and readers must
// accept others (the SPEC's list ends in "...").
type Kind string

// The error kinds Sluice writes.
const (
	// RetriesExhausted means every allowed upstream attempt failed.
	RetriesExhausted Kind = "retries_exhausted"
	// QueueTimeout means the request waited in Sluice's queue past its max wait.
	QueueTimeout Kind = "queue_timeout"
	// BreakerOpen means the provider's breaker stayed open past the caller's wait.
	BreakerOpen Kind = "breaker_open"
	// UpstreamTimeout means the last upstream attempt timed out.
	UpstreamTimeout Kind = "upstream_timeout"
	// Shutdown means Sluice drained and the grace period ended first.
	Shutdown Kind = "shutdown"
	// StreamCut means the upstream broke a streamed response off after
	// part of it had reached the client, which therefore cannot be retried.
	StreamCut Kind = "stream_cut"
)

// ErrNotFound is returned (possibly wrapped) when no record has the given id.
// Check it with errors.Is.
var ErrNotFound = errors.New("deadletter: record not found")

// Record is one undeliverable request. Its JSON form and its Redis stream
// entry use the field names in [FieldNames]: times are RFC 3339 with
// nanoseconds in UTC ("" for a zero time), headers a JSON object, the body
// the raw body text.
//
// A Record is a plain value; the stores copy it and keep no reference to
// the caller's Headers map.
type Record struct {
	// ID identifies the record; [NewID] makes one. Adding a record whose ID
	// is already stored changes nothing.
	ID string
	// FailedAt is when Sluice gave up on the request.
	FailedAt time.Time
	// ReceivedAt is when Sluice first received the request.
	ReceivedAt time.Time
	// Provider is the configured provider name.
	Provider string
	// Method, Path and Query are the client's request line; Query is
	// without the leading '?'.
	Method, Path, Query string
	// Headers are the request headers, secrets already redacted (see
	// [Redactor.Headers]). The stores return a non-nil map.
	Headers map[string]string
	// Body is the raw request body.
	Body string
	// Class is the priority class the request was queued in.
	Class string
	// Attempts is the number of upstream attempts made; 0 if none was.
	Attempts int
	// LastStatus is the last upstream HTTP status; 0 if no response came.
	LastStatus int
	// ErrorKind is why the request was dead-lettered.
	ErrorKind Kind
	// ErrorMessage is a human-readable cause, scrubbed of secrets (see
	// [Redactor.Scrub]).
	ErrorMessage string
	// IdempotencyKey is the client's Idempotency-Key header, "" if none.
	IdempotencyKey string
	// ReplayedAt is when the record was last replayed; zero until replayed.
	ReplayedAt time.Time
	// ReplayStatus is the HTTP status the last replay ended with; 0 until
	// replayed.
	ReplayStatus int
}

// FieldNames are the record's field names in both stores, in the SPEC's
// order. Operators' tooling reads them: they must not change.
var FieldNames = [...]string{
	"id", "failed_at", "received_at", "provider", "method", "path", "query",
	"headers", "body", "class", "attempts", "last_status", "error_kind",
	"error_message", "idempotency_key", "replayed_at", "replay_status",
}

// wire is the flat, stored form of a Record. The JSON tags are the
// contract; FieldNames lists the same names and a test keeps them equal.
type wire struct {
	ID             string            `json:"id"`
	FailedAt       string            `json:"failed_at"`
	ReceivedAt     string            `json:"received_at"`
	Provider       string            `json:"provider"`
	Method         string            `json:"method"`
	Path           string            `json:"path"`
	Query          string            `json:"query"`
	Headers        map[string]string `json:"headers"`
	Body           string            `json:"body"`
	Class          string            `json:"class"`
	Attempts       int               `json:"attempts"`
	LastStatus     int               `json:"last_status"`
	ErrorKind      Kind              `json:"error_kind"`
	ErrorMessage   string            `json:"error_message"`
	IdempotencyKey string            `json:"idempotency_key"`
	ReplayedAt     string            `json:"replayed_at"`
	ReplayStatus   int               `json:"replay_status"`
}

// formatTime renders t as RFC 3339 in UTC with nanoseconds, so a stored
// time reads back equal to the one added; "" stands for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("parsing %s: %w", field, err)
	}
	return t.UTC(), nil
}

func (r Record) wire() wire {
	h := make(map[string]string, len(r.Headers))
	for k, v := range r.Headers {
		h[k] = v
	}
	return wire{
		ID:             r.ID,
		FailedAt:       formatTime(r.FailedAt),
		ReceivedAt:     formatTime(r.ReceivedAt),
		Provider:       r.Provider,
		Method:         r.Method,
		Path:           r.Path,
		Query:          r.Query,
		Headers:        h,
		Body:           r.Body,
		Class:          r.Class,
		Attempts:       r.Attempts,
		LastStatus:     r.LastStatus,
		ErrorKind:      r.ErrorKind,
		ErrorMessage:   r.ErrorMessage,
		IdempotencyKey: r.IdempotencyKey,
		ReplayedAt:     formatTime(r.ReplayedAt),
		ReplayStatus:   r.ReplayStatus,
	}
}

func (w wire) record() (Record, error) {
	r := Record{
		ID:             w.ID,
		Provider:       w.Provider,
		Method:         w.Method,
		Path:           w.Path,
		Query:          w.Query,
		Headers:        w.Headers,
		Body:           w.Body,
		Class:          w.Class,
		Attempts:       w.Attempts,
		LastStatus:     w.LastStatus,
		ErrorKind:      w.ErrorKind,
		ErrorMessage:   w.ErrorMessage,
		IdempotencyKey: w.IdempotencyKey,
		ReplayStatus:   w.ReplayStatus,
	}
	if r.Headers == nil {
		r.Headers = map[string]string{}
	}
	var err error
	if r.FailedAt, err = parseTime("failed_at", w.FailedAt); err != nil {
		return Record{}, err
	}
	if r.ReceivedAt, err = parseTime("received_at", w.ReceivedAt); err != nil {
		return Record{}, err
	}
	if r.ReplayedAt, err = parseTime("replayed_at", w.ReplayedAt); err != nil {
		return Record{}, err
	}
	return r, nil
}

// normalize returns r as a store gives it back: times in UTC without a
// monotonic reading, Headers copied and non-nil.
func normalize(r Record) Record {
	n, err := r.wire().record()
	if err != nil {
		// formatTime output always parses; this is a programmer error.
		panic(fmt.Sprintf("deadletter: re-reading a formatted record: %v", err))
	}
	return n
}

// MarshalJSON encodes r with the field names in [FieldNames].
func (r Record) MarshalJSON() ([]byte, error) {
	return json.Marshal(r.wire())
}

// UnmarshalJSON decodes the form [Record.MarshalJSON] writes.
func (r *Record) UnmarshalJSON(b []byte) error {
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	rec, err := w.record()
	if err != nil {
		return err
	}
	*r = rec
	return nil
}

// streamFields returns r as the flat field/value pairs of one stream entry,
// in [FieldNames] order: strings as they are, headers as a JSON object,
// ints in decimal, times as RFC 3339 UTC ("" when zero).
func (r Record) streamFields() ([]any, error) {
	w := r.wire()
	h, err := json.Marshal(w.Headers)
	if err != nil {
		return nil, fmt.Errorf("encoding headers: %w", err)
	}
	return []any{
		"id", w.ID,
		"failed_at", w.FailedAt,
		"received_at", w.ReceivedAt,
		"provider", w.Provider,
		"method", w.Method,
		"path", w.Path,
		"query", w.Query,
		"headers", string(h),
		"body", w.Body,
		"class", w.Class,
		"attempts", strconv.Itoa(w.Attempts),
		"last_status", strconv.Itoa(w.LastStatus),
		"error_kind", string(w.ErrorKind),
		"error_message", w.ErrorMessage,
		"idempotency_key", w.IdempotencyKey,
		"replayed_at", w.ReplayedAt,
		"replay_status", strconv.Itoa(w.ReplayStatus),
	}, nil
}

// recordFromStream decodes the fields of one stream entry. Missing fields
// read as unset, so entries written by an older Sluice still decode.
func recordFromStream(f map[string]string) (Record, error) {
	w := wire{
		ID:             f["id"],
		FailedAt:       f["failed_at"],
		ReceivedAt:     f["received_at"],
		Provider:       f["provider"],
		Method:         f["method"],
		Path:           f["path"],
		Query:          f["query"],
		Body:           f["body"],
		Class:          f["class"],
		ErrorKind:      Kind(f["error_kind"]),
		ErrorMessage:   f["error_message"],
		IdempotencyKey: f["idempotency_key"],
		ReplayedAt:     f["replayed_at"],
	}
	if h := f["headers"]; h != "" {
		if err := json.Unmarshal([]byte(h), &w.Headers); err != nil {
			return Record{}, fmt.Errorf("decoding headers: %w", err)
		}
	}
	for _, n := range []struct {
		name string
		dst  *int
	}{{"attempts", &w.Attempts}, {"last_status", &w.LastStatus}, {"replay_status", &w.ReplayStatus}} {
		s := f[n.name]
		if s == "" {
			continue
		}
		v, err := strconv.Atoi(s)
		if err != nil {
			return Record{}, fmt.Errorf("parsing %s: %w", n.name, err)
		}
		*n.dst = v
	}
	return w.record()
}

// Filter selects records for List. The zero value selects every record,
// oldest first, 100 at a time.
type Filter struct {
	// Provider keeps only this provider's records; "" keeps all.
	Provider string
	// Kind keeps only records of this error kind; "" keeps all.
	Kind Kind
	// Since and Until bound FailedAt to [Since, Until); a zero time leaves
	// that side open.
	Since, Until time.Time
	// After is the paging cursor: the next value of a previous List on the
	// same store, or a record id; records stored after it are returned. ""
	// starts at the oldest record.
	After string
	// Limit caps the records returned; 0 or less means 100.
	Limit int
}

// defaultLimit is the page size of a zero Filter.
const defaultLimit = 100

func (f Filter) limit() int {
	if f.Limit <= 0 {
		return defaultLimit
	}
	return f.Limit
}

func (f Filter) match(r *Record) bool {
	if f.Provider != "" && r.Provider != f.Provider {
		return false
	}
	if f.Kind != "" && r.ErrorKind != f.Kind {
		return false
	}
	if !f.Since.IsZero() && r.FailedAt.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !r.FailedAt.Before(f.Until) {
		return false
	}
	return true
}

// crockford is the ULID alphabet: no I, L, O or U, so ids read aloud and
// typed from a terminal survive (https://github.com/ulid/spec).
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewID returns a new record id: 26 characters in the ULID layout, 48 bits
// of milliseconds since the Unix epoch followed by 80 random bits from
// crypto/rand. Ids sort by time to the millisecond; within one millisecond
// their order is random. It is safe for concurrent use.
func NewID(now time.Time) string {
	var b [16]byte
	ms := uint64(now.UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	// crypto/rand.Read never returns an error (Go 1.24+): it crashes the
	// program instead when the kernel cannot supply randomness.
	_, _ = rand.Read(b[6:])
	// 128 bits as 26 base-32 digits, most significant first; the first
	// digit carries only the top 3 bits.
	var out [26]byte
	hi := uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
	lo := uint64(b[8])<<56 | uint64(b[9])<<48 | uint64(b[10])<<40 | uint64(b[11])<<32 |
		uint64(b[12])<<24 | uint64(b[13])<<16 | uint64(b[14])<<8 | uint64(b[15])
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}
