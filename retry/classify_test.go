package retry

import (
	"fmt"
	"testing"
	"time"
)

// Provider error bodies, shaped as captured in the sources FIELD-NOTES
// section 2 cites (identifiers shortened).
const (
	openAIRateLimitBody = `{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`
	openAIQuotaBody     = `{"error":{"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}`

	anthropicRateLimitBody  = `{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's rate limit. Please try again later."},"request_id":"req_011"}`
	anthropicSpendBody      = `{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's monthly spend limit. Please try again later."},"request_id":"req_011"}`
	anthropicSpendCodeBody  = `{"type":"error","error":{"type":"rate_limit_error","error_code":"enforced_spend_limit_reached","message":"You have reached your specified API usage limits. You will regain access on 2026-12-01 at 00:00 UTC."}}`
	anthropicOverloadedBody = `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`

	geminiPerMinuteBody = `{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.5-flash"},"quotaValue":"10"}]},{"@type":"type.googleapis.com/google.rpc.Help","links":[{"description":"Learn more about Gemini API quotas","url":"https://ai.google.dev/gemini-api/docs/rate-limits"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay": "31s"}]}}`
	geminiPerDayBody    = `[{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.5-pro"},"quotaValue":"100"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"40s"}]}}]`
	vertexSharedBody    = `{"error":{"code":429,"message":"Resource exhausted, please try again later.","status":"RESOURCE_EXHAUSTED"}}`
)

// openAI429 is an OpenAI token-limit 429: no Retry-After, the token
// dimension exhausted.
var openAI429 = hdr(
	"x-ratelimit-limit-requests", "500",
	"x-ratelimit-limit-tokens", "30000",
	"x-ratelimit-remaining-requests", "499",
	"x-ratelimit-remaining-tokens", "0",
	"x-ratelimit-reset-requests", "120ms",
	"x-ratelimit-reset-tokens", "6m0s",
)

