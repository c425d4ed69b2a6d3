package retry

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Seeds shared by the parser fuzzers: real values, the leniencies of the
// oracles, and the edges of the overflow handling.
var fuzzSeeds = []string{
	"120", "0", "1.5", "0.5", ".5", "5.", "-1", "+5", "1e3", "NaN", "Inf", " 7 ",
	"99999999999999999999", "3153600000", "9223372036854775807", "18446744073709551616",
	"6m0s", "20ms", "1s", "12ms", "9ms", "1h2m3.5s", "2µs", "2μs", "-0s", "+3s", "1h30",
	"2562047h47m16.854775807s", "9223372036854775808ns9223372036854775808ns",
	"-9223372036854775808ns", "0.0000000019s", "1.123456789123456789123h",
	"Mon, 23 Nov 2026 12:00:30 GMT", "Monday, 23-Nov-26 12:00:30 GMT", "Mon Nov 23 12:00:30 2026",
	"mon, 23 nov 2026 1:00:30.123456789999 GMT", "Monday, 23-Nov-+5 12:00:30 UTC",
	"Monday, 23-Nov-26 12:00:30 PST", "Mon Nov  3 12:00:30 2026", "Fri, 31 Dec 9999 23:59:59 GMT",
	"Mon, 29 Feb 2027 12:00:00 GMT", "Tuesday, 29-Feb-28 00:00:00 GMT",
	"2026-11-23T12:00:05Z", "2026-11-23T12:00:05.5+01:00", "2026-11-24T1:00:00,5-24:60",
	"0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-02-29T00:00:00Z",
}

// allDigits reports whether s is one or more ASCII digits.
func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// wantSeconds is strconv's reading of an all-digit value in unit,
// saturated at maxPause.
func wantSeconds(s string, unit time.Duration) time.Duration {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > uint64(maxPause/unit) {
		return maxPause
	}
	return min(time.Duration(n)*unit, maxPause)
}

// checkRange fails unless d, ok is a well-formed parser result.
func checkRange(t *testing.T, fn, s string, d time.Duration, ok bool) {
	t.Helper()
	if !ok && d != 0 {
		t.Fatalf("%s(%q) = %v, false; want 0 when not ok", fn, s, d)
	}
	if d < 0 || d > maxPause {
		t.Fatalf("%s(%q) = %v, want in [0, %v]", fn, s, d, maxPause)
	}
	if len(s) > maxValueLen && ok {
		t.Fatalf("%s(%d bytes) accepted an overlong value", fn, len(s))
	}
}

// numeric reports whether s is a plain decimal number: digits with at most
// one '.', and not just the dot.
func numeric(s string) bool {
	return s != "" && s != "." && strings.Trim(s, "0123456789.") == "" && strings.Count(s, ".") <= 1
}

// wantNumber is strconv's reading of a plain decimal number in unit,
// saturated at maxPause.
func wantNumber(s string, unit time.Duration) time.Duration {
	f, _ := strconv.ParseFloat(s, 64)
	if ns := f * float64(unit); ns < float64(maxPause) {
		return time.Duration(ns)
	}
	return maxPause
}

// FuzzParseRetryAfter holds ParseRetryAfter to strconv for numbers and to
// http.ParseTime for dates, in both directions: every value it accepts is
// one of the two, and every date http.ParseTime reads it reads the same.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(checkRetryAfter)
}

// checkRetryAfter is FuzzParseRetryAfter's property for one input.
func checkRetryAfter(t *testing.T, s string) {
	got, ok := ParseRetryAfter([]byte(s), epoch)
	checkRange(t, "ParseRetryAfter", s, got, ok)
	if len(s) > maxValueLen {
		return
	}
	trimmed := strings.Trim(s, " \t")
	if allDigits(s) {
		if want := wantSeconds(s, time.Second); !ok || got != want {
			t.Fatalf("ParseRetryAfter(%q) = %v, %v; want %v (strconv)", s, got, ok, want)
		}
		return
	}
	if numeric(trimmed) {
		if want := wantNumber(trimmed, time.Second); !ok || got != want {
			t.Fatalf("ParseRetryAfter(%q) = %v, %v; want %v (strconv)", s, got, ok, want)
		}
		return
	}
	pt, perr := http.ParseTime(trimmed)
	switch {
	case perr == nil && (!ok || got != until(pt, epoch)):
		t.Fatalf("ParseRetryAfter(%q) = %v, %v; want %v (http.ParseTime: %v)", s, got, ok, until(pt, epoch), pt)
	case perr != nil && ok:
		t.Fatalf("ParseRetryAfter(%q) = %v, true; want a rejection: neither a number nor a date (%v)", s, got, perr)
	}
}

