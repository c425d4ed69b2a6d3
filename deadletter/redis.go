package deadletter

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed scripts/add.lua
	addLua string
	//go:embed scripts/get.lua
	getLua string
	//go:embed scripts/mark.lua
	markLua string
	//go:embed scripts/delete.lua
	deleteLua string

	// The scripts are immutable; Script.Run sends EVALSHA and falls back
	// to EVAL on NOSCRIPT, e.g. after a Redis restart.
	addScript    = redis.NewScript(addLua)
	getScript    = redis.NewScript(getLua)
	markScript   = redis.NewScript(markLua)
	deleteScript = redis.NewScript(deleteLua)
)

// DefaultStream is the stream name of the SPEC's default configuration.
const DefaultStream = "sluice:deadletters"

// Suffixes of the companion keys of a stream.
const (
	idsSuffix     = ":ids"
	replaysSuffix = ":replays"
)

// trimBatch bounds the entries one Add trims, so one script call stays
// short (it blocks the Redis server) even right after an operator lowered
// the maximum length far below the stream's length; each later Add trims
// another batch until the stream fits. 100 is the default size of a stream
// node (stream-node-max-entries), the unit XADD MAXLEN ~ trims by.
const trimBatch = 100

// scanBudget bounds the stream entries one List call reads, so a filter
// that matches little cannot make one call read a whole long stream. A
// List that runs out of budget returns what it found and a cursor to go on.
const scanBudget = 10000

// streamID matches a Redis stream entry id; record ids from [NewID] never
// contain '-'.
var streamID = regexp.MustCompile(`^[0-9]+-[0-9]+$`)

// replayMark is the value of one field of the replay hash.
type replayMark struct {
	ReplayedAt   string `json:"replayed_at"`
	ReplayStatus int    `json:"replay_status"`
}

// RedisStore keeps records in a Redis stream, for shared mode. Keys:
//
//   - the stream, named exactly as configured: one entry per record, with
//     the flat fields of [FieldNames] (headers a JSON object, body raw,
//     times RFC 3339 UTC, ints decimal, "" for unset strings and times).
//     Entries are immutable: their replayed_at and replay_status stay
//     unset;
//   - <stream>:ids, a hash from record id to stream entry id, which makes
//     Add idempotent and Get a lookup;
//   - <stream>:replays, a hash from record id to the replay mark as JSON
//     {"replayed_at":..,"replay_status":..}, merged into Get and List
//     results.
//
// Every change is one Lua script that takes all three keys, so on a Redis
// Cluster they must share a slot: name the stream with a hash tag, such as
// "{sluice}:deadletters", and the companions hash with it. The default
// "sluice:deadletters" works on standalone Redis and Sentinel.
//
// With a maximum length, Add first removes the oldest entries beyond it
// together with their index fields and replay marks, so the hashes stay as
// small as the stream. Trimming is exact: the stream never holds more
// than the maximum after an Add, except right after the maximum was
// lowered, while each Add trims at most trimBatch (100) entries. A trimmed
// record reads as [ErrNotFound] like a deleted one, and adding its id again
// stores it again, as the newest entry: deduplication covers the records
// the stream still holds. (An index field left by a version that trimmed
// with XADD MAXLEN ~ stays; Get reads it as not found.)
//
// Each Redis call runs under its own timeout. A RedisStore is safe for
// concurrent use; it does not own the client.
type RedisStore struct {
	c       redis.UniversalClient
	keys    []string // stream, ids, replays: the KEYS of every script
	maxLen  int64
	timeout time.Duration
}

// NewRedisStore returns a store on the stream of the given name ("" means
// [DefaultStream]). maxLen > 0 caps the stream at that many entries, the
// oldest going first (see [RedisStore]); 0 or less keeps every entry.
// timeout bounds each Redis call; 0 or less means 2s.
func NewRedisStore(c redis.UniversalClient, stream string, maxLen int64, timeout time.Duration) *RedisStore {
	if stream == "" {
		stream = DefaultStream
	}
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	return &RedisStore{
		c:       c,
		keys:    []string{stream, stream + idsSuffix, stream + replaysSuffix},
		maxLen:  max(maxLen, 0),
		timeout: timeout,
	}
}

