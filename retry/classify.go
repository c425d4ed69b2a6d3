// Package retry decides what Sluice does with one upstream answer: relay it,
// retry it after a backoff, pause the provider for as long as it asked, or
// give up at once because waiting cannot help. It reads the rate-limit
// headers of OpenAI, Azure OpenAI and Anthropic and the error bodies of
// OpenAI, Anthropic and Gemini (FIELD-NOTES §2, design in §7.2).
//
// Everything here is a pure function of its arguments: no state, no clock
// reads (time is a parameter), safe for concurrent use, and [Classify] and
// [Pause] do not allocate, so they can run on every response. The parsers
// never panic and saturate instead of wrapping: no answer is negative or
// longer than about 100 years; callers cap pauses with their own limit.
package retry

import (
	"bytes"
	"strconv"
	"time"
)

// Header is what the classifier reads response headers through.
// *fasthttp.ResponseHeader satisfies it; its Peek is case-insensitive, and
// implementations must be too. Peek returns nil or an empty slice for a
// missing header. The returned bytes are only read, never kept.
type Header interface {
	Peek(key string) []byte
}

// Kind is the class of an upstream answer, which decides what the proxy
// does with it. The zero value is [Success].
type Kind int

const (
	// Success is 1xx–3xx and any status not listed below: relay as is.
	Success Kind = iota
	// Final is not retried and is relayed unchanged: 400, 401, 403, 404,
	// 413, 422 and every other 4xx not listed below, plus 501 and 505,
	// which no retry can fix.
	Final
	// RateLimited is 429 (rate limit) and 529 (Anthropic overloaded):
	// pause the provider, then retry after the pause.
	RateLimited
	// QuotaExhausted is a 429 that will not clear by waiting (OpenAI
	// insufficient_quota, Anthropic monthly spend limit, Gemini per-day
	// quota): relay at once, no retry, no pause.
	QuotaExhausted
	// Transient is 408, 409, 500, 502, 503, 504 and the other 5xx: retry
	// with backoff.
	Transient
)