// FuzzParseRetryAfterMs holds ParseRetryAfterMs to strconv.
func FuzzParseRetryAfterMs(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := ParseRetryAfterMs([]byte(s))
		checkRange(t, "ParseRetryAfterMs", s, got, ok)
		if len(s) > maxValueLen {
			return
		}
		trimmed := strings.Trim(s, " \t")
		switch {
		case numeric(trimmed):
			if want := wantNumber(trimmed, time.Millisecond); !ok || got != want {
				t.Fatalf("ParseRetryAfterMs(%q) = %v, %v; want %v (strconv)", s, got, ok, want)
			}
		case ok:
			t.Fatalf("ParseRetryAfterMs(%q) = %v, true; want false for a non-number", s, got)
		}
	})
}

// FuzzParseReset holds ParseReset to strconv for bare numbers, to
// time.ParseDuration for durations (the same nanoseconds for values >= 0,
// a rejection for negative ones) and to time.Parse(time.RFC3339Nano) for
// timestamps; anything else is rejected.
func FuzzParseReset(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(checkReset)
}

// checkReset is FuzzParseReset's property for one input.
func checkReset(t *testing.T, s string) {
	got, ok := ParseReset([]byte(s), epoch)
	checkRange(t, "ParseReset", s, got, ok)
	if len(s) > maxValueLen {
		return
	}
	trimmed := strings.Trim(s, " \t")
	if numeric(trimmed) {
		if want := wantNumber(trimmed, time.Second); !ok || got != want {
			t.Fatalf("ParseReset(%q) = %v, %v; want %v (strconv)", s, got, ok, want)
		}
		return
	}
	if d, err := time.ParseDuration(trimmed); err == nil {
		switch {
		case d < 0 && ok:
			t.Fatalf("ParseReset(%q) = %v, true; want a rejection of a negative duration", s, got)
		case d >= 0 && (!ok || got != min(d, maxPause)):
			t.Fatalf("ParseReset(%q) = %v, %v; want %v (ParseDuration)", s, got, ok, min(d, maxPause))
		}
		return
	}
	pt, perr := time.Parse(time.RFC3339Nano, trimmed)
	switch {
	case perr == nil && (!ok || got != until(pt, epoch)):
		t.Fatalf("ParseReset(%q) = %v, %v; want %v (time.Parse: %v)", s, got, ok, until(pt, epoch), pt)
	case perr != nil && ok:
		t.Fatalf("ParseReset(%q) = %v, true; want a rejection: no number, duration or timestamp", s, got)
	}
}

// FuzzParseRemaining holds ParseRemaining to strconv.ParseInt.
func FuzzParseRemaining(f *testing.F) {
	for _, s := range []string{"0", "42", "-1", "+1", "1.5", " 7 ", "9223372036854775807", "9223372036854775808", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := ParseRemaining([]byte(s))
		if !ok && got != 0 || got < 0 {
			t.Fatalf("ParseRemaining(%q) = %v, %v", s, got, ok)
		}
		trimmed := strings.Trim(s, " \t")
		if len(s) > maxValueLen || !allDigits(trimmed) {
			if ok {
				t.Fatalf("ParseRemaining(%q) = %v, true; want false", s, got)
			}
			return
		}
		want, err := strconv.ParseInt(trimmed, 10, 64)
		if ok != (err == nil) || got != want && ok {
			t.Fatalf("ParseRemaining(%q) = %v, %v; strconv.ParseInt = %v, %v", s, got, ok, want, err)
		}
	})
}