// anthropic429 is an Anthropic 429: Retry-After plus RFC 3339 resets.
var anthropic429 = hdr(
	"retry-after", "7",
	"anthropic-ratelimit-requests-remaining", "49",
	"anthropic-ratelimit-requests-reset", "2026-11-23T12:00:01Z",
	"anthropic-ratelimit-tokens-remaining", "0",
	"anthropic-ratelimit-tokens-reset", "2026-11-23T12:00:09Z",
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name   string
		status int
		h      Header
		body   string
		want   Verdict
	}{
		// Success: everything not an error, and statuses outside the table.
		{"100", 100, nil, "", Verdict{}},
		{"200", 200, nil, "", Verdict{}},
		{"204", 204, nil, "", Verdict{}},
		{"301", 301, nil, "", Verdict{}},
		{"304", 304, nil, "", Verdict{}},
		{"0", 0, nil, "", Verdict{}},
		{"600", 600, nil, "", Verdict{}},
		{"200 with rate-limit headers", 200, openAI429, "", Verdict{}},
		{"200 with x-should-retry true", 200, hdr("x-should-retry", "true"), "", Verdict{}},
		{"200 with a quota body", 200, nil, openAIQuotaBody, Verdict{}},

		// Final 4xx.
		{"400", 400, nil, `{"error":{"type":"invalid_request_error"}}`, Verdict{Kind: Final, Reason: "4xx"}},
		{"401", 401, nil, "", Verdict{Kind: Final, Reason: "4xx"}},
		{"403", 403, nil, "", Verdict{Kind: Final, Reason: "4xx"}},
		{"404", 404, nil, "", Verdict{Kind: Final, Reason: "4xx"}},
		{"413", 413, nil, "", Verdict{Kind: Final, Reason: "4xx"}},
		{"418", 418, nil, "", Verdict{Kind: Final, Reason: "4xx"}},
		{"422", 422, nil, "", Verdict{Kind: Final, Reason: "4xx"}},
		{"499", 499, nil, "", Verdict{Kind: Final, Reason: "4xx"}},
		{"400 ignores Retry-After", 400, hdr("retry-after", "5"), "", Verdict{Kind: Final, Reason: "4xx"}},
		{"400 Anthropic spend cap is Final anyway", 400, nil, anthropicSpendCodeBody, Verdict{Kind: Final, Reason: "4xx"}},

		// Transient 4xx.
		{"408", 408, nil, "", Verdict{Kind: Transient, Reason: "408"}},
		{"409", 409, nil, "", Verdict{Kind: Transient, Reason: "409"}},
		{"408 with Retry-After", 408, hdr("Retry-After", "3"), "", Verdict{Kind: Transient, Pause: 3 * time.Second, Reason: "408"}},

		// Rate limits.
		{"429 bare", 429, nil, "", Verdict{Kind: RateLimited, Reason: "rate_limited"}},
		{"429 empty header", 429, hdr(), "", Verdict{Kind: RateLimited, Reason: "rate_limited"}},
		{"429 Retry-After", 429, hdr("Retry-After", "20"), "", Verdict{Kind: RateLimited, Pause: 20 * time.Second, Reason: "rate_limited"}},
		{"429 retry-after-ms over Retry-After", 429, hdr("retry-after", "2", "retry-after-ms", "1500"), "", Verdict{Kind: RateLimited, Pause: 1500 * time.Millisecond, Reason: "rate_limited"}},
		{"429 Retry-After HTTP-date", 429, hdr("Retry-After", "Mon, 23 Nov 2026 12:01:00 GMT"), "", Verdict{Kind: RateLimited, Pause: time.Minute, Reason: "rate_limited"}},
		{"429 OpenAI reset headers", 429, openAI429, openAIRateLimitBody, Verdict{Kind: RateLimited, Pause: 6 * time.Minute, Reason: "rate_limited"}},
		{"429 Anthropic", 429, anthropic429, anthropicRateLimitBody, Verdict{Kind: RateLimited, Pause: 7 * time.Second, Reason: "rate_limited"}},
		{"429 Gemini per minute: retryDelay from the body", 429, nil, geminiPerMinuteBody, Verdict{Kind: RateLimited, Pause: 31 * time.Second, Reason: "rate_limited"}},
		{"429 Gemini: a header beats retryDelay", 429, hdr("retry-after", "2"), geminiPerMinuteBody, Verdict{Kind: RateLimited, Pause: 2 * time.Second, Reason: "rate_limited"}},
		{"429 Vertex shared capacity", 429, nil, vertexSharedBody, Verdict{Kind: RateLimited, Reason: "rate_limited"}},
		{"429 malformed retryDelay", 429, nil, `{"retryDelay": 31}`, Verdict{Kind: RateLimited, Reason: "rate_limited"}},
		{"429 negative retryDelay", 429, nil, `{"retryDelay":"-31s"}`, Verdict{Kind: RateLimited, Reason: "rate_limited"}},
		{"529 overloaded", 529, hdr("retry-after", "10"), anthropicOverloadedBody, Verdict{Kind: RateLimited, Pause: 10 * time.Second, Reason: "overloaded"}},
		{"529 bare", 529, nil, "", Verdict{Kind: RateLimited, Reason: "overloaded"}},
		{"529 retryDelay is only read on 429", 529, nil, geminiPerMinuteBody, Verdict{Kind: RateLimited, Reason: "overloaded"}},

		// Quota exhausted: no retry, no pause, whatever the headers say.
		{"429 OpenAI insufficient_quota", 429, openAI429, openAIQuotaBody, Verdict{Kind: QuotaExhausted, Reason: "quota_exhausted"}},
		{"429 Anthropic monthly spend limit", 429, hdr("retry-after", "600"), anthropicSpendBody, Verdict{Kind: QuotaExhausted, Reason: "quota_exhausted"}},
		{"429 Anthropic enforced_spend_limit_reached", 429, nil, anthropicSpendCodeBody, Verdict{Kind: QuotaExhausted, Reason: "quota_exhausted"}},
		{"429 Gemini per day", 429, nil, geminiPerDayBody, Verdict{Kind: QuotaExhausted, Reason: "quota_exhausted"}},
		{"429 quota without a body (stream) is a rate limit", 429, hdr("retry-after", "1"), "", Verdict{Kind: RateLimited, Pause: time.Second, Reason: "rate_limited"}},
		{"429 quota and x-should-retry true", 429, hdr("x-should-retry", "true"), openAIQuotaBody, Verdict{Kind: QuotaExhausted, Reason: "quota_exhausted"}},
		{"429 quota and x-should-retry false", 429, hdr("x-should-retry", "false"), openAIQuotaBody, Verdict{Kind: QuotaExhausted, Reason: "quota_exhausted"}},

		// 5xx.
		{"500", 500, nil, "", Verdict{Kind: Transient, Reason: "5xx"}},
		{"502", 502, nil, "", Verdict{Kind: Transient, Reason: "5xx"}},
		{"503", 503, nil, "", Verdict{Kind: Transient, Reason: "5xx"}},
		{"504", 504, nil, "", Verdict{Kind: Transient, Reason: "5xx"}},
		{"507", 507, nil, "", Verdict{Kind: Transient, Reason: "5xx"}},
		{"599", 599, nil, "", Verdict{Kind: Transient, Reason: "5xx"}},
		{"501", 501, nil, "", Verdict{Kind: Final, Reason: "5xx"}},
		{"505", 505, nil, "", Verdict{Kind: Final, Reason: "5xx"}},
		{"503 Retry-After", 503, hdr("Retry-After", "30"), "", Verdict{Kind: Transient, Pause: 30 * time.Second, Reason: "5xx"}},
		{"503 retry-after-ms", 503, hdr("retry-after-ms", "250"), "", Verdict{Kind: Transient, Pause: 250 * time.Millisecond, Reason: "5xx"}},
		{"503 ignores reset headers", 503, openAI429, "", Verdict{Kind: Transient, Reason: "5xx"}},
		{"503 ignores a quota body", 503, nil, openAIQuotaBody, Verdict{Kind: Transient, Reason: "5xx"}},
		{"501 ignores Retry-After", 501, hdr("Retry-After", "30"), "", Verdict{Kind: Final, Reason: "5xx"}},

		// x-should-retry.
		{"400 x-should-retry true", 400, hdr("x-should-retry", "true"), "", Verdict{Kind: Transient, Reason: "4xx"}},
		{"404 x-should-retry true with Retry-After", 404, hdr("x-should-retry", "true", "retry-after", "5"), "", Verdict{Kind: Transient, Pause: 5 * time.Second, Reason: "4xx"}},
		{"501 x-should-retry true", 501, hdr("x-should-retry", "true"), "", Verdict{Kind: Transient, Reason: "5xx"}},
		{"429 x-should-retry false keeps the pause", 429, hdr("x-should-retry", "false", "retry-after", "20"), "", Verdict{Kind: Final, Pause: 20 * time.Second, Reason: "rate_limited"}},
		{"529 x-should-retry false", 529, hdr("x-should-retry", "false"), "", Verdict{Kind: Final, Reason: "overloaded"}},
		{"503 x-should-retry false keeps the pause", 503, hdr("x-should-retry", "false", "retry-after", "30"), "", Verdict{Kind: Final, Pause: 30 * time.Second, Reason: "5xx"}},
		{"408 x-should-retry false", 408, hdr("x-should-retry", "false"), "", Verdict{Kind: Final, Reason: "408"}},
		{"429 x-should-retry true", 429, hdr("x-should-retry", "true", "retry-after", "1"), "", Verdict{Kind: RateLimited, Pause: time.Second, Reason: "rate_limited"}},
		{"503 x-should-retry true", 503, hdr("x-should-retry", "true"), "", Verdict{Kind: Transient, Reason: "5xx"}},
		{"x-should-retry is case-sensitive, like the SDKs", 400, hdr("x-should-retry", "TRUE"), "", Verdict{Kind: Final, Reason: "4xx"}},
		{"x-should-retry other values are ignored", 503, hdr("x-should-retry", "no"), "", Verdict{Kind: Transient, Reason: "5xx"}},
		{"X-Should-Retry in any case", 503, hdr("X-Should-Retry", "false"), "", Verdict{Kind: Final, Reason: "5xx"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			if got := Classify(tt.status, tt.h, body, epoch); got != tt.want {
				t.Errorf("Classify(%d) = %+v, want %+v", tt.status, got, tt.want)
			}
		})
	}
}