// Stream returns the name of the stream.
func (s *RedisStore) Stream() string { return s.keys[0] }

// Add stores r unless a record with its id is stored already, in which
// case it changes nothing and returns nil. r.ID must not be empty. r's
// replay fields are not stored; use MarkReplayed.
func (s *RedisStore) Add(ctx context.Context, r Record) error {
	if r.ID == "" {
		return errors.New("deadletter: adding a record without an id")
	}
	r.ReplayedAt, r.ReplayStatus = time.Time{}, 0
	fields, err := r.streamFields()
	if err != nil {
		return fmt.Errorf("deadletter: encoding record %q: %w", r.ID, err)
	}
	args := append([]any{r.ID, s.maxLen, trimBatch}, fields...)
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := addScript.Run(ctx, s.c, s.keys, args...).Err(); err != nil {
		return fmt.Errorf("deadletter: adding record %q to %s: %w", r.ID, s.keys[0], err)
	}
	return nil
}

// Get returns the record with the given id, or [ErrNotFound].
func (s *RedisStore) Get(ctx context.Context, id string) (Record, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	res, err := getScript.Run(ctx, s.c, s.keys, id).Slice()
	if errors.Is(err, redis.Nil) {
		return Record{}, fmt.Errorf("getting %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Record{}, fmt.Errorf("deadletter: getting record %q from %s: %w", id, s.keys[0], err)
	}
	if len(res) != 3 {
		return Record{}, fmt.Errorf("deadletter: getting record %q: script returned %d values, want 3", id, len(res))
	}
	flat, _ := res[1].([]any)
	fields := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := flat[i].(string)
		v, _ := flat[i+1].(string)
		fields[k] = v
	}
	rec, err := recordFromStream(fields)
	if err != nil {
		return Record{}, fmt.Errorf("deadletter: decoding record %q: %w", id, err)
	}
	mark, _ := res[2].(string)
	if err := applyMark(&rec, mark); err != nil {
		return Record{}, err
	}
	return rec, nil
}

// applyMark merges a replay mark from the replay hash into rec; "" is no
// mark.
func applyMark(rec *Record, mark string) error {
	if mark == "" {
		return nil
	}
	var m replayMark
	if err := json.Unmarshal([]byte(mark), &m); err != nil {
		return fmt.Errorf("deadletter: decoding replay mark of %q: %w", rec.ID, err)
	}
	at, err := parseTime("replayed_at", m.ReplayedAt)
	if err != nil {
		return fmt.Errorf("deadletter: decoding replay mark of %q: %w", rec.ID, err)
	}
	rec.ReplayedAt, rec.ReplayStatus = at, m.ReplayStatus
	return nil
}

