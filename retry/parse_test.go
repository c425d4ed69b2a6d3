package retry

import (
	"math"
	"strings"
	"testing"
	"time"
)

const (
	digits64 = "1234567890123456789012345678901234567890123456789012345678901234"
	digits65 = digits64 + "5"
)

func TestParseRetryAfter(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		// delta-seconds
		{"120", 120 * time.Second, true},
		{"0", 0, true},
		{"007", 7 * time.Second, true},
		{" 7 ", 7 * time.Second, true},
		{"\t7\t", 7 * time.Second, true},
		{"1.5", 1500 * time.Millisecond, true},
		{"0.5", 500 * time.Millisecond, true},
		{"0.000000001", time.Nanosecond, true},
		{"0.0000000019", time.Nanosecond, true}, // truncated, like ParseDuration
		{"5.", 5 * time.Second, true},
		{".5", 500 * time.Millisecond, true},
		{"3153600000", maxPause, true},                       // exactly 100 years
		{"3153600001", maxPause, true},                       // saturates
		{"9223372036854775807", maxPause, true},              // would wrap a Duration
		{"99999999999999999999999999999999", maxPause, true}, // beyond uint64
		{digits64, maxPause, true},
		{digits65, 0, false},
		{"", 0, false},
		{"   ", 0, false},
		{".", 0, false},
		{"-1", 0, false},
		{"+5", 0, false},
		{"1e3", 0, false},
		{"1.5s", 0, false},
		{"1,5", 0, false},
		{"1.2.3", 0, false},
		{"12 3", 0, false},
		{"NaN", 0, false},
		{"Inf", 0, false},
		{"inf", 0, false},
		{"0x10", 0, false},
		{"soon", 0, false},

		// HTTP-dates, measured from epoch (Mon, 23 Nov 2026 12:00:00 GMT)
		{"Mon, 23 Nov 2026 12:00:30 GMT", 30 * time.Second, true},
		{"Monday, 23-Nov-26 12:00:30 GMT", 30 * time.Second, true},
		{"Mon Nov 23 12:00:30 2026", 30 * time.Second, true},
		{"Mon, 23 Nov 2026 12:00:00 GMT", 0, true},
		{"Mon, 23 Nov 2026 11:59:00 GMT", 0, true}, // in the past
		{"Thu, 01 Jan 1970 00:00:00 GMT", 0, true},
		{"Tue, 24 Nov 2026 12:00:00 GMT", 24 * time.Hour, true},
		{"Fri, 31 Dec 9999 23:59:59 GMT", maxPause, true},
		// time.Parse's leniencies, which http.ParseTime inherits
		{"mon, 23 NOV 2026 12:00:30 GMT", 30 * time.Second, true},
		{"Sun, 23 Nov 2026 12:00:30 GMT", 30 * time.Second, true}, // weekday unchecked
		{"Mon,   23  Nov 2026 12:00:30 GMT", 30 * time.Second, true},
		{"Mon, 23 Nov 2026 12:00:30.5 GMT", 30500 * time.Millisecond, true},
		{"Mon, 23 Nov 2026 12:00:30,25 GMT", 30250 * time.Millisecond, true},
		{"Tue, 24 Nov 2026 1:00:00 GMT", 13 * time.Hour, true},
		{"Mon Nov  3 12:00:30 2026", 0, true},
		{"Mon Nov 3 12:00:30 2026", 0, true},
		{"Mon Nov 03 12:00:30 2026", 0, true},
		{"Tuesday, 29-Feb-28 00:00:00 GMT", time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC).Sub(epoch), true},
		{"Monday, 23-Nov-26 12:00:30 UTC", 30 * time.Second, true},
		{" Mon, 23 Nov 2026 12:00:30 GMT\t", 30 * time.Second, true},
		// malformed dates
		{"Mon, 23 Nov 2026 12:00:30 UTC", 0, false}, // IMF-fixdate says GMT
		{"Mon, 23 Nov 2026 12:00:30 gmt", 0, false},
		{"Mon, 23 Nov 2026 12:00:30", 0, false},
		{"Mon, 23 Nov 2026 12:00:30 GMT+1", 0, false},
		{"Monday, 23-Nov-26 12:00:30 PST", 30 * time.Second, true},   // http.ParseTime: an unknown zone name reads as UTC
		{"Monday, 23-Nov-26 12:00:30 GMT+1", 30 * time.Second, true}, // http.ParseTime reads the zone as a name
		{"Mon, 23 Nov 2026 24:00:00 GMT", 0, false},
		{"Mon, 23 Nov 2026 12:60:00 GMT", 0, false},
		{"Mon, 23 Nov 2026 12:00:60 GMT", 0, false},
		{"Mon, 31 Nov 2026 12:00:00 GMT", 0, false},
		{"Mon, 29 Feb 2027 12:00:00 GMT", 0, false},
		{"Mon, 00 Nov 2026 12:00:00 GMT", 0, false},
		{"Mon, 3 Nov 2026 12:00:00 GMT", 0, false},
		{"Mon, 23 Nov 26 12:00:00 GMT", 0, false},
		{"Mon,23 Nov 2026 12:00:30 GMT", 0, false},
		{"Mon, 23 Nov 2026 12:00:30 GMTX", 0, false},
		{"Xyz, 23 Nov 2026 12:00:30 GMT", 0, false},
		{"Mon, 23 Xyz 2026 12:00:30 GMT", 0, false},
		{"Mon Nov 23 12:00:30 2026 GMT", 0, false},
		{"2026-11-23T12:00:30Z", 0, false}, // RFC 3339 is not an HTTP-date
		{"Mon, 23 Nov 2026 12:00:30 GMT" + strings.Repeat(" ", 40), 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseRetryAfter([]byte(tt.in), epoch)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseRetryAfterMs(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1500", 1500 * time.Millisecond, true},
		{"0", 0, true},
		{"0.5", 500 * time.Microsecond, true},
		{"2.25", 2250 * time.Microsecond, true},
		{" 20 ", 20 * time.Millisecond, true},
		{"3153600000000", maxPause, true},
		{"99999999999999999999999", maxPause, true},
		{digits64, maxPause, true},
		{digits65, 0, false},
		{"", 0, false},
		{"-5", 0, false},
		{"+5", 0, false},
		{"1500ms", 0, false},
		{"1e3", 0, false},
		{"NaN", 0, false},
		{"Mon, 23 Nov 2026 12:00:30 GMT", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseRetryAfterMs([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseRetryAfterMs(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseReset(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		// OpenAI's Go-style durations, as captured (FIELD-NOTES 2.1)
		{"6m0s", 6 * time.Minute, true},
		{"20ms", 20 * time.Millisecond, true},
		{"1s", time.Second, true},
		{"12ms", 12 * time.Millisecond, true},
		{"9ms", 9 * time.Millisecond, true},
		{"1h2m3.5s", time.Hour + 2*time.Minute + 3500*time.Millisecond, true},
		{"0.5s", 500 * time.Millisecond, true},
		{"1.5h", 90 * time.Minute, true},
		{"100ns", 100, true},
		{"2us", 2 * time.Microsecond, true},
		{"2µs", 2 * time.Microsecond, true},
		{"2μs", 2 * time.Microsecond, true},
		{"+3s", 3 * time.Second, true},
		{"0s", 0, true},
		{"-0s", 0, true}, // ParseDuration says 0; zero is not negative
		{"-0", 0, true},
		{".5s", 500 * time.Millisecond, true},
		{"5.s", 5 * time.Second, true},
		// bare seconds (OpenRouter and other OpenAI-compatible providers)
		{"30", 30 * time.Second, true},
		{"0.25", 250 * time.Millisecond, true},
		{"0", 0, true},
		{" 30 ", 30 * time.Second, true},
		// Anthropic's RFC 3339 timestamps, measured from epoch
		{"2026-11-23T12:00:05Z", 5 * time.Second, true},
		{"2026-11-23T12:00:05.5Z", 5500 * time.Millisecond, true},
		{"2026-11-23T13:00:05+01:00", 5 * time.Second, true},
		{"2026-11-23T07:00:05-05:00", 5 * time.Second, true},
		{"2026-11-23T11:00:00Z", 0, true}, // in the past
		{"2025-08-21T12:40:59Z", 0, true},
		{"9999-12-31T23:59:59Z", maxPause, true},
		// time.Parse(time.RFC3339)'s leniencies
		{"2026-11-23T12:00:05,5Z", 5500 * time.Millisecond, true},
		{"2026-11-24T1:00:00Z", 13 * time.Hour, true},
		{"2026-11-24T12:00:00+24:00", 0, true},
		{"2026-11-23T12:00:00-00:60", time.Hour, true},
		// saturation
		{"2562047h47m16.854775807s", maxPause, true}, // the largest Duration
		{"2562048h", 0, false},                       // beyond time.Duration: ParseDuration rejects it
		// time.ParseDuration's running sum wraps here (Go 1.26); a zero
		// pause is harmless, and max_pause caps every pause anyway.
		{"9223372036854775808ns9223372036854775808ns", 0, true},
		{"876000h", maxPause, true},
		{"875999h", 875999 * time.Hour, true},
		{"99999999999999999999", maxPause, true},
		{digits64, maxPause, true},
		// malformed
		{digits65, 0, false},
		{"", 0, false},
		{"s", 0, false},
		{".s", 0, false},
		{".", 0, false},
		{"-1s", 0, false},
		{"-30", 0, false},
		{"-9223372036854775808ns", 0, false},
		{"1h30", 0, false},
		{"1x", 0, false},
		{"1S", 0, false},
		{"1 s", 0, false},
		{"1.2.3s", 0, false},
		{"NaN", 0, false},
		{"Inf", 0, false},
		{"1e3s", 0, false},
		{"2026-11-23 12:00:05Z", 0, false},
		{"2026-11-23t12:00:05z", 0, false},
		{"2026-11-23T12:00:05", 0, false},
		{"2026-11-23T12:00:05+0100", 0, false},
		{"2026-11-23T12:00:05+25:00", 0, false},
		{"2026-02-30T12:00:05Z", 0, false},
		{"2026-13-01T12:00:05Z", 0, false},
		{"2026-11-23", 0, false},
		{"2026-", 0, false},
		{"Mon, 23 Nov 2026 12:00:30 GMT", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseReset([]byte(tt.in), epoch)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseReset(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseRemaining(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"42", 42, true},
		{"29000", 29000, true},
		{" 7 ", 7, true},
		{"007", 7, true},
		{"9223372036854775807", math.MaxInt64, true},
		{"9223372036854775808", 0, false},
		{"99999999999999999999", 0, false},
		{"", 0, false},
		{"-1", 0, false}, // Azure has sent -1
		{"+1", 0, false},
		{"1.5", 0, false},
		{"1e3", 0, false},
		{"1 000", 0, false},
		{"abc", 0, false},
		{strings.Repeat("0", 64), 0, true},
		{strings.Repeat("0", 65), 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseRemaining([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseRemaining(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// TestParsersNilInput: a missing header reaches the parsers as nil.
func TestParsersNilInput(t *testing.T) {
	if d, ok := ParseRetryAfter(nil, epoch); ok || d != 0 {
		t.Errorf("ParseRetryAfter(nil) = %v, %v; want 0, false", d, ok)
	}
	if d, ok := ParseRetryAfterMs(nil); ok || d != 0 {
		t.Errorf("ParseRetryAfterMs(nil) = %v, %v; want 0, false", d, ok)
	}
	if d, ok := ParseReset(nil, epoch); ok || d != 0 {
		t.Errorf("ParseReset(nil) = %v, %v; want 0, false", d, ok)
	}
	if n, ok := ParseRemaining(nil); ok || n != 0 {
		t.Errorf("ParseRemaining(nil) = %v, %v; want 0, false", n, ok)
	}
}