// FuzzClassify feeds arbitrary statuses, headers and bodies: Classify must
// not panic, and its verdict must be well formed and honour x-should-retry.
func FuzzClassify(f *testing.F) {
	f.Add(429, "", "20", "", "0", "6m0s", "0", "2026-11-23T12:00:09Z", []byte(openAIRateLimitBody))
	f.Add(429, "false", "", "1500", "", "", "", "", []byte(openAIQuotaBody))
	f.Add(429, "", "", "", "", "", "", "", []byte(geminiPerMinuteBody))
	f.Add(429, "", "", "", "", "", "", "", []byte(geminiPerDayBody))
	f.Add(529, "", "10", "", "", "", "", "", []byte(anthropicOverloadedBody))
	f.Add(503, "true", "Mon, 23 Nov 2026 12:00:30 GMT", "", "", "", "", "", []byte(nil))
	f.Add(400, "true", "5", "", "", "", "", "", []byte(nil))
	f.Add(501, "", "", "", "", "", "", "", []byte(nil))
	f.Add(200, "false", "", "", "", "", "", "", []byte(nil))
	f.Fuzz(func(t *testing.T, status int, should, ra, raMs, remaining, reset, aRemaining, aReset string, body []byte) {
		status = 100 + int(uint(status)%500)
		h := hdr(
			"x-should-retry", should,
			"retry-after", ra,
			"retry-after-ms", raMs,
			"x-ratelimit-remaining-tokens", remaining,
			"x-ratelimit-reset-tokens", reset,
			"anthropic-ratelimit-output-tokens-remaining", aRemaining,
			"anthropic-ratelimit-output-tokens-reset", aReset,
		)
		v := Classify(status, h, body, epoch)
		if v.Kind < Success || v.Kind > Transient {
			t.Fatalf("Classify(%d) = %+v: kind out of range", status, v)
		}
		if v.Pause < 0 || v.Pause > maxPause {
			t.Fatalf("Classify(%d) = %+v: pause out of [0, %v]", status, v, maxPause)
		}
		switch v.Reason {
		case "", reasonRateLimited, reasonOverloaded, reasonQuota, reason5xx, reason4xx, reason408, reason409:
		default:
			t.Fatalf("Classify(%d) = %+v: unknown reason", status, v)
		}
		if (v.Kind == Success) != (v.Reason == "") || (v.Kind == Success) != (status < 400) {
			t.Fatalf("Classify(%d) = %+v: success must be exactly the statuses under 400, without a reason", status, v)
		}
		if (v.Kind == Success || v.Kind == QuotaExhausted) && v.Pause != 0 {
			t.Fatalf("Classify(%d) = %+v: pause on a verdict that never waits", status, v)
		}
		if v.Kind == QuotaExhausted && status != 429 {
			t.Fatalf("Classify(%d) = %+v: only a 429 can be quota exhausted", status, v)
		}
		if should == "false" && (v.Kind == RateLimited || v.Kind == Transient) {
			t.Fatalf("Classify(%d, x-should-retry false) = %+v: retried", status, v)
		}
		if should == "true" && status >= 400 && v.Kind == Final {
			t.Fatalf("Classify(%d, x-should-retry true) = %+v: not retried", status, v)
		}
		if d, pok := Pause(h, epoch); v.Kind == RateLimited && pok && v.Pause != d {
			t.Fatalf("Classify(%d) = %+v, but Pause = %v", status, v, d)
		}
	})
}

// FuzzBackoff checks Backoff's bounds for any inputs against a float64
// computation of the ceiling, which cannot overflow.
func FuzzBackoff(f *testing.F) {
	f.Add(1, int64(500*time.Millisecond), int64(8*time.Second), 0.5)
	f.Add(math.MaxInt, int64(math.MaxInt64), int64(math.MaxInt64), math.Nextafter(1, 0))
	f.Add(64, int64(1), int64(math.MaxInt64), 0.999)
	f.Fuzz(func(t *testing.T, n int, base, maxWait int64, u float64) {
		got := Backoff(n, time.Duration(base), time.Duration(maxWait), u)
		if base <= 0 || maxWait <= 0 || !(u > 0) {
			if got != 0 {
				t.Fatalf("Backoff(%d, %d, %d, %v) = %v, want 0", n, base, maxWait, u, got)
			}
			return
		}
		ceiling := math.Min(float64(maxWait), float64(base)*math.Pow(2, float64(max(n, 1)-1)))
		if got < 0 || float64(got) > ceiling {
			t.Fatalf("Backoff(%d, %d, %d, %v) = %v, want in [0, %v]", n, base, maxWait, u, got, ceiling)
		}
	})
}

// TestParsersAgreeWithStdlib runs the fuzz properties over every one-byte
// edit (replace, insert, delete) of real dates and timestamps, which
// reaches the corners of their syntax more surely than random search.
func TestParsersAgreeWithStdlib(t *testing.T) {
	seeds := []string{
		"Mon, 23 Nov 2026 12:00:30 GMT",
		"Mon, 23 Nov 2026 9:00:30.25 GMT",
		"Monday, 23-Nov-26 12:00:30 GMT",
		"Tuesday, 29-Feb-28 00:00:00 UTC",
		"Mon Nov 23 12:00:30 2026",
		"Mon Nov  3 12:00:30 2026",
		"Sun, 29 Feb 2032 23:59:59 GMT",
		"2026-11-23T12:00:05Z",
		"2026-11-23T12:00:05.123+01:00",
		"2028-02-29T23:59:59-24:00",
		"1h2m3.5s",
		"0.25",
	}
	alphabet := []byte("0123456789 ,.:-+TZGMTUCSPadyJnNov\t\x00\xff")
	check := func(s string) {
		t.Helper()
		checkRetryAfter(t, s)
		checkReset(t, s)
	}
	for _, seed := range seeds {
		check(seed)
		for i := 0; i <= len(seed); i++ {
			if i < len(seed) {
				check(seed[:i] + seed[i+1:])
			}
			for _, c := range alphabet {
				check(seed[:i] + string([]byte{c}) + seed[i:])
				if i < len(seed) {
					check(seed[:i] + string([]byte{c}) + seed[i+1:])
				}
			}
		}
	}
}
