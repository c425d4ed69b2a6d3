package retry

import (
	"net/http"
	"testing"
	"time"
)

// sink keeps results alive so the compiler cannot drop the calls.
var sink Verdict

func BenchmarkClassify(b *testing.B) {
	cases := []struct {
		name   string
		status int
		h      Header
		body   []byte
	}{
		{"200", 200, openAI429, nil},
		{"429 OpenAI resets", 429, openAI429, []byte(openAIRateLimitBody)},
		{"429 Anthropic Retry-After", 429, anthropic429, []byte(anthropicRateLimitBody)},
		{"429 HTTP-date", 429, hdr("retry-after", "Mon, 23 Nov 2026 12:00:30 GMT"), nil},
		{"429 OpenAI quota", 429, openAI429, []byte(openAIQuotaBody)},
		{"429 Gemini retryDelay", 429, nil, []byte(geminiPerMinuteBody)},
		{"503 Retry-After", 503, hdr("retry-after", "30"), nil},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sink = Classify(c.status, c.h, c.body, epoch)
			}
		})
	}
}

func BenchmarkPause(b *testing.B) {
	cases := []struct {
		name string
		h    Header
	}{
		{"retry-after-ms", hdr("retry-after-ms", "1500")},
		{"OpenAI resets", openAI429},
		{"Anthropic resets", hdr(
			"anthropic-ratelimit-requests-remaining", "0", "anthropic-ratelimit-requests-reset", "2026-11-23T12:00:01Z",
			"anthropic-ratelimit-tokens-remaining", "0", "anthropic-ratelimit-tokens-reset", "2026-11-23T12:00:09Z",
		)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sink.Pause, _ = Pause(c.h, epoch)
			}
		})
	}
}

// BenchmarkParsers compares each parser with the standard-library call it
// stands in for, in the same run.
func BenchmarkParsers(b *testing.B) {
	date := []byte("Mon, 23 Nov 2026 12:00:30 GMT")
	stamp := []byte("2026-11-23T12:00:09Z")
	dur := []byte("1h2m3.5s")
	b.Run("ParseRetryAfter/IMF-fixdate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sink.Pause, _ = ParseRetryAfter(date, epoch)
		}
	})
	b.Run("http.ParseTime/IMF-fixdate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			t, _ := http.ParseTime(string(date))
			sink.Pause = t.Sub(epoch)
		}
	})
	b.Run("ParseRetryAfter/delta-seconds", func(b *testing.B) {
		b.ReportAllocs()
		v := []byte("120")
		for b.Loop() {
			sink.Pause, _ = ParseRetryAfter(v, epoch)
		}
	})
	b.Run("ParseReset/RFC3339", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sink.Pause, _ = ParseReset(stamp, epoch)
		}
	})
	b.Run("time.Parse/RFC3339", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			t, _ := time.Parse(time.RFC3339, string(stamp))
			sink.Pause = t.Sub(epoch)
		}
	})
	b.Run("ParseReset/duration", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sink.Pause, _ = ParseReset(dur, epoch)
		}
	})
	b.Run("time.ParseDuration", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sink.Pause, _ = time.ParseDuration(string(dur))
		}
	})
}