// TestClassifyStatusFamilies sweeps every status from 100 to 599 without
// headers: each family maps to one kind, with the listed exceptions.
func TestClassifyStatusFamilies(t *testing.T) {
	for status := 100; status <= 599; status++ {
		var want Kind
		switch {
		case status == 408 || status == 409:
			want = Transient
		case status == 429 || status == 529:
			want = RateLimited
		case status == 501 || status == 505:
			want = Final
		case status >= 500:
			want = Transient
		case status >= 400:
			want = Final
		}
		if got := Classify(status, nil, nil, epoch).Kind; got != want {
			t.Errorf("Classify(%d).Kind = %v, want %v", status, got, want)
		}
	}
}

// TestClassifyQuotaMarkers checks that each marker alone makes a 429
// QuotaExhausted, and that the near misses do not.
func TestClassifyQuotaMarkers(t *testing.T) {
	tests := []struct {
		body string
		want Kind
	}{
		{`"code":"insufficient_quota"`, QuotaExhausted},
		{`"error_code":"enforced_spend_limit_reached"`, QuotaExhausted},
		{`exceed your account's monthly spend limit`, QuotaExhausted},
		{`"quotaId":"GenerateContentInputTokensPerModelPerDay-FreeTier"`, QuotaExhausted},
		{`"code":"rate_limit_exceeded"`, RateLimited},
		{`"quotaId":"GenerateRequestsPerMinutePerProjectPerModel"`, RateLimited},
		{`You exceeded your current quota`, RateLimited}, // Gemini per-minute text too
		{`"type":"rate_limit_error"`, RateLimited},
		{`per day`, RateLimited},
		{`perday`, RateLimited},
	}
	for _, tt := range tests {
		if got := Classify(429, nil, []byte(tt.body), epoch).Kind; got != tt.want {
			t.Errorf("Classify(429, %q).Kind = %v, want %v", tt.body, got, tt.want)
		}
	}

	// A marker past the scan bound is not seen.
	long := make([]byte, maxBodyScan+100)
	for i := range long {
		long[i] = ' '
	}
	copy(long[maxBodyScan+10:], "insufficient_quota")
	if got := Classify(429, nil, long, epoch).Kind; got != RateLimited {
		t.Errorf("Classify(429, marker after %d bytes).Kind = %v, want %v", maxBodyScan, got, RateLimited)
	}
}