// List returns the records f selects in stream order (the order they were
// added), at most f.Limit of them, and the cursor for the next page (""
// when there is none). The cursor is a stream entry id; f.After may also
// be the id of a stored record. One call reads at most scanBudget entries:
// when a sparse filter exhausts it, List returns the matches so far with a
// cursor that continues the scan, so a page may be short (even empty) with
// a non-empty cursor.
func (s *RedisStore) List(ctx context.Context, f Filter) ([]Record, string, error) {
	limit := f.limit()
	start := "-"
	if f.After != "" {
		after := f.After
		if !streamID.MatchString(after) {
			sid, err := s.lookup(ctx, after)
			if err != nil {
				return nil, "", err
			}
			after = sid
		}
		start = "(" + after
	}
	// One more match than the page tells whether a next page exists.
	count := int64(min(limit+1, scanBudget))
	type match struct {
		sid string
		rec Record
	}
	var found []match
	scanned := 0
	last := ""
	for {
		entries, err := s.xrange(ctx, start, count)
		if err != nil {
			return nil, "", err
		}
		for _, e := range entries {
			scanned++
			last = e.ID
			fields := make(map[string]string, len(e.Values))
			for k, v := range e.Values {
				fields[k], _ = v.(string)
			}
			rec, err := recordFromStream(fields)
			if err != nil {
				return nil, "", fmt.Errorf("deadletter: decoding entry %s of %s: %w", e.ID, s.keys[0], err)
			}
			if f.match(&rec) {
				found = append(found, match{e.ID, rec})
			}
			if len(found) > limit {
				break
			}
		}
		var next string
		switch {
		case len(found) > limit:
			found, next = found[:limit], found[limit-1].sid
		case int64(len(entries)) < count:
			// The end of the stream.
		case scanned >= scanBudget:
			next = last
		default:
			start = "(" + last
			continue
		}
		recs := make([]Record, len(found))
		ids := make([]string, len(found))
		for i, m := range found {
			recs[i], ids[i] = m.rec, m.rec.ID
		}
		if err := s.mergeMarks(ctx, recs, ids); err != nil {
			return nil, "", err
		}
		return recs, next, nil
	}
}

func (s *RedisStore) xrange(ctx context.Context, start string, count int64) ([]redis.XMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	entries, err := s.c.XRangeN(ctx, s.keys[0], start, "+", count).Result()
	if err != nil {
		return nil, fmt.Errorf("deadletter: reading %s from %s: %w", s.keys[0], start, err)
	}
	return entries, nil
}

// lookup returns the stream entry id of a stored record.
func (s *RedisStore) lookup(ctx context.Context, id string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	sid, err := s.c.HGet(ctx, s.keys[1], id).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("listing after %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("deadletter: looking up record %q in %s: %w", id, s.keys[1], err)
	}
	return sid, nil
}

// mergeMarks sets the replay marks of recs, whose ids are ids.
func (s *RedisStore) mergeMarks(ctx context.Context, recs []Record, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	marks, err := s.c.HMGet(ctx, s.keys[2], ids...).Result()
	if err != nil {
		return fmt.Errorf("deadletter: reading replay marks from %s: %w", s.keys[2], err)
	}
	for i, m := range marks {
		if str, ok := m.(string); ok {
			if err := applyMark(&recs[i], str); err != nil {
				return err
			}
		}
	}
	return nil
}

// MarkReplayed records that the record with the given id was replayed at
// at with the given outcome status, replacing any earlier mark. It returns
// [ErrNotFound] when no such record is stored.
func (s *RedisStore) MarkReplayed(ctx context.Context, id string, at time.Time, status int) error {
	mark, err := json.Marshal(replayMark{ReplayedAt: formatTime(at), ReplayStatus: status})
	if err != nil {
		return fmt.Errorf("deadletter: encoding replay mark: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	n, err := markScript.Run(ctx, s.c, s.keys, id, string(mark)).Int()
	if err != nil {
		return fmt.Errorf("deadletter: marking record %q replayed in %s: %w", id, s.keys[2], err)
	}
	if n == 0 {
		return fmt.Errorf("marking %q replayed: %w", id, ErrNotFound)
	}
	return nil
}

// Delete removes the record with the given id, or returns [ErrNotFound].
func (s *RedisStore) Delete(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	n, err := deleteScript.Run(ctx, s.c, s.keys, id).Int()
	if err != nil {
		return fmt.Errorf("deadletter: deleting record %q from %s: %w", id, s.keys[0], err)
	}
	if n == 0 {
		return fmt.Errorf("deleting %q: %w", id, ErrNotFound)
	}
	return nil
}

// Close does nothing and returns nil: the client belongs to the caller.
func (s *RedisStore) Close() error { return nil }
