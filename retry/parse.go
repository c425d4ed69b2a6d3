package retry

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"
)

// maxValueLen bounds every header value the parsers accept. The longest
// legitimate one, an RFC 850 date or an RFC 3339 timestamp with a fraction,
// is under 40 bytes; the bound keeps the parsers' work constant.
const maxValueLen = 64

// maxPause is where every parsed wait saturates: about 100 years, beyond
// any pause a caller honours (it caps with its own limit) and well inside
// time.Duration's ~292 years, so nothing wraps.
const maxPause = 100 * 365 * 24 * time.Hour

// ParseRetryAfter parses a Retry-After value (RFC 9110 section 10.2.3):
// delta-seconds ("120"), a decimal number of seconds ("1.5", which some
// servers send and the SDKs accept), or an HTTP-date in any of the three
// formats http.ParseTime accepts, measured from now (a date in the past is
// 0). ok is false for anything else: empty, garbage, signs, exponents,
// NaN, Inf, or more than 64 bytes. Surrounding spaces and tabs are ignored
// (RFC 9110 section 5.5). Huge values saturate at about 100 years.
//
// It runs only on 429 and 5xx answers, so it leaves the parsing to the
// standard library at the cost of an allocation or two.
func ParseRetryAfter(v []byte, now time.Time) (time.Duration, bool) {
	if len(v) > maxValueLen {
		return 0, false
	}
	v = trimOWS(v)
	if len(v) == 0 {
		return 0, false
	}
	if v[0] == '.' || isDigit(v[0]) {
		return parseNumber(v, time.Second)
	}
	t, err := http.ParseTime(string(v))
	if err != nil {
		return 0, false
	}
	return until(t, now), true
}

// ParseRetryAfterMs parses a retry-after-ms value (Azure OpenAI, and what
// the OpenAI and Anthropic SDKs read first): a non-negative number of
// milliseconds, integer ("1500") or decimal ("0.5"). ok is false for
// anything else, as for [ParseRetryAfter].
func ParseRetryAfterMs(v []byte) (time.Duration, bool) {
	if len(v) > maxValueLen {
		return 0, false
	}
	return parseNumber(trimOWS(v), time.Millisecond)
}

// ParseReset parses a rate-limit reset value: OpenAI's Go-style durations
// ("6m0s", "20ms", "1s", "1h2m3.5s", read by time.ParseDuration), a bare
// number of seconds ("30", "0.25", as OpenAI-compatible providers such as
// OpenRouter send), or Anthropic's RFC 3339 timestamps
// ("2026-11-23T12:00:05Z"), measured from now (a time in the past is 0).
// ok is false for negative durations and anything malformed or longer than
// 64 bytes. Values beyond about 100 years saturate there.
func ParseReset(v []byte, now time.Time) (time.Duration, bool) {
	if len(v) > maxValueLen {
		return 0, false
	}
	v = trimOWS(v)
	if len(v) == 0 {
		return 0, false
	}
	if d, ok := parseNumber(v, time.Second); ok {
		return d, true
	}
	s := string(v)
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return 0, false
		}
		return min(d, maxPause), true
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, false
	}
	return until(t, now), true
}

// parseNumber reads a plain non-negative decimal number of units (digits
// with at most one '.'; no sign, exponent, NaN or Inf), saturating at
// maxPause.
func parseNumber(v []byte, unit time.Duration) (time.Duration, bool) {
	if len(v) == 0 || len(v) == 1 && v[0] == '.' {
		return 0, false
	}
	dots := 0
	for _, c := range v {
		switch {
		case c == '.':
			dots++
		case !isDigit(c):
			return 0, false
		}
	}
	if dots > 1 {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, false
	}
	ns := f * float64(unit)
	if ns >= float64(maxPause) || math.IsInf(f, 0) {
		return maxPause, true
	}
	return time.Duration(ns), true
}

// ParseRemaining parses an x-ratelimit-remaining-* or
// anthropic-ratelimit-*-remaining value: a non-negative decimal integer
// that fits an int64. ok is false for anything else, including signs,
// decimals and values over 64 bytes. It runs on every response, so it
// does not allocate.
func ParseRemaining(v []byte) (int64, bool) {
	if len(v) > maxValueLen {
		return 0, false
	}
	v = trimOWS(v)
	if len(v) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// until is t−now clamped to [0, maxPause]. Time.Sub already saturates at
// the ends of the Duration range instead of wrapping.
func until(t, now time.Time) time.Duration {
	return min(max(t.Sub(now), 0), maxPause)
}

// trimOWS drops the optional whitespace (SP, HTAB) around a field value
// (RFC 9110 section 5.5). fasthttp trims already; other Header
// implementations may not.
func trimOWS(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
