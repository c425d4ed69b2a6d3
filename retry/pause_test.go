package retry

import (
	"testing"
	"time"
)

func TestPause(t *testing.T) {
	tests := []struct {
		name string
		h    Header
		want time.Duration
		ok   bool
	}{
		{"nil header", nil, 0, false},
		{"no headers", hdr(), 0, false},

		// Precedence: retry-after-ms, then Retry-After, then resets.
		{"retry-after-ms first", hdr(
			"retry-after", "20",
			"retry-after-ms", "1500",
			"x-ratelimit-remaining-tokens", "0", "x-ratelimit-reset-tokens", "6m0s",
		), 1500 * time.Millisecond, true},
		{"Retry-After over resets", hdr(
			"Retry-After", "20",
			"x-ratelimit-remaining-tokens", "0", "x-ratelimit-reset-tokens", "6m0s",
		), 20 * time.Second, true},
		{"Retry-After HTTP-date", hdr("Retry-After", "Mon, 23 Nov 2026 12:02:00 GMT"), 2 * time.Minute, true},
		{"a shorter Retry-After still wins", hdr(
			"retry-after", "1",
			"anthropic-ratelimit-tokens-remaining", "0", "anthropic-ratelimit-tokens-reset", "2026-11-23T12:00:30Z",
		), time.Second, true},
		{"retry-after-ms 0 is an answer", hdr("retry-after-ms", "0", "retry-after", "20"), 0, true},
		{"malformed retry-after-ms falls through", hdr("retry-after-ms", "soon", "retry-after", "20"), 20 * time.Second, true},
		{"malformed Retry-After falls through", hdr(
			"retry-after", "later",
			"x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "1s",
		), time.Second, true},
		{"Retry-After in the past", hdr("retry-after", "Mon, 23 Nov 2026 11:00:00 GMT"), 0, true},

		// OpenAI: only the exhausted dimension counts.
		{"OpenAI tokens exhausted", openAI429, 6 * time.Minute, true},
		{"OpenAI requests exhausted", hdr(
			"x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "20ms",
			"x-ratelimit-remaining-tokens", "1500", "x-ratelimit-reset-tokens", "6m0s",
		), 20 * time.Millisecond, true},
		{"OpenAI both exhausted: the longest", hdr(
			"x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "12ms",
			"x-ratelimit-remaining-tokens", "0", "x-ratelimit-reset-tokens", "1s",
		), time.Second, true},
		{"OpenAI both exhausted, requests longer", hdr(
			"x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "1m0s",
			"x-ratelimit-remaining-tokens", "0", "x-ratelimit-reset-tokens", "9ms",
		), time.Minute, true},
		{"OpenAI nothing exhausted", hdr(
			"x-ratelimit-remaining-requests", "499", "x-ratelimit-reset-requests", "120ms",
			"x-ratelimit-remaining-tokens", "1", "x-ratelimit-reset-tokens", "6m0s",
		), 0, false},
		{"OpenAI reset without remaining", hdr("x-ratelimit-reset-tokens", "6m0s"), 0, false},
		{"OpenAI exhausted without reset", hdr("x-ratelimit-remaining-tokens", "0"), 0, false},
		{"OpenAI malformed reset is skipped", hdr(
			"x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "soon",
			"x-ratelimit-remaining-tokens", "0", "x-ratelimit-reset-tokens", "2s",
		), 2 * time.Second, true},
		{"OpenAI malformed remaining is not exhausted", hdr(
			"x-ratelimit-remaining-tokens", "-1", "x-ratelimit-reset-tokens", "2s",
		), 0, false},
		{"OpenAI bare-seconds reset", hdr(
			"x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "30",
		), 30 * time.Second, true},

		// Anthropic: RFC 3339 resets, four dimensions.
		{"Anthropic tokens exhausted", hdr(
			"anthropic-ratelimit-requests-remaining", "49", "anthropic-ratelimit-requests-reset", "2026-11-23T12:00:01Z",
			"anthropic-ratelimit-tokens-remaining", "0", "anthropic-ratelimit-tokens-reset", "2026-11-23T12:00:09Z",
		), 9 * time.Second, true},
		{"Anthropic several exhausted: the longest", hdr(
			"anthropic-ratelimit-requests-remaining", "0", "anthropic-ratelimit-requests-reset", "2026-11-23T12:00:01Z",
			"anthropic-ratelimit-tokens-remaining", "0", "anthropic-ratelimit-tokens-reset", "2026-11-23T12:00:09Z",
			"anthropic-ratelimit-input-tokens-remaining", "0", "anthropic-ratelimit-input-tokens-reset", "2026-11-23T12:00:40Z",
			"anthropic-ratelimit-output-tokens-remaining", "0", "anthropic-ratelimit-output-tokens-reset", "2026-11-23T12:00:20Z",
		), 40 * time.Second, true},
		{"Anthropic output tokens exhausted", hdr(
			"anthropic-ratelimit-input-tokens-remaining", "1000", "anthropic-ratelimit-input-tokens-reset", "2026-11-23T12:00:40Z",
			"anthropic-ratelimit-output-tokens-remaining", "0", "anthropic-ratelimit-output-tokens-reset", "2026-11-23T12:00:20Z",
		), 20 * time.Second, true},
		{"Anthropic reset in the past", hdr(
			"anthropic-ratelimit-tokens-remaining", "0", "anthropic-ratelimit-tokens-reset", "2026-11-23T11:59:00Z",
		), 0, true},
		{"Anthropic nothing exhausted", hdr(
			"anthropic-ratelimit-requests-remaining", "49", "anthropic-ratelimit-requests-reset", "2026-11-23T12:00:01Z",
		), 0, false},
		{"OpenAI and Anthropic exhausted: the longest", hdr(
			"x-ratelimit-remaining-tokens", "0", "x-ratelimit-reset-tokens", "3s",
			"anthropic-ratelimit-tokens-remaining", "0", "anthropic-ratelimit-tokens-reset", "2026-11-23T12:00:04Z",
		), 4 * time.Second, true},

		// Saturation: never negative, never over the cap, never wrapped.
		{"huge Retry-After", hdr("retry-after", "99999999999999999999"), maxPause, true},
		{"huge reset", hdr("x-ratelimit-remaining-tokens", "0", "x-ratelimit-reset-tokens", "99999h"), 99999 * time.Hour, true},
		{"unrepresentable reset", hdr("x-ratelimit-remaining-tokens", "0", "x-ratelimit-reset-tokens", "9999999999h"), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Pause(tt.h, epoch)
			if got != tt.want || ok != tt.ok {
				t.Errorf("Pause() = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestRemaining(t *testing.T) {
	type result struct {
		req   int64
		reqOK bool
		tok   int64
		tokOK bool
	}
	tests := []struct {
		name string
		h    Header
		want result
	}{
		{"nil header", nil, result{}},
		{"none", hdr(), result{}},
		{"OpenAI", openAI429, result{499, true, 0, true}},
		{"OpenAI requests only", hdr("x-ratelimit-remaining-requests", "7"), result{7, true, 0, false}},
		{"Anthropic", anthropic429, result{49, true, 0, true}},
		{"Anthropic smallest token bucket", hdr(
			"anthropic-ratelimit-requests-remaining", "50",
			"anthropic-ratelimit-tokens-remaining", "90000",
			"anthropic-ratelimit-input-tokens-remaining", "80000",
			"anthropic-ratelimit-output-tokens-remaining", "12000",
		), result{50, true, 12000, true}},
		{"Anthropic input tokens only", hdr("anthropic-ratelimit-input-tokens-remaining", "80000"), result{0, false, 80000, true}},
		{"Anthropic malformed bucket is skipped", hdr(
			"anthropic-ratelimit-tokens-remaining", "many",
			"anthropic-ratelimit-output-tokens-remaining", "12000",
		), result{0, false, 12000, true}},
		{"OpenAI wins over Anthropic", hdr(
			"x-ratelimit-remaining-tokens", "5000",
			"anthropic-ratelimit-tokens-remaining", "10",
		), result{0, false, 5000, true}},
		{"malformed OpenAI falls back to Anthropic", hdr(
			"x-ratelimit-remaining-requests", "-1",
			"anthropic-ratelimit-requests-remaining", "3",
			"x-ratelimit-remaining-tokens", "-1",
			"anthropic-ratelimit-tokens-remaining", "4",
		), result{3, true, 4, true}},
		{"malformed", hdr(
			"x-ratelimit-remaining-requests", "1.5",
			"x-ratelimit-remaining-tokens", "-1",
		), result{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got result
			got.req, got.reqOK, got.tok, got.tokOK = Remaining(tt.h)
			if got != tt.want {
				t.Errorf("Remaining() = %+v, want %+v", got, tt.want)
			}
		})
	}
}
