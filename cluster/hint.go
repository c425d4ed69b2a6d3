package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// hint is a breaker's open-until, as stored in its key and published on the
// channel (see the package doc).
type hint struct {
	Provider string `json:"provider"`
	UntilMs  int64  `json:"until_ms"`
	Replica  string `json:"replica"`
}

const (
	// maxHintLen bounds what parseHint reads: a hint is a provider name, a
	// replica id and a number.
	maxHintLen = 4096
	// maxUntilMs is the latest until_ms whose time.Time has a UnixNano
	// (year 2262).
	maxUntilMs = math.MaxInt64 / int64(time.Millisecond)
)

// errBadHint marks a hint that does not parse; it never leaves the package.
var errBadHint = errors.New("bad breaker hint")

// untilMillis returns until in Unix milliseconds, rounded up so that a hint
// never ends before the open period it reports, and capped to maxUntilMs.
func untilMillis(until time.Time) int64 {
	if !until.Before(time.UnixMilli(maxUntilMs)) {
		return maxUntilMs
	}
	ms := until.UnixMilli()
	if until.After(time.UnixMilli(ms)) {
		ms++
	}
	return ms
}

// until returns when h ends.
func (h hint) until() time.Time {
	return time.UnixMilli(h.UntilMs)
}

// encode returns h as stored and published. Invalid UTF-8 in the names
// becomes U+FFFD (encoding/json).
func (h hint) encode() string {
	b, err := json.Marshal(h)
	if err != nil {
		// A struct of two strings and an int64 always marshals.
		panic(fmt.Sprintf("cluster: encoding breaker hint: %v", err))
	}
	return string(b)
}

// parseHint parses a stored or published hint. It accepts a JSON object
// with a non-empty provider and replica and an until_ms in
// [1, maxUntilMs]; unknown fields are ignored.
func parseHint(s string) (hint, error) {
	if len(s) > maxHintLen {
		return hint{}, fmt.Errorf("%w: %d bytes, more than %d", errBadHint, len(s), maxHintLen)
	}
	var h hint
	if err := json.Unmarshal([]byte(s), &h); err != nil {
		return hint{}, fmt.Errorf("%w: %w", errBadHint, err)
	}
	switch {
	case h.Provider == "":
		return hint{}, fmt.Errorf("%w: no provider", errBadHint)
	case h.Replica == "":
		return hint{}, fmt.Errorf("%w: no replica", errBadHint)
	case h.UntilMs < 1 || h.UntilMs > maxUntilMs:
		return hint{}, fmt.Errorf("%w: until_ms %d not in [1, %d]", errBadHint, h.UntilMs, maxUntilMs)
	}
	return h, nil
}