// String returns the kind's name in snake case, usable as a metric label.
func (k Kind) String() string {
	switch k {
	case Success:
		return "success"
	case Final:
		return "final"
	case RateLimited:
		return "rate_limited"
	case QuotaExhausted:
		return "quota_exhausted"
	case Transient:
		return "transient"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Reason labels. They name the upstream cause, not the decision, so a
// metric labelled with both Kind and Reason shows, say, a 429 the provider
// asked us not to retry as final/rate_limited.
const (
	reasonRateLimited = "rate_limited"
	reasonOverloaded  = "overloaded"
	reasonQuota       = "quota_exhausted"
	reason5xx         = "5xx"
	reason4xx         = "4xx"
	reason408         = "408"
	reason409         = "409"
)

// Verdict is what to do with one upstream answer. It is a small value,
// returned by [Classify] by value.
type Verdict struct {
	// Kind is what to do.
	Kind Kind
	// Pause is how long the provider asked callers to wait, not capped
	// (cap it with the configured max pause); 0 means it did not say. It is
	// set for 429 and 529 answers from every source [Pause] reads plus
	// Gemini's RetryInfo.retryDelay in the body, and for answers that are
	// Transient before or after x-should-retry from retry-after-ms and
	// Retry-After only (reset headers describe quota, not an outage). It is
	// 0 for Success, QuotaExhausted and plain Final answers. A Final verdict
	// made by "x-should-retry: false" keeps the pause the provider sent.
	Pause time.Duration
	// Reason is a bounded label for metrics, naming the cause: "" for
	// Success, "rate_limited", "overloaded", "quota_exhausted", "408",
	// "409", "4xx" (other 4xx) or "5xx" (other 5xx, including 501/505).
	Reason string
}

// Header names, lower case: fasthttp's Peek folds case, and so must other
// Header implementations.
const (
	hdrShouldRetry  = "x-should-retry"
	hdrRetryAfter   = "retry-after"
	hdrRetryAfterMs = "retry-after-ms"
)

// Classify decides on one upstream response. body is the response body if
// it was read whole; it may be nil (a stream), and then a quota-exhausted
// 429 cannot be told from a rate limit and is RateLimited. now is the time
// HTTP-date and RFC 3339 header values are measured from.
//
// It honours x-should-retry as the OpenAI and Anthropic SDKs do
// (FIELD-NOTES 2.5): "true" makes a Final answer Transient and "false" makes
// a RateLimited or Transient one Final; the value must match exactly, like
// the SDKs' string comparison. QuotaExhausted and Success are left alone:
// the body is more specific than the header, and a success is never retried.
//
// Classify does not allocate when h.Peek does not.
func Classify(status int, h Header, body []byte, now time.Time) Verdict {
	var v Verdict
	switch {
	case status == 429:
		if quotaExhausted(body) {
			return Verdict{Kind: QuotaExhausted, Reason: reasonQuota}
		}
		v = Verdict{Kind: RateLimited, Reason: reasonRateLimited}
	case status == 529:
		// Anthropic's overloaded_error: capacity, not the caller's quota,
		// but it calls for the same pause-then-retry (FIELD-NOTES 2.2).
		v = Verdict{Kind: RateLimited, Reason: reasonOverloaded}
	case status == 408:
		v = Verdict{Kind: Transient, Reason: reason408}
	case status == 409:
		// The SDKs retry 409 (lock timeouts and similar races upstream).
		v = Verdict{Kind: Transient, Reason: reason409}
	case status == 501 || status == 505:
		// Not Implemented and HTTP Version Not Supported answer the same
		// way every time.
		v = Verdict{Kind: Final, Reason: reason5xx}
	case status >= 500 && status <= 599:
		v = Verdict{Kind: Transient, Reason: reason5xx}
	case status >= 400 && status <= 499:
		v = Verdict{Kind: Final, Reason: reason4xx}
	default:
		return Verdict{}
	}

	cause := v.Kind
	switch string(peek(h, hdrShouldRetry)) {
	case "true":
		if v.Kind == Final {
			v.Kind = Transient
		}
	case "false":
		v.Kind = Final
	}

	switch {
	case cause == RateLimited:
		if d, ok := Pause(h, now); ok {
			v.Pause = d
		} else if status == 429 {
			// Gemini sends no rate-limit headers; its pause is in the body.
			v.Pause, _ = retryDelay(body)
		}
	case cause == Transient || v.Kind == Transient:
		v.Pause, _ = askedPause(h, now)
	}
	return v
}

// peek is h.Peek that tolerates a nil Header.
func peek(h Header, key string) []byte {
	if h == nil {
		return nil
	}
	return h.Peek(key)
}

// maxBodyScan bounds how much of a 429 body is searched for quota markers.
// Provider error bodies are well under 2 KiB; the bound keeps a hostile or
// broken upstream from making classification expensive.
const maxBodyScan = 64 << 10

// quotaExhausted reports whether a 429 body says the caller's quota or
// budget is spent, so waiting minutes will not help. Each marker is a plain
// substring check, which also finds it inside Gemini's list-wrapped bodies
// and in bodies re-wrapped by gateways.
func quotaExhausted(body []byte) bool {
	if len(body) == 0 {
		return false
	}
	if len(body) > maxBodyScan {
		body = body[:maxBodyScan]
	}
	// OpenAI's billing error: "type"/"code": "insufficient_quota", "You
	// exceeded your current quota, please check your plan and billing
	// details" (FIELD-NOTES 2.1; langchain-ai/langchainjs#1929).
	return bytes.Contains(body, []byte("insufficient_quota")) ||
		// Anthropic's monthly spend cap, as FIELD-NOTES 2.2 records it
		// (error_code enforced_spend_limit_reached)...
		bytes.Contains(body, []byte("enforced_spend_limit_reached")) ||
		// ...and as it is observed on the wire in 2026: a rate_limit_error
		// whose message is "This request would exceed your account's
		// monthly spend limit", sent with a Retry-After of minutes that
		// would keep us retrying for nothing (can1357/oh-my-pi#5418,
		// NousResearch/hermes-agent#91091).
		bytes.Contains(body, []byte("monthly spend limit")) ||
		// Gemini's google.rpc.QuotaFailure quotaId for daily quotas, e.g.
		// "GenerateRequestsPerDayPerProjectPerModel-FreeTier": sticky until
		// midnight Pacific, although RetryInfo still says "retry in 40s"
		// (FIELD-NOTES 2.4; google-gemini/gemini-cli#8437). Per-minute ids
		// read "...PerMinute..." and stay RateLimited.
		bytes.Contains(body, []byte("PerDay"))
}

// retryDelay reads google.rpc.RetryInfo's retryDelay from a Gemini error
// body: `"retryDelay": "31s"`, a protobuf Duration in its JSON form
// (seconds with an "s" suffix, which time.ParseDuration syntax covers).
// FIELD-NOTES 7.2 puts it after Retry-After; Gemini sends no headers, so
// the order does not matter in practice.
func retryDelay(body []byte) (time.Duration, bool) {
	if len(body) > maxBodyScan {
		body = body[:maxBodyScan]
	}
	const key = `"retryDelay"`
	i := bytes.Index(body, []byte(key))
	if i < 0 {
		return 0, false
	}
	rest := skipJSONSpace(body[i+len(key):])
	if len(rest) == 0 || rest[0] != ':' {
		return 0, false
	}
	rest = skipJSONSpace(rest[1:])
	if len(rest) == 0 || rest[0] != '"' {
		return 0, false
	}
	rest = rest[1:]
	end := bytes.IndexByte(rest[:min(len(rest), maxValueLen+1)], '"')
	if end < 0 {
		return 0, false
	}
	d, err := time.ParseDuration(string(rest[:end]))
	if err != nil || d < 0 {
		return 0, false
	}
	return min(d, maxPause), true
}

// skipJSONSpace drops the whitespace JSON allows between tokens (RFC 8259
// section 2).
func skipJSONSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}