func TestRetryDelay(t *testing.T) {
	tests := []struct {
		body string
		want time.Duration
		ok   bool
	}{
		{`{"retryDelay":"31s"}`, 31 * time.Second, true},
		{`{"retryDelay" :  "1.5s"}`, 1500 * time.Millisecond, true},
		{"{\"retryDelay\"\n:\t\"0s\"}", 0, true},
		{`{"retryDelay":"2m"}`, 2 * time.Minute, true},
		{`{"retryDelay":""}`, 0, false},
		{`{"retryDelay":"31"}`, 0, false}, // protobuf Durations carry a unit
		{`{"retryDelay":"-31s"}`, 0, false},
		{`{"retryDelay":31}`, 0, false},
		{`{"retryDelay":"31s`, 0, false},
		{`{"retryDelay"`, 0, false},
		{`{"retryDelay":`, 0, false},
		{`{"retryDelay":"` + string(make([]byte, 100)) + `"}`, 0, false},
		{`{"delay":"31s"}`, 0, false},
		{``, 0, false},
	}
	for _, tt := range tests {
		got, ok := retryDelay([]byte(tt.body))
		if got != tt.want || ok != tt.ok {
			t.Errorf("retryDelay(%q) = %v, %v; want %v, %v", tt.body, got, ok, tt.want, tt.ok)
		}
	}
}

func TestKindString(t *testing.T) {
	tests := []struct {
		k    Kind
		want string
	}{
		{Success, "success"},
		{Final, "final"},
		{RateLimited, "rate_limited"},
		{QuotaExhausted, "quota_exhausted"},
		{Transient, "transient"},
		{Kind(-1), "Kind(-1)"},
		{Kind(5), "Kind(5)"},
	}
	for _, tt := range tests {
		if got := tt.k.String(); got != tt.want {
			t.Errorf("Kind(%d).String() = %q, want %q", int(tt.k), got, tt.want)
		}
		if got := fmt.Sprint(tt.k); got != tt.want {
			t.Errorf("fmt.Sprint(Kind(%d)) = %q, want %q", int(tt.k), got, tt.want)
		}
	}
}
